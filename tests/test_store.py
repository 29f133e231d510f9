"""The store on its own: transactions, group commit, journal damage, checkpoint fallback."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import zlib
from pathlib import Path

import pytest

from cloudctl.store import checkpoint as ckpt
from cloudctl.store import journal as journal_module
from cloudctl.store.journal import JournalError, journal_path
from cloudctl.store.records import ROW_TYPES, KeyPair, Reservation, Subscription, User
from cloudctl.store.store import Store


def user(name: str) -> User:
    return User(name=name, access_key=f"AK{name}", secret_key="s", account_id="123456789012", created=1.0)


async def open_store(d: Path) -> Store:
    s = Store(d)
    await s.open()
    return s


async def test_changes_survive_reopen(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(user("a"))
        tx.put(user("b"))
    with s.txn() as tx:
        tx.delete(s.table(User).get("a"))
    await s.sync()
    await s.close()
    s2 = await open_store(tmp_path)
    assert sorted(s2.table(User).rows) == ["b"]


async def test_failed_transaction_leaves_state_untouched(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(user("a"))
    await s.sync()
    before = s.journal.records_in_gen
    with pytest.raises(RuntimeError):
        with s.txn() as tx:
            tx.put(user("b"))
            tx.delete(s.table(User).get("a"))
            raise RuntimeError("validation failed half-way")
    assert sorted(s.table(User).rows) == ["a"]
    assert s.journal.records_in_gen == before
    await s.close()


async def test_concurrent_commits_share_fsyncs(tmp_path: Path) -> None:
    s = await open_store(tmp_path)

    async def one(i: int) -> None:
        with s.txn() as tx:
            tx.put(user(f"u{i}"))
        await s.sync()

    await asyncio.gather(*(one(i) for i in range(200)))
    assert len(s.table(User)) == 200
    # Group commit: far fewer fsyncs than acknowledged transactions.
    assert s.journal.fsyncs < 100
    await s.close()


async def test_a_failed_write_rolls_back_what_it_held_and_the_next_change_goes_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses one write (as a full one does; the lab tier fills a real tmpfs): every change
    in it and queued behind it is undone in memory and its waiters fail, the file ends at the last
    durable record, and the next change is written, all without a restart."""
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(user("a"))
    await s.sync()
    real = journal_module.os.fdatasync
    refused = asyncio.get_running_loop().create_future()

    def full(fd: int) -> None:
        refused.get_loop().call_soon_threadsafe(lambda: refused.done() or refused.set_result(None))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(journal_module.os, "fdatasync", full)

    async def change(name: str) -> None:
        with s.txn() as tx:
            tx.put(user(name))
        await s.sync()
    results = await asyncio.gather(change("b"), change("c"), return_exceptions=True)
    assert [type(r) for r in results] == [JournalError, JournalError]
    assert refused.done()
    assert sorted(s.table(User).rows) == ["a"]
    monkeypatch.setattr(journal_module.os, "fdatasync", real)
    await change("d")
    await s.close()
    s2 = await open_store(tmp_path)
    assert sorted(s2.table(User).rows) == ["a", "d"]
    await s2.close()


async def test_an_unawaited_change_goes_out_with_the_next_awaited_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A change nobody awaits (Store.flush: a launch's "running") waits a moment for company: the
    next acknowledged change writes both in one write and one fsync; alone, it is written soon."""
    delay = journal_module.FLUSH_DELAY_S
    monkeypatch.setattr(journal_module, "FLUSH_DELAY_S", 60.0)   # (however slow this machine is)
    s = await open_store(tmp_path)
    journal = s.journal
    assert journal is not None
    loop = asyncio.get_running_loop()
    base = journal.fsyncs
    with s.txn() as tx:
        tx.put(user("a"))
    s.flush()
    for _ in range(3):   # a write started at once would be done after these (one journal thread)
        await asyncio.sleep(0)
        await loop.run_in_executor(journal._pool, lambda: None)
        await asyncio.sleep(0)
    assert journal.fsyncs == base
    with s.txn() as tx:
        tx.put(user("b"))
    await s.sync()
    assert journal.fsyncs == base + 1
    monkeypatch.setattr(journal_module, "FLUSH_DELAY_S", delay)
    with s.txn() as tx:
        tx.put(user("c"))
    s.flush()
    for _ in range(500):
        if journal.fsyncs == base + 2:
            break
        await asyncio.sleep(0.01)
    assert journal.fsyncs == base + 2
    await s.close()
    s2 = await open_store(tmp_path)
    assert sorted(s2.table(User).rows) == ["a", "b", "c"]
    await s2.close()


async def test_torn_last_record_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = await open_store(tmp_path)
    for n in ("a", "b"):
        with s.txn() as tx:
            tx.put(user(n))
        await s.sync()
    gen = s.gen
    await s.close()
    path = journal_path(tmp_path, gen)
    data = path.read_bytes()
    path.write_bytes(data[:-7])      # a crash in the middle of writing the last record
    with caplog.at_level(logging.WARNING):
        s2 = await open_store(tmp_path)
    assert sorted(s2.table(User).rows) == ["a"]
    assert "torn record" in caplog.text
    await s2.close()


async def test_damaged_record_before_good_ones_refuses(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    for n in ("a", "b", "c"):
        with s.txn() as tx:
            tx.put(user(n))
        await s.sync()
    gen = s.gen
    await s.close()
    path = journal_path(tmp_path, gen)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"b"', b'"x"')  # checksum no longer matches
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="damaged and later records follow"):
        await open_store(tmp_path)


async def test_unknown_journal_version_is_refused(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    gen = s.gen
    await s.close()
    path = journal_path(tmp_path, gen)
    path.write_bytes(path.read_bytes().replace(b'"version": 1', b'"version": 99'))
    with pytest.raises(JournalError, match="version 99 is not supported"):
        await open_store(tmp_path)


async def test_corrupt_checkpoint_falls_back_to_previous_generation(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(user("before"))
    await s.sync()
    await s.checkpoint()
    with s.txn() as tx:
        tx.put(user("after"))
    await s.sync()
    newest = s.gen
    await s.close()
    p = ckpt.checkpoint_path(tmp_path, newest)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        s2 = await open_store(tmp_path)
    assert "checksum mismatch" in caplog.text
    assert sorted(s2.table(User).rows) == ["after", "before"]
    await s2.close()


async def test_checkpoint_truncates_journal_and_keeps_everything(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    for i in range(50):
        with s.txn() as tx:
            tx.put(KeyPair(id=f"key-{i:017x}", owner="1", name=f"k{i}", fingerprint="f", public_key="p",
                           key_type="rsa", created=1.0))
    await s.sync()
    await s.checkpoint()
    assert s.journal.records_in_gen == 0
    gens = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("journal", "checkpoint")))
    assert len(gens) <= 4       # this generation and the previous one, nothing older
    await s.close()
    s2 = await open_store(tmp_path)
    assert len(s2.table(KeyPair)) == 50
    await s2.close()


def subscription(endorsers: list[list[str]]) -> Subscription:
    return Subscription(id="sub-1", url="https://lists.example/list", identifier="list-1", endorsers=endorsers,
                        trust="/etc/ca", policy="accept", interval_s=60.0, created=1.0)


def test_rows_are_frozen_and_hold_tuples() -> None:
    """A checkpoint encodes rows on a worker thread while the loop runs: nothing may change one."""
    r = Reservation(id="r-1", owner="1", instance_ids=["i-1", "i-2"])
    assert r.instance_ids == ("i-1", "i-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.instance_ids = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.instance_ids.append("i-3")  # type: ignore[attr-defined]
    assert dataclasses.replace(r, instance_ids=["i-9"]).instance_ids == ("i-9",)
    assert subscription([["CN=a", "CN=ca"]]).endorsers == (("CN=a", "CN=ca"),)


def test_every_row_type_is_frozen_without_lists() -> None:
    """A new row type (or field) must not bring back rows a caller can change in place."""
    for t in ROW_TYPES:
        assert t.__dataclass_params__.frozen, t.__name__   # type: ignore[attr-defined]
        lists = [f.name for f in dataclasses.fields(t) if str(f.type).startswith("list")]
        assert not lists, f"{t.__name__}: {lists} (use tuple[...], made so in __post_init__)"


async def test_sequences_are_json_lists_on_disk_and_load_as_tuples(tmp_path: Path) -> None:
    """The format is unchanged (journals and checkpoints written before rows held tuples load)."""
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(Reservation(id="r-1", owner="1", instance_ids=("i-1", "i-2")))
    await s.sync()
    await s.checkpoint()   # r-1 in the checkpoint, the subscription in the journal after it
    with s.txn() as tx:
        tx.put(subscription([["CN=a", "CN=ca"], ["CN=b", "CN=ca"]]))
    await s.sync()
    gen = s.gen
    await s.close()
    assert '"instance_ids":["i-1","i-2"]' in ckpt.checkpoint_path(tmp_path, gen).read_text()
    assert '"endorsers":[["CN=a","CN=ca"],["CN=b","CN=ca"]]' in journal_path(tmp_path, gen).read_text()
    s2 = await open_store(tmp_path)
    assert s2.table(Reservation).get("r-1").instance_ids == ("i-1", "i-2")
    assert s2.table(Subscription).get("sub-1").endorsers == (("CN=a", "CN=ca"), ("CN=b", "CN=ca"))
    await s2.close()


async def test_a_transactions_record_is_the_per_row_text_it_always_was(tmp_path: Path) -> None:
    """One record per transaction, encoded at commit: byte for byte the ops each put and delete
    wrote before (`["p",table,key,` + the row's own JSON + `]`, joined), non-ASCII keys escaped."""
    s = await open_store(tmp_path)
    a, b = user("a"), user("b\u00e9")
    with s.txn() as tx:
        tx.put(a)
        tx.put(b)
        tx.put(Reservation(id="r-1", owner="1", instance_ids=("i-1",)))
    with s.txn() as tx:
        tx.delete(a)
        tx.delete(user("never"))   # (absent: no op)
    await s.sync()
    gen = s.gen
    await s.close()
    records = list(journal_module.read_journal(journal_path(tmp_path, gen)))

    def put(table: str, key: str, row: object) -> str:
        return (f'["p","{table}",{json.dumps(key)},'
                + json.dumps(dataclasses.asdict(row), separators=(",", ":")) + "]")   # type: ignore[call-overload]
    assert records == [
        "[" + ",".join([put("users", "a", a), put("users", "b\u00e9", b),
                        put("reservations", "r-1", Reservation(id="r-1", owner="1", instance_ids=("i-1",)))]) + "]",
        '[["d","users","a"]]']


async def test_rows_from_a_newer_writer_load(tmp_path: Path) -> None:
    """A field this version does not know is dropped, whether the row comes from the checkpoint or
    the journal (the load's fast path, for rows with known fields only, must keep that rule)."""
    from cloudctl.store.journal import encode_record
    s = await open_store(tmp_path)
    with s.txn() as tx:
        tx.put(user("a"))
    await s.sync()
    await s.close()
    gen = max(ckpt.generations(tmp_path))
    path = ckpt.checkpoint_path(tmp_path, gen)
    ckpt.write_checkpoint(tmp_path, gen, {"users": [user("a")]})
    head, row_a = path.read_text().splitlines()[:2]
    body = "\n".join([head, row_a, '["users","n",' + json.dumps({**user("n").to_dict(), "colour": "blue"}) + "]"])
    body += "\n"
    path.write_text(body + json.dumps({"end": True, "rows": 2, "crc": zlib.crc32(body.encode())}) + "\n")
    with open(journal_path(tmp_path, gen), "ab") as f:
        f.write(encode_record(json.dumps([["p", "users", "o", {**user("o").to_dict(), "shoe": 42}]])))
    s2 = await open_store(tmp_path)
    users = s2.table(User)
    assert sorted(users.rows) == ["a", "n", "o"]
    assert (users.get("n"), users.get("o")) == (user("n"), user("o"))
    await s2.close()


async def test_a_change_after_close_is_refused_and_undone(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    journal = s.journal
    assert journal is not None
    await s.close()
    s.journal = journal   # (a caller still holding the closed store)
    with s.txn() as tx:
        tx.put(user("late"))
    with pytest.raises(JournalError):
        await s.sync()
    assert s.table(User).get("late") is None
    s2 = await open_store(tmp_path)
    assert len(s2.table(User)) == 0
    await s2.close()


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


_AWKWARD: tuple[object, ...] = (
    "plain", "", "quote\"d", "back\\slash", "tab\there", "caf\u00e9", "\x7f", "\u2028", None, 0, -7, 2 ** 70,
    True, False, 0.0, -0.0, 1.5, 1796660067.9421136, float("inf"), float("nan"), 1e-300, ("a", "b\""), (),
    {"k": "v", "n": 1.25}, [{"vlan": 5}])


def _rows() -> list[object]:
    """Rows of every type, each field in turn given each awkward value (set after the row is made,
    as a decoded journal may hold anything), and the rows as made."""
    out: list[object] = []
    for cls in ROW_TYPES:
        fields = [f for f in dataclasses.fields(cls) if f.init]
        base = cls(**{f.name: "x" for f in fields   # type: ignore[arg-type]
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
        out.append(base)
        for n, f in enumerate(fields):
            for value in _AWKWARD[n % 5::5]:   # (each field a fifth of them, the values spread over fields)
                row = dataclasses.replace(base)
                try:
                    object.__setattr__(row, f.name, value)
                except (AttributeError, TypeError):   # (a field kept in a shared slot: its setter is strict)
                    continue
                out.append(row)
    return out


def test_a_journal_record_is_json_dumps_of_its_ops() -> None:
    """`encode_changes` (each row by its type's generated encoder) writes what `json.dumps` of the
    ops wrote, compact: every row type, text that needs escaping or not, numbers, floats equal but
    for their sign, tuples, maps, keys to escape, deletes."""
    from cloudctl.store.records import _ROW_ENCODERS, encode_changes
    rows = _rows()
    assert len({type(r) for r in rows}) == len(ROW_TYPES) and len(rows) > 20 * len(ROW_TYPES)
    keys = ["k-1", "q\"k", "\u00e9", 5]
    for n in range(0, len(rows), 7):
        changes = [(_Named(f"t{m % 3}"), keys[m % len(keys)], None, row if m % 9 else None)
                   for m, row in enumerate(rows[n:n + 7], n)]
        want = json.dumps([["p", t.name, k, r.to_dict()] if r is not None else ["d", t.name, k]   # type: ignore[attr-defined]
                           for t, k, _, r in changes], separators=(",", ":"))
        assert encode_changes(changes) == want
        assert encode_changes(changes) == want   # (again: the floats' kept text)
    assert set(_ROW_ENCODERS) == set(ROW_TYPES)   # (each type's own encoder wrote them)


def test_every_row_types_key_is_its_key_field_or_its_own() -> None:
    """A row's key reads its key field (by one C call since perf-launch8), or is the type's own
    (a tag's, made of two fields), for every row type."""
    import dataclasses as dc

    from cloudctl.store.records import ROW_TYPES, Row, Tag
    for cls in ROW_TYPES:
        row = cls(**{f.name: f"v-{f.name}" for f in dc.fields(cls)
                     if f.init and f.default is dc.MISSING and f.default_factory is dc.MISSING})
        own = next(k for k in cls.__mro__ if "key" in k.__dict__)
        if own is cls and type(cls.__dict__["key"].fget).__name__ == "function":   # (its own key)
            assert row.key == cls.__dict__["key"].fget(row)
        else:
            assert row.key == getattr(row, cls.key_field) == Row.key.fget(row)   # type: ignore[attr-defined]
    assert Tag(resource_id="i-1", resource_type="instance", owner="o", tag_key="k", value="v").key == "i-1\x1fk"
