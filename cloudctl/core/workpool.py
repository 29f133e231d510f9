"""A few dedicated threads for deliberately slow CPU work (password hashing), with a bounded wait list.

`asyncio.to_thread` shares the loop's default executor with the store's checkpoints and other
file work: a crowd of scrypt checks would queue ahead of them there and take every worker.
Here the work gets its own threads, so at most `workers` cores go to it, and at most
`max_waiting` jobs wait; past that, `run` refuses at once (Busy) instead of queueing without end.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the wait list is full: try again after `retry_after_s`."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__("the server is busy checking passwords; try again shortly")
        self.retry_after_s = retry_after_s


class WorkPool:
    def __init__(self, name: str, workers: int, max_waiting: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = workers + max_waiting
        self._lock = threading.Lock()   # jobs end on the workers' threads
        self._held = 0                  # jobs submitted and not yet finished (or cancelled)
        self.runs = 0                   # counters for /metrics
        self.refused = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._held >= self._slots:
                self.refused += 1
                raise Busy()
            self._held += 1
        try:
            fut: Future[T] = self._pool.submit(fn, *args)
        except RuntimeError:   # shut down
            self._release(None)
            raise
        self.runs += 1
        fut.add_done_callback(self._release)   # counted until the thread is done, even if the caller left
        return await asyncio.wrap_future(fut)

    def _release(self, _: Future[Any] | None) -> None:
        with self._lock:
            self._held -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
