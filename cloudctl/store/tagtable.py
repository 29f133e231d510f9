"""The tags table: one packed tuple per tagged resource instead of one row per tag.

Every instance carries a few tags (3 in the scale bench), and a row per tag cost ~810 B per instance:
three `Tag` objects, their `rid\\x1fkey` primary keys, three slots in the table's dict and the index
by resource. Here a resource's tags are one tuple, `(rid, owner, type, k1, v1, k2, v2, ...)`, filed by
resource id (a 112 B tuple for three tags, and one dict slot), and the key/value index that `tag:K=V`
filters read is kept beside it. Its strings are shared: Tags.put interns owners and keys and takes a
repeated value from a resource that holds it (`shared_value`); a load shares them as it does other rows'.

What the rest of the store sees does not change: transactions put and delete `Tag` rows by the same
primary keys, the journal and the checkpoint hold the same records (one per tag), and `rows` is a
mapping of key → `Tag` whose rows are made as they are read. Made, not kept: two reads of the same
tag give equal rows, not the same object. A resource whose tags have different owners or types (not
made by any API today, but allowed by the row) is packed as `(rid, None, None, *its Tag rows)`.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .records import Tag

if TYPE_CHECKING:
    from .store import Index

Entry = tuple[Any, ...]


def _tags(e: Entry) -> Iterator[Tag]:
    """The rows of one packed resource, in the order they were added."""
    rid, owner = e[0], e[1]
    if owner is None:
        yield from e[3:]
        return
    if owner is _HELD:   # (a load's: the rows written so far, not the places still held)
        yield from (t for t in e[4::2] if t is not _HOLE)
        return
    rtype = e[2]
    for i in range(3, len(e), 2):
        yield Tag(rid, rtype, owner, e[i], e[i + 1])


# The owner slot of a resource's entry while a load holds places for some of its tags (`TagTable.hold`):
# `(rid, _HELD, places still held, key, item, key, item, ...)`, keys where a packed entry has them,
# each item the `Tag` row written since or `_HOLE`, a place still held. (The size of the packed
# entry it becomes: the memory it frees is taken again by the entries made next.)
_HELD: Any = object()
_HOLE: Any = object()


def _find(e: Entry, tag_key: str) -> int:
    """The position in `e` of tag `tag_key` (its key for a packed or held entry, its row for a mixed one), or -1."""
    if e[1] is None:
        for i in range(3, len(e)):
            if e[i].tag_key == tag_key:
                return i
        return -1
    try:
        return 3 + 2 * e[3::2].index(tag_key)   # (in C: keys sit at odd places from 3)
    except ValueError:
        return -1


class KeyValueIndex:
    """tag key → value → the resources holding it. A value on one resource only (a Name, mostly) is
    held as that resource's id, not a group of one (~200 B per instance in the scale bench); a value
    on several as a sorted list of their ids: 8 B an id, where a set took 26–107 B (its table grows
    fourfold and fills to 60 %; `env=prod` on a third of 50,000 instances was ~1.3 MB). A list costs
    a binary search and a move of the ids after it per change (~5 µs for 16,000 ids), not a hash."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, str | list[str]]] = {}

    def holder(self, key: str, value: str) -> str | None:
        """A resource that holds tag `key` = `value` already, if any."""
        vals = self.ids.get(key)
        have = None if vals is None else vals.get(value)
        if have is None or type(have) is str:
            return have
        return have[0]   # type: ignore[return-value]

    def add(self, rid: str, key: str, value: str) -> None:
        vals = self.ids.get(key)
        if vals is None:
            vals = self.ids[key] = {}
        have = vals.get(value)
        if have is None:
            vals[value] = rid
        elif type(have) is str:
            if have != rid:
                vals[value] = [have, rid] if have < rid else [rid, have]
        else:
            i = bisect_left(have, rid)   # type: ignore[arg-type]
            if i == len(have) or have[i] != rid:
                have.insert(i, rid)   # type: ignore[union-attr]

    def remove(self, rid: str, key: str, value: str) -> None:
        vals = self.ids.get(key)
        if vals is None:
            return
        have = vals.get(value)
        if type(have) is str:
            if have == rid:
                del vals[value]
        elif have is not None:
            i = bisect_left(have, rid)   # type: ignore[arg-type]
            if i < len(have) and have[i] == rid:
                del have[i]   # type: ignore[union-attr]
                if len(have) == 1:
                    vals[value] = have[0]
        if not vals:
            del self.ids[key]

    def holding(self, key: str, values: set[str]) -> set[str]:
        """The resources with tag `key` set to one of `values`."""
        by_value = self.ids.get(key)
        out: set[str] = set()
        if not by_value:
            return out
        for v in values:
            have = by_value.get(v)
            if type(have) is str:
                out.add(have)
            elif have:
                out.update(have)
        return out


class _Unindexed(KeyValueIndex):
    """The key/value index while a load runs (`TagTable.defer_index`): nothing kept, the index is
    built once at the end. Kept in step, a list of thousands of ids (`env=prod`) had an id put in
    its middle by each of the journal's tag records (a move of the ids after it), and a checkpoint
    row replaced later had its id taken out and put back."""

    def add(self, rid: str, key: str, value: str) -> None:
        pass

    def remove(self, rid: str, key: str, value: str) -> None:
        pass


def _index(entries: Iterator[Entry]) -> KeyValueIndex:
    """The key/value index of these entries, as `add` for each of their tags would leave it."""
    kv = KeyValueIndex()
    ids = kv.ids
    for e in entries:
        rid = e[0]
        pairs = zip(e[3::2], e[4::2]) if e[1] is not None and e[1] is not _HELD else (
            (t.tag_key, t.value) for t in _tags(e))
        for key, value in pairs:
            vals = ids.get(key)
            if vals is None:
                vals = ids[key] = {}
            have = vals.get(value)
            if have is None:
                vals[value] = rid
            elif type(have) is str:
                vals[value] = [have, rid]
            else:
                have.append(rid)   # type: ignore[union-attr]
    for vals in ids.values():
        for have in vals.values():
            if type(have) is list:
                have.sort()
    return kv


class _Rows(Mapping[str, Tag]):
    """The table as `Table.rows` is for other tables: primary key → row (rows made as read)."""

    __slots__ = ("_t",)

    def __init__(self, table: TagTable) -> None:
        self._t = table

    def __getitem__(self, key: str) -> Tag:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def get(self, key: str, default: Any = None) -> Any:   # type: ignore[override]
        rid, _, tag_key = key.partition("\x1f")
        e = self._t.by_rid.get(rid)
        if e is None:
            return default
        i = _find(e, tag_key)
        if i < 0:
            return default
        if e[1] is None:
            return e[i]
        if e[1] is _HELD:   # (a load's: a place held for a tag not yet written is not a row)
            return default if e[i + 1] is _HOLE else e[i + 1]
        return Tag(e[0], e[2], e[1], e[i], e[i + 1])

    def __contains__(self, key: object) -> bool:
        if type(key) is not str:
            return False
        rid, _, tag_key = key.partition("\x1f")
        e = self._t.by_rid.get(rid)
        return e is not None and _find(e, tag_key) >= 0

    def __iter__(self) -> Iterator[str]:
        for t in self._t.values():
            yield t.key

    def __len__(self) -> int:
        return self._t.count

    def values(self) -> Iterator[Tag]:   # type: ignore[override]
        return self._t.values()

    def items(self) -> Iterator[tuple[str, Tag]]:   # type: ignore[override]
        return ((t.key, t) for t in self._t.values())


class TagTable:
    """`Table[Tag]`'s interface (what `Store`, `Txn` and the services use) over packed resources."""

    holds_rows = False   # (`rows` is a view: see Table.holds_rows)

    def __init__(self, row_type: type[Tag] = Tag) -> None:
        self.name = row_type.table
        self.row_type = row_type
        self.by_rid: dict[str, Entry] = {}
        self.kv = KeyValueIndex()
        self.count = 0
        self.rows = _Rows(self)
        self.indexes: list[Index[Tag]] = []   # other indexes (none in production): fed made rows
        self._named: dict[str, Index[Tag]] = {}
        # While a checkpoint lists this table: each resource's entry when the snapshot began (None:
        # no tags then), for every resource changed since. See Store.checkpoint.
        self._before: dict[str, Entry | None] | None = None
        self.changes = 0
        self.held = 0   # places a load holds for tags a journal record will write (`hold`)

    def __len__(self) -> int:
        return self.count

    def get(self, key: str) -> Tag | None:
        return self.rows.get(key)   # type: ignore[no-any-return]

    def values(self) -> Iterator[Tag]:
        for e in list(self.by_rid.values()):   # (a snapshot of the entries: safe while changing)
            yield from _tags(e)

    def add_index(self, index: Any) -> Any:
        for row in self.values():
            index.add(row)
        self.indexes.append(index)
        return index

    def shared_index(self, name: str, make: Any) -> Any:
        ix = self._named.get(name)
        if ix is None:
            ix = self._named[name] = self.add_index(make())
        return ix

    # -- reads by resource ----------------------------------------------------------------------
    def rows_of(self, rid: str) -> tuple[Tag, ...]:
        e = self.by_rid.get(rid)
        return () if e is None else tuple(_tags(e))

    def pairs_of(self, rid: str) -> tuple[tuple[str, str], ...]:
        """(key, value) of each of the resource's tags, in order, without making rows."""
        e = self.by_rid.get(rid)
        if e is None:
            return ()
        if e[1] is None:
            return tuple((t.tag_key, t.value) for t in e[3:])
        return tuple(zip(e[3::2], e[4::2]))

    def mapping_of(self, rid: str) -> dict[str, str] | None:
        e = self.by_rid.get(rid)
        if e is None:
            return None
        if e[1] is None:
            return {t.tag_key: t.value for t in e[3:]}
        return dict(zip(e[3::2], e[4::2]))

    # -- changes --------------------------------------------------------------------------------
    def shared_value(self, tag_key: str, value: str) -> str:
        """`value` as the object another resource's tag `tag_key` holds, if one holds it (`env=prod`
        on every instance of a fleet: one string). For writers (Tags.put); a load shares values
        through its own table of them (store.rowbuild.RowBuilder, Tag.repeated)."""
        holder = self.kv.holder(tag_key, value)
        e = None if holder is None else self.by_rid.get(holder)
        if e is not None:
            if e[1] is None:
                for t in e[3:]:
                    if t.tag_key == tag_key:
                        return t.value   # type: ignore[no-any-return]
            else:
                i = _find(e, tag_key)
                if i >= 0:
                    return e[i + 1]   # type: ignore[no-any-return]
        return value

    # -- a load ---------------------------------------------------------------------------------
    def defer_index(self) -> None:
        """Keep no key/value index until `build_index` (a load: built once from what it loaded)."""
        self.kv = _Unindexed()

    def build_index(self) -> None:
        """The key/value index of the table as it is (after `defer_index`)."""
        self.kv = _index(iter(self.by_rid.values()))

    def hold(self, rid: str, tag_key: str) -> None:
        """Keep the place of tag `tag_key` of `rid` (a checkpoint's row that a journal record read
        later writes again) without its row: the put fills it where it stands, so the resources'
        and their tags' order is what a full replay gives, without decoding, packing and then
        replacing the row (150,000 of a 50,000-instance checkpoint: ~1.5 s of a start). Only while
        a load runs: until `held` is 0 again such a resource's entry is a held one (see `_HELD`)."""
        e = self.by_rid.get(rid)
        if e is None:
            self.by_rid[rid] = (rid, _HELD, 1, tag_key, _HOLE)
        elif e[1] is _HELD:
            self.by_rid[rid] = (rid, _HELD, e[2] + 1, *e[3:], tag_key, _HOLE)
        else:   # (rows before it: the entry becomes a held one, rows and places in their order)
            rows = [x for t in _tags(e) for x in (t.tag_key, t)]
            self.by_rid[rid] = (rid, _HELD, 1, *rows, tag_key, _HOLE)
        self.count += 1
        self.held += 1

    def drop_held(self) -> None:
        """Forget the places held (a load that fell back to an older checkpoint, after `_set`
        removed the rows written)."""
        for rid in [rid for rid, e in self.by_rid.items() if e[1] is _HELD]:
            self.count -= self.by_rid.pop(rid)[2]
        self.held = 0

    def _fill(self, rid: str, tk: str, e: Entry, row: Tag | None) -> Tag | None:
        """`_set` on a held entry: the tag's place kept, its index entries as for a new row."""
        i = _find(e, tk)
        old = None if i < 0 else e[i + 1]
        left = e[2]
        if old is _HOLE and row is not None and left > 1 and not self.indexes:
            # (The common case, a held place filled while others stay held: one tuple made, not two.
            # The key/value index is built at the load's end: nothing to add to it now.)
            self.held -= 1
            self.kv.add(rid, tk, row.value)
            self.by_rid[rid] = (rid, _HELD, left - 1, *e[3:i + 1], row, *e[i + 2:])
            return None
        if old is _HOLE:   # (a held place: no row, nothing indexed yet)
            self.held -= 1
            left -= 1
            old = None
            if row is None:
                self.count -= 1
                e = e[:i] + e[i + 2:]
            else:
                e = e[:i + 1] + (row,) + e[i + 2:]
        elif row is None:
            if old is None:
                return None
            self.count -= 1
            e = e[:i] + e[i + 2:]
        elif old is None:
            self.count += 1
            e = e + (tk, row)
        else:
            e = e[:i + 1] + (row,) + e[i + 2:]
        if old is not None:
            self.kv.remove(rid, tk, old.value)
        if row is not None:
            self.kv.add(rid, tk, row.value)
        if len(e) == 3:
            del self.by_rid[rid]
        elif left:
            self.by_rid[rid] = (rid, _HELD, left, *e[3:])
        else:
            self.by_rid[rid] = _pack(rid, list(e[4::2]))
        for ix in self.indexes:
            if old is None:
                ix.add(row)   # type: ignore[arg-type]
            elif row is None:
                ix.remove(old)
            else:
                ix.update(old, row)
        return old

    def add_new(self, rows: list[Tag]) -> bool:
        """File `rows` (the tags of one resource that has none, of distinct keys, one owner and
        one type) as `_set` of each in turn would, in one step: the entry `(rid, owner, type, k1,
        v1, ...)` made once, not grown a tag at a time (a launch's three tags: ~10k instructions
        each through `_set`, the key joined and split again). False, and nothing done, if the
        resource has an entry (a held one too) or the table feeds other indexes: then each is put."""
        first = rows[0]
        rid = first.resource_id
        if self.indexes or rid in self.by_rid:
            return False
        before = self._before
        if before is not None and rid not in before:
            before[rid] = None
        n = len(rows)
        self.changes += n
        self.count += n
        entry: list[Any] = [rid, first.owner, first.resource_type]
        add = self.kv.add
        for r in rows:
            entry += (r.tag_key, r.value)
            add(rid, r.tag_key, r.value)
        self.by_rid[rid] = tuple(entry)
        return True

    def _set(self, key: str, row: Tag | None) -> Tag | None:
        """Put `row` at `key` (None: delete it); return the row that was there."""
        self.changes += 1
        rid, _, tk = key.partition("\x1f")
        by_rid = self.by_rid
        e = by_rid.get(rid)
        before = self._before
        if before is not None and rid not in before:
            before[rid] = e
        if e is not None and e[1] is _HELD:
            return self._fill(e[0], tk, e, row)
        if e is None:
            if row is None:
                return None
            rid = row.resource_id
            by_rid[rid] = (rid, row.owner, row.resource_type, row.tag_key, row.value)
            self.count += 1
            self.kv.add(rid, row.tag_key, row.value)
            for ix in self.indexes:
                ix.add(row)
            return None
        rid = e[0]   # (the id object the entry holds, not a copy from this key or row)
        packed = e[1] is not None
        i = _find(e, tk)
        if i < 0:
            old = None
        else:
            old = Tag(rid, e[2], e[1], tk, e[i + 1]) if packed else e[i]
        if old is not None:
            self.kv.remove(rid, tk, old.value)
        if row is None:
            if old is None:
                return None
            self.count -= 1
            ne = self._without(e, i)
            if ne is None:
                del by_rid[rid]
            else:
                by_rid[rid] = ne
            for ix in self.indexes:
                ix.remove(old)
            return old
        value = row.value
        self.kv.add(rid, tk, value)
        if old is None:
            self.count += 1
        if packed and row.owner == e[1] and row.resource_type == e[2]:
            by_rid[rid] = e + (row.tag_key, value) if i < 0 else e[:i + 1] + (value,) + e[i + 2:]
        else:
            rows = list(_tags(e))
            new = Tag(rid, row.resource_type, row.owner, row.tag_key, value)
            if i < 0:
                rows.append(new)
            else:
                rows[(i - 3) // 2 if packed else i - 3] = new
            by_rid[rid] = _pack(rid, rows)
        for ix in self.indexes:
            if old is None:
                ix.add(row)
            else:
                ix.update(old, row)
        return old

    @staticmethod
    def _without(e: Entry, i: int) -> Entry | None:
        """`e` less its tag at position `i`; None when none is left."""
        if e[1] is None:
            rows = [*e[3:i], *e[i + 1:]]
            return _pack(e[0], rows) if rows else None
        ne = e[:i] + e[i + 2:]
        return ne if len(ne) > 3 else None

    # -- checkpoints ----------------------------------------------------------------------------
    def listing(self) -> tuple[int, Iterator[Tag]]:
        """(how many entries, the rows as of now): the entries are listed at once (a reference
        each), the rows made from them later on the checkpoint's worker thread."""
        rids = list(self.by_rid)
        entries = list(self.by_rid.values())
        before, self._before = self._before, None
        return len(entries), _as_of(rids, entries, before or {})


def _pack(rid: str, rows: list[Tag]) -> Entry:
    first = rows[0]
    owner, rtype = first.owner, first.resource_type
    if all(r.owner == owner and r.resource_type == rtype for r in rows):
        out: list[Any] = [rid, owner, rtype]
        for r in rows:
            out += (r.tag_key, r.value)
        return tuple(out)
    return (rid, None, None, *rows)


def _as_of(rids: list[str], entries: list[Entry], before: dict[str, Entry | None]) -> Iterator[Tag]:
    """The table when its snapshot began (see store._as_of): each resource changed since is read
    from `before`, in its place; a resource whose tags all went since comes at the end."""
    if not before:
        for e in entries:
            yield from _tags(e)
        return
    for rid, e in zip(rids, entries):
        if rid in before:
            was = before.pop(rid)
            if was is not None:
                yield from _tags(was)
        else:
            yield from _tags(e)
    for was in before.values():
        if was is not None:
            yield from _tags(was)
