"""Scaling activities: every launch, termination, attach and detach a group makes, with its
cause and outcome. An activity is journaled before its work starts, so one left InProgress by a
crash is found at start-up and finished (a launch retried with the same ClientToken)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timezone

from ...store.records import ScalingActivity
from ...store.store import MultiIndex, Store, Txn
from ..context import Caller
from .model import key, page, validation

KEEP_PER_GROUP = 100   # finished activities kept per group (AWS keeps six weeks' worth)


def stamp(t: float) -> str:
    """AWS's way of dating a cause: '2026-12-06T12:00:00Z'."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Activities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(ScalingActivity)
        self._by_group: MultiIndex[ScalingActivity] = self.table.add_index(
            MultiIndex(lambda a: key(a.owner, a.group)))
        self._open: MultiIndex[ScalingActivity] = self.table.add_index(
            MultiIndex(lambda a: "open" if a.status == "InProgress" else None))
        # InProgress activities whose work is under way in this process (the others were left by a
        # crash or a failed write, and the reconciler takes them up again).
        self.busy: set[str] = set()

    def new(self, owner: str, group: str, kind: str, cause: str, description: str, *,
            status: str = "InProgress", message: str = "", **fields: object) -> ScalingActivity:
        now = time.time()
        done = status != "InProgress"
        return ScalingActivity(id=str(uuid.uuid4()), owner=owner, group=group, kind=kind, cause=cause,
                               description=description, start=now, status=status, status_message=message,
                               end=now if done else None, progress=100 if done else 0, **fields)  # type: ignore[arg-type]

    @staticmethod
    def finish(a: ScalingActivity, status: str, message: str = "", **fields: object) -> ScalingActivity:
        return replace(a, status=status, status_message=message, end=time.time(), progress=100,
                       **fields)  # type: ignore[arg-type]

    def open(self) -> list[ScalingActivity]:
        """Activities begun and not finished (after a crash: to resume)."""
        return sorted(self._open.get("open").values(), key=lambda a: a.start)

    def open_of(self, owner: str, group: str) -> list[ScalingActivity]:
        """The group's InProgress activities (from the few open ones: every tick asks, per group)."""
        return [a for a in self._open.get("open").values() if a.group == group and a.owner == owner]

    def of_group(self, owner: str, group: str) -> list[ScalingActivity]:
        return list(self._by_group.get(key(owner, group)).values())

    def trim(self, tx: Txn, owner: str, group: str) -> None:
        """Forget the oldest finished activities beyond KEEP_PER_GROUP."""
        rows = self._by_group.get(key(owner, group))
        if len(rows) <= KEEP_PER_GROUP:
            return
        done = sorted((a for a in rows.values() if a.status != "InProgress"), key=lambda a: a.start)
        for a in done[:len(rows) - KEEP_PER_GROUP]:
            tx.delete(a)

    def drop_group(self, tx: Txn, owner: str, group: str) -> None:
        for a in list(self._by_group.get(key(owner, group)).values()):
            tx.delete(a)

    def describe(self, caller: Caller, ids: Sequence[str], group: str | None, max_records: int | None,
                 token: str | None) -> tuple[list[ScalingActivity], str | None]:
        """Newest first, as AWS lists them."""
        rows: Iterable[ScalingActivity]
        if group is not None:
            rows = self._by_group.get(key(caller.account, group)).values()
        else:
            rows = (a for a in self.table.values() if a.owner == caller.account)
        if ids:
            for i in ids:
                if len(i) > 255:
                    raise validation("ActivityIds must be at most 255 characters each")
            wanted = set(ids)
            rows = (a for a in rows if a.id in wanted)
        ordered = {f"{1e11 - a.start:014.3f}{a.id}": a for a in rows}   # newest first, sortable as text
        keys, nxt = page(sorted(ordered), max_records, token, "scaling-activities", 100, 100, group, sorted(ids))
        return [ordered[k] for k in keys], nxt
