"""The append-only journal: every change is fsync'd here before the API acknowledges it.

One file per checkpoint generation (`journal.<gen>`). A file starts with a JSON header line that
carries the format version; each record is one line `<crc32 hex> <json>`. Writes are group
committed: whatever was appended while the previous fsync ran goes out in the next single
write+fsync, so concurrent requests share one fsync. All file I/O runs on one dedicated thread,
which also keeps the order of writes and file rotations, and makes the store's records' text
(`append_changes`) just before writing them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from ..handoff import run_in
from ..slim import dataclass

log = logging.getLogger("cloudctl.journal")

FORMAT = "cloudctl-journal"
VERSION = 1
#: How long a change nobody awaits (`flush`) waits for company before it is written: a launch's
#: "running" record then goes out with the next launch's own write instead of costing a write,
#: an fsync and a trip to the journal thread of its own (sequential launches: one write each,
#: not two). Such a change is not acknowledged to anyone; a crash in between loses what any
#: crash during its write would (start-up reconciles it).
FLUSH_DELAY_S = 0.005


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


# What the writer is handed: a record's line, a rotation, or a record to encode first (`append_changes`).
_Item = bytes | _Rotate | tuple[Callable[[Any], str], Any]


def read_journal(path: Path) -> Iterator[str]:
    """Yield record payloads; drop a torn tail (a crash mid-write) with a log line."""
    for payload in read_payloads(path):
        yield payload.decode()


def read_payloads(path: Path, checked: bool = True) -> Iterator[bytes]:
    """Yield record payloads as the file's bytes (UTF-8 JSON); drop a torn tail (a crash
    mid-write) with a log line. `checked=False`: the file was read whole with the checks just
    before (and its torn tail cut): yield the records without their CRCs' cost (~1 µs each).

    A damaged record followed by good ones is real corruption, not a torn write, and stops
    start-up rather than silently skipping acknowledged changes. The file is read line by line:
    a journal of a million records (~330 MB) held whole, and split, took ~800 MB of memory at
    start-up, and the process kept most of it afterwards.
    """
    torn: tuple[int, int] | None = None   # (offset, length) of a torn last record
    f = open_records(path)
    if f is None:
        return
    with f:
        if not checked:
            for line in f:
                yield line[9:-1]
            return
        crc32 = zlib.crc32
        for line in f:
            payload = line[9:-1]
            # A line without its newline is the file's last: a torn write, even if its CRC holds.
            # (The checks in one expression, on the line's bytes as ints: half the per-record cost of
            # slices and a memoryview; int() takes what it took before, a ValueError is a bad CRC.)
            try:
                ok = len(line) > 10 and line[8] == 32 and line[-1] == 10 and int(line[:8], 16) == crc32(payload)
            except ValueError:
                ok = False
            if not ok:
                offset = f.tell() - len(line)   # (where this line starts: binary reads keep tell exact)
                if any(rest.strip(b"\n") for rest in f):
                    raise JournalError(f"journal {path}: record at byte {offset} is damaged and later records "
                                       f"follow; refusing to replay a journal with a hole in it")
                torn = (offset, len(line.rstrip(b"\n")))
                break
            yield payload
    if torn is not None:
        log.warning("journal %s: dropping a torn record at byte %d (%d bytes; crash during write)", path, *torn)
        _truncate(path, torn[0])


def open_records(path: Path) -> BinaryIO | None:
    """The journal file opened and read past its header (checked: this cloudctl's format and
    version), at its first record line; None (with a log line) when the header is incomplete.
    Iterating it gives the record lines whole (`<crc32 hex> <json>\\n`), unchecked."""
    f = open(path, "rb", buffering=1 << 20)
    try:
        header = f.readline()
        if not header.endswith(b"\n"):
            log.warning("journal %s: header incomplete (crash while creating it); ignoring the file", path)
            f.close()
            return None
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
    except BaseException:
        f.close()
        raise
    return f


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
        # What is appended and not yet handed to the writer: record lines, rotations, and records
        # still to be encoded on the writer thread ((encode, its argument): `append_changes`).
        self._buf: list[_Item] = []
        self._appended = 0
        self._durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writing = False   # a write is with the writer thread
        self._delayed: asyncio.TimerHandle | None = None   # a flush waiting for FLUSH_DELAY_S
        self._good_size = 0          # bytes of the current file known to be on disk
        self._open_gen = gen
        self.on_durable: Callable[[int], None] | None = None   # store: forget undo logs up to n
        self.on_failed: Callable[[int], None] | None = None    # store: roll back what is after n
        self.write_failures = 0
        self.records_in_gen = 0
        self.last_fsync_s = 0.0
        self.fsyncs = 0
        self.on_fsync: Callable[[float], None] | None = None   # metrics: each write+fsync's seconds

    # -- file handling (journal thread only) --------------------------------------------------
    def _open(self, gen: int) -> None:
        """Open (creating with its header) the file of `gen`; the previous file stays open
        until this succeeded, so a failed rotation leaves the journal writable where it was."""
        path = journal_path(self.state_dir, gen)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                os.write(fd, _header(gen))
                os.fsync(fd)
                fsync_dir(self.state_dir)
                size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._good_size = size
        self._open_gen = gen

    def _write(self, items: list[_Item]) -> float:
        """Write and fsync `items`; the seconds that took (the records' encoding before it left out:
        the fsync metrics stay the disk's)."""
        # The records appended by `append_changes`, encoded here, all before any byte is written: one
        # that cannot be encoded fails the write whole (everything not durable is rolled back, as for a
        # failed write), never a batch half on disk.
        items = [encode_record(item[0](item[1])) if type(item) is tuple else item for item in items]
        t0 = time.perf_counter()
        chunk: list[bytes] = []
        for item in items:
            if isinstance(item, _Rotate):
                self._flush_chunk(chunk)
                chunk = []
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
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fdatasync(self._fd)
        except OSError:
            # Cut what part of the batch reached the file: the journal must end at the last
            # durable record, since those after it are being rolled back in memory.
            try:
                os.ftruncate(self._fd, self._good_size)
            except OSError as e:
                log.error("journal: cannot cut a failed write back to %d bytes: %s", self._good_size, e)
            raise
        self._good_size += len(data)

    # -- loop side ----------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open, self.gen)

    def append(self, payload: str) -> int:
        """Buffer one record; returns its sequence number (durable once `sync` covers it)."""
        self._buf.append(encode_record(payload))
        self._appended += 1
        self.records_in_gen += 1
        return self._appended

    def append_changes(self, encode: Callable[[Any], str], changes: Any) -> int:
        """`append(encode(changes))`, the record's text (`encode(changes)`), its CRC and its bytes
        made on the writer thread, just before the write that makes it durable (the loop only queues
        it). For `changes` that nothing changes after this call (a committed transaction's rows:
        immutable), so the record holds what it held now; its order among the records is this
        call's. A launch's two records' text, ~0.25 M instructions, was the loop's; the answer still
        waits for `sync`, which covers the record written."""
        self._buf.append((encode, changes))
        self._appended += 1
        self.records_in_gen += 1
        return self._appended

    def rotate(self, gen: int) -> None:
        """Records appended after this call go to `journal.<gen>`."""
        self._buf.append(_Rotate(gen))
        self._appended += 1
        self.gen = gen
        self.records_in_gen = 0

    def flush(self) -> None:
        """Write what is buffered soon (within FLUSH_DELAY_S, sooner if a `sync` comes first)
        without waiting for it: for changes nobody awaits."""
        if self._durable < self._appended and self._delayed is None and not self._writing:
            self._delayed = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._start_flush)

    def _start_flush(self) -> None:
        self._delayed = None
        self._write_next()

    async def sync(self) -> None:
        """Return once everything appended so far is on disk; raise JournalError if it cannot
        be written (everything not yet durable has then been rolled back)."""
        target = self._appended
        if self._durable >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        if self._delayed is not None:   # (written now, with this one)
            self._delayed.cancel()
            self._delayed = None
        self._write_next()
        await fut

    # One write at a time, each taking everything buffered when it starts; the end of one starts
    # the next. Done-callbacks, not a task per write: a launch's sync made a task and ran its
    # coroutine for what is one hand-off to the writer thread and one back.
    def _write_next(self) -> None:
        if self._writing or not self._buf:
            return
        items, self._buf = self._buf, []
        try:
            done = run_in(self._pool, self._write, items)
        except RuntimeError as e:   # the writer is shut down (a change after close): as a failed write
            self._write_failed(e, items)
            return
        self._writing = True
        done.add_done_callback(partial(self._written, items, self._appended))

    def _written(self, items: list[_Item], upto: int, done: asyncio.Future[float]) -> None:
        self._writing = False
        err = done.exception()
        if err is not None:   # disk full, read-only, I/O error
            self._write_failed(err, items)
            return
        self.last_fsync_s = done.result()
        self.fsyncs += 1
        if self.on_fsync is not None:
            self.on_fsync(self.last_fsync_s)
        self._durable = upto
        if self.on_durable is not None:
            self.on_durable(upto)
        keep = []
        for target, fut in self._waiters:
            if target <= upto:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep
        self._write_next()

    def _write_failed(self, err: BaseException, items: list[_Item]) -> None:
        """Nothing after the last durable record will be written: drop it, have the store roll
        it back, and fail its waiters. The journal stays usable: the next change tries again,
        so the service recovers by itself once space returns."""
        self.write_failures += 1
        log.error("journal write failed (%s); rolling back %d unwritten change(s); the next change "
                  "will try again", err, self._appended - self._durable)
        dropped = items + self._buf
        self._buf = []
        for item in dropped:
            if isinstance(item, _Rotate):   # the rotation did not happen (or is undone)
                self.gen = self._file_gen
        self._appended = self._durable
        if self.on_failed is not None:
            self.on_failed(self._durable)
        waiters, self._waiters = self._waiters, []
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(JournalError(f"the journal could not be written: {err}"))

    @property
    def _file_gen(self) -> int:
        """The generation of the file the writer thread holds open."""
        return self._open_gen

    async def close(self) -> None:
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        if self._buf:
            await self.sync()
        if self._fd is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, os.close, self._fd)
            self._fd = None
        self._pool.shutdown(wait=True)
