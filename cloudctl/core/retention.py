"""Bounded retention for rows kept only to be looked at later (events, finished switch operations).

Such rows would otherwise grow the journal and every checkpoint without limit. A table keeps at
most `keep` of them and none older than `max_age_s`; the rest are deleted in one transaction, so
a crash keeps either the old set or the trimmed one and a replayed journal stays bounded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..store.records import Row
from ..store.store import Store

R = TypeVar("R", bound=Row)


def expired(rows: Iterable[R], keep: int, max_age_s: float, now: float,
            order: Callable[[R], Any], stamp: Callable[[R], float]) -> list[R]:
    """The rows beyond the newest `keep` (by `order`) or stamped before `now - max_age_s`."""
    ordered = sorted(rows, key=order)
    excess = len(ordered) - max(0, keep)
    cutoff = now - max_age_s
    return [r for n, r in enumerate(ordered) if n < excess or stamp(r) < cutoff]


async def delete(store: Store, rows: list[R]) -> int:
    """Delete `rows` in one transaction and wait until it is durable."""
    if not rows:
        return 0
    with store.txn() as tx:
        for r in rows:
            tx.delete(r)
    await store.sync()
    return len(rows)
