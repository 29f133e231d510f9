"""The in-memory state: typed tables, secondary indexes, transactions, journal and checkpoints.

Changes happen in a transaction (`with store.txn() as tx:`), which is synchronous, so no other
request interleaves with it on the event loop. Leaving the block applies it and appends one
journal record holding all of its operations (all-or-nothing on replay); an exception inside
the block rolls the in-memory changes back. The caller then awaits `store.sync()` before
answering, which is what makes the answer an acknowledgement.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from json.decoder import scanstring as _scanstring  # (the C one)
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from . import checkpoint as ckpt
from .checkpoint import encode_row
from .forked import Child, fork_child
from .journal import Journal, JournalError, journal_path
from .records import ROW_TYPES, Row, Tag, encode_changes
from .replay import ROW, SURE, overwritten, replay
from .rowbuild import RowBuilder
from .tagtable import TagTable

log = logging.getLogger("cloudctl.store")

R = TypeVar("R", bound=Row)

# A checkpoint lists the tables over several loop turns: at most about this many rows a turn (a table
# is listed whole), and a list this long is hidden from the cycle collector at once (Store._snapshot_sliced).
TURN_ROWS = 20_000
HIDE_ROWS = 4096


class Index(ABC, Generic[R]):
    """A secondary index kept in step with a table; subclasses say how a row is filed."""

    @abstractmethod
    def add(self, row: R) -> None: ...

    @abstractmethod
    def remove(self, row: R) -> None: ...

    def update(self, old: R, new: R) -> None:
        """`new` replaces `old` (same primary key). Subclasses override it to touch nothing, or
        only the row, when what they file the row by did not change: most updates change fields
        no index keys on (an instance's state, an address's association), and remove-then-add
        paid every index in full for them."""
        self.remove(old)
        self.add(new)


class MultiIndex(Index[R]):
    """Rows grouped by a derived key (e.g. owner → {id: row}).

    Most groups are small (a private IP, a numeric id: one row; a resource's tags, an instance's
    volumes: a few), and a dict per group took ~180-200 B even for one or three rows. So a group
    of one row is held as the row itself, a group of up to `SMALL` rows as a tuple of them
    (3 tags: 85 B instead of 203 B per resource), and only larger ones as a dict by primary
    key. `get` gives a mapping whichever it is, `rows` the rows. A row changed within its group
    is replaced where it is: its place kept, and a dict group not churned (a pop and re-insert
    per change left large groups' dicts over-allocated)."""

    SMALL = 8

    def __init__(self, key: Callable[[R], str | None]) -> None:
        self._key = key
        self._groups: dict[str, R | tuple[R, ...] | dict[str, R]] = {}

    def add(self, row: R) -> None:
        k = self._key(row)
        if k is None:
            return
        groups = self._groups
        g = groups.get(k)
        if g is None:
            groups[k] = row
            return
        t = type(g)
        if t is dict:
            g[row.key] = row   # type: ignore[index]
            return
        rk = row.key
        if t is tuple:
            for i, r in enumerate(g):   # type: ignore[arg-type]
                if r.key == rk:
                    groups[k] = g[:i] + (row,) + g[i + 1:]   # type: ignore[index,operator]
                    return
            if len(g) < self.SMALL:   # type: ignore[arg-type]
                groups[k] = g + (row,)   # type: ignore[operator]
            else:
                d = {r.key: r for r in g}   # type: ignore[union-attr]
                d[rk] = row
                groups[k] = d
            return
        groups[k] = row if g.key == rk else (g, row)   # type: ignore[union-attr]

    def add_many(self, rows: Iterable[R]) -> None:
        """`add` of each row, in order (`Table.add_index`: a table's rows at start, 50,000-150,000
        of them at 50,000 instances): a row whose group is new is filed inline, the others by `add`."""
        key, groups, add = self._key, self._groups, self.add
        for row in rows:
            k = key(row)
            if k is not None:
                if k in groups:
                    add(row)
                else:
                    groups[k] = row

    def remove(self, row: R) -> None:
        k = self._key(row)
        if k is None:
            return
        groups = self._groups
        g = groups.get(k)
        if g is None:
            return
        t = type(g)
        rk = row.key
        if t is dict:
            g.pop(rk, None)   # type: ignore[union-attr]
            if len(g) <= self.SMALL:   # type: ignore[arg-type]
                rest = tuple(g.values())   # type: ignore[union-attr]
                if len(rest) > 1:
                    groups[k] = rest
                elif rest:
                    groups[k] = rest[0]
                else:
                    del groups[k]
        elif t is tuple:
            rest = tuple(r for r in g if r.key != rk)   # type: ignore[union-attr]
            if len(rest) > 1:
                groups[k] = rest
            elif rest:
                groups[k] = rest[0]
            else:
                del groups[k]
        elif g.key == rk:   # type: ignore[union-attr]
            del groups[k]

    def update(self, old: R, new: R) -> None:
        key = self._key
        k = key(new)
        if k != key(old):
            self.remove(old)
            self.add(new)
            return
        if k is None:
            return
        # Same group: the row replaced where it is (its place kept, as a reload files it), found by
        # identity (the group holds the table's row object), without reading any primary key.
        groups = self._groups
        g = groups.get(k)
        if g is old:
            groups[k] = new
            return
        t = type(g)
        if t is tuple:
            for i, r in enumerate(g):   # type: ignore[arg-type]
                if r is old:
                    groups[k] = g[:i] + (new,) + g[i + 1:]   # type: ignore[index,operator]
                    return
        elif t is dict:
            rk = new.key
            if g.get(rk) is old:   # type: ignore[union-attr]
                g[rk] = new   # type: ignore[index]
                return
        self.add(new)   # `old` was not filed as itself: by primary key

    def rows(self, k: str) -> tuple[R, ...]:
        """The group's rows (a snapshot), without the dict `get` builds for a small group: for
        readers that only iterate (every Describe reads each instance's tags and volumes)."""
        g = self._groups.get(k)
        if g is None:
            return ()
        t = type(g)
        if t is tuple:
            return g   # type: ignore[return-value]
        if t is dict:
            return tuple(g.values())   # type: ignore[union-attr]
        return (g,)   # type: ignore[return-value]

    def get(self, k: str) -> dict[str, R]:
        """The group's rows by primary key: the index's own dict for a large group (not to be
        changed; copy it to iterate while changing the table), a new one for a small group."""
        g = self._groups.get(k)
        if g is None:
            return {}
        t = type(g)
        if t is dict:
            return g   # type: ignore[return-value]
        if t is tuple:
            return {r.key: r for r in g}   # type: ignore[union-attr]
        return {g.key: g}   # type: ignore[union-attr]

    def first(self, k: str) -> R | None:
        """One row of the group (for keys that are unique: an access key, a numeric id)."""
        g = self._groups.get(k)
        if g is None:
            return None
        t = type(g)
        if t is tuple:
            return g[0]   # type: ignore[index,return-value]
        if t is dict:
            return next(iter(g.values()), None)   # type: ignore[union-attr]
        return g   # type: ignore[return-value]

    def sizes(self) -> Iterator[int]:
        """How many rows each group holds."""
        return (len(g) if type(g) in (dict, tuple) else 1 for g in self._groups.values())   # type: ignore[arg-type]


class SumIndex(Index[R]):
    """Per derived key, how many rows and the sum of a number over them (quotas)."""

    def __init__(self, key: Callable[[R], str | None], amount: Callable[[R], int]) -> None:
        self._key = key
        self._amount = amount
        self.totals: dict[str, tuple[int, int]] = {}

    def add(self, row: R) -> None:
        k = self._key(row)
        if k is not None:
            n, total = self.totals.get(k, (0, 0))
            self.totals[k] = (n + 1, total + self._amount(row))

    def add_many(self, rows: Iterable[R]) -> None:
        """`add` of each row, in order, without a call a row (`Table.add_index`)."""
        key, amount, totals = self._key, self._amount, self.totals
        for row in rows:
            k = key(row)
            if k is not None:
                n, total = totals.get(k, (0, 0))
                totals[k] = (n + 1, total + amount(row))

    def remove(self, row: R) -> None:
        k = self._key(row)
        if k is not None and k in self.totals:
            n, total = self.totals[k]
            if n <= 1:
                del self.totals[k]
            else:
                self.totals[k] = (n - 1, total - self._amount(row))

    def update(self, old: R, new: R) -> None:
        k = self._key(new)
        if k != self._key(old):
            self.remove(old)
            if k is not None:
                n, total = self.totals.get(k, (0, 0))
                self.totals[k] = (n + 1, total + self._amount(new))
        elif k is not None:
            was, now = self._amount(old), self._amount(new)
            if was != now and k in self.totals:
                n, total = self.totals[k]
                self.totals[k] = (n, total - was + now)

    def get(self, k: str) -> tuple[int, int]:
        return self.totals.get(k, (0, 0))


class CountIndex(Index[R]):
    """How many rows per derived key (e.g. instances by state), kept as rows change, so a
    reader (a metrics scrape) needs no pass over the table."""

    def __init__(self, key: Callable[[R], str | None]) -> None:
        self._key = key
        self.counts: dict[str, int] = {}

    def add(self, row: R) -> None:
        k = self._key(row)
        if k is not None:
            self.counts[k] = self.counts.get(k, 0) + 1

    def add_many(self, rows: Iterable[R]) -> None:
        """`add` of each row, in order, without a call a row (`Table.add_index`)."""
        counts = self.counts
        for k in map(self._key, rows):
            if k is not None:
                counts[k] = counts.get(k, 0) + 1

    def remove(self, row: R) -> None:
        k = self._key(row)
        if k is not None and k in self.counts:
            if self.counts[k] <= 1:
                del self.counts[k]
            else:
                self.counts[k] -= 1

    def update(self, old: R, new: R) -> None:
        ko = self._key(old)
        k = self._key(new)
        if k == ko:
            return
        counts = self.counts
        if ko is not None and (n := counts.get(ko)) is not None:
            if n <= 1:
                del counts[ko]
            else:
                counts[ko] = n - 1
        if k is not None:
            counts[k] = counts.get(k, 0) + 1


IX = TypeVar("IX", bound="Index[Any]")


class Table(Generic[R]):
    #: Whether `rows` is the dict that holds the rows as given (so a load may share their keys and
    #: park placeholders in it); False for a table that keeps its rows in another shape (tags).
    holds_rows: ClassVar[bool] = True

    def __init__(self, row_type: type[R]) -> None:
        self.name = row_type.table
        self.row_type = row_type
        self.rows: dict[str, R] = {}
        self.indexes: list[Index[R]] = []
        self._named: dict[str, Index[R]] = {}
        # While a checkpoint lists this table: the value each key changed since had when the
        # snapshot began (None: absent then). See Store.checkpoint.
        self._before: dict[str, R | None] | None = None
        self.changes = 0   # rows put or deleted (rollbacks too): unchanged = nothing moved since

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> R | None:
        return self.rows.get(key)

    def values(self) -> Iterator[R]:
        return iter(self.rows.values())

    def add_index(self, index: IX) -> IX:
        many = getattr(index, "add_many", None)   # (an index that files many rows at once faster)
        if many is not None:
            many(self.rows.values())
        else:
            for row in self.rows.values():
                index.add(row)
        self.indexes.append(index)
        return index

    def shared_index(self, name: str, make: Callable[[], IX]) -> IX:
        """The index called `name`, added by the first service that asks: services that need the
        same index (instances by private IP) hold one, not a copy each (a dict slot per row)."""
        ix = self._named.get(name)
        if ix is None:
            ix = self._named[name] = self.add_index(make())
        return ix  # type: ignore[return-value]

    def listing(self) -> tuple[int, Iterator[R]]:
        """(how many rows, the rows as they were when the snapshot began): see Store.checkpoint.
        Listed now (a reference each, on the loop); read later, on the checkpoint's worker."""
        rows = list(self.rows.values())
        before, self._before = self._before, None
        return len(rows), _as_of(rows, before or {})

    def _set(self, key: str, row: R | None) -> R | None:
        self.changes += 1
        old = self.rows.get(key)
        before = self._before
        if before is not None and key not in before:
            before[key] = old
        if row is None:
            if old is not None:
                for ix in self.indexes:
                    ix.remove(old)
                del self.rows[key]
        elif old is None:
            self.rows[key] = row
            for ix in self.indexes:
                ix.add(row)
        else:
            self.rows[key] = row
            for ix in self.indexes:
                ix.update(old, row)
        return old


class Txn:
    def __init__(self, store: "Store") -> None:
        self._store = store
        # (table, key, the row before, the row put or None for a delete), in order: the undo log
        # and, encoded once at commit (`encode_changes`), the journal record. Rows are immutable,
        # so encoding them at commit writes what each put gave.
        self._ops: list[tuple[Table[Any], str, Row | None, Row | None]] = []

    def put(self, row: Row) -> None:
        table = self._store.tables[row.table]
        key = row.key
        self._ops.append((table, key, table._set(key, row), row))

    def put_new_tags(self, rows: list[Tag]) -> None:
        """`put` of each of `rows`: the tags of one resource that has none yet, of distinct keys,
        one owner and one type (a launch's), filed in one step where the table can (see
        `TagTable.add_new`); the same undo log and journal record either way."""
        table = self._store.tables[Tag.table]
        if not isinstance(table, TagTable) or not table.add_new(rows):
            for row in rows:
                self.put(row)
            return
        ops = self._ops
        for row in rows:
            ops.append((table, f"{row.resource_id}\x1f{row.tag_key}", None, row))

    def delete(self, row: Row) -> None:
        table = self._store.tables[row.table]
        key = row.key
        if key not in table.rows:
            return
        self._ops.append((table, key, table._set(key, None), None))

    def _rollback(self) -> None:
        for table, key, old, _ in reversed(self._ops):
            table._set(key, old)


_scan = json.JSONDecoder().scan_once   # the C scanner json.loads ends in, without its two wrappers


class _ReadFailed(Exception):
    """The checkpoint could not be read (its cause says why), as opposed to a row that cannot be applied."""


class _Pending(Row):
    """A checkpoint row not decoded while a load runs: a journal record applied later writes it."""

    table = "(pending)"


_PENDING: Any = object.__new__(_Pending)

class Store:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        # (The tags table packs each resource's tags in one tuple: same interface, same records.)
        self.tables: dict[str, Table[Any]] = {
            t.table: TagTable() if t is Tag else Table(t) for t in ROW_TYPES}   # type: ignore[misc]
        self.gen = 0
        self.journal: Journal | None = None
        self._ckpt_lock = asyncio.Lock()
        self.last_checkpoint_s = 0.0
        self.last_checkpoint_at = time.time()
        # Committed transactions whose journal record is not yet on disk, with their undo logs.
        self._undurable: deque[tuple[int, Txn]] = deque()
        self.rollbacks = 0
        self.rollback_listeners: list[Callable[[], None]] = []
        self.on_checkpoint: Callable[[float], None] | None = None   # metrics: each checkpoint's seconds
        self.checkpoint_listeners: list[Callable[[], None]] = []   # called on the loop after each checkpoint
        # Called on the loop right after a checkpoint's snapshot is taken (core/gcpolicy.py hides its
        # lists, a reference to every row, from the cycle collector while the worker encodes them).
        self.snapshot_listeners: list[Callable[[], None]] = []
        self.commits = 0   # transactions that changed something, since start
        self._fork_refused = False   # (said once in the log: checkpoints are written on a thread)
        self._first_checkpoint: asyncio.Task[None] | None = None
        self._checkpoint_held: asyncio.Event | None = None   # set: the first checkpoint may be written
        self._rows = RowBuilder()   # builds the rows a load reads

    def table(self, row_type: type[R]) -> Table[R]:
        return self.tables[row_type.table]

    # -- changes --------------------------------------------------------------------------------
    def txn(self) -> "_TxnContext":
        return _TxnContext(self)

    def _commit(self, tx: Txn) -> None:
        if not tx._ops:
            return
        assert self.journal is not None, "store is not open"
        # (encoded on the journal's writer thread, before its write: the rows are immutable)
        seq = self.journal.append_changes(encode_changes, tx._ops)
        self._undurable.append((seq, tx))
        self.commits += 1

    def _durable(self, upto: int) -> None:
        while self._undurable and self._undurable[0][0] <= upto:
            self._undurable.popleft()

    def _failed(self, durable: int) -> None:
        """The journal could not write what came after `durable`: undo it in memory, newest
        first, so the state is again exactly what is on disk, and tell the listeners."""
        undone = 0
        while self._undurable and self._undurable[-1][0] > durable:
            _, tx = self._undurable.pop()
            tx._rollback()
            undone += 1
        self.rollbacks += undone
        for fn in self.rollback_listeners:
            try:
                fn()
            except Exception:
                log.exception("rollback listener failed")

    async def sync(self) -> None:
        assert self.journal is not None
        await self.journal.sync()

    def flush(self) -> None:
        """Make buffered changes durable soon, for changes no answer depends on."""
        assert self.journal is not None
        self.journal.flush()

    def digest(self) -> str:
        """A hash of every row: equal digests mean equal state (the fuzz and access tests compare
        it around requests that must change nothing)."""
        h = hashlib.sha256()
        for name in sorted(self.tables):
            for key, row in sorted(self.tables[name].rows.items()):
                h.update(f"{name}\x1f{key}\x1f{encode_row(row)}\n".encode())
        return h.hexdigest()

    # -- loading --------------------------------------------------------------------------------
    def _apply_record(self, payload: str) -> None:
        # `json.loads(payload)`, a third faster: the C scanner it ends in, without its two wrappers
        # (1M records spent ~40 % of the replay in decoding); anything but one whole JSON value takes
        # json.loads, for its error. Inline, and the builder's methods looked up once: a call and
        # lookups less per record, of the 369,010 a 50,000-instance restart applies.
        try:
            ops, end = _scan(payload, 0)
        except StopIteration:
            ops, end = None, -1
        if end != len(payload):
            ops = json.loads(payload)
        tables, rows = self.tables, self._rows
        for op in ops:
            table = tables.get(op[1])
            if table is None:
                raise JournalError(f"journal names unknown table {op[1]!r}")
            key = rows.share(op[2], op[2]) if table.holds_rows else op[2]
            if op[0] == "p":
                table._set(key, rows.build(table.row_type, op[3]))
            else:
                table._set(key, None)

    def _apply_checkpoint(self, lines: Iterable[bytes], written: dict[bytes, int],
                          sure: bytearray | None = None) -> int:
        """Put a checkpoint's rows; those in `written`, as placeholders. Returns how many. The
        first journal's record `~written[ident]` (when `written[ident]` < 0) is then `SURE` in
        `sure`: its key is there when that journal's replay starts (see `replay.overwritten`)."""
        pending = 0
        share = self._rows.share
        # (`written_row` inline, and each table looked up by its name's bytes: a call, two decodes
        # and a dict lookup by a new str less for each of the 369,010 rows of a 50,000-instance
        # checkpoint that the journal writes again.)
        match = ROW.match
        by_name: dict[bytes, Table[Any]] = {}
        tables = self.tables
        try:
            for line in lines:
                if written and (m := match(line)) is not None:
                    end = m.end(2)
                    # (a backslash before the quote: see `replay._FIRST`)
                    if line[end - 1] != 92 and (at := written.get(line[2:end])) is not None:
                        if at < 0 and sure is not None:   # (see `overwritten`)
                            sure[~at] = SURE
                        tb, raw = m.group(1, 2)
                        key = _scanstring(raw.decode() + '"', 0)[0] if 92 in raw else raw.decode()
                        tbl = by_name.get(tb)
                        if tbl is None:
                            tbl = by_name[tb] = tables[tb.decode()]
                        if tbl.holds_rows:
                            tbl.rows[share(key, key)] = _PENDING   # (the dict keeps this key object)
                            pending += 1
                            continue
                        if isinstance(tbl, TagTable):   # (its rows are packed: a place held in its own shape)
                            # (Both shared: the key a row written later holds, not a copy freed then among
                            # the rows loaded: 150,000 such holes in the heap were ~6 MiB of RSS.)
                            rid, _, tag_key = key.partition("\x1f")
                            tbl.hold(share(rid, rid), share(tag_key, tag_key))
                            pending += 1
                            continue
                table, key, d = ckpt.decode_line(line)
                tbl = self.tables[table]
                tbl._set(share(key, key) if tbl.holds_rows else key, self._rows.build(tbl.row_type, d))
        except (ckpt.CheckpointError, ValueError) as e:
            raise _ReadFailed from e
        return pending

    def _rows_of(self, table: str) -> Container[str] | None:
        """A table's keys (live: the replay asks once a table), or None: no such table."""
        t = self.tables.get(table)
        return None if t is None else t.rows

    def _clear(self) -> None:
        for t in self.tables.values():
            for key in list(t.rows):
                t._set(key, None)
            if isinstance(t, TagTable):
                t.drop_held()

    def _load(self) -> int:
        """Load the newest good checkpoint and replay the journals after it; return the gen."""
        self._rows = RowBuilder()
        tags = [t for t in self.tables.values() if isinstance(t, TagTable)]
        for t in tags:
            t.defer_index()
        try:
            return self._load_files()
        finally:
            for t in tags:
                t.build_index()
            self._rows = RowBuilder()   # (its dicts of shared values: only for the load)

    def _load_files(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        journals = sorted(int(p.name.split(".")[1]) for p in self.state_dir.glob("journal.*")
                          if p.name.split(".")[1].isdigit())
        base = -1
        plans: dict[int, bytearray] = {}
        pending = 0
        for gen in ckpt.generations(self.state_dir):
            # Applied as read (the rows are never all held at once): checkpoint_lines checks the whole
            # file before it yields the first row. A read that fails after all empties the tables
            # again before the fallback; a row that cannot be applied stops the start, as before.
            lines = ckpt.checkpoint_lines(ckpt.checkpoint_path(self.state_dir, gen))
            try:
                first = next(lines, None)
            except (ckpt.CheckpointError, ValueError) as e:
                log.error("%s; falling back to the previous generation", e)
                continue
            # The journals' first pass, before the rows: a row that a journal record applied later
            # writes again (its last write by a record's first operation) is not decoded; it holds
            # its place in the table until that record replaces or deletes it.
            written: dict[bytes, int] = {}
            later = [g for g in journals if g >= gen]
            plans = {g: overwritten(journal_path(self.state_dir, g), written, first=g == later[0]) for g in later}
            # (The first journal's records that are SURE if their key is there when it starts: the
            # checkpoint marks those whose rows it holds, as it reads them; none is looked up again.)
            sure = plans[later[0]] if later else None
            try:
                pending = self._apply_checkpoint(itertools.chain((first,) if first else (), lines), written, sure)
            except _ReadFailed as e:
                self._clear()
                log.error("%s; falling back to the previous generation", e.__cause__)
                continue
            base = gen
            break
        if base < 0 and any(ckpt.generations(self.state_dir)):
            raise ckpt.CheckpointError(f"no usable checkpoint in {self.state_dir}; refusing to start from "
                                       f"a partial journal")
        replayed = skipped = 0
        for gen in journals:
            if gen < max(base, 0):
                continue
            n, s = replay(journal_path(self.state_dir, gen), self._apply_record, self._rows_of, plans.pop(gen, None))
            replayed += n
            skipped += s
        if pending and (any(r is _PENDING for t in self.tables.values() if t.holds_rows for r in t.rows.values())
                        or any(t.held for t in self.tables.values() if isinstance(t, TagTable))):
            raise JournalError(f"{self.state_dir}: a checkpoint row the journal was to write again is not "
                               f"written (a bug in the replay); refusing to start without it")
        last = max([base, *journals, 0])
        log.info("state loaded: checkpoint generation %s, %d journal records replayed (%d overwritten later "
                 "in their file, not decoded), %s", base if base >= 0 else "none", replayed, skipped,
                 ", ".join(f"{len(t)} {t.name}" for t in self.tables.values()))
        return last

    def _load_quietly(self) -> int:
        """`_load` with the cycle collector off, then what it loaded moved out of its sight.

        The load makes millions of objects (rows, their dicts and strings) and no cycles: each
        full collection during it walked all made so far (a 1M-record replay: 19.3 s, 16.1 s
        without). Rows are freed by reference counting, so freezing them costs nothing.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            last = self._load()
            gc.freeze()
            return last
        finally:
            if enabled:
                gc.enable()

    async def open(self, hold_checkpoint: bool = False) -> None:
        """Load the state and open a new journal generation. `hold_checkpoint`: the checkpoint of
        the state as loaded waits for `release_checkpoint` (the caller's start-up done)."""
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, self._load_quietly)
        # Start a fresh generation at once: every start begins from a clean checkpoint and an
        # empty journal, whatever state (torn tail, fallback) the previous run left behind.
        # The checkpoint is written after the start, not before it (at 50,000 instances that took
        # ~6 s of a start's time): from the state as loaded, taken before any change, while the
        # new generation's journal records what follows. Until it is durable nothing is pruned, so
        # a crash meanwhile restarts from what this start loaded plus the new journal.
        self.gen = last + 1
        # The state as loaded: a forked child that holds it and waits (or, where none can be made,
        # lists of the rows, hidden from the collector).
        snapshot: Child | dict[str, Iterator[Row]] | None = fork_child(self._write_tables, self.gen, gated=True)
        if snapshot is None:
            snapshot = self._snapshot()
            gc.freeze()
        self.journal = Journal(self.state_dir, self.gen)
        self.journal.on_durable = self._durable
        self.journal.on_failed = self._failed
        await self.journal.open()
        self._checkpoint_held = asyncio.Event()
        if not hold_checkpoint:
            self._checkpoint_held.set()
        self._first_checkpoint = loop.create_task(self._write_first_checkpoint(self.gen, snapshot))

    def release_checkpoint(self) -> None:
        """Let the checkpoint of the state as loaded be written (`open(hold_checkpoint=True)`).

        Encoding it is ~2-5 s of CPU at 50,000 instances: written while the hosts were reconciled
        (then on a worker thread that took the GIL from the loop), it stretched the start-up's last
        phase about twofold; a forked writer still takes a CPU from the start. Nothing waits for it
        but the pruning of the previous generation."""
        if self._checkpoint_held is not None:
            self._checkpoint_held.set()

    async def _write_first_checkpoint(self, gen: int, snapshot: Child | dict[str, Iterator[Row]]) -> None:
        loop = asyncio.get_running_loop()
        assert self._checkpoint_held is not None
        async with self._ckpt_lock:   # (taken before the wait: a later checkpoint still comes after it)
            await self._checkpoint_held.wait()
            try:
                if isinstance(snapshot, Child):
                    await snapshot.wait()
                else:
                    await self._write_on_thread(gen, snapshot)
            except Exception:
                log.exception("the start-up checkpoint could not be written; the previous state files stay")
                return
            del snapshot
            await loop.run_in_executor(None, self._prune)

    async def started(self) -> None:
        """Return once the checkpoint of the state as loaded is on disk (tests, benches, close)."""
        self.release_checkpoint()
        if self._first_checkpoint is not None:
            await asyncio.shield(self._first_checkpoint)

    def _snapshot(self) -> dict[str, Iterator[Row]]:
        """References to every row: cheap on the loop (~2 ms for 330,000 rows), and a consistent
        state to encode on a thread later however the loop changes the tables meanwhile: rows
        are frozen (frozen dataclasses, frozen maps), so a change replaces a row in the table's
        dict and never alters one this list holds."""
        return {name: t.listing()[1] for name, t in self.tables.items()}

    async def _snapshot_sliced(self) -> dict[str, Iterator[Row]]:
        """The tables as of the rotation, listed over several loop turns (a table at a time).

        Listing takes a reference to every row, and every row's header is a cache miss: 14-17 ms
        for 335,000 rows (50,000 instances) on this box, all in one turn before; now the largest
        table's share (tags: ~6 ms) is the longest turn. Each list is hidden from the cycle
        collector as soon as it is made (`snapshot_listeners`: a young list of 150,000 rows took
        a gen-0 collection 25 ms to walk)."""
        out: dict[str, Iterator[Row]] = {}
        since_turn = 0
        for name, t in self.tables.items():
            n, out[name] = t.listing()
            if n >= HIDE_ROWS:
                for fn in self.snapshot_listeners:
                    fn()
            since_turn += n
            if since_turn >= TURN_ROWS:
                since_turn = 0
                await asyncio.sleep(0)
        return out

    def _write_tables(self, gen: int) -> None:
        """The checkpoint of the tables as they are (in a forked child: as they were at the fork)."""
        ckpt.write_checkpoint(self.state_dir, gen, self._snapshot())

    async def _write_on_thread(self, gen: int, snapshot: dict[str, Iterator[Row]]) -> None:
        """Where this process cannot fork: the encoder on a worker thread shares the GIL with the loop."""
        if not self._fork_refused:
            self._fork_refused = True
            log.warning("checkpoints are written on a thread: this process cannot fork (the loop may stall "
                        "while one is encoded)")
        with _short_gil_slices():
            await asyncio.get_running_loop().run_in_executor(None, ckpt.write_checkpoint, self.state_dir, gen,
                                                             snapshot)

    def _prune(self) -> None:
        """Keep this generation and the one before it (the fallback if this checkpoint is damaged)."""
        for p in self.state_dir.iterdir():
            name, _, g = p.name.partition(".")
            if name in ("checkpoint", "journal") and g.isdigit() and int(g) < self.gen - 1:
                p.unlink(missing_ok=True)
            elif name == "checkpoint" and g.endswith(".tmp"):
                p.unlink(missing_ok=True)

    async def checkpoint(self) -> None:
        """Snapshot the state, switch the journal to a new generation, prune old files."""
        assert self.journal is not None
        self.release_checkpoint()   # (the start-up one first: it holds the lock while held)
        async with self._ckpt_lock:
            t0 = time.perf_counter()
            # The snapshot is exactly the state after the last record of the old journal: in a forked
            # child, the memory at the rotation, read as it was whatever the loop does next.
            self.gen += 1
            self.journal.rotate(self.gen)
            child = fork_child(self._write_tables, self.gen, gated=True)
            if child is not None:
                # Released once the old journal is durable: if it cannot be, its last changes are
                # rolled back, and the child holds them.
                try:
                    await self.journal.sync()
                except BaseException:
                    child.abandon()
                    raise
                await child.wait()
            else:
                # On a thread: from the rotation on (this same loop turn), every table records the
                # earlier value of each key that changes, until it has been listed; the lists are
                # then read as of the rotation (`_as_of`).
                for t in self.tables.values():
                    t._before = {}
                try:
                    snapshot = await self._snapshot_sliced()
                finally:
                    for t in self.tables.values():
                        t._before = None
                await self.journal.sync()
                await self._write_on_thread(self.gen, snapshot)
                del snapshot   # (before the listeners: the collector they run need not see its lists)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._prune)
            self.last_checkpoint_s = time.perf_counter() - t0
            self.last_checkpoint_at = time.time()
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.last_checkpoint_s)
            for fn in self.checkpoint_listeners:
                try:
                    fn()
                except Exception:
                    log.exception("checkpoint listener failed")

    async def close(self) -> None:
        await self.started()
        if self.journal is not None:
            await self.journal.close()
            self.journal = None
            log.info("state closed: journal generation %d written out", self.gen)

    def disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.state_dir.iterdir() if p.is_file())


def _as_of(rows: list[R], before: dict[str, R | None]) -> Iterator[R]:
    """A table as it was when its snapshot began, from `rows` (listed later, in table order) and
    `before` (the earlier value of each key changed in between; None: absent then). Runs on the
    writer thread, which owns `before` by then. A changed row keeps its place, so the order after
    a restart is the table's; a row deleted in between comes at the end (the journal deletes it)."""
    if not before:
        yield from rows
        return
    for r in rows:
        k = r.key
        if k in before:
            old = before.pop(k)
            if old is not None:
                yield old
        else:
            yield r
    for old in before.values():
        if old is not None:
            yield old


@contextmanager
def _short_gil_slices() -> Iterator[None]:
    """While a checkpoint is encoded on a worker thread, the loop thread waits for the GIL each
    time it comes back from a system call (a socket read, the poller) until the worker is made to
    let go: after `sys.getswitchinterval()`, 5 ms by default. Many such waits in one loop turn are
    a stall; 1 ms slices bound each wait, at the price of more switches for the worker. (Used
    under the checkpoint lock: one at a time.)"""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, 0.001))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _TxnContext:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._tx = Txn(store)

    def __enter__(self) -> Txn:
        return self._tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self._tx._rollback()
            return
        self._store._commit(self._tx)


def ensure_private_dir(path: Path) -> None:
    """Not listable by others, but traversable: the hypervisor's qemu user opens the image,
    volume and instance files below it by path. The state files themselves are 0600."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o711)
