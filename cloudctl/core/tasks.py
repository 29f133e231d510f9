"""The cloud's background tasks under one owner.

Host pollers, fence loops, console captures, switch workers, marketplace polls and the periodic
jobs are started through one `Supervisor`, each in a named group. At shutdown the groups are
cancelled in the order the supervisor was given (declared once, by the cloud), each group fully
ended before the next, so a poller cannot start work in a service that already stopped. A task
that dies of an exception is logged with its traceback, never silently lost.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

log = logging.getLogger("cloudctl.tasks")

T = TypeVar("T")


class Supervisor:
    def __init__(self, order: Sequence[str]) -> None:
        self.order = tuple(order)
        self._groups: dict[str, set[asyncio.Task[Any]]] = {g: set() for g in self.order}
        self.stopping = False

    def spawn(self, group: str, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `coro` in `group`; its owner may still cancel it (the supervisor forgets it then)."""
        tasks = self._groups.get(group)
        if tasks is None:
            coro.close()
            raise KeyError(f"task group {group!r} is not one of {self.order}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(self._ended)
        if self.stopping:   # shutting down: it never runs (its group may be cancelled already)
            task.cancel()
        return task

    def every(self, group: str, period: float, fn: Callable[[], Awaitable[object]],
              poll: float | None = None) -> asyncio.Task[None]:
        """Call `fn` every `period` s (woken every `poll` s if given: `fn` decides if it is due)."""
        return self.spawn(group, _every(poll or period, fn), f"every {period:g}s {getattr(fn, '__name__', fn)}")

    def running(self, group: str) -> int:
        return len(self._groups[group])

    def _ended(self, task: asyncio.Task[Any]) -> None:
        for tasks in self._groups.values():
            tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %r died: %s: %s", task.get_name(), type(exc).__name__, exc,
                      exc_info=exc)

    async def stop(self) -> None:
        """Cancel every group in the declared order; new tasks are refused from here on."""
        self.stopping = True
        for group in self.order:
            tasks = list(self._groups[group])
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _every(period: float, fn: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            await fn()
        except Exception:  # a failed round must not end the loop; the next one retries
            log.exception("periodic task %s failed", getattr(fn, "__name__", fn))
