"""What each RunInstances did, for bench/served.py: the loop's CPU and what overlapped it.

A slow launch in the scale bench's sequential phase (one client, one request at a time) is its own
work grown, the loop's other work landing inside it, a cycle collection, or a wait (the journal's
fsync, the GIL held by another thread, the machine's other load). With CLOUDCTL_BENCH_LAUNCHES=1 this
records for each EC2 request the handler's wall time and the loop thread's CPU time
(`time.thread_time`, so everything the loop ran meanwhile, this request's work or not), the time
the loop thread waited for a CPU meanwhile (/proc/thread-self/schedstat: this box's load), every cycle
collection on the loop thread (generation, start, end) and every journal write on its writer
thread. GET /v0/bench/launches gives each request with the collections and the journal write that
overlapped it. (The loop's other callbacks are not told apart: under uvloop its handles are C
objects that cannot be wrapped; `CLOUDCTL_BENCH_PROFILE_FIRST` in bench/scale.py profiles a launch
whole instead.)
"""
from __future__ import annotations

import gc
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

# (start, end, loop cpu, the loop thread's wait for a CPU meanwhile)
LAUNCHES: deque[tuple[float, float, float, float]] = deque(maxlen=20_000)
GCS: deque[tuple[float, float, int]] = deque(maxlen=100_000)             # (start, end, generation)
WRITES: deque[tuple[float, float]] = deque(maxlen=100_000)               # journal writes (writer thread)
_gc_t0 = [0.0]
_loop_thread = [0]


def _run_delay() -> float:
    """Seconds this thread has waited on a run queue for a CPU (the kernel's schedstat; 0 without it)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _gc(phase: str, info: dict[str, int]) -> None:
    if threading.get_ident() != _loop_thread[0]:
        return
    if phase == "start":
        _gc_t0[0] = time.perf_counter()
    else:
        GCS.append((_gc_t0[0], time.perf_counter(), info["generation"]))


def install() -> None:
    """Wrap the EC2 handler and the journal's write; add the gc callback."""
    from cloudctl.api.ec2.app import Ec2Api
    from cloudctl.store.journal import Journal

    _loop_thread[0] = threading.get_ident()
    handle = Ec2Api.handle   # (wrapped before the server's app takes the bound method)

    async def timed_handle(self: Any, request: Any) -> Any:
        d0, t0, c0 = _run_delay(), time.perf_counter(), time.thread_time()
        resp = await handle(self, request)
        LAUNCHES.append((t0, time.perf_counter(), time.thread_time() - c0, _run_delay() - d0))
        return resp

    Ec2Api.handle = timed_handle  # type: ignore[method-assign]
    write = Journal._write

    def timed_write(self: Any, items: Any) -> float:
        t0 = time.perf_counter()
        try:
            return write(self, items)   # type: ignore[no-any-return]
        finally:
            WRITES.append((t0, time.perf_counter()))

    Journal._write = timed_write  # type: ignore[method-assign]
    gc.callbacks.append(_gc)


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def report() -> dict[str, Any]:
    """Each EC2 request timed since the last call, with what overlapped it; then everything recorded
    is cleared (the scale bench calls it before its sequential launches and after them)."""
    launches, gcs, writes = list(LAUNCHES), list(GCS), list(WRITES)
    for d in (LAUNCHES, GCS, WRITES):
        d.clear()
    rows = []
    for t0, t1, cpu, queued in launches:
        gc_ms = [0.0, 0.0, 0.0]
        for g0, g1, gen in gcs[bisect_left(gcs, (t0 - 1.0,)):]:
            if g0 > t1:
                break
            gc_ms[gen] += _overlap(t0, t1, g0, g1) * 1000
        write_ms = sum(_overlap(t0, t1, w0, w1) for w0, w1 in writes[bisect_left(writes, (t0 - 1.0,)):]
                       if w0 <= t1) * 1000
        rows.append({"wall_ms": round((t1 - t0) * 1000, 3), "loop_cpu_ms": round(cpu * 1000, 3),
                     "run_queue_ms": round(queued * 1000, 3),
                     "gc_ms": [round(x, 3) for x in gc_ms], "journal_write_ms": round(write_ms, 3)})
    return {"launches": rows}
