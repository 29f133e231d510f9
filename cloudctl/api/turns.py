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
        self._lent: object = None    # who passed the turn on in this turn of the loop (_lend)
        self._lent_since = 0.0
        self._passing = False        # a _pass is scheduled
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

    async def wait(self, since: float, token: object = None) -> None:
        """Wait for a turn and pass it on at once: what the caller does before its next await
        (a request's parse, signature check and the synchronous part of its handler) still runs
        alone, since the next holder runs in the loop's next turn at the earliest. `token`: as
        for `pass_on`."""
        await self._take(since)
        self._lend(token, since)
        self._release()

    def pass_on(self, token: object, since: float) -> bool:
        """`wait`'s case without suspending (True): the turn was free, so it is taken and passed on
        at once (False: call `wait`)."""
        if self._held or self._waiters:
            return False
        self._held = True
        self._lend(token, since)
        self._release()
        return True

    def _lend(self, token: object, since: float) -> None:
        """Until the turn passed on now is handed over (the loop's next turn), `token` may take
        it back once with `take_free`: a request that has not suspended since its start, so its
        first slice runs in the same turn as its start, as one block would (it would be next
        anyway, unless an older request is waiting, which then goes first)."""
        self._lent, self._lent_since = token, since

    def take_free(self, token: object = None) -> bool:
        """Take the turn without suspending if it is free (True); then `release` it after the
        block, as `turn` would. Free: nobody holds or awaits it, or `token` passed it on in this
        turn of the loop (see `_lend`) and no older request awaits it. False: use `turn`."""
        if self._held:
            if token is None or self._lent is not token:
                return False
            if self._waiters and self._waiters[0][0] <= self._lent_since:
                return False
            self._lent = None   # (once: a second slice waits for the loop's next turn)
            return True
        if self._waiters:
            return False
        self._held = True
        return True

    def release(self) -> None:
        """Give back a turn taken with `take_free`."""
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
        # (Once: a turn taken back by its lender is released while its pass is still pending.)
        if not self._passing:
            self._passing = True
            asyncio.get_running_loop().call_soon(self._pass)

    def _pass(self) -> None:
        self._passing = False
        self._lent = None
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():    # (a cancelled waiter is skipped)
                fut.set_result(None)
                return
        self._held = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)
