"""A committed transaction's journal record is made on the journal's writer thread, just before its
write (`Journal.append_changes`): the same bytes as made on the loop, in the same order, and a record
that cannot be made fails its write whole, as a refused write does."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudctl.store import records
from cloudctl.store import store as store_module
from cloudctl.store.journal import JournalError, encode_record, journal_path, read_journal
from cloudctl.store.records import User, encode_changes
from cloudctl.store.store import Store


def user(name: str, created: float = 1.0) -> User:
    return User(name=name, access_key=f"AK{name}", secret_key="s", account_id="123456789012", created=created)


async def test_the_record_is_made_on_the_writer_thread_with_the_loops_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    made: list[str] = []

    def encode(ops: Any) -> str:
        threads.append(threading.get_ident())
        made.append(encode_changes(ops))
        return made[-1]
    monkeypatch.setattr(store_module, "encode_changes", encode)
    s = Store(tmp_path)
    await s.open()
    loop_thread = threading.get_ident()
    ops = []
    for i in range(5):   # (two transactions before one sync: one write, both records in order)
        with s.txn() as tx:
            tx.put(user(f"u{i}", created=1.5 + i))
            if i:
                tx.delete(s.table(User).get(f"u{i - 1}"))
        ops.append(list(tx._ops))
        if i % 2:
            await s.sync()
    await s.sync()
    assert threads and loop_thread not in threads
    assert made == [encode_changes(o) for o in ops]
    await s.close()
    text = journal_path(tmp_path, s.gen).read_bytes()
    assert text.split(b"\n", 1)[1] == b"".join(encode_record(m) for m in made)
    assert list(read_journal(journal_path(tmp_path, s.gen))) == made
    s2 = Store(tmp_path)
    await s2.open()
    assert s2.digest() == s.digest()
    await s2.close()


async def test_a_record_that_cannot_be_made_fails_its_write_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change is undone in memory (not left applied without a record, as when it was made at
    commit), its waiters and those of the records in the same write fail, nothing of that write
    reaches the file, and the next change goes through."""
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        tx.put(user("a"))
    await s.sync()
    real = records._ROW_ENCODERS.get(User) or records._row_encoder(User)

    def broken(row: Any) -> str:
        if row.name == "bad":
            raise TypeError("Object of type X is not JSON serializable")
        return real(row)
    monkeypatch.setitem(records._ROW_ENCODERS, User, broken)
    before = journal_path(tmp_path, s.gen).read_bytes()

    for name in ("b", "bad", "c"):   # (committed before any is written: one write holds the three)
        with s.txn() as tx:
            tx.put(user(name))
    results = await asyncio.gather(s.sync(), s.sync(), return_exceptions=True)
    assert [type(r) for r in results] == [JournalError] * 2
    assert sorted(s.table(User).rows) == ["a"]
    assert journal_path(tmp_path, s.gen).read_bytes() == before
    with s.txn() as tx:
        tx.put(user("d"))
    await s.sync()
    await s.close()
    s2 = Store(tmp_path)
    await s2.open()
    assert sorted(s2.table(User).rows) == ["a", "d"]
    await s2.close()
