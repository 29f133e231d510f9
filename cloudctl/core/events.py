"""The operator's event log: what happened to instances, hosts, switches and image lists.

Events are rows in the journaled store, so they survive a crash like the changes they describe;
an event recorded in the same transaction as its change is present exactly when the change is.
Retention is bounded by count and age so a busy cloud's log cannot grow without limit.
Followers (`cloudctl events --follow`) get new events through per-listener queues.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..store.frozen import FrozenMap, freeze, shared_map
from ..store.records import Event
from ..store.store import Store, Txn
from . import retention

MAX_EVENTS = 10_000
MAX_AGE_S = 7 * 24 * 3600


# An instance's state change's event data, {owner, host, state}, by those three: one map made (frozen
# and shared) for all the events that repeat it, where each event's own dict was frozen and looked up
# among the shared maps again (~14k instructions a state change). Cleared when full: one C call, safe
# beside other threads (see `derived._kept`).
_STATE_DATA: dict[tuple[str, str, str], FrozenMap] = {}
_STATE_DATA_MAX = 256


def state_data(owner: str, host: str, state: str) -> FrozenMap:
    """The event data map `{"owner": owner, "host": host, "state": state}`, frozen and shared."""
    key = (owner, host, state)
    got = _STATE_DATA.get(key)
    if got is None:
        got = shared_map(freeze({"owner": owner, "host": host, "state": state}))
        if len(_STATE_DATA) >= _STATE_DATA_MAX:
            _STATE_DATA.clear()
        _STATE_DATA[key] = got
    return got


class Events:
    def __init__(self, store: Store, max_events: int = MAX_EVENTS, max_age_s: float = MAX_AGE_S) -> None:
        self.store = store
        self.table = store.table(Event)
        self.max_events = max_events
        self.max_age_s = max_age_s
        last = max((int(e.id) for e in self.table.values()), default=0)
        self._seq = itertools.count(last + 1)
        self._listeners: set[asyncio.Queue[Event]] = set()

    def add(self, tx: Txn, kind: str, subject: str, message: str, code: str | None = None,
            **data: Any) -> Event:
        """Record an event inside the caller's transaction (all-or-nothing with its change)."""
        return self.record(tx, kind, subject, message, code, data)

    def record(self, tx: Txn, kind: str, subject: str, message: str, code: str | None,
               data: Mapping[str, Any]) -> Event:
        """`add` with its data as one map (a `state_data` map: made once for all the events that
        repeat it)."""
        ev = Event(f"{next(self._seq):012d}", time.time(), kind, subject, message, code, data)
        tx.put(ev)
        for q in self._listeners:
            q.put_nowait(ev)
        return ev

    def emit(self, kind: str, subject: str, message: str, code: str | None = None, **data: Any) -> Event:
        """Record an event on its own; written with the next group commit, not awaited."""
        with self.store.txn() as tx:
            ev = self.add(tx, kind, subject, message, code, **data)
        self.store.flush()
        return ev

    def since(self, after: str | None = None, kind: str | None = None, subject: str | None = None,
              limit: int = 1000) -> list[Event]:
        """Events after the id `after` (oldest first), optionally of one kind prefix or subject."""
        out = []
        for ev in sorted(self.table.values(), key=lambda e: e.id):
            if after is not None and ev.id <= after:
                continue
            if kind and not (ev.kind == kind or ev.kind.startswith(kind + ".")):
                continue
            if subject and ev.subject != subject:
                continue
            out.append(ev)
        return out[-limit:] if limit else out

    def listen(self) -> "_Listener":
        return _Listener(self)

    async def trim(self) -> int:
        """Forget events beyond the retention bounds; run periodically."""
        old = retention.expired(self.table.values(), self.max_events, self.max_age_s, time.time(),
                                order=lambda e: e.id, stamp=lambda e: e.time)
        return await retention.delete(self.store, old)


class _Listener:
    """`async for ev in events.listen()` — new events as they are recorded."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def __enter__(self) -> "_Listener":
        self.events._listeners.add(self.queue)
        return self

    def __exit__(self, *exc: object) -> None:
        self.events._listeners.discard(self.queue)

    def __aiter__(self) -> "_Listener":
        return self

    async def __anext__(self) -> Event:
        return await self.queue.get()

    def pending(self) -> Iterator[Event]:
        while not self.queue.empty():
            yield self.queue.get_nowait()
