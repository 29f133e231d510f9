"""The checkpoint reader's checks: what it yields and refuses, as the line-by-line reader before its
check pass read blocks (perf-start9), on every cut, changed and damaged file.

`_reference` is that earlier reader: the specification here. Each case writes a checkpoint, damages
it (cut at every byte, every byte changed, empty lines added, random damage from hypothesis), and
reads it with both: the lines yielded and the error must be the same. The block reader is also run
with blocks and a first tail of a few bytes, so that its reads' edges fall everywhere."""
from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.store import checkpoint as ckpt
from cloudctl.store.checkpoint import FORMAT, VERSION, CheckpointError, checkpoint_lines

from support.mangle import damaged


def _reference(path: Path) -> Iterator[bytes]:
    """`checkpoint_lines` as it was before its block pass (main cffb8a9): its line-by-line pass,
    which it keeps for files with empty lines, taken for every file."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ckpt, "_check_blocks", lambda path: None)
        yield from checkpoint_lines(path)


ROWS = [b'["users","a",{"name":"a"}]\n', b'["users","b",{"name":"b","dns":[]}]\n', b'["tags","i-1\\u001fk",{}]\n']


def _checkpoint(rows: list[bytes], blanks: tuple[int, ...] = ()) -> bytes:
    """A checkpoint of `rows` as the writer makes it; an empty line before each row index in `blanks`
    (counted in the CRC, not in the rows: what the reader always took)."""
    head = (json.dumps({"format": FORMAT, "version": VERSION, "generation": 1}) + "\n").encode()
    body = b"".join((b"\n" if i in blanks else b"") + r for i, r in enumerate(rows))
    crc = zlib.crc32(head + body)
    return head + body + (json.dumps({"end": True, "rows": len(rows), "crc": crc}) + "\n").encode()


def _outcome(read: object, path: Path) -> tuple[object, ...]:
    got: list[bytes] = []
    try:
        for line in read(path):  # type: ignore[operator]
            got.append(line)
        error = None
    except (CheckpointError, ValueError) as e:
        error = str(e)
    return got, error


def _same(path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    path.write_bytes(data)
    want = _outcome(_reference, path)
    assert _outcome(checkpoint_lines, path) == want, data
    with monkeypatch.context() as m:   # (small reads: their edges at every place of these small files)
        for block, tail in ((1, 1), (3, 2), (7, 5)):
            m.setattr(ckpt, "_BLOCK", block)
            m.setattr(ckpt, "_TAIL", tail)
            assert _outcome(checkpoint_lines, path) == want, (data, block, tail)
    return want


def test_a_whole_checkpoint_reads_back_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _same(tmp_path / "c", _checkpoint(ROWS), monkeypatch) == (ROWS, None)
    assert _same(tmp_path / "c", _checkpoint([]), monkeypatch) == ([], None)


def test_every_cut_reads_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _checkpoint(ROWS)
    for n in range(len(data) + 1):
        _same(tmp_path / "c", data[:n], monkeypatch)
    # (trailing empty lines, and the trailer without its newline)
    for extra in (b"\n", b"\n\n\n", b"x", b"\nx\n"):
        _same(tmp_path / "c", data + extra, monkeypatch)
        _same(tmp_path / "c", data[:-1] + extra, monkeypatch)


def test_every_changed_byte_reads_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _checkpoint(ROWS)
    refused = 0
    for i in range(len(data)):
        for b in (bytes([data[i] ^ 1]), b"\n"):
            _, error = _same(tmp_path / "c", data[:i] + b + data[i + 1:], monkeypatch)
            refused += error is not None
    assert refused > 0


def test_empty_lines_anywhere_read_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty lines (never written by this writer) count in the CRC, not as rows, and are not yielded:
    the block pass hands such a file to the line-by-line one."""
    for blanks in ((0,), (1,), (2,), (0, 2), (1, 2)):
        lines, error = _same(tmp_path / "c", _checkpoint(ROWS, blanks), monkeypatch)
        assert lines == ROWS and error is None
    data = _checkpoint(ROWS)
    _same(tmp_path / "c", b"\n" + data, monkeypatch)   # (an empty first line: the header is not JSON)
    at = data.index(b"\n") + 1
    _same(tmp_path / "c", data[:at] + b"\n\n" + data[at:], monkeypatch)


_damage = st.lists(st.tuples(st.sampled_from(["cut", "set", "insert", "delete"]), st.integers(0, 10**6),
                             st.binary(min_size=1, max_size=3) | st.just(b"\n") | st.just(b"\n\n")), max_size=4)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=6),
       damage=_damage)
def test_random_damage_reads_as_before(tmp_path_factory: pytest.TempPathFactory, rows: list[bytes],
                                       damage: list[tuple[str, int, bytes]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same(tmp_path_factory.mktemp("c") / "c", damaged(_checkpoint(rows), damage), monkeypatch)
