"""Small integer ids for resources, for APIs that name everything by number.

OpenNebula's XML-RPC passes ids as 32-bit integers; cloudctl's ids are strings (`i-0abc…`).
A resource gets its number the first time such an API shows it, in a journaled row, and
keeps it: a number is never reused for another resource of the same kind, even after the
resource is gone (the rows stay; they are tiny).
"""
from __future__ import annotations

from collections.abc import Iterable

from ..store.records import NumericId
from ..store.store import MultiIndex, Store


class NumericIds:
    def __init__(self, store: Store, first: dict[str, int] | None = None) -> None:
        self.store = store
        self.table = store.table(NumericId)
        self._by_num: MultiIndex[NumericId] = self.table.add_index(MultiIndex(lambda r: f"{r.kind}/{r.num}"))
        self._first = first or {}
        self._next: dict[str, int] = {}
        for r in self.table.values():
            self._next[r.kind] = max(self._next.get(r.kind, 0), r.num + 1)

    def get(self, kind: str, rid: str) -> int | None:
        row = self.table.get(f"{kind}/{rid}")
        return row.num if row is not None else None

    def resolve(self, kind: str, num: int) -> str | None:
        """The resource id numbered `num`, or None."""
        row = self._by_num.first(f"{kind}/{num}")
        if row is None:
            return None
        return row.resource.split("/", 1)[1]

    async def ensure(self, kind: str, rids: Iterable[str]) -> dict[str, int]:
        """Numbers for `rids`, assigning (durably, before they are shown) those that have none."""
        out: dict[str, int] = {}
        new: list[NumericId] = []
        for rid in rids:
            num = self.get(kind, rid)
            if num is None:
                num = max(self._next.get(kind, 0), self._first.get(kind, 0))
                self._next[kind] = num + 1
                new.append(NumericId(resource=f"{kind}/{rid}", kind=kind, num=num))
            out[rid] = num
        if new:
            with self.store.txn() as tx:
                for row in new:
                    tx.put(row)
            await self.store.sync()
        return out
