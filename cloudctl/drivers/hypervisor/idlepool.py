"""Thread pools whose threads beyond the first `keep` end after an idle while, and lanes: per-host
limits over threads the hosts share.

Each hypervisor host needs its own limit (a hung host must not take the others' threads), and
concurrent launches on a host use up to its maximum. `ThreadPoolExecutor`'s threads never end, so
after one busy minute every host kept them all for good: ~38 KiB each (a touched stack, the
thread's Python and libvirt state, what its glibc tcache holds), 600 extra threads for 200 hosts.
Here a parked thread that stays idle for `idle_s` ends (its memory goes back to the allocator),
down to `keep`, which wait for work without end. Parked threads are woken last-parked first, so a
steady trickle of calls keeps one thread busy and lets the others time out.

A pool of its own per host still kept that host's first thread: ~28 KiB a host while idle, 5.4 MiB
of the empty controller with 200 hosts. `SharedPool` gives each host a `Lane` instead: an executor
with the host's own limit of calls in flight, run by threads all lanes share. A lane at its limit
queues its calls itself, so a hung host holds at most its limit of threads, and any other lane's
call takes a parked thread or starts one (the shared pool has no total limit). The monitor's polls
of 200 hosts, one every 50 ms, then keep one or two threads busy instead of 200 parked.
"""
from __future__ import annotations

import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class _Lane:
    """One executor's share of a core: at most `cap` of its calls queued in the core or running;
    the rest wait here, in order."""

    __slots__ = ("cap", "running", "waiting", "closed", "drained")

    def __init__(self, cap: int) -> None:
        self.cap, self.running, self.closed = cap, 0, False
        self.waiting: deque[_Work] | None = None   # made when first needed (an empty deque is ~0.6 KiB)
        self.drained: threading.Event | None = None   # made by a shutdown that waits


_Work = tuple[_Lane, Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_cores: weakref.WeakSet[_Core] = weakref.WeakSet()


def _at_exit() -> None:
    """Before the interpreter joins its threads, as ThreadPoolExecutor does: parked workers end and
    queued work still runs, so a pool nobody shut down cannot hold the exit for ever."""
    for core in list(_cores):
        core.shutdown(False, False)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # (public atexit runs after the joins)


def _check(max_workers: int, idle_s: float, keep: int) -> None:
    if max_workers < 1 or not 0 <= keep <= max_workers or idle_s <= 0:
        raise ValueError("a pool needs max_workers >= 1, 0 <= keep <= max_workers, idle_s > 0")


class IdlePool(Executor):
    """At most `max_workers` threads; those beyond `keep` end once idle for `idle_s` seconds.

    The threads hold the pool's core, not the pool: a pool dropped without `shutdown` still ends
    its threads (as ThreadPoolExecutor's do)."""

    def __init__(self, max_workers: int, name: str, *, idle_s: float = 2.0, keep: int = 1) -> None:
        _check(max_workers, idle_s, keep)
        self._core = core = _Core(max_workers, name, idle_s, keep)
        self._lane = _Lane(max_workers)
        weakref.finalize(self, core.shutdown, False, False)

    @property
    def threads(self) -> int:
        """How many worker threads are alive now."""
        return len(self._core.threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._core.submit(self._lane, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Queued work still runs (unless `cancel_futures`); parked threads end now."""
        self._core.close_lane(self._lane, False, cancel_futures)
        self._core.shutdown(wait, cancel_futures)


class SharedPool:
    """Threads shared by `Lane`s, without a total limit: those beyond `keep` end once idle for
    `idle_s` seconds. Each lane limits its own calls in flight."""

    def __init__(self, name: str, *, idle_s: float = 2.0, keep: int = 1) -> None:
        _check(max(keep, 1), idle_s, keep)
        self._core = core = _Core(sys.maxsize, name, idle_s, keep)
        weakref.finalize(self, core.shutdown, False, False)

    @property
    def threads(self) -> int:
        """How many worker threads are alive now, for all lanes."""
        return len(self._core.threads)

    def lane(self, max_workers: int) -> Lane:
        """An executor running at most `max_workers` of its calls at a time on the shared threads."""
        if max_workers < 1:
            raise ValueError("a lane needs max_workers >= 1")
        return Lane(self._core, max_workers)

    def shutdown(self, wait: bool = True) -> None:
        """Every lane's queued work still runs; parked threads end now; no lane takes more."""
        self._core.shutdown(wait, False)


class Lane(Executor):
    """One user's executor over a `SharedPool`: at most `max_workers` of its calls in flight (the
    others wait their turn in order), so a caller whose calls hang holds only that many threads."""

    def __init__(self, core: _Core, max_workers: int) -> None:
        self._core, self._lane = core, _Lane(max_workers)

    @property
    def running(self) -> int:
        """How many of this lane's calls are running or about to."""
        return self._lane.running

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._core.submit(self._lane, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Queued work still runs (unless `cancel_futures`); `wait`: until this lane's work is done.
        The shared threads stay."""
        self._core.close_lane(self._lane, wait, cancel_futures)


class _Core:
    def __init__(self, max_workers: int, name: str, idle_s: float, keep: int) -> None:
        self.max, self.keep, self.idle_s, self.name = max_workers, keep, idle_s, name
        self.lock = threading.Lock()
        self.work: deque[_Work] = deque()   # calls any thread may take: no lane over its cap
        self.parked: list[threading.Lock] = []   # idle workers' wake-up locks (held), the latest last
        self.threads: set[threading.Thread] = set()
        self.named = 0
        self.closed = False
        _cores.add(self)

    def submit(self, lane: _Lane, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Future[Any]:
        f: Future[Any] = Future()
        w: _Work = (lane, f, fn, args, kwargs)
        with self.lock:
            if self.closed or lane.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if lane.running >= lane.cap:
                if lane.waiting is None:
                    lane.waiting = deque()
                lane.waiting.append(w)   # the lane's next call to finish moves it on
                return f
            lane.running += 1
            self.work.append(w)
            if self.parked:
                self.parked.pop().release()
                return f
            if len(self.threads) >= self.max:
                return f   # every thread is busy: the first to finish takes it
            t = threading.Thread(target=self.run, name=f"{self.name}_{self.named}")
            self.named += 1
            self.threads.add(t)
        try:
            t.start()
        except BaseException:
            with self.lock:
                self.threads.discard(t)
                for i, queued in enumerate(self.work):
                    if queued is w:   # not taken by a busy thread yet: the caller hears why instead
                        del self.work[i]
                        self._finished(lane)
                        break
                else:
                    return f
            raise
        return f

    def _finished(self, lane: _Lane) -> None:
        """One of `lane`'s calls is done (or withdrawn): its next waiting call may go (lock held)."""
        lane.running -= 1
        if lane.waiting:
            lane.running += 1
            self.work.append(lane.waiting.popleft())
        elif lane.running == 0 and lane.drained is not None:
            lane.drained.set()

    def run(self) -> None:
        me = threading.current_thread()
        wake = threading.Lock()
        wake.acquire()
        done: _Lane | None = None
        while True:
            with self.lock:
                if done is not None:
                    self._finished(done)
                    done = None
                if self.work:
                    work: _Work | None = self.work.popleft()
                elif self.closed:
                    self.threads.discard(me)
                    return
                else:
                    work = None
                    self.parked.append(wake)
                    timeout = self.idle_s if len(self.threads) > self.keep else -1
            if work is not None:
                done, f, fn, args, kwargs = work
                del work
                if f.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as e:
                        f.set_exception(e)
                    else:
                        f.set_result(result)
                        del result
                del f, fn, args, kwargs   # (nothing of the call outlives it while parked)
                continue
            while not wake.acquire(timeout=timeout):
                with self.lock:
                    if wake not in self.parked:   # a submit or shutdown woke us just now
                        wake.acquire()   # (its release is done: this takes it at once)
                        break
                    if len(self.threads) > self.keep:
                        self.parked.remove(wake)
                        self.threads.discard(me)
                        return
                    timeout = -1   # one of the last `keep`: parked without end now

    def close_lane(self, lane: _Lane, wait: bool, cancel_futures: bool) -> None:
        """No more calls through `lane`; `cancel_futures`: its calls not started yet are cancelled;
        `wait`: until its calls are done."""
        with self.lock:
            lane.closed = True
            if cancel_futures:
                while lane.waiting:   # (None or empty: nothing waits)
                    lane.waiting.popleft()[1].cancel()
                for w in [w for w in self.work if w[0] is lane]:
                    self.work.remove(w)
                    w[1].cancel()
                    self._finished(lane)
            if not wait or lane.running == 0:
                return
            lane.drained = drained = threading.Event()
        drained.wait()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self.lock:
            self.closed = True
            if cancel_futures:
                while self.work:
                    self.work.popleft()[1].cancel()
            while self.parked:
                self.parked.pop().release()
            threads = list(self.threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()
