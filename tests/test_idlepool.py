"""The hypervisor driver's pools: threads up to their maximum, the extra ones end when idle, a hung pool or lane
does not take another's threads, shutdown runs what is queued."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor

import pytest

from cloudctl.drivers.hypervisor.idlepool import IdlePool, SharedPool
from tests.support.waits import wait_until


def _blocked(pool: Executor, n: int) -> tuple[threading.Event, list[threading.Event], list]:
    """`n` calls in `pool`, each blocked until the returned event is set; and their futures."""
    release = threading.Event()
    started = [threading.Event() for _ in range(n)]

    def call(i: int) -> int:
        started[i].set()
        release.wait()
        return i

    futs = [pool.submit(call, i) for i in range(n)]
    return release, started, futs


def test_results_exceptions_and_arguments_come_back() -> None:
    pool = IdlePool(2, "t")
    try:
        assert pool.submit(lambda a, *, b: a + b, 2, b=3).result(timeout=10) == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(timeout=10)
        assert list(pool.map(lambda x: x * 2, range(5))) == [0, 2, 4, 6, 8]
    finally:
        pool.shutdown()


def test_grows_to_its_maximum_and_no_further() -> None:
    pool = IdlePool(4, "t", idle_s=60)
    release, started, futs = _blocked(pool, 6)
    try:
        for ev in started[:4]:
            assert ev.wait(10)
        assert pool.threads == 4
        assert not started[4].is_set() and not started[5].is_set()   # queued behind the four
    finally:
        release.set()
    assert [f.result(timeout=10) for f in futs] == list(range(6))
    assert pool.threads == 4   # (idle for less than a minute: kept)
    pool.shutdown()
    assert pool.threads == 0


def test_extra_threads_end_when_idle_and_the_first_stays() -> None:
    pool = IdlePool(4, "t", idle_s=0.05)
    release, started, futs = _blocked(pool, 4)
    for ev in started:
        assert ev.wait(10)
    assert pool.threads == 4
    release.set()
    for f in futs:
        f.result(timeout=10)
    wait_until(lambda: pool.threads == 1, what="the extra threads to end")
    kept = pool.submit(threading.get_ident).result(timeout=10)
    # parked without end now: later calls still find the same thread
    assert all(pool.submit(threading.get_ident).result(timeout=10) == kept for _ in range(20))
    assert pool.threads == 1
    pool.shutdown()
    assert pool.threads == 0


def test_a_trickle_of_calls_keeps_one_thread_busy() -> None:
    """Parked threads are woken latest first, so the others time out under sequential calls."""
    pool = IdlePool(4, "t", idle_s=0.2)
    release, started, futs = _blocked(pool, 4)
    for ev in started:
        assert ev.wait(10)
    release.set()
    for f in futs:
        f.result(timeout=10)
    seen: set[int] = set()

    def trickle() -> bool:
        seen.add(pool.submit(threading.get_ident).result(timeout=10))
        return pool.threads == 1

    wait_until(trickle, interval=0.01, what="three of four threads to end under sequential calls")
    pool.shutdown()


def test_keep_zero_ends_every_thread_and_starts_again() -> None:
    pool = IdlePool(2, "t", idle_s=0.05, keep=0)
    assert pool.submit(lambda: 7).result(timeout=10) == 7
    wait_until(lambda: pool.threads == 0, what="the last thread to end")
    assert pool.submit(lambda: 8).result(timeout=10) == 8
    pool.shutdown()


def test_a_hung_pool_does_not_starve_another() -> None:
    hung, other = IdlePool(4, "hung"), IdlePool(4, "other")
    release, started, futs = _blocked(hung, 8)
    try:
        assert other.submit(lambda: "answered").result(timeout=10) == "answered"
    finally:
        release.set()
        for f in futs:
            f.result(timeout=10)
        hung.shutdown()
        other.shutdown()


def _shuts_down_as_executors_do(make: Callable[[], Executor]) -> None:
    """Two executors of one worker from `make`, three calls each, the first running: a shutdown
    refuses new calls and runs the queued ones, or (`cancel_futures`) cancels them."""
    pool = make()
    release, started, futs = _blocked(pool, 3)
    assert started[0].wait(10)
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    release.set()
    assert [f.result(timeout=10) for f in futs] == [0, 1, 2]   # queued before the shutdown: run

    pool = make()
    release, started, futs = _blocked(pool, 3)
    assert started[0].wait(10)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert futs[0].result(timeout=10) == 0
    for f in futs[1:]:
        with pytest.raises(CancelledError):
            f.result(timeout=10)


def test_shutdown_runs_what_is_queued_or_cancels_it() -> None:
    pools: list[IdlePool] = []

    def make() -> IdlePool:
        pools.append(IdlePool(1, "t"))
        return pools[-1]

    _shuts_down_as_executors_do(make)
    wait_until(lambda: all(p.threads == 0 for p in pools), what="the workers to end")


def test_a_pool_dropped_without_shutdown_ends_its_threads() -> None:
    pool = IdlePool(2, "dropped")
    assert pool.submit(lambda: 1).result(timeout=10) == 1
    (t,) = [t for t in threading.enumerate() if t.name == "dropped_0" and t.is_alive()]
    del pool
    t.join(10)
    assert not t.is_alive()


def test_bad_sizes_are_refused() -> None:
    for args in ((0, "t"), (2, "t", 0.0), (2, "t", 1.0, 3)):
        with pytest.raises(ValueError):
            IdlePool(*args[:2], **dict(zip(("idle_s", "keep"), args[2:])))


# -- lanes over shared threads (one per hypervisor host) ------------------------------------------

def test_lanes_share_their_threads() -> None:
    """Calls of many lanes one after the other run on one thread, not a thread per lane."""
    shared = SharedPool("t", idle_s=60)
    try:
        lanes = [shared.lane(4) for _ in range(50)]
        for i, lane in enumerate(lanes):
            assert lane.submit(lambda i=i: i * 2).result(timeout=10) == i * 2
        assert shared.threads == 1
    finally:
        shared.shutdown()


def test_a_hung_lane_holds_only_its_own_threads_and_another_answers() -> None:
    shared = SharedPool("t", idle_s=60)
    hung, other = shared.lane(4), shared.lane(4)
    release, started, futs = _blocked(hung, 8)
    try:
        wait_until(lambda: sum(e.is_set() for e in started) == 4, what="the lane's 4 calls to start")
        assert other.submit(lambda: "answered").result(timeout=10) == "answered"
        assert sum(e.is_set() for e in started) == 4 and shared.threads == 5
    finally:
        release.set()
    assert [f.result(timeout=10) for f in futs] == list(range(8))   # the queued ones ran, in order
    shared.shutdown()


def test_shared_threads_beyond_keep_end_when_idle() -> None:
    shared = SharedPool("t", idle_s=0.05, keep=0)
    release, started, futs = _blocked(shared.lane(3), 3)
    assert all(e.wait(10) for e in started) and shared.threads == 3
    release.set()
    wait_until(lambda: shared.threads == 0, what="the shared threads to end")
    assert shared.lane(1).submit(lambda: 9).result(timeout=10) == 9
    shared.shutdown()


def test_a_lane_shut_down_runs_or_cancels_its_queue_and_the_others_go_on() -> None:
    shared = SharedPool("t")
    _shuts_down_as_executors_do(lambda: shared.lane(1))
    assert shared.lane(2).submit(lambda: "still here").result(timeout=10) == "still here"

    lane = shared.lane(1)
    release, started, futs = _blocked(lane, 2)
    threading.Timer(0.2, release.set).start()
    lane.shutdown(wait=True)   # until both ran
    assert all(f.done() for f in futs)
    shared.shutdown()
