"""One node's captured serial console: a size-capped log on disk, and followers of new output.

The log is two files, `<node>.log` and the previous `<node>.log.1`: when the current one reaches
half the cap it replaces the previous one, so a node's log holds its last cap/2..cap bytes and
never grows beyond the cap however long a node prints. File I/O runs in threads.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

FOLLOW_QUEUE = 1024      # chunks a follower may lag behind before it is cut off


class ConsoleLog:
    def __init__(self, directory: Path, node: str, cap: int) -> None:
        self.path = directory / f"{node}.log"
        self.previous = directory / f"{node}.log.1"
        self.half = max(1, cap // 2)
        self._lock = asyncio.Lock()
        self._followers: set[asyncio.Queue[bytes | None]] = set()

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        while data:
            room = self.half - size
            if room <= 0:
                os.replace(self.path, self.previous)
                size, room = 0, self.half
            with open(self.path, "ab") as f:
                f.write(data[:room])
            size += min(room, len(data))
            data = data[room:]

    def _read(self) -> bytes:
        out = b""
        for p in (self.previous, self.path):
            try:
                out += p.read_bytes()
            except FileNotFoundError:
                pass
        return out

    def _remove(self) -> None:
        for p in (self.previous, self.path):
            p.unlink(missing_ok=True)

    async def append(self, data: bytes) -> None:
        async with self._lock:
            await asyncio.to_thread(self._append, data)
            for q in list(self._followers):
                try:
                    q.put_nowait(data)
                except asyncio.QueueFull:      # too slow: cut it off rather than buffer without bound
                    self._followers.discard(q)
                    q.get_nowait()
                    q.put_nowait(None)

    async def read(self) -> bytes:
        async with self._lock:
            return await asyncio.to_thread(self._read)

    async def remove(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._remove)

    async def snapshot_and_follow(self) -> tuple[bytes, asyncio.Queue[bytes | None]]:
        """The log so far and a queue of what is appended after it (None: the capture ended)."""
        async with self._lock:
            data = await asyncio.to_thread(self._read)
            q: asyncio.Queue[bytes | None] = asyncio.Queue(FOLLOW_QUEUE)
            self._followers.add(q)
            return data, q

    def unfollow(self, q: asyncio.Queue[bytes | None]) -> None:
        self._followers.discard(q)

    def end_followers(self) -> None:
        for q in self._followers:
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
        self._followers.clear()
