"""Background work after the answer, ordered per key (instance, volume, snapshot id).

Work under a key runs after the work already queued under it; work naming several keys (a
volume hot-plug names the volume and its instance) waits for all of them. Compute and volumes
share one queue, so a domain's re-definition and a disk hot-plug on it never interleave.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from functools import partial
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
        prev: set[asyncio.Task[None]] | None
        names: tuple[str, ...] = tuple(filter(None, keys))   # (the keys given, None and "" left out)
        last = self._last
        if len(names) == 1:   # (an instance's convergence: one key, without the comprehension's frame)
            t = last.get(names[0])
            prev = {t} if t is not None else None
        else:
            prev = {t for k in names if (t := last.get(k)) is not None} or None
        # Nothing queued under these keys (a launch's convergence, mostly): the work is the task
        # itself, without a wrapper coroutine and its closures; `_finished` logs its failure.
        task = self.spawn(self._after(prev, coro) if prev else coro)
        for k in names:
            last[k] = task
        task.add_done_callback(partial(self._finished, names))

    @staticmethod
    async def _after(prev: set[asyncio.Task[None]], coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await asyncio.wait(prev)
        except BaseException:
            coro.close()
            raise
        await coro

    def _finished(self, names: tuple[str, ...], task: asyncio.Task[None]) -> None:
        last = self._last
        for k in names:
            if last.get(k) is task:
                del last[k]
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, Exception):   # one failed piece of work must not stop the ones queued after it
            log.error("background work for %s failed", ", ".join(names), exc_info=err)

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
