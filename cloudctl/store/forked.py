"""Writing a checkpoint in a forked copy of the process, so the encoding never holds the loop's GIL.

On a worker thread the encoding (2-5 s of CPU at 50,000 instances) shares the GIL with the event loop:
each time the loop comes back from a system call it waits for the worker to let go, and when the box is
busy the worker can be preempted while it holds the GIL, so the loop waited 90-160 ms at once
(`bench/store_stalls.py`, 50k, load ~5). A child made by fork() holds the state as of the fork
(copy-on-write: the rows are frozen anyway) and has its own interpreter lock; the loop pays only for the
fork itself. Redis writes its snapshots the same way.

The child runs the given function only, touches nothing the parent's other threads may have been
holding (no libvirt, no loop, no logging handlers, no imports), and leaves through `os._exit`; it dies
with the parent (`PR_SET_PDEATHSIG`), leaving at most a `.tmp` file that the next prune removes.
Where fork() fails (no memory for the page tables, a platform without it) the caller falls back to a
worker thread.
"""
from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import os
import signal
import traceback
import weakref
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
#: the writer's niceness relative to the controller (CFS weight ~1/10 of the loop's when both wait)
NICE = 10
#: how much of a child's traceback comes back to the parent's log and exception
_ERROR_BYTES = 8192


class ChildFailed(Exception):
    """The forked writer failed: its traceback, or how it ended."""


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent: a dlopen in the child could wait forever on a loader
    lock that another of the parent's threads held at the fork."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):   # (not Linux: the child then outlives a killed parent)
        return None


def _die_with_parent(parent: int, prctl: Callable[..., int] | None) -> None:
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:   # the parent died before the request took effect
        os._exit(1)


def _child(fn: Callable[..., None], args: tuple[Any, ...], parent: int, prctl: Callable[..., int] | None,
           err: int, gate: int | None) -> None:
    code = 1
    try:
        gc.disable()   # (a collection would touch, and so copy, every page of the parent's objects)
        # Signals sent to the process group are the parent's to handle: a handler run here would
        # write to the parent's loop's wake-up descriptor, which the child shares, and so deliver
        # the signal twice. (SIGKILL cannot be blocked; faults end the child whatever the mask.)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        _die_with_parent(parent, prctl)
        # Beside the loop on a busy machine the loop comes first: the writer waits for a CPU, the
        # loop does not (a checkpoint that takes longer only lets the journal grow meanwhile).
        try:
            os.nice(NICE)
        except OSError:
            pass
        if gate is not None and os.read(gate, 1) != b"g":   # (closed unreleased: nothing to write)
            code = 0
            return
        fn(*args)
        code = 0
    except BaseException:
        try:
            os.write(err, traceback.format_exc().encode(errors="replace")[-_ERROR_BYTES:])
        except OSError:
            pass
    finally:
        os._exit(code)


def _wait(pid: int, err: int) -> tuple[int, bytes]:
    """The child's exit status and what it wrote to the error pipe (on a worker thread)."""
    chunks = []
    with os.fdopen(err, "rb") as f:
        while chunk := f.read(_ERROR_BYTES):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks)


class Child:
    """A forked writer, to be awaited (and, if made gated, released first)."""

    def __init__(self, pid: int, err: int, gate: int | None) -> None:
        self.pid = pid
        self._err = err
        self._gate = gate
        # A child never released nor awaited (its owner dropped unclosed) is let go and reaped later.
        self._abandon = weakref.finalize(self, _abandon, pid, err, gate)

    def release(self) -> None:
        """Let a gated child run its function (it has waited since the fork, holding the memory of then)."""
        if self._gate is not None:
            os.write(self._gate, b"g")
            os.close(self._gate)
            self._gate = None

    def abandon(self) -> None:
        """A gated child that must not write (what it holds was rolled back): it ends unreleased."""
        self._abandon()

    async def wait(self) -> None:
        """Return once the child ended with success; ChildFailed (with its traceback) otherwise.
        The wait is on a worker thread: nothing for the loop to do meanwhile."""
        self.release()
        self._abandon.detach()
        status, text = await asyncio.get_running_loop().run_in_executor(None, _wait, self.pid, self._err)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return
        how = (f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
               else f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}")
        detail = text.decode(errors="replace").strip()
        raise ChildFailed(f"the checkpoint writer (pid {self.pid}) ended with {how}"
                          + (f":\n{detail}" if detail else ""))


_UNREAPED: set[int] = set()


def _abandon(pid: int, err: int, gate: int | None) -> None:
    """A gated child's gate closed unreleased: it ends without running; reaped at a later fork."""
    for fd in (gate, err):
        if fd is not None:
            os.close(fd)
    _UNREAPED.add(pid)


def _reap() -> None:
    for pid in list(_UNREAPED):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _UNREAPED.discard(pid)


def fork_child(fn: Callable[..., None], *args: Any, gated: bool = False) -> Child | None:
    """Start `fn(*args)` in a forked copy of this process, which sees the memory as it is now; None
    when no child can be made (nothing ran: the caller writes another way). `gated`: the child waits
    for `Child.release` before it runs `fn` (the memory it reads is still the fork's). The fork is on
    the caller's thread: ~1-3 ms for a process of 120-200 MiB here (its page tables are copied)."""
    if not hasattr(os, "fork"):
        return None
    _reap()
    prctl = _prctl()
    r, w = os.pipe()
    gate_r, gate_w = os.pipe() if gated else (None, None)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (r, w, gate_r, gate_w):
            if fd is not None:
                os.close(fd)
        return None
    if pid == 0:   # the child: never returns
        os.close(r)
        if gate_w is not None:
            os.close(gate_w)
        _child(fn, args, parent, prctl, w, gate_r)
    os.close(w)
    if gate_r is not None:
        os.close(gate_r)
    return Child(pid, r, gate_w)
