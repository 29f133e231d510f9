"""The journal reader's framing checks: what it yields, refuses and cuts, byte for byte as the
reader before its checks were made one expression (perf-start3), on every torn and damaged file.

`_reference` is that earlier reader (slices, a memoryview, an offset kept per record): the
specification here. Each case writes a journal, damages it (cut at every byte, every byte changed,
or random damage from hypothesis), and reads it with both: the payloads yielded, the error, and the
file left behind (a torn tail is cut) must be the same."""
from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.store.journal import FORMAT, VERSION, JournalError, _truncate, encode_record, read_payloads

from support.mangle import damaged

HEADER = (json.dumps({"format": FORMAT, "version": VERSION, "generation": 1}) + "\n").encode()


def _reference(path: Path) -> Iterator[bytes]:
    """The checked reader as it was (main 23f61cc), header checks left out (they are unchanged)."""
    torn: tuple[int, int] | None = None
    with open(path, "rb", buffering=1 << 20) as f:
        header = f.readline()
        if not header.endswith(b"\n"):
            return
        offset = len(header)
        for line in f:
            ok = len(line) > 10 and line[8:9] == b" " and line.endswith(b"\n")
            if ok:
                try:
                    ok = int(line[:8], 16) == zlib.crc32(memoryview(line)[9:-1])
                except ValueError:
                    ok = False
            if not ok:
                if any(rest.strip(b"\n") for rest in f):
                    raise JournalError(f"journal {path}: record at byte {offset} is damaged and later records "
                                       f"follow; refusing to replay a journal with a hole in it")
                torn = (offset, len(line.rstrip(b"\n")))
                break
            yield line[9:-1]
            offset += len(line)
    if torn is not None:
        _truncate(path, torn[0])


def _outcome(read: Callable[[Path], Iterator[bytes]], path: Path, data: bytes) -> tuple[object, ...]:
    path.write_bytes(data)
    got: list[bytes] = []
    try:
        for payload in read(path):
            got.append(payload)
        error = None
    except JournalError as e:
        error = str(e)
    return got, error, path.read_bytes()


def _same(tmp_path: Path, data: bytes) -> tuple[object, ...]:
    want = _outcome(_reference, tmp_path / "reference", data)
    got = _outcome(read_payloads, tmp_path / "reference", data)   # (same name: the messages name it)
    assert got == want, data
    return got


RECORDS = [b'[["p","users","a",{"name":"a"}]]', b'[["d","users","a"]]', b"x" * 3, b'"\xc3\xbc\\n"', b"1"]


def _journal(records: list[bytes]) -> bytes:
    return HEADER + b"".join(b"%08x " % zlib.crc32(r) + r + b"\n" for r in records)


def test_a_whole_journal_reads_back_every_record(tmp_path: Path) -> None:
    payloads, error, _ = _same(tmp_path, _journal(RECORDS))
    assert payloads == RECORDS and error is None
    assert _journal([RECORDS[0]]) == HEADER + encode_record(RECORDS[0].decode())


def test_cut_at_every_byte(tmp_path: Path) -> None:
    """A crash at any point of a write: what survives is read, the torn record cut off."""
    data = _journal(RECORDS)
    torn = 0
    for n in range(len(HEADER), len(data) + 1):
        payloads, error, left = _same(tmp_path, data[:n])
        assert error is None
        torn += len(left) < n
    assert torn > len(data) // 2   # (most cuts fall inside a record)


@pytest.mark.parametrize("replacement", [b"0", b"F", b" ", b"\n", b"-", b"_", b"\x00", None])
def test_every_byte_changed(tmp_path: Path, replacement: bytes | None) -> None:
    """One byte changed anywhere after the header (None: its low bit flipped): the same records,
    the same refusal of a hole, the same cut of a damaged last record."""
    data = _journal(RECORDS)
    refused = 0
    for i in range(len(HEADER), len(data)):
        b = bytes([data[i] ^ 1]) if replacement is None else replacement
        _, error, _ = _same(tmp_path, data[:i] + b + data[i + 1:])
        refused += error is not None
    assert refused > 0


def test_a_checksum_in_capitals_or_with_a_sign_reads_as_before(tmp_path: Path) -> None:
    """int() accepts what this writer never writes (capitals, a sign, spaces, underscores): the
    reader keeps taking what it took, and refusing what it refused."""
    r = RECORDS[0]
    crc = b"%08x" % zlib.crc32(r)
    for head in (crc.upper(), b"+" + crc[1:] if crc[0:1] == b"0" else crc, b" " + crc[1:], crc[:4] + b"_" + crc[5:]):
        _same(tmp_path, HEADER + head + b" " + r + b"\n" + _journal([r])[len(HEADER):])


_damage = st.lists(st.tuples(st.sampled_from(["cut", "set", "insert", "delete"]), st.integers(0, 10**6),
                             st.binary(min_size=1, max_size=3)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8), damage=_damage)
def test_random_damage_reads_as_before(tmp_path_factory: pytest.TempPathFactory, records: list[bytes],
                                       damage: list[tuple[str, int, bytes]]) -> None:
    _same(tmp_path_factory.mktemp("j"), damaged(_journal(records), damage, start=len(HEADER)))


def test_an_unchecked_second_read_gives_what_the_checked_one_gave(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(_journal(RECORDS) + b"0000")   # (a torn tail: cut by the checked read)
    checked = list(read_payloads(path))
    assert checked == RECORDS
    assert list(read_payloads(path, checked=False)) == checked
