"""Replay skips records a later record overwrites, and the state is exactly a full replay's.

A real store writes the journal (transactions of one and several operations, puts of new and
existing keys, deletes and re-adds, keys that need JSON escapes); loading it with the skipping
must give the same rows, in the same order in every table, as applying every record."""
from __future__ import annotations

import dataclasses
import gc
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cloudctl.store import replay as replay_module
from cloudctl.store import rowbuild
from cloudctl.store.journal import encode_record, journal_path, read_journal
from cloudctl.store.records import Event, Instance, Lease, NumericId, Tag, encode_row
from cloudctl.store.rowbuild import RowBuilder, maker
from cloudctl.store.store import Store
from cloudctl.store.tagtable import TagTable

KEYS = ["10.0.0.1", "10.0.0.2", 'x",1', 'x",2', 'y"]', 'q"uote', "back\\slash", "sep\x1fkey", "ünï", "tail\\",
        "10.0.0.3", "10.0.0.4", "10.0.0.5"]


def _lease(ip: str, n: int) -> Lease:
    return Lease(ip=ip, zone=f"z{n % 3}", instance_id=f"i-{n:08x}")


async def _write(state: Path, seed: int) -> None:
    """A checkpoint with some rows, then a journal of random changes to them and to new keys."""
    rng = random.Random(seed)
    store = Store(state)
    await store.open()
    with store.txn() as tx:
        for i, k in enumerate(KEYS[:5]):
            tx.put(_lease(k, i))
    await store.sync()
    await store.checkpoint()
    for n in range(400):
        with store.txn() as tx:
            for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
                k = rng.choice(KEYS)
                table = store.table(Lease)
                if k in table.rows and rng.random() < 0.25:
                    tx.delete(table.rows[k])
                else:
                    tx.put(_lease(k, n))
                if rng.random() < 0.2:
                    tx.put(NumericId(resource=f"vm/{k}", kind="vm", num=n))
    await store.sync()
    await store.close()


def _state(store: Store) -> list[tuple[str, list[tuple[str, object]]]]:
    """Every table's rows as (key, row), in the table's order."""
    return [(name, list(t.rows.items())) for name, t in store.tables.items() if t.rows]


def _load(state: Path, skip: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, int]:
    counted: list[int] = []
    real_replay = replay_module.replay

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        n, skipped = real_replay(*a, **kw)
        counted.append(skipped)
        return n, skipped

    with monkeypatch.context() as m:
        if not skip:
            # (no record skipped, and no checkpoint row left undecoded: every row built and applied)
            m.setattr("cloudctl.store.store.overwritten",
                      lambda path, written=None, first=False: bytearray(len(list(read_journal(path)))))
        m.setattr("cloudctl.store.store.replay", counting)
        s = Store(state)
        s._load()
    return s, sum(counted)


@pytest.mark.parametrize("seed", range(6))
async def test_skipping_overwritten_records_leaves_the_state_of_a_full_replay(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    await _write(tmp_path, seed)
    full, none_skipped = _load(tmp_path, skip=False, monkeypatch=monkeypatch)
    fast, skipped = _load(tmp_path, skip=True, monkeypatch=monkeypatch)
    assert none_skipped == 0
    assert skipped > 50   # (most one-put records here are overwritten later)
    assert _state(fast) == _state(full)
    assert fast.digest() == full.digest()


RIDS = [f"i-{i:04x}" for i in range(6)]
TAG_KEYS = ["Name", "env", "team", 'q"k', "b\\s"]


def _tag(rid: str, key: str, n: int, owner: str = "u1") -> Tag:
    return Tag(resource_id=rid, resource_type="instance", owner=owner, tag_key=key, value=f"v{n % 4}")


async def _write_tags(state: Path, seed: int) -> dict[str, dict[str, object]]:
    """A checkpoint of tags (one resource's of two owners: a mixed entry), then a journal that
    re-puts, deletes, adds and re-adds them, some in records of several operations. Returns the
    writer's key/value index, kept in step with every change."""
    rng = random.Random(seed)
    store = Store(state)
    await store.open()
    with store.txn() as tx:
        for rid in RIDS[:4]:
            for k in TAG_KEYS[:3]:
                tx.put(_tag(rid, k, 0, owner="u2" if (rid, k) == (RIDS[3], "team") else "u1"))
    await store.sync()
    await store.checkpoint()
    # (Short journals too: checkpoint tags not written again, before and after held ones; a held
    # place whose only write is the last.)
    for n in range((12, 30, 300)[seed % 3]):
        with store.txn() as tx:
            for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
                rid, k = rng.choice(RIDS), rng.choice(TAG_KEYS)
                have = store.table(Tag).get(f"{rid}\x1f{k}")
                if have is not None and rng.random() < 0.25:
                    tx.delete(have)
                else:
                    tx.put(_tag(rid, k, n, owner=rng.choice(["u1", "u1", "u1", "u2"])))
    await store.sync()
    table = store.tables["tags"]
    assert isinstance(table, TagTable)
    kept = {k: {v: list(ids) if type(ids) is list else ids for v, ids in vals.items()}
            for k, vals in table.kv.ids.items()}
    await store.close()
    return kept


@pytest.mark.parametrize("seed", range(12))
async def test_held_tag_places_leave_the_tags_of_a_full_replay(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint's tags that the journal writes again are held as places, not decoded: the
    resources, their tags' order, the packed entries and the key/value index (built at the end of
    the load) are a full replay's, and the index is the writer's."""
    kept = await _write_tags(tmp_path, seed)
    held: list[str] = []
    real_hold = TagTable.hold
    monkeypatch.setattr(TagTable, "hold", lambda self, rid, k: (held.append(k), real_hold(self, rid, k))[1])
    full, _ = _load(tmp_path, skip=False, monkeypatch=monkeypatch)
    assert not held
    fast, _ = _load(tmp_path, skip=True, monkeypatch=monkeypatch)
    assert held   # (the journal rewrote some of the checkpoint's tags)
    ft, qt = full.tables["tags"], fast.tables["tags"]
    assert isinstance(ft, TagTable) and isinstance(qt, TagTable)
    assert list(qt.by_rid.items()) == list(ft.by_rid.items())
    assert qt.kv.ids == ft.kv.ids == kept   # (a load builds the index once: as kept in step)
    assert len(qt) == len(ft) and qt.held == 0
    assert _state(fast) == _state(full)
    assert fast.digest() == full.digest()


class _EveryKey:
    """A table that holds every key: the replay's skips are then decided by the records alone."""

    def __contains__(self, key: object) -> bool:
        return True


_EVERY_KEY = _EveryKey()


def test_records_whose_shape_is_not_certain_are_applied(tmp_path: Path) -> None:
    """A record spaced by another writer, and a row holding what looks like a second operation,
    are replayed, not skipped, even when a later record writes the same key."""
    store = Store(tmp_path)
    lease = '{"ip":"a","zone":"z","instance_id":"%s","subnet_id":null}'
    records = [
        '[["p", "leases", "a", ' + lease % "i-spaced" + ']]',                     # not this writer's spacing
        '[["p","leases","a",' + lease % 'i-x\\"],[\\"p\\"' + ']]',                # escaped: a single put
        '[["p","leases","b",' + lease % "i-b" + '],["p","leases","a",' + lease % "i-second" + ']]',
        '[["p","leases","b",' + lease % "i-b2" + ']]',
    ]
    (tmp_path / "journal.00000001").write_bytes(
        b'{"format": "cloudctl-journal", "version": 1, "generation": 1}\n'
        + b"".join(encode_record(r) for r in records))
    flags = replay_module.overwritten(journal_path(tmp_path, 1))
    # The escaped record is a put of "a" overwritten by the third one's first operation... which
    # writes "b", so nothing but the third record is marked: its first put ("b") is overwritten.
    assert list(flags) == [0, 0, replay_module.SKIP, 0]
    applied: list[str] = []
    n, skipped = replay_module.replay(journal_path(tmp_path, 1), applied.append, lambda t: _EVERY_KEY)
    # The third record has two operations: it is applied although its first put is overwritten.
    assert (n, skipped) == (4, 0) and applied == records
    store._load()
    assert store.tables["leases"].rows["a"].instance_id == "i-second"
    assert store.tables["leases"].rows["b"].instance_id == "i-b2"


def test_a_second_operation_after_lists_in_the_first_is_found(tmp_path: Path) -> None:
    """A record whose first row holds lists (an event's data) and that has a second operation
    after them is applied, though a later record writes its first key again: the search for a
    second operation goes past the first row's own brackets."""
    store = Store(tmp_path)
    event = '{"id":"e1","time":1.5,"kind":"k","subject":"i-1","message":"%s","code":null,"data":{"hosts":[["a"],"b"]}}'
    lease = '{"ip":"a","zone":"z","instance_id":"i-1","subnet_id":null}'
    records = [
        '[["p","events","e1",' + event % "one" + ']]',
        '[["p","events","e1",' + event % "two" + '],["p","leases","a",' + lease + ']]',
        '[["p","events","e1",' + event % "three" + ']]',
    ]
    (tmp_path / "journal.00000001").write_bytes(
        b'{"format": "cloudctl-journal", "version": 1, "generation": 1}\n'
        + b"".join(encode_record(r) for r in records))
    assert list(replay_module.overwritten(journal_path(tmp_path, 1))) == [replay_module.SKIP] * 2 + [0]
    applied: list[str] = []
    n, skipped = replay_module.replay(journal_path(tmp_path, 1), applied.append, lambda t: _EVERY_KEY)
    assert (n, skipped) == (3, 1) and applied == records[1:]
    store._load()
    assert store.tables["leases"].rows["a"].instance_id == "i-1"
    assert store.tables["events"].rows["e1"].message == "three"


def test_records_the_first_pass_proves_present_are_skipped_unread(tmp_path: Path) -> None:
    """A one-operation put whose key's previous write in the file was a put, with nothing between
    that may delete it, is skipped without asking the table: the key is certainly there. The
    file's first write of a key is skipped only if the key is there when the replay starts."""
    lease = '{"ip":"a","zone":"z","instance_id":"%s","subnet_id":null}'
    records = ['[["p","leases","a",' + lease % f"i-{n}" + ']]' for n in range(3)]
    (tmp_path / "journal.00000001").write_bytes(
        b'{"format": "cloudctl-journal", "version": 1, "generation": 1}\n'
        + b"".join(encode_record(r) for r in records))
    asked: list[str] = []
    applied: list[str] = []
    n, skipped = replay_module.replay(journal_path(tmp_path, 1), applied.append,
                                      lambda t: (asked.append(t), None)[1])   # (no table: nothing there)
    assert (n, skipped) == (3, 1) and applied == [records[0], records[2]]
    assert asked == ["leases"]   # (once, for the first record: not there when the replay starts)
    applied.clear()
    n, skipped = replay_module.replay(journal_path(tmp_path, 1), applied.append, lambda t: _EVERY_KEY)
    assert (n, skipped) == (3, 2) and applied == [records[2]]


LEASE_KEYS = ["a", "b", "a/b", "ünï", 'q"k', "back\\slash", "sep\x1fkey", "tail\\", "c"]


def _spelled(key: str, rng: random.Random) -> str:
    """The key as a JSON string, spelled one of the ways JSON allows (escapes or not)."""
    if rng.random() < 0.5:
        return json.dumps(key)   # (this writer's)
    out = []
    for ch in key:
        if ch in '"\\' or ord(ch) < 0x20 or rng.random() < 0.15:
            out.append(rng.choice(["\\u%04x", "\\u%04X"]) % ord(ch) if ch not in '"\\/' or rng.random() < 0.5
                       else "\\" + ch)
        elif ord(ch) > 0x7e and rng.random() < 0.5:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _check_skips(records: list[str], applied: list[str], keys: set[str]) -> None:
    """Every record of `records` not in `applied` (each record is unique: the applied ones are found
    in order) is a put of one operation whose key is in `keys` when it comes: `keys` is changed as a
    replay of every record changes the table's keys."""
    left = iter(applied)
    want = next(left, None)
    for record in records:
        ops = json.loads(record)
        if record == want:
            want = next(left, None)
        else:
            assert len(ops) == 1 and ops[0][0] == "p" and ops[0][2] in keys, record
        for op in ops:
            (keys.add if op[0] == "p" else keys.discard)(op[2])
    assert want is None


def _skips_are_safe(path: Path, keys: set[str]) -> int:
    """Replay `path` onto a model of the leases' keys (`keys`, changed as a full replay changes
    them); check the records it skipped (`_check_skips`). Returns how many were skipped."""
    records = list(read_journal(path))
    applied: list[str] = []

    def apply(payload: str) -> None:
        applied.append(payload)
        for op in json.loads(payload):
            (live.add if op[0] == "p" else live.discard)(op[2])

    live = set(keys)
    n, skipped = replay_module.replay(path, apply, lambda t: live if t == "leases" else None)
    assert n == len(records) and len(applied) == n - skipped
    _check_skips(records, applied, keys)
    assert live == keys
    return skipped


@pytest.mark.parametrize("seed", range(20))
async def test_keys_written_every_way_leave_the_state_of_a_full_replay(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals not of this writer's making: each key spelled with and without escapes, deletes as
    first and as later operations, records of several operations, records spaced otherwise, a
    checkpoint holding some of the keys and two journal files. A record is skipped only when its
    key is there when it comes (a replay's skips checked against a model of the keys), and the
    loaded rows are, in order, those of a replay of every record."""
    rng = random.Random(seed)
    store = Store(tmp_path)
    await store.open()
    with store.txn() as tx:
        for i, k in enumerate(LEASE_KEYS):
            if rng.random() < 0.5:
                tx.put(_lease(k, i))
    await store.sync()
    keys = set(store.table(Lease).rows)
    at_checkpoint = set(keys)
    await store.checkpoint()
    await store.close()
    sure = skipped = 0
    deletes = rng.choice([0.05, 0.15, 0.35])
    for gen in (2, 3):   # (the checkpoint's generation is 2)
        records = []
        for n in range(400):
            ops = []
            for _ in range(1 if rng.random() < 0.85 else rng.randint(2, 3)):
                k = rng.choice(LEASE_KEYS)
                sep = ", " if rng.random() < 0.02 else ","
                if rng.random() < deletes:
                    ops.append(f'["d"{sep}"leases"{sep}{_spelled(k, rng)}]')
                else:
                    ops.append(f'["p"{sep}"leases"{sep}{_spelled(k, rng)}{sep}{encode_row(_lease(k, gen * 1000 + n))}]')
            records.append("[" + ",".join(ops) + "]")
        path = journal_path(tmp_path, gen)
        path.write_bytes(b'{"format": "cloudctl-journal", "version": 1, "generation": %d}\n' % gen
                         + b"".join(encode_record(r) for r in records))
        sure += replay_module.overwritten(path).count(replay_module.SURE)
        skipped += _skips_are_safe(path, keys)
    assert sure > 5 and skipped > sure
    full, _ = _load(tmp_path, skip=False, monkeypatch=monkeypatch)
    applied: dict[str, list[str]] = {}
    real_replay = replay_module.replay

    def recording(path: Path, apply, *a):  # type: ignore[no-untyped-def]
        got = applied.setdefault(path.name, [])
        return real_replay(path, lambda p: (got.append(p), apply(p))[1], *a)

    monkeypatch.setattr(replay_module, "replay", recording)   # (the store's: its checkpoint marks some)
    fast, skipped_in_load = _load(tmp_path, skip=True, monkeypatch=monkeypatch)
    assert skipped_in_load == skipped
    for gen in (2, 3):
        path = journal_path(tmp_path, gen)
        _check_skips(list(read_journal(path)), applied[path.name], at_checkpoint)
    assert _state(fast) == _state(full)
    assert fast.digest() == full.digest()


async def test_only_the_first_journal_after_the_checkpoint_takes_its_rows_as_there(tmp_path: Path) -> None:
    """The checkpoint's rows are there when the first journal after it starts, not when a later one
    does: a key the first deletes is put again by the later one's first record (applied, not
    skipped), so it comes before a key put after it, as in a replay of every record. A record the
    checkpoint's row is there for is skipped only if a later one writes the key again."""
    store = Store(tmp_path)
    await store.open()
    with store.txn() as tx:
        tx.put(_lease("a", 0))
        tx.put(_lease("c", 0))
    await store.sync()
    await store.checkpoint()   # (generation 2)
    await store.close()

    def put(k: str, n: int) -> str:
        return '[["p","leases",%s,%s]]' % (json.dumps(k), encode_row(_lease(k, n)))

    # (c: the first journal's only write of it, its first and its last: applied.)
    journals = {2: [put("c", 5), '[["d","leases","a"]]'], 3: [put("a", 1), put("b", 2), put("a", 3)]}
    for gen, records in journals.items():
        journal_path(tmp_path, gen).write_bytes(
            b'{"format": "cloudctl-journal", "version": 1, "generation": %d}\n' % gen
            + b"".join(encode_record(r) for r in records))
    loaded = Store(tmp_path)
    loaded._load()
    assert list(loaded.table(Lease).rows) == ["c", "a", "b"]
    assert loaded.table(Lease).rows["a"].instance_id == _lease("a", 3).instance_id
    assert loaded.table(Lease).rows["c"].instance_id == _lease("c", 5).instance_id


def test_rows_built_by_position_equal_rows_built_by_name() -> None:
    """A load passes the values by position when the keys are the fields in order (as the
    writer encodes them); any other order, and unknown keys, give the same row as `from_dict`."""
    _row_from = RowBuilder().build
    rows = [_lease("10.1.2.3", 7), NumericId(resource="vm/i-1", kind="vm", num=3),
            Event(id="0001", time=1.5, kind="instance.state", subject="i-1", message="pending -> running",
                  data={"owner": "1", "hosts": ["a", "b"]}),
            Instance(id="i-1", owner="1", reservation_id="r-1", image_id="ami-1", instance_type="m1.small",
                     host="h1", zone="z1", state="running", launch_time=2.5, group_ids=("sg-1", "sg-2"),
                     ephemeral=("ephemeral0=/dev/sdb",), ever_ran=True)]
    for row in rows:
        d = json.loads(encode_row(row))
        built = _row_from(type(row), d)
        assert built == row == type(row).from_dict(d)
        assert type(built) is type(row) and encode_row(built) == encode_row(row)
        make = maker(type(row), tuple(d))
        made = make(list(d.values()))   # (the loads' maker, not the constructor)
        assert made == row and type(made) is type(row) and encode_row(made) == encode_row(row)
        # (made without __init__: the sequences are tuples as __post_init__ makes them)
        assert all(type(v) is not list for v in (getattr(built, f) for f in built.__slots__))
        backwards = dict(reversed(list(d.items())))
        assert _row_from(type(row), backwards) == row
        assert _row_from(type(row), {**d, "from_a_newer_writer": 1}) == row
        assert encode_row(_row_from(type(row), backwards)) == encode_row(row)
        assert type(_row_from(type(row), backwards)) is type(row)
        # (An older writer's row, without its last field; and as many keys as fields, one unknown.)
        if dataclasses.fields(type(row))[-1].default is not dataclasses.MISSING:
            older = dict(list(d.items())[:-1])
            assert _row_from(type(row), older) == type(row).from_dict(older)
            odd = {**older, "from_a_newer_writer": 1}
            assert len(odd) == len(d) and _row_from(type(row), odd) == type(row).from_dict(odd)


def test_a_row_of_one_field_is_read_by_position() -> None:
    assert rowbuild._values_of(("a",))({"a": "x"}) == ("x",)
    assert rowbuild._values_of(("a", "b"))({"b": 2, "a": 1}) == (1, 2)
    with pytest.raises(KeyError):
        rowbuild._values_of(("a", "b"))({"a": 1, "c": 2})


async def test_a_load_shares_the_strings_that_repeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded JSON makes a new string for every value; the loaded rows hold one object for each
    repeated value (a zone), as the controller that wrote them did."""
    monkeypatch.setattr("cloudctl.store.rowbuild.SHARE_DISTINCT", 20)
    store = Store(tmp_path)
    await store.open()
    for part in range(2):   # half in the checkpoint, half in the journal
        with store.txn() as tx:
            for n in range(50):
                tx.put(Lease(ip=f"10.0.{part}.{n}", zone="zone-a" if n % 2 else "zone-b", instance_id=f"i-{n:08x}"))
        await store.sync()
        if part == 0:
            await store.checkpoint()
    await store.close()
    loaded = Store(tmp_path)
    loaded._load()
    leases = list(loaded.table(Lease).values())
    assert [(r.ip, r.zone, r.instance_id) for r in leases] == \
        [(r.ip, r.zone, r.instance_id) for r in store.table(Lease).values()]
    assert len({id(r.zone) for r in leases}) == 2
    assert len({id(r.ip) for r in leases}) == 100
    # An id naming another row is one object per id however many there are (Lease.repeated).
    assert len({id(r.instance_id) for r in leases}) == 50


KILL_DURING = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from cloudctl.store import replay, store
where, after = sys.argv[3], int(sys.argv[4])
seen = [0]

def count_then_die(real):
    def wrapped(*a, **kw):
        seen[0] += 1
        if seen[0] > after:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **kw)
    return wrapped

if where == "first-pass":   # while the journal's records are being read and marked
    real_read = replay.read_payloads

    def read_then_die(path, checked=True):
        for payload in real_read(path, checked):
            if checked:   # (the first pass: the second reads them unchecked)
                count_then_die(lambda: None)()
            yield payload
    replay.read_payloads = read_then_die
else:                       # while they are being applied
    store.Store._apply_record = count_then_die(store.Store._apply_record)
store.Store(Path(sys.argv[2]))._load()
"""


@pytest.mark.parametrize("where", ["first-pass", "apply"])
async def test_a_kill_during_the_load_loses_nothing(tmp_path: Path, where: str) -> None:
    """SIGKILL in either pass of a load leaves the state files as they were: the next load
    gives the same state."""
    await _write(tmp_path, 3)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    expected = Store(tmp_path)
    expected._load()
    repo = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", KILL_DURING, repo, str(tmp_path), where, "150"], check=False)
    assert done.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    again = Store(tmp_path)
    again._load()
    assert _state(again) == _state(expected)


async def test_a_load_leaves_no_cycles_for_the_collector(tmp_path: Path) -> None:
    """The load runs with the collector off and freezes what it made (`Store._load_quietly`): a cycle
    left behind by the load's own helpers (its makers of rows, their dicts of shared values) would be
    kept for the process's life, not collected."""
    await _write(tmp_path, 3)
    loaded = Store(tmp_path)
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        loaded._load()
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
    assert loaded.table(Lease).rows
