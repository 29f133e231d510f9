"""An index of a table's rows grouped by a derived key, each group a sorted list of primary keys.

`MultiIndex` holds a large group (an owner's instances, a host's) as a dict by primary key: ~16 B
an entry when the dict is full, ~38 B at 50,000 entries (just past a resize, a dict is a third
full), and ~26 B in a host's group of 250. The rows are in the table's own dict already, so a group
here is only the sorted list of its rows' keys (the rows' own key objects: 8 B an entry, ~9 with
the list's spare room), and a reader gets the rows through the table:

- `get(k)` is a read-only `Mapping` by primary key over the group (live, as a large `MultiIndex`
  group's dict was): a lookup is the table's dict plus one call of the key function (a row is in
  the group exactly when it is in the table and its key is `k`), so a by-id read costs what it
  did; iteration is in primary key order and over a snapshot of the keys.
- a row changed without changing its group's key (most changes: a state, a timestamp) touches
  nothing here; an add or a remove is a binary search and a move of the list's tail.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from operator import attrgetter, eq
from typing import Generic, TypeVar

from .records import Row
from .store import Index, Table

R = TypeVar("R", bound=Row)


class GroupView(Mapping[str, R], Generic[R]):
    """One group of an `IdGroups` by primary key: read-only, and live (it reads the index's list
    and the table as they are); `values()` and `items()` are lists made when called."""

    __slots__ = ("_ids", "_table", "_key", "_k")

    def __init__(self, ids: list[str], table: Table[R], key: Callable[[R], str | None], k: str) -> None:
        self._ids = ids
        self._table = table
        self._key = key
        self._k = k

    def __getitem__(self, pk: str) -> R:
        row = self._table.rows.get(pk)
        if row is None or self._key(row) != self._k:
            raise KeyError(pk)
        return row

    def get(self, pk: str, default: R | None = None) -> R | None:   # type: ignore[override]
        row = self._table.rows.get(pk)
        return row if row is not None and self._key(row) == self._k else default

    def __contains__(self, pk: object) -> bool:
        row = self._table.rows.get(pk)   # type: ignore[call-overload]
        return row is not None and self._key(row) == self._k

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def values(self) -> list[R]:   # type: ignore[override]
        rows = self._table.rows
        return [rows[pk] for pk in self._ids]

    def items(self) -> list[tuple[str, R]]:   # type: ignore[override]
        rows = self._table.rows
        return [(pk, rows[pk]) for pk in self._ids]

    def __repr__(self) -> str:
        return f"GroupView({dict(self.items())!r})"


class IdGroups(Index[R]):
    """Rows of `table` grouped by `key(row)` (None: in no group), each group the sorted list of
    its rows' primary keys. Same readers' interface as `MultiIndex` (`get`, `rows`, `first`,
    `sizes`); add it with `table.add_index`."""

    def __init__(self, table: Table[R], key: Callable[[R], str | None]) -> None:
        self._table = table
        self._key = key
        self._groups: dict[str, list[str]] = {}

    def add(self, row: R) -> None:
        k = self._key(row)
        if k is None:
            return
        pk = row.key
        g = self._groups.get(k)
        if g is None:
            self._groups[k] = [pk]
            return
        i = bisect_left(g, pk)
        if i == len(g) or g[i] != pk:
            g.insert(i, pk)

    def add_many(self, rows: Iterable[R]) -> None:
        """Every row of `rows` (a table's, when the index is added): appended, then each group
        sorted once, not n inserts into the middle of a long list. (At start: 50,000 instances
        and 52,500 volumes. The primary key read by one C getter, not the `key` property; the
        groups all sorted when the index was empty, no set of those touched; a group's
        duplicates looked for in C and removed only if there are any.)"""
        key, groups = self._key, self._groups
        rt = self._table.row_type
        pk_of = attrgetter(rt.key_field if rt.key is Row.key else "key")
        touched: set[str] | None = set() if groups else None
        for row in rows:
            k = key(row)
            if k is None:
                continue
            g = groups.get(k)
            if g is None:
                g = groups[k] = []
            g.append(pk_of(row))
            if touched is not None:
                touched.add(k)
        for k in groups if touched is None else touched:
            g = groups[k]
            g.sort()
            if any(map(eq, g, islice(g, 1, None))):
                g[:] = [pk for n, pk in enumerate(g) if n == 0 or g[n - 1] != pk]

    def remove(self, row: R) -> None:
        k = self._key(row)
        if k is None:
            return
        g = self._groups.get(k)
        if g is None:
            return
        pk = row.key
        i = bisect_left(g, pk)
        if i < len(g) and g[i] == pk:
            del g[i]
            if not g:
                del self._groups[k]

    def update(self, old: R, new: R) -> None:
        """Nothing to do unless the group's key changed: the group names the row, not holds it."""
        key = self._key
        if key(new) != key(old):
            self.remove(old)
            self.add(new)

    def get(self, k: str) -> GroupView[R]:
        """The group's rows by primary key (a live read-only view; empty for no group)."""
        g = self._groups.get(k)
        return GroupView(g if g is not None else [], self._table, self._key, k)

    def rows(self, k: str) -> tuple[R, ...]:
        """The group's rows (a snapshot), in primary key order."""
        g = self._groups.get(k)
        if g is None:
            return ()
        rows = self._table.rows
        return tuple([rows[pk] for pk in g])

    def first(self, k: str) -> R | None:
        g = self._groups.get(k)
        return self._table.rows[g[0]] if g else None

    def sizes(self) -> Iterator[int]:
        """How many rows each group holds."""
        return (len(g) for g in self._groups.values())
