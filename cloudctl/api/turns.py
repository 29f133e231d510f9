"""Turns: one slice of CPU-bound answer writing per turn of the event loop, across all requests.

Yielding between slices (`await asyncio.sleep(0)`) is not enough on its own: the tasks that are
ready in one turn of the loop all run in it, so 50 concurrent DescribeInstances would each render
a slice in the same turn and hold the loop for 50 slices, and every answer would finish late,
near the end of the burst. Here an answer waits for a turn before each slice; a turn is handed
over only in the loop's next turn (after its timers and I/O), so the loop never runs more than
one slice at a time, and it goes to the request that came first, so answers finish in arrival
order, as they would if each were written in one go. (Giving an answer's first slice priority
instead, so that a small answer never waits behind a long one, measured 1.6-1.8x the one-shot
p50 in bench/monitor.py: the older answers' last pieces waited behind every newer first slice.)
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Turns:
    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []   # a heap: first come first
        self._seq = itertools.count()

    @asynccontextmanager
    async def turn(self, since: float) -> AsyncIterator[None]:
        """Hold the turn in the block (which must not await); `since`: when the request came."""
        await self._take(since)
        try:
            yield
        finally:
            self._release()

    async def wait(self, since: float) -> None:
        """Wait for a turn and pass it on at once: what the caller does before its next await
        (a request's parse, signature check and the synchronous part of its handler) still runs
        alone, since the next holder runs in the loop's next turn at the earliest."""
        await self._take(since)
        self._release()

    async def _take(self, since: float) -> None:
        if not self._held and not self._waiters:
            self._held = True   # free: take it without suspending
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (since, next(self._seq), fut))
        try:
            await fut          # _pass hands the turn over (`_held` stays True)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()   # handed over, but the request went away: pass it on
            raise

    def _release(self) -> None:
        # Scheduled, not done now: the next holder runs in the loop's next turn at the earliest.
        asyncio.get_running_loop().call_soon(self._pass)

    def _pass(self) -> None:
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():    # (a cancelled waiter is skipped)
                fut.set_result(None)
                return
        self._held = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)
