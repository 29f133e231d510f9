"""Checkpoints written while the loop keeps changing the state, and the collector policy applied
after them (issue 14: a checkpoint must not stall the loop, so it is written from a snapshot by a
forked child, or a worker thread where the process cannot fork, while requests go on)."""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudctl.core import gcpolicy
from cloudctl.store import checkpoint as ckpt
from cloudctl.store.records import KeyPair, Tag
from cloudctl.store.store import Store


def key(i: int, name: str = "") -> KeyPair:
    return KeyPair(id=f"key-{i:017x}", owner="1", name=name or f"k{i}", fingerprint="f", public_key="p" * 200,
                   key_type="rsa", created=1.0)


def tag(i: int, value: str) -> Tag:
    return Tag(resource_id=f"key-{i:017x}", resource_type="key-pair", owner="1", tag_key="Name", value=value)


def state(s: Store) -> dict[str, dict[str, dict]]:
    return {name: {k: r.to_dict() for k, r in t.rows.items()} for name, t in s.tables.items() if t.rows}


def on_disk(path: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for table, k, d in ckpt.read_checkpoint(path):
        out.setdefault(table, {})[k] = d
    return out


@pytest.fixture
def policy() -> Iterator[None]:
    """The collector policy for one test, and the process's collector as it was afterwards."""
    yield
    if gcpolicy._after_collection in gc.callbacks:
        gc.callbacks.remove(gcpolicy._after_collection)
    gc.unfreeze()


@pytest.fixture(params=["child", "thread"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who writes the checkpoint: a forked child, or a worker thread where fork() fails."""
    if request.param == "thread":
        def no_fork() -> int:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        monkeypatch.setattr(os, "fork", no_fork)
    return str(request.param)


async def test_checkpoint_during_changes_holds_the_state_of_its_start(tmp_path: Path, writer: str) -> None:
    s = Store(tmp_path)
    await s.open()
    n = 3000
    with s.txn() as tx:
        for i in range(n):
            tx.put(key(i))
            tx.put(tag(i, "before"))
    await s.sync()
    gen = s.gen
    task = asyncio.create_task(s.checkpoint())
    while s.gen == gen:   # the snapshot is taken with the journal's rotation, before the first wait
        await asyncio.sleep(0)
    expected = state(s)
    changed = 0
    i = 0
    while not task.done():   # the loop goes on changing rows while the writer encodes them
        with s.txn() as tx:
            old = s.table(KeyPair).get(f"key-{i % n:017x}")
            if old is not None:
                tx.put(dataclasses.replace(old, name=f"changed-{changed}"))
            tx.put(tag(i % n, f"after-{changed}"))
            gone = s.table(KeyPair).get(f"key-{(i + 1) % n:017x}")
            if gone is not None:
                tx.delete(gone)
            tx.put(key(n + i))
        changed += 1
        i += 2
        await asyncio.sleep(0)
    await task
    await s.sync()
    assert changed > 0, "the checkpoint finished before the loop could change anything"
    assert expected != state(s)
    assert on_disk(ckpt.checkpoint_path(tmp_path, s.gen)) == expected
    final = state(s)
    await s.close()
    s2 = Store(tmp_path)   # the checkpoint plus the journal written meanwhile: the state at the end
    await s2.open()
    assert state(s2) == final
    await s2.close()


async def test_state_is_frozen_after_each_checkpoint(tmp_path: Path, policy: None) -> None:
    s = Store(tmp_path)
    await s.open()
    gcpolicy.install(s)
    with s.txn() as tx:
        for i in range(500):
            tx.put(key(i))
    await s.sync()
    gc.unfreeze()
    await s.checkpoint()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    with s.txn() as tx:
        for i in range(500, 1500):
            tx.put(tag(i, "x" * (i % 7)))
    await s.sync()
    await s.checkpoint()
    assert gc.get_freeze_count() > frozen
    assert sys.getswitchinterval() == pytest.approx(0.005)   # the checkpoint's short GIL slices are over
    await s.close()


async def test_slow_full_collection_freezes_what_it_left(tmp_path: Path, policy: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    await s.open()
    gcpolicy.install(s)
    gcpolicy.install(s)   # once is enough: the callback is not added twice
    assert gc.callbacks.count(gcpolicy._after_collection) == 1
    gc.unfreeze()
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_S", 10.0)
    gc.collect()
    assert gc.get_freeze_count() == 0   # a quick full collection leaves the objects where they are
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_S", 0.0)
    gc.collect()
    assert gc.get_freeze_count() > 0
    await s.close()


def test_the_young_sweep_empties_a_young_generation_the_counter_never_collects() -> None:
    """Replacing old objects by as many new ones (each host's last poll) leaves the collector's
    young counter where it was while its list grows: the sweep is what collects it."""
    gc.collect()
    last = {h: [[n] for n in range(250)] for h in range(40)}
    gc.collect()   # (now old, as a running controller's last polls are)
    try:
        for h in last:
            last[h] = [[n] for n in range(250)]
        assert len(gc.get_objects(0)) > 5_000   # 10,000 new, though the counter is under 700
        asyncio.run(gcpolicy.sweep_young())
        assert len(gc.get_objects(0)) < 1_000
    finally:
        last.clear()
