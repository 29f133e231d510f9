"""A thread pool whose threads beyond the first `keep` end after an idle while.

Each hypervisor host has a pool of its own (a hung host must not take the others' threads), and
concurrent launches on a host grow it to its maximum. `ThreadPoolExecutor`'s threads never end, so
after one busy minute every host keeps them all for good: ~38 KiB each (a touched stack, the
thread's Python and libvirt state, what its glibc tcache holds), 600 extra threads for 200 hosts.
Here a parked thread that stays idle for `idle_s` ends (its memory goes back to the allocator),
down to `keep`, which wait for work without end. Parked threads are woken last-parked first, so a
steady trickle of calls keeps one thread busy and lets the others time out.
"""
from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_cores: weakref.WeakSet[_Core] = weakref.WeakSet()


def _at_exit() -> None:
    """Before the interpreter joins its threads, as ThreadPoolExecutor does: parked workers end and
    queued work still runs, so a pool nobody shut down cannot hold the exit for ever."""
    for core in list(_cores):
        core.shutdown(False, False)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # (public atexit runs after the joins)


class IdlePool(Executor):
    """At most `max_workers` threads; those beyond `keep` end once idle for `idle_s` seconds.

    The threads hold the pool's core, not the pool: a pool dropped without `shutdown` still ends
    its threads (as ThreadPoolExecutor's do)."""

    def __init__(self, max_workers: int, name: str, *, idle_s: float = 2.0, keep: int = 1) -> None:
        if max_workers < 1 or not 0 <= keep <= max_workers or idle_s <= 0:
            raise ValueError("IdlePool needs max_workers >= 1, 0 <= keep <= max_workers, idle_s > 0")
        self._core = core = _Core(max_workers, name, idle_s, keep)
        weakref.finalize(self, core.shutdown, False, False)

    @property
    def threads(self) -> int:
        """How many worker threads are alive now."""
        return len(self._core.threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._core.submit(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Queued work still runs (unless `cancel_futures`); parked threads end now."""
        self._core.shutdown(wait, cancel_futures)


class _Core:
    def __init__(self, max_workers: int, name: str, idle_s: float, keep: int) -> None:
        self.max, self.keep, self.idle_s, self.name = max_workers, keep, idle_s, name
        self.lock = threading.Lock()
        self.work: deque[_Work] = deque()
        self.parked: list[threading.Lock] = []   # idle workers' wake-up locks (held), the latest last
        self.threads: set[threading.Thread] = set()
        self.named = 0
        self.closed = False
        _cores.add(self)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        f: Future[Any] = Future()
        with self.lock:
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self.work.append((f, fn, args, kwargs))
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
                for i, w in enumerate(self.work):
                    if w[0] is f:   # not taken by a busy thread yet: the caller hears why instead
                        del self.work[i]
                        break
                else:
                    return f
            raise
        return f

    def run(self) -> None:
        me = threading.current_thread()
        wake = threading.Lock()
        wake.acquire()
        while True:
            with self.lock:
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
                f, fn, args, kwargs = work
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

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self.lock:
            self.closed = True
            if cancel_futures:
                while self.work:
                    self.work.popleft()[0].cancel()
            while self.parked:
                self.parked.pop().release()
            threads = list(self.threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()
