"""The append-only journal: every change is fsync'd here before the API acknowledges it.

One file per checkpoint generation (`journal.<gen>`). A file starts with a JSON header line that
carries the format version; each record is one line `<crc32 hex> <json>`. Writes are group
committed: whatever was appended while the previous fsync ran goes out in the next single
write+fsync, so concurrent requests share one fsync. All file I/O runs on one dedicated thread,
which also keeps the order of writes and file rotations.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("cloudctl.journal")

FORMAT = "cloudctl-journal"
VERSION = 1


class JournalError(Exception):
    """The journal cannot be read safely; the message says what and where."""


def journal_path(state_dir: Path, gen: int) -> Path:
    return state_dir / f"journal.{gen:08d}"


def encode_record(payload: str) -> bytes:
    data = payload.encode()
    return b"%08x " % zlib.crc32(data) + data + b"\n"


def _header(gen: int) -> bytes:
    return (json.dumps({"format": FORMAT, "version": VERSION, "generation": gen}) + "\n").encode()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Rotate:
    gen: int


def read_journal(path: Path) -> Iterator[str]:
    """Yield record payloads; drop a torn tail (a crash mid-write) with a log line.

    A damaged record followed by good ones is real corruption, not a torn write, and stops
    start-up rather than silently skipping acknowledged changes.
    """
    with open(path, "rb") as f:
        data = f.read()
    header, sep, rest = data.partition(b"\n")
    if not sep:
        log.warning("journal %s: header incomplete (crash while creating it); ignoring the file", path)
        return
    try:
        meta = json.loads(header)
    except ValueError:
        raise JournalError(f"journal {path}: header is not valid JSON; refusing to guess its format") from None
    if meta.get("format") != FORMAT:
        raise JournalError(f"journal {path}: not a cloudctl journal (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise JournalError(
            f"journal {path}: format version {meta.get('version')!r} is not supported by this cloudctl "
            f"(it reads version {VERSION}); start the cloudctl release that wrote it")
    offset = len(header) + 1
    lines = rest.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if last and not line:
            return
        ok = len(line) > 9 and line[8:9] == b" "
        if ok:
            try:
                ok = int(line[:8], 16) == zlib.crc32(line[9:])
            except ValueError:
                ok = False
        if not ok or last:  # the final line lacks its newline: a torn write
            if last or all(not x for x in lines[i + 1:]):
                log.warning("journal %s: dropping a torn record at byte %d (%d bytes; crash during write)",
                            path, offset, len(line))
                _truncate(path, offset)
                return
            raise JournalError(f"journal {path}: record at byte {offset} is damaged and later records follow; "
                               f"refusing to replay a journal with a hole in it")
        yield line[9:].decode()
        offset += len(line) + 1


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())


class Journal:
    """Group-committing writer. `append` is synchronous (on the loop); `sync` awaits durability."""

    def __init__(self, state_dir: Path, gen: int) -> None:
        self.state_dir = state_dir
        self.gen = gen
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._fd: int | None = None
        self._buf: list[bytes | _Rotate] = []
        self._appended = 0
        self._durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self.records_in_gen = 0
        self.last_fsync_s = 0.0
        self.fsyncs = 0

    # -- file handling (journal thread only) --------------------------------------------------
    def _open(self, gen: int) -> None:
        path = journal_path(self.state_dir, gen)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if os.fstat(fd).st_size == 0:
            os.write(fd, _header(gen))
            os.fsync(fd)
            fsync_dir(self.state_dir)
        self._fd = fd

    def _write(self, items: list[bytes | _Rotate]) -> float:
        t0 = time.perf_counter()
        chunk: list[bytes] = []
        for item in items:
            if isinstance(item, _Rotate):
                self._flush_chunk(chunk)
                chunk = []
                assert self._fd is not None
                os.close(self._fd)
                self._open(item.gen)
            else:
                chunk.append(item)
        self._flush_chunk(chunk)
        return time.perf_counter() - t0

    def _flush_chunk(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        assert self._fd is not None
        data = b"".join(chunk)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fdatasync(self._fd)

    # -- loop side ----------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open, self.gen)

    def append(self, payload: str) -> None:
        if self._failed is not None:
            raise JournalError(f"journal write failed earlier: {self._failed}")
        self._buf.append(encode_record(payload))
        self._appended += 1
        self.records_in_gen += 1

    def rotate(self, gen: int) -> None:
        """Records appended after this call go to `journal.<gen>`."""
        self._buf.append(_Rotate(gen))
        self._appended += 1
        self.gen = gen
        self.records_in_gen = 0

    def flush(self) -> None:
        """Start writing what is buffered without waiting for it (changes nobody awaits)."""
        if self._durable < self._appended and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def sync(self) -> None:
        """Return once everything appended so far is on disk."""
        if self._failed is not None:
            raise JournalError(f"journal write failed: {self._failed}")
        target = self._appended
        if self._durable >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await fut

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._buf:
            items, self._buf = self._buf, []
            upto = self._appended
            try:
                self.last_fsync_s = await loop.run_in_executor(self._pool, self._write, items)
            except BaseException as e:  # disk full, I/O error: nothing after this is durable
                self._failed = e
                log.error("journal write failed: %s", e)
                for _, fut in self._waiters:
                    if not fut.done():
                        fut.set_exception(JournalError(f"journal write failed: {e}"))
                self._waiters.clear()
                return
            self.fsyncs += 1
            self._durable = upto
            keep = []
            for target, fut in self._waiters:
                if target <= upto:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((target, fut))
            self._waiters = keep

    async def close(self) -> None:
        if self._buf:
            await self.sync()
        if self._fd is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, os.close, self._fd)
            self._fd = None
        self._pool.shutdown(wait=True)
