"""libvirt's event hooks on epoll, run by a thread of their own.

libvirt's default implementation (GLib's main loop, libvirt 9) polls every watched descriptor and
walks every source on each wake-up, and each remote call wakes it about twice (the connection turns
its socket's watch off and on around the RPC; a received message re-arms the keepalive timer). So
its CPU grew with the hosts: per launch 0.17 ms at 20 hosts, 0.42 ms at 200, 1.03 ms at 400; idle,
with the square of them (the monitor's polls are calls too): 0.1, 2.3 and 6.7 % of a core.

Here a watch is an epoll registration, changed in place by whichever thread libvirt calls the hook
from (epoll takes that while another thread waits: no wake-up); a timer is a heap entry, and the
waiting thread is woken only when one comes due before the wait in progress ends. A wake-up costs
what is ready, not what is registered. libvirt's own rules are kept: a disabled watch (no events)
or timer (-1) is not reported, a 0 timer fires on every iteration, and a removed watch's or timer's
free callback runs on the event thread after the removal, never inside it.
"""
from __future__ import annotations

import heapq
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

log = logging.getLogger("cloudctl.libvirt")

_READ, _WRITE = libvirt.VIR_EVENT_HANDLE_READABLE, libvirt.VIR_EVENT_HANDLE_WRITABLE
_ERROR, _HANGUP = libvirt.VIR_EVENT_HANDLE_ERROR, libvirt.VIR_EVENT_HANDLE_HANGUP


def _mask(events: int) -> int:
    """libvirt's wanted events as epoll's (errors and hang-ups epoll always reports)."""
    return (select.EPOLLIN if events & _READ else 0) | (select.EPOLLOUT if events & _WRITE else 0)


def _seen(revents: int) -> int:
    """What epoll reported, in libvirt's terms."""
    return ((_READ if revents & (select.EPOLLIN | select.EPOLLPRI) else 0)
            | (_WRITE if revents & select.EPOLLOUT else 0)
            | (_ERROR if revents & select.EPOLLERR else 0)
            | (_HANGUP if revents & select.EPOLLHUP else 0))


class _Watch:
    __slots__ = ("fd", "events", "cb", "opaque")

    def __init__(self, fd: int, events: int, cb: Any, opaque: Any) -> None:
        self.fd, self.events, self.cb, self.opaque = fd, events, cb, opaque


class _Timer:
    __slots__ = ("interval", "due", "cb", "opaque")

    def __init__(self, interval: int, due: float, cb: Any, opaque: Any) -> None:
        self.interval, self.due, self.cb, self.opaque = interval, due, cb, opaque


class EpollEvents:
    """The six hooks `libvirt.virEventRegisterImpl` takes, and `run` for the thread that serves them."""

    def __init__(self, free: Callable[[Any], object] = libvirt.virEventInvokeFreeCallback) -> None:
        self._free = free
        self.iterations = 0
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._ids = 0
        self._watches: dict[int, _Watch] = {}
        self._fds: dict[int, dict[int, _Watch]] = {}     # fd -> its watches (libvirt may watch one fd twice)
        self._timers: dict[int, _Timer] = {}
        self._heap: list[tuple[float, int]] = []          # (due, timer); stale entries skipped
        self._zero: set[int] = set()                      # timers of interval 0: every iteration
        self._frees: list[Any] = []                       # removed ones' opaques, freed on the thread
        self._wait_until = 0.0                            # when the wait in progress ends (0: not waiting)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ep.register(self._wake_r, select.EPOLLIN)

    def register(self) -> None:
        libvirt.virEventRegisterImpl(self.add_handle, self.update_handle, self.remove_handle,
                                     self.add_timeout, self.update_timeout, self.remove_timeout)

    # -- hooks (any thread; called by libvirt with the GIL held) --------------------------------

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:   # (the pipe is full: a wake-up is pending anyway)
            pass

    def _sync_fd(self, fd: int) -> None:
        """The fd's epoll registration to the union of its watches' events (under the lock)."""
        wanted = [w.events for w in self._fds.get(fd, {}).values() if w.events]
        mask = 0
        for events in wanted:
            mask |= _mask(events)
        try:
            if wanted:
                try:
                    self._ep.modify(fd, mask)
                except FileNotFoundError:
                    self._ep.register(fd, mask)
            else:
                self._ep.unregister(fd)
        except FileNotFoundError:   # (not registered, as a disabled watch is not)
            pass
        except OSError as e:   # (closed by libvirt before the watch's removal)
            log.debug("libvirt events: fd %d: %s", fd, e)

    def add_handle(self, fd: int, events: int, cb: Any, opaque: Any) -> int:
        with self._lock:
            self._ids += 1
            w = _Watch(fd, events, cb, opaque)
            self._watches[self._ids] = w
            self._fds.setdefault(fd, {})[self._ids] = w
            self._sync_fd(fd)
            return self._ids

    def update_handle(self, watch: int, events: int) -> None:
        with self._lock:
            w = self._watches.get(watch)
            if w is None or w.events == events:
                return
            w.events = events
            self._sync_fd(w.fd)

    def remove_handle(self, watch: int) -> int:
        with self._lock:
            w = self._watches.pop(watch, None)
            if w is None:
                return -1
            on_fd = self._fds[w.fd]
            del on_fd[watch]
            if not on_fd:
                del self._fds[w.fd]
            self._sync_fd(w.fd)
            self._frees.append(w.opaque)
        self.wake()
        return 0

    def _schedule(self, timer: int, t: _Timer) -> bool:
        """Place `t` by its interval (under the lock); True if the waiting thread must wake for it."""
        self._zero.discard(timer)
        if t.interval < 0:
            t.due = 0.0
            return False
        if t.interval == 0:
            self._zero.add(timer)
            return 0 < self._wait_until
        t.due = time.monotonic() + t.interval / 1000
        heapq.heappush(self._heap, (t.due, timer))
        return 0 < self._wait_until and t.due < self._wait_until

    def add_timeout(self, interval: int, cb: Any, opaque: Any) -> int:
        with self._lock:
            self._ids += 1
            t = _Timer(interval, 0.0, cb, opaque)
            self._timers[self._ids] = t
            wake = self._schedule(self._ids, t)
            timer = self._ids
        if wake:
            self.wake()
        return timer

    def update_timeout(self, timer: int, interval: int) -> None:
        with self._lock:
            t = self._timers.get(timer)
            if t is None:
                return
            t.interval = interval
            wake = self._schedule(timer, t)
        if wake:
            self.wake()

    def remove_timeout(self, timer: int) -> int:
        with self._lock:
            t = self._timers.pop(timer, None)
            if t is None:
                return -1
            self._zero.discard(timer)
            self._frees.append(t.opaque)
        self.wake()
        return 0

    # -- the thread ----------------------------------------------------------------------------

    def _timeout(self) -> float:
        """Seconds to wait (under the lock): 0 with work pending, -1 for none due."""
        if self._zero or self._frees:
            return 0.0
        heap = self._heap
        while heap:
            due, timer = heap[0]
            t = self._timers.get(timer)
            if t is not None and t.due == due:
                self._wait_until = due
                return max(0.0, due - time.monotonic())
            heapq.heappop(heap)   # (stale: removed, disabled or rescheduled since)
        self._wait_until = float("inf")
        return -1.0

    def _due(self) -> list[tuple[int, _Timer]]:
        """The timers to fire now, each rescheduled by its interval (under the lock)."""
        now = time.monotonic()
        fire = [(timer, self._timers[timer]) for timer in self._zero]
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, timer = heapq.heappop(heap)
            t = self._timers.get(timer)
            if t is None or t.due != due or t.interval <= 0:
                continue
            fire.append((timer, t))
            t.due = now + t.interval / 1000
            heapq.heappush(heap, (t.due, timer))
        return fire

    def run_once(self) -> None:
        self.iterations += 1
        with self._lock:
            timeout = self._timeout()
        try:
            ready = self._ep.poll(timeout)
        finally:
            self._wait_until = 0.0
        for fd, revents in ready:
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            with self._lock:
                watches = list(self._fds.get(fd, {}).items())
            seen = _seen(revents)
            for watch, w in watches:
                events = seen & (w.events | _ERROR | _HANGUP) if w.events else 0
                if events and watch in self._watches:
                    w.cb(watch, fd, events, w.opaque)
        with self._lock:
            fire = self._due()
        for timer, t in fire:
            if timer in self._timers:
                t.cb(timer, t.opaque)
        if self._frees:
            with self._lock:
                frees, self._frees = self._frees, []
            for opaque in frees:
                self._free(opaque)

    def run(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:   # (a callback's error must not end libvirt's events)
                log.exception("libvirt's event loop failed an iteration")
                time.sleep(0.1)
