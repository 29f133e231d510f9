"""What issue 14's memory and stall work changed in the store: small index groups held as tuples,
values shared between rows, a checkpoint listed over several loop turns as of its rotation, and the
start-up checkpoint written after the start."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.store import checkpoint as ckpt
from cloudctl.store import frozen
from cloudctl.store import store as store_mod
from cloudctl.store.records import Event, Instance, KeyPair, Tag, encode_row
from cloudctl.store.store import MultiIndex, Store


def inst(i: int, **kw: object) -> Instance:
    base: dict[str, object] = dict(id=f"i-{i:017x}", owner=f"{i % 3}", reservation_id="r-1", image_id="ami-1",
                                   instance_type="t3.nano", host="h", zone="z", state="running", launch_time=1.0,
                                   group_ids=["sg-1", "sg-2"])
    return Instance(**(base | kw))   # type: ignore[arg-type]


# -- MultiIndex: whatever a group's form (a row, a tuple, a dict), it answers as a dict would ------
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 3), st.integers(0, 2)), max_size=300)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_multiindex_matches_a_dict_of_dicts(steps: list[tuple[bool, int, int, int]]) -> None:
    ix: MultiIndex[Instance] = MultiIndex(lambda r: r.owner if r.owner != "none" else None)
    table: dict[str, Instance] = {}
    for put, i, owner, version in steps:
        key = f"i-{i:017x}"
        old = table.get(key)
        if old is not None:
            ix.remove(old)
        if put:
            row = inst(i, owner=("a", "b", "c", "none")[owner], host=f"h{version}")
            table[key] = row
            ix.add(row)
        else:
            table.pop(key, None)
        expected: dict[str, dict[str, Instance]] = {}
        for r in table.values():
            if r.owner != "none":
                expected.setdefault(r.owner, {})[r.key] = r
        for owner_key in ("a", "b", "c", "none"):
            got = ix.get(owner_key)
            want = expected.get(owner_key, {})
            assert got == want   # the same rows by key (a changed row moves to its group's end, as before)
            first = ix.first(owner_key)
            assert (first is None) if not want else any(first is r for r in want.values())
        assert sorted(ix.sizes()) == sorted(len(g) for g in expected.values())


def test_groups_past_the_small_size_become_dicts_and_shrink_back() -> None:
    ix: MultiIndex[Instance] = MultiIndex(lambda r: r.owner)
    rows = [inst(i, owner="a") for i in range(MultiIndex.SMALL + 3)]
    for r in rows:
        ix.add(r)
    assert type(ix._groups["a"]) is dict
    for r in rows[:-2]:
        ix.remove(r)
    assert type(ix._groups["a"]) is tuple and list(ix.get("a")) == [r.key for r in rows[-2:]]
    ix.remove(rows[-2])
    assert ix._groups["a"] is rows[-1]


# -- shared values: equal rows share their repeated values, and encode exactly as before -----------
def test_rows_share_equal_group_tuples_event_maps_and_messages() -> None:
    a, b = inst(1), inst(2, group_ids=("sg-1", "sg-2"))
    assert a.group_ids == ("sg-1", "sg-2") and a.group_ids is b.group_ids
    e1 = Event(id="1", time=1.0, kind="instance.state", subject="i-1", message="pending -> running",
               data={"owner": "1", "host": "h", "state": "running"})
    e2 = Event(id="2", time=2.0, kind="instance.state", subject="i-2", message="pending -> " + "running",
               data={"owner": "1", "host": "h", "state": "running"})
    assert e1.data is e2.data and e1.message is e2.message


def test_sharing_never_changes_what_is_written() -> None:
    """Equal is not enough: 1 == True == 1.0 and maps equal in another key order encode differently."""
    typed = [Event(id=str(i), time=1.0, kind="k", subject="s", message="m", data=d)
             for i, d in enumerate([{"n": 1}, {"n": True}, {"n": 1.0}, {"a": "x", "b": "y"}, {"b": "y", "a": "x"}])]
    for e in typed:
        assert json.loads(encode_row(e))["data"] == dict(e.data)
        assert list(json.loads(encode_row(e))["data"]) == list(e.data)
    assert [json.dumps(dict(e.data)) for e in typed] == ['{"n": 1}', '{"n": true}', '{"n": 1.0}',
                                                          '{"a": "x", "b": "y"}', '{"b": "y", "a": "x"}']


def test_shared_values_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen, "SHARED_MAX", 10)
    monkeypatch.setattr(frozen, "_shared", {})
    for i in range(100):
        assert frozen.shared(f"m{i}") == f"m{i}"
    assert len(frozen._shared) <= 10


# -- a checkpoint listed over loop turns holds exactly the state of its rotation -------------------
def test_as_of_reads_a_table_as_it_was() -> None:
    old = {k: inst(k) for k in range(6)}
    now = [old[0], inst(1, state="stopped"), old[3], inst(4, state="stopped"), inst(7), inst(2, state="x")]
    # 1 and 4 changed, 2 deleted then put again, 5 deleted, 7 new since the snapshot began
    before = {old[1].key: old[1], old[4].key: old[4], old[2].key: old[2], old[5].key: old[5], inst(7).key: None}
    got = list(store_mod._as_of(now, before))
    assert got == [old[0], old[1], old[3], old[4], old[2], old[5]]


def keypair(i: int, name: str = "") -> KeyPair:
    return KeyPair(id=f"key-{i:017x}", owner="1", name=name or f"k{i}", fingerprint="f", public_key="p",
                   key_type="rsa", created=1.0)


def tag(i: int, value: str) -> Tag:
    return Tag(resource_id=f"key-{i:017x}", resource_type="key-pair", owner="1", tag_key="Name", value=value)


def rows_of(s: Store) -> dict[str, list[tuple[str, str]]]:
    return {n: [(k, encode_row(r)) for k, r in t.rows.items()] for n, t in s.tables.items() if t.rows}


async def test_a_checkpoint_listed_between_changes_holds_its_rotations_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "TURN_ROWS", 1)   # a loop turn after every table: changes land in between
    monkeypatch.setattr(store_mod, "HIDE_ROWS", 1)
    s = Store(tmp_path)
    await s.open()
    await s.started()   # the start-up checkpoint, written after the start, is done
    n = 200
    with s.txn() as tx:
        for i in range(n):
            tx.put(keypair(i))
            tx.put(tag(i, "before"))
    await s.sync()
    gen = s.gen
    task = asyncio.create_task(s.checkpoint())
    await asyncio.sleep(0)   # the checkpoint's first step: the rotation, the first table listed
    assert s.gen == gen + 1
    expected = rows_of(s)
    rng = random.Random(7)
    changed = 0
    while not task.done():
        with s.txn() as tx:
            i = rng.randrange(n + 50)
            kp = s.table(KeyPair).get(f"key-{i:017x}")
            if kp is not None and rng.random() < 0.3:
                tx.delete(kp)
            elif kp is not None:
                tx.put(dataclasses.replace(kp, name=f"c{changed}"))
            else:
                tx.put(keypair(i))   # new, or put back after a delete
            tx.put(tag(rng.randrange(n), f"after-{changed}"))
        changed += 1
        await asyncio.sleep(0)
    await task
    assert changed > 2, "the checkpoint finished before the loop could change anything"
    on_disk: dict[str, list[tuple[str, str]]] = {}
    for table, k, d in ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path, s.gen)):
        on_disk.setdefault(table, []).append((k, encode_row(s.tables[table].row_type.from_dict(d))))
    assert on_disk == expected   # every row as it was at the rotation, in the table's order
    await s.sync()
    final = {n: sorted(v) for n, v in rows_of(s).items()}
    await s.close()
    s2 = Store(tmp_path)   # that checkpoint plus the journal written meanwhile: the state at the end
    await s2.open()
    assert {n: sorted(v) for n, v in rows_of(s2).items()} == final
    assert all(t._before is None for t in s2.tables.values())
    await s2.close()


async def test_the_start_up_checkpoint_comes_after_the_start_and_a_crash_before_it_loses_nothing(
        tmp_path: Path) -> None:
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        tx.put(keypair(1))
    await s.sync()
    await s.close()
    first = Store(tmp_path)
    await first.open()   # the state as loaded is checkpointed in the background...
    with first.txn() as tx:   # ...while changes go to the new generation's journal
        tx.put(keypair(2))
        tx.delete(first.table(KeyPair).get(keypair(1).key))
    await first.sync()
    await first.started()
    assert [k for _, k, _ in ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path, first.gen))] == [keypair(1).key]
    await first.close()
    # A crash before that checkpoint is durable: its file is missing, the older files were kept.
    ckpt.checkpoint_path(tmp_path, first.gen).unlink()
    again = Store(tmp_path)
    await again.open()
    assert list(again.table(KeyPair).rows) == [keypair(2).key]
    await again.close()


async def test_open_does_not_wait_for_the_start_up_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        tx.put(keypair(1))
    await s.sync()
    await s.close()
    go = tmp_path / "release"   # (a file: the writer is a forked child)
    real = ckpt.write_checkpoint

    def held(*args: object) -> None:   # the writer waits until the test lets it go
        deadline = time.monotonic() + 60
        while not go.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        real(*args)   # type: ignore[arg-type]

    monkeypatch.setattr(ckpt, "write_checkpoint", held)
    s2 = Store(tmp_path)
    await asyncio.wait_for(s2.open(), 30)   # (a guard against hanging, not a timing)
    with s2.txn() as tx:   # served while the checkpoint is being written
        tx.put(keypair(2))
    await s2.sync()
    assert not ckpt.checkpoint_path(tmp_path, s2.gen).exists()
    go.touch()
    await s2.started()
    assert ckpt.checkpoint_path(tmp_path, s2.gen).exists()
    await s2.close()
