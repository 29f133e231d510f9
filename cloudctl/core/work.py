"""Background work after the answer, ordered per key (instance, volume, snapshot id).

Work under a key runs after the work already queued under it; work naming several keys (a
volume hot-plug names the volume and its instance) waits for all of them. Compute and volumes
share one queue, so a domain's re-definition and a disk hot-plug on it never interleave.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger("cloudctl.work")


class KeyedWork:
    def __init__(self) -> None:
        self._last: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Unordered background work, still awaited by `idle`."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def run(self, keys: Iterable[str | None], coro: Coroutine[Any, Any, Any]) -> None:
        names: tuple[str, ...] = tuple(k for k in keys if k)
        prev = {t for k in names if (t := self._last.get(k)) is not None}

        async def after() -> None:
            try:
                if prev:
                    await asyncio.wait(prev)
            except BaseException:
                coro.close()
                raise
            try:
                await coro
            except Exception:  # one failed piece of work must not stop the ones queued after it
                log.exception("background work for %s failed", ", ".join(names))

        task = self.spawn(after())
        for k in names:
            self._last[k] = task

        def forget(t: asyncio.Task[None]) -> None:
            for k in names:
                if self._last.get(k) is t:
                    del self._last[k]
        task.add_done_callback(forget)

    def busy(self, key: str) -> bool:
        """Is work queued or running under `key`?"""
        return key in self._last

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until no work is in flight (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout: float = 30.0) -> None:
        """Let work finish for up to `timeout` s, then cancel the rest (records stay
        transitional and the next start drives them again)."""
        try:
            await asyncio.wait_for(self.idle(), timeout)
        except TimeoutError:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
