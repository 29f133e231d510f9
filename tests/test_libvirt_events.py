"""libvirt's event hooks on epoll (drivers/hypervisor/libvirt_events.py), driven directly over pipes.

The driver's tests (test_libvirt_driver.py, the e2e tier over qemu:///system) run it under libvirt's
own remote client; these pin the hook semantics libvirt relies on, and that a wake-up does not
depend on how many descriptors are watched.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from cloudctl.drivers.hypervisor.libvirt_events import EpollEvents

READ, WRITE = libvirt.VIR_EVENT_HANDLE_READABLE, libvirt.VIR_EVENT_HANDLE_WRITABLE
HANGUP = libvirt.VIR_EVENT_HANDLE_HANGUP


class Loop:
    """An EpollEvents served by a thread of the test's, recording every callback."""

    def __init__(self) -> None:
        self.freed: list[tuple[Any, int]] = []
        self.ev = EpollEvents(free=lambda opaque: self.freed.append((opaque, threading.get_ident())))
        self.calls: list[tuple[Any, ...]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            self.ev.run_once()

    def on_fd(self, watch: int, fd: int, events: int, opaque: Any) -> None:
        self.calls.append(("fd", watch, fd, events, opaque))
        if events & READ:
            try:
                os.read(fd, 4096)
            except BlockingIOError:
                pass

    def on_timer(self, timer: int, opaque: Any) -> None:
        self.calls.append(("timer", timer, opaque))

    def of(self, kind: str, ident: int) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind and c[1] == ident]

    def stop(self) -> None:
        self.done.set()
        self.ev.wake()
        self.thread.join(5)


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()


def pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return r, w


def until(cond: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def test_a_watch_reports_what_it_asks_for_and_nothing_while_disabled(loop: Loop) -> None:
    r, w = pipe()
    watch = loop.ev.add_handle(r, READ, loop.on_fd, "sock")
    os.write(w, b"a")
    assert until(lambda: loop.of("fd", watch))
    assert loop.of("fd", watch)[0][2:] == (r, READ, "sock")
    loop.ev.update_handle(watch, 0)   # (as libvirt's client does around its own I/O)
    n = len(loop.of("fd", watch))
    os.write(w, b"b")
    time.sleep(0.2)
    assert len(loop.of("fd", watch)) == n
    loop.ev.update_handle(watch, READ)   # re-enabled: the byte waiting is reported
    assert until(lambda: len(loop.of("fd", watch)) > n)
    os.close(w)
    assert until(lambda: any(c[3] & HANGUP for c in loop.of("fd", watch)))
    loop.ev.update_handle(watch, 0)   # a disabled watch on a hung-up pipe: no busy loop
    time.sleep(0.05)
    it = loop.ev.iterations
    time.sleep(0.3)
    assert loop.ev.iterations - it <= 2
    assert loop.ev.remove_handle(watch) == 0
    os.close(r)


def test_two_watches_on_one_fd_each_get_their_own_events(loop: Loop) -> None:
    r, w = pipe()
    reader = loop.ev.add_handle(w, READ, loop.on_fd, "r")    # (a pipe's write end never reads)
    writer = loop.ev.add_handle(w, WRITE, loop.on_fd, "w")
    assert until(lambda: loop.of("fd", writer))
    assert all(c[3] == WRITE for c in loop.of("fd", writer))
    assert not loop.of("fd", reader)
    loop.ev.update_handle(writer, 0)
    assert loop.ev.remove_handle(reader) == 0
    assert loop.ev.remove_handle(writer) == 0
    os.close(r)
    os.close(w)


def test_timers_repeat_at_their_interval_and_0_fires_every_iteration(loop: Loop) -> None:
    every = loop.ev.add_timeout(50, loop.on_timer, "ka")
    never = loop.ev.add_timeout(-1, loop.on_timer, "off")
    time.sleep(0.52)
    fired = len(loop.of("timer", every))
    assert 6 <= fired <= 11, fired
    assert not loop.of("timer", never)
    loop.ev.update_timeout(every, -1)
    time.sleep(0.1)
    stopped = len(loop.of("timer", every))
    time.sleep(0.2)
    assert len(loop.of("timer", every)) == stopped
    # A waiting thread with no timer due is woken by one made due soon, and a 0 timer (libvirt's
    # "dispatch the queued domain events now") fires on every iteration until it is disabled.
    loop.ev.update_timeout(never, 0)
    assert until(lambda: len(loop.of("timer", never)) >= 3, 1.0)
    loop.ev.update_timeout(never, -1)
    n = len(loop.of("timer", never))
    time.sleep(0.1)
    assert len(loop.of("timer", never)) == n
    assert loop.ev.remove_timeout(every) == 0 and loop.ev.remove_timeout(never) == 0


def test_removal_frees_on_the_event_thread_once(loop: Loop) -> None:
    r, w = pipe()
    watch = loop.ev.add_handle(r, READ, loop.on_fd, "handle-opaque")
    timer = loop.ev.add_timeout(10_000, loop.on_timer, "timer-opaque")
    assert loop.ev.remove_handle(watch) == 0
    assert loop.ev.remove_timeout(timer) == 0
    assert loop.ev.remove_handle(watch) == -1 and loop.ev.remove_timeout(timer) == -1
    assert until(lambda: len(loop.freed) == 2)
    assert sorted(o for o, _ in loop.freed) == ["handle-opaque", "timer-opaque"]
    assert {t for _, t in loop.freed} == {loop.thread.ident}
    os.write(w, b"x")   # a removed watch is not reported
    time.sleep(0.1)
    assert not loop.of("fd", watch)
    os.close(r)
    os.close(w)


def test_a_wake_up_costs_what_is_ready_not_what_is_watched(loop: Loop) -> None:
    """What the GLib loop paid per host: 300 idle connections' sockets and keepalive timers, each
    timer re-armed further out per message. Pushing a deadline later wakes nobody, and one ready
    descriptor among 300 is one iteration."""
    pipes = [pipe() for _ in range(300)]
    watches = [loop.ev.add_handle(r, READ, loop.on_fd, i) for i, (r, _) in enumerate(pipes)]
    timers = [loop.ev.add_timeout(5_000, loop.on_timer, i) for i in range(300)]
    time.sleep(0.1)
    it = loop.ev.iterations
    for _ in range(20):
        for t in timers:
            loop.ev.update_timeout(t, 5_000)
        for wt in watches[:50]:   # (turned off and on around a call, as the client does)
            loop.ev.update_handle(wt, 0)
            loop.ev.update_handle(wt, READ)
    time.sleep(0.1)
    assert loop.ev.iterations - it <= 1
    os.write(pipes[123][1], b"x")
    assert until(lambda: loop.of("fd", watches[123]))
    assert loop.ev.iterations - it <= 3
    assert [c[4] for c in loop.calls] == [123]
    for wt in watches:
        loop.ev.remove_handle(wt)
    for t in timers:
        loop.ev.remove_timeout(t)
    for r, w in pipes:
        os.close(r)
        os.close(w)
