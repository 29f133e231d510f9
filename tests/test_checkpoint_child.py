"""Checkpoints written by a forked copy of the process (`store/forked.py`): the encoder never holds
the loop's GIL. What the operator sees: the files, the errors in the log, and no writer left behind."""
from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudctl.store import checkpoint as ckpt
from cloudctl.store import forked
from cloudctl.store import store as store_mod
from cloudctl.store.forked import ChildFailed
from cloudctl.store.journal import JournalError
from cloudctl.store.records import KeyPair
from cloudctl.store.store import Store

REPO = Path(__file__).resolve().parent.parent


def key(i: int) -> KeyPair:
    return KeyPair(id=f"key-{i:017x}", owner="1", name=f"k{i}", fingerprint="f", public_key="p" * 50,
                   key_type="rsa", created=1.0)


async def filled(path: Path, n: int = 200) -> Store:
    s = Store(path)
    await s.open()
    with s.txn() as tx:
        for i in range(n):
            tx.put(key(i))
    await s.sync()
    return s


async def reloaded(path: Path) -> dict[str, KeyPair]:
    """The key pairs a start from the files finds (the store opened, read and closed)."""
    again = Store(path)
    await again.open()
    rows = dict(again.table(KeyPair).rows)
    await again.close()
    return rows


def writer_pids(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Every checkpoint writer appends its process id to `path`, then writes as before."""
    real = ckpt.write_checkpoint

    def recorded(*args: object) -> None:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        real(*args)   # type: ignore[arg-type]

    monkeypatch.setattr(ckpt, "write_checkpoint", recorded)


async def test_checkpoints_are_written_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path.parent / f"{tmp_path.name}-writers"
    writer_pids(monkeypatch, pids)
    s = await filled(tmp_path)
    await s.started()   # the start-up checkpoint
    await s.checkpoint()
    names = {r.name for r in s.table(KeyPair).rows.values()}
    await s.close()
    writers = [int(p) for p in pids.read_text().split()]
    assert len(writers) == 2 and os.getpid() not in writers
    assert {r.name for r in (await reloaded(tmp_path)).values()} == names


async def test_a_failed_writer_reports_why_and_the_state_stays(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    s = await filled(tmp_path)
    await s.started()
    real = ckpt.write_checkpoint

    def failing(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_checkpoint", failing)
    with pytest.raises(ChildFailed, match="No space left on device"):
        await s.checkpoint()
    assert not ckpt.checkpoint_path(tmp_path, s.gen).exists()
    with s.txn() as tx:   # the store goes on, and the next checkpoint works
        tx.put(key(999))
    await s.sync()
    monkeypatch.setattr(ckpt, "write_checkpoint", real)
    await s.checkpoint()
    assert ckpt.checkpoint_path(tmp_path, s.gen).exists()
    await s.close()
    assert len(await reloaded(tmp_path)) == 201


async def test_a_killed_writer_loses_nothing_and_its_file_goes(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s = await filled(tmp_path)
    await s.started()
    real = ckpt.write_checkpoint

    def killed(state_dir: Path, gen: int, tables: object) -> None:   # half a file, then SIGKILL
        ckpt.checkpoint_path(state_dir, gen).with_suffix(".tmp").write_bytes(b'{"format": "cloudctl-checkpoint"')
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(ckpt, "write_checkpoint", killed)
    with pytest.raises(ChildFailed, match=f"signal {int(signal.SIGKILL)}"):
        await s.checkpoint()
    assert list(tmp_path.glob("*.tmp"))
    with s.txn() as tx:
        tx.put(key(500))
    await s.sync()
    await s.close()
    again = Store(tmp_path)   # the previous checkpoint and both journals: everything acknowledged
    monkeypatch.setattr(ckpt, "write_checkpoint", real)
    await again.open()
    assert len(again.table(KeyPair).rows) == 201
    await again.started()   # its checkpoint's prune removes the torn file
    assert not list(tmp_path.glob("*.tmp"))
    await again.close()


async def test_without_fork_a_thread_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    def no_fork() -> int:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    pids = tmp_path.parent / f"{tmp_path.name}-writers"
    writer_pids(monkeypatch, pids)
    s = await filled(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cloudctl.store"):
        await s.started()
        await s.checkpoint()
        await s.checkpoint()
    await s.close()
    assert [int(p) for p in pids.read_text().split()] == [os.getpid()] * 3
    said = [r.getMessage() for r in caplog.records if "cannot fork" in r.getMessage()]
    assert len(said) == 1   # said once, not at every checkpoint
    assert len(await reloaded(tmp_path)) == 200


WRITER = r'''
import asyncio, os, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from cloudctl.store import checkpoint as ckpt
from cloudctl.store.store import Store

def slow(*args):   # the checkpoint's writer: says its pid, then takes its time
    print(os.getpid(), flush=True)
    time.sleep(120)

async def main(mode):
    s = Store(Path(sys.argv[2]))
    await s.open()
    await s.started()
    ckpt.write_checkpoint = slow
    loop = asyncio.get_running_loop()
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.append(1))
    loop.create_task(s.checkpoint())
    if mode == "hold":
        await asyncio.sleep(120)
        return
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.sleep(2)
    print(len(got), flush=True)   # SIGUSR1s the parent's loop handled

asyncio.run(main(sys.argv[3]))
'''

def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"   # (exited; its reaper's to collect)
    except FileNotFoundError:
        return True


def test_the_writer_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), str(tmp_path / "state"), "hold"],
                              stdout=subprocess.PIPE, text=True)
    writer = 0
    try:
        assert parent.stdout is not None
        writer = int(parent.stdout.readline())
        assert writer != parent.pid and not _gone(writer)
        parent.kill()   # as kill -9 would: no chance to clean up
        parent.wait(30)
        deadline = time.monotonic() + 30   # (a guard against hanging, not a timing)
        while not _gone(writer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(writer)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if writer and not _gone(writer):
            os.kill(writer, signal.SIGKILL)

def test_a_signal_to_the_process_group_is_handled_once_by_the_parent(tmp_path: Path) -> None:
    """The writer shares the parent's signal wake-up descriptor: a signal it handled would reach the
    parent's loop a second time. It blocks them: signals are the parent's to handle."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), str(tmp_path / "state"), "signal"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    writer = 0
    try:
        assert proc.stdout is not None
        writer = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGUSR1)   # as a terminal or a supervisor signals the group
        assert proc.stdout.readline().strip() == "1"
        assert not _gone(writer)   # (SIGUSR1's default would have ended it)
    finally:
        proc.kill()
        proc.wait(30)
        if writer and not _gone(writer):
            os.kill(writer, signal.SIGKILL)


@pytest.mark.parametrize("fork", [True, False], ids=["child", "thread"])
async def test_the_start_up_checkpoint_holds_the_state_as_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 fork: bool) -> None:
    """Held until the start is done, it is still the state the start loaded (the journal after it
    holds what came since), however much changed meanwhile."""
    s = await filled(tmp_path, 50)
    await s.close()
    if not fork:
        def no_fork() -> int:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        monkeypatch.setattr(os, "fork", no_fork)
    s = Store(tmp_path)
    await s.open(hold_checkpoint=True)
    with s.txn() as tx:   # changes before the release: a rename, a delete, a new row
        tx.put(KeyPair(**{**s.table(KeyPair).get(key(0).id).to_dict(), "name": "renamed"}))
        tx.delete(s.table(KeyPair).get(key(1).id))
        tx.put(key(77))
    await s.sync()
    s.release_checkpoint()
    await s.started()
    written = {k: d["name"] for t, k, d in ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path, s.gen))
               if t == KeyPair.table}
    assert written == {key(i).id: f"k{i}" for i in range(50)}
    await s.close()
    names = {r.name for r in (await reloaded(tmp_path)).values()}
    assert "renamed" in names and "k1" not in names and "k77" in names and len(names) == 50


async def test_a_held_writer_whose_store_is_dropped_ends_unwritten(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A store opened and dropped without close (a failed start) leaves no writer waiting behind."""
    made: list[int] = []
    real = store_mod.fork_child

    def recorded(*args: object, **kw: bool) -> object:
        child = real(*args, **kw)   # type: ignore[arg-type]
        if child is not None:
            made.append(child.pid)
        return child

    monkeypatch.setattr(store_mod, "fork_child", recorded)
    s = await filled(tmp_path / "a", 10)
    await s.close()
    made.clear()
    dropped = Store(tmp_path / "a")
    await dropped.open(hold_checkpoint=True)
    assert len(made) == 1 and not _gone(made[0])
    assert dropped._first_checkpoint is not None and dropped.journal is not None
    dropped._first_checkpoint.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped._first_checkpoint
    await dropped.journal.close()
    del dropped
    gc.collect()
    deadline = time.monotonic() + 30   # (a guard against hanging, not a timing)
    while not _gone(made[0]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _gone(made[0])
    assert not ckpt.checkpoint_path(tmp_path / "a", 2).exists()   # it wrote nothing
    other = await filled(tmp_path / "b", 1)   # the next writer's fork reaps it
    await other.close()
    assert not Path(f"/proc/{made[0]}").exists()


async def test_the_writer_runs_at_a_lower_priority_than_the_controller(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine the loop gets the CPU before the checkpoint's encoding does."""
    seen = tmp_path.parent / f"{tmp_path.name}-nice"
    real = ckpt.write_checkpoint

    def recorded(*args: object) -> None:
        seen.write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
        real(*args)   # type: ignore[arg-type]

    monkeypatch.setattr(ckpt, "write_checkpoint", recorded)
    s = await filled(tmp_path, 10)
    await s.checkpoint()
    await s.close()
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert int(seen.read_text()) == min(mine + forked.NICE, 19)


async def test_a_checkpoint_whose_journal_cannot_be_written_writes_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The child holds the state at the rotation, changes the old journal had not yet made durable
    included: if they cannot be written they are rolled back, and so must the checkpoint be."""
    s = await filled(tmp_path, 5)
    await s.started()
    with s.txn() as tx:   # appended, not yet durable when the checkpoint rotates
        tx.put(key(900))
    real = os.fdatasync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    with pytest.raises(JournalError):
        await s.checkpoint()
    monkeypatch.setattr(os, "fdatasync", real)
    assert key(900).id not in s.table(KeyPair).rows   # rolled back in memory
    await asyncio.sleep(0.5)   # (time for a writer, had one been let go, to put its file in place)
    assert ckpt.generations(tmp_path) == [1]   # the start-up one only: no checkpoint holds the change
    await s.close()
    rows = await reloaded(tmp_path)
    assert key(900).id not in rows and len(rows) == 5
