"""Checkpoints: the whole state in one file, so the journal can start over.

`checkpoint.<gen>` holds the state as of the first record of `journal.<gen>`. It is written to a
temporary file, fsync'd and renamed, so a crash leaves either the old or the new file. The last
line carries the row count and a CRC of everything before it; a file that fails that check is
refused with a clear message and the previous generation is used.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from .journal import fsync_dir
from .records import Row, encode_row

__all__ = ["encode_row"]   # (the row encoding lives with the rows; journal and checkpoint share it)

FORMAT = "cloudctl-checkpoint"
VERSION = 1
_NAME = re.compile(r"^checkpoint\.(\d{8})$")


_scan = json.JSONDecoder().scan_once   # the C scanner json.loads ends in, without its wrappers


def _decode(line: bytes) -> Any:
    """`json.loads(line)` for one row line, without the wrappers' cost (~1.5 µs of a row's ~6):
    anything but one JSON value and its newline takes json.loads, for its error."""
    text = line.decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if text[end:].strip() == "" else json.loads(text)


class CheckpointError(Exception):
    pass


def checkpoint_path(state_dir: Path, gen: int) -> Path:
    return state_dir / f"checkpoint.{gen:08d}"


def generations(state_dir: Path) -> list[int]:
    """Checkpoint generations present, newest first."""
    gens = []
    for p in state_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            gens.append(int(m.group(1)))
    return sorted(gens, reverse=True)


def write_checkpoint(state_dir: Path, gen: int, tables: "dict[str, Iterable[Row]]") -> None:
    """Write `tables` ({table: rows}) durably. Runs on a worker thread."""
    path = checkpoint_path(state_dir, gen)
    tmp = path.with_suffix(".tmp")
    crc = 0
    count = 0
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        head = (json.dumps({"format": FORMAT, "version": VERSION, "generation": gen}) + "\n").encode()
        f.write(head)
        crc = zlib.crc32(head, crc)
        for table, rows in tables.items():
            prefix = '["' + table + '",'
            it = iter(rows)
            # Encoded in slices: bounded memory, and the GIL is handed back to the loop often.
            while part := list(islice(it, 512)):
                chunk = "".join(prefix + json.dumps(r.key) + "," + encode_row(r) + "]\n" for r in part).encode()
                f.write(chunk)
                crc = zlib.crc32(chunk, crc)
                count += len(part)
        f.write((json.dumps({"end": True, "rows": count, "crc": crc}) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(state_dir)


def checkpoint_lines(path: Path) -> Iterator[bytes]:
    """Yield the row lines (`["<table>","<key>",{...}]`); raise CheckpointError unless the file is
    whole and valid.

    Two passes over the file: the first checks the trailer (the last non-empty line: row count,
    CRC of everything before it), the second yields the rows, so nothing is yielded from a damaged
    file and the file is never held whole (at 50,000 instances it is ~120 MB, and read whole and
    split it took about three times that at start-up). The first pass reads blocks, not lines
    (`_check_blocks`); a file with empty lines among its rows (not of this writer's making) takes
    the line-by-line pass it replaced (`_check_lines`), whose counting of rows it keeps.
    """
    checked = _check_blocks(path)
    by_lines = checked is None
    head, trailer, crc, rows = _check_lines(path) if checked is None else checked
    if not head or not trailer:
        raise CheckpointError(f"checkpoint {path}: truncated (no trailer)")
    try:
        end = json.loads(trailer)
        if not (isinstance(end, dict) and end.get("end")):
            raise ValueError
    except ValueError:
        raise CheckpointError(f"checkpoint {path}: truncated or damaged (no valid trailer)") from None
    if crc != end.get("crc"):
        raise CheckpointError(f"checkpoint {path}: checksum mismatch, the file is damaged")
    try:
        meta = json.loads(head)
    except ValueError:
        raise CheckpointError(f"checkpoint {path}: header is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a cloudctl checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {meta.get('version')!r} is not supported "
                              f"(this cloudctl reads version {VERSION})")
    if rows != end.get("rows"):
        raise CheckpointError(f"checkpoint {path}: row count mismatch")
    with open(path, "rb", buffering=1 << 20) as f:
        f.readline()   # the header
        if not by_lines:   # (no empty line before the trailer: the next `rows` lines are the rows)
            yield from islice(f, rows)
            return
        for line in f:
            if rows == 0:
                break
            if line.strip(b"\n"):
                rows -= 1
                yield line


_BLOCK = 1 << 20   # (the check pass's reads)
_TAIL = 1 << 16    # (the first read from the end, for the trailer: grown 4x until it holds it)


def _check_blocks(path: Path) -> tuple[bytes, bytes, int, int] | None:
    """(head, trailer, CRC of all before the trailer, rows between head and trailer) of a
    checkpoint, read in blocks: `zlib.crc32` and `bytes.count` over 1 MiB at a time, where the
    line-by-line pass made a Python loop per row (~0.3 s of a start at 50,000 instances). The
    trailer is the last non-empty line, found from the file's end; head and trailer are b"" when
    there is none. None when an empty line comes before the trailer (a file not of this writer's
    making): `_check_lines` then decides, as before."""
    with open(path, "rb", buffering=0) as f:
        size = f.seek(0, os.SEEK_END)
        back = min(size, _TAIL)
        while True:   # (the trailer's start: after the last newline before the last non-newline byte)
            f.seek(size - back)
            tail = f.read(back)
            content = len(tail.rstrip(b"\n"))
            start = tail.rfind(b"\n", 0, content) + 1
            if content and start or back == size:
                break
            back = min(size, back * 4)
        if not content:
            return b"", b"", 0, 0
        at = size - back + start
        trailer = tail[start:content + 1]
        if not at:
            return b"", trailer, 0, 0
        f.seek(0)
        crc = lines = 0
        last = b"\n"   # (an empty first line is an empty line too)
        while at:
            block = f.read(min(_BLOCK, at))
            if not block:
                break
            at -= len(block)
            if b"\n\n" in block or last == b"\n" and block[:1] == b"\n":
                return None
            crc = zlib.crc32(block, crc)
            lines += block.count(b"\n")
            last = block[-1:]
        f.seek(0)
        head = f.readline()
        return head, trailer, crc, lines - 1


def _check_lines(path: Path) -> tuple[bytes, bytes, int, int]:
    """`_check_blocks` line by line (the pass it replaced), for a file with empty lines: their
    CRC counts, they are not rows."""
    crc, rows, head = 0, 0, b""
    held: list[bytes] = []   # the last non-empty line so far and the empty ones after it
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            if not line.strip(b"\n"):
                held.append(line)
                continue
            for h in held:   # a later non-empty line: what was held is not the trailer
                crc = zlib.crc32(h, crc)
                if not head:
                    head = h
                elif h.strip(b"\n"):
                    rows += 1
            held = [line]
    return head, held[0] if held else b"", crc, rows


def read_checkpoint(path: Path) -> Iterator[tuple[str, str, dict]]:
    """Yield (table, key, row dict); raise CheckpointError unless the file is whole and valid
    (`checkpoint_lines`), ValueError for a line that is not JSON."""
    for line in checkpoint_lines(path):
        yield decode_line(line)


def decode_line(line: bytes) -> tuple[str, str, dict]:
    """A row line's (table, key, row dict); ValueError if it is not one."""
    table, key, row = _decode(line)
    return table, key, row
