"""glibc malloc (and GLib slice) tuning for the server process (issue 14: base RSS).

Three measured savings (`make run`'s config; 200 hosts behind libvirtds in bench/scale.py):

- `limit_arenas`: glibc gives each thread that allocates its own arena, up to 8 per core; every
  host's libvirt worker thread then keeps its own partly used heap. Two arenas save ~1.3 MiB with
  200 hosts (~0.5 MiB with 2). Little contends for them: Python's small objects come from its own
  allocator under the GIL; only large blocks and C libraries (libvirt, OpenSSL) call malloc.
  Must run before the first thread is started (an arena, once given, stays the thread's).
- `trim`: start-up (imports, pydantic schema building, the checkpoint's load) leaves free memory
  inside the heap that glibc keeps; one malloc_trim after start returns ~1.7 MiB of it.
- `plain_glib_slices`: GLib's slice allocator (libvirt's lists, its GLib event loop's sources) keeps
  magazines of freed slices per thread, and each host's libvirt pool thread allocates some: ~23 KiB a
  thread, ~4.7 MiB of glibc's heap with 200 hosts (bench/scale.py's hosts, GET /v0/bench/heap).
  Slices from plain malloc are what GLib does anyway from 2.76 on. Set in the environment, where GLib
  reads it at its first slice: before libvirt is loaded.

And one that glibc reads only when a process starts:

- `exec_with_tunables`: `GLIBC_TUNABLES=glibc.malloc.tcache_count=2`. glibc keeps up to 7 freed
  blocks per size class in each thread's cache (its tcache); each host's kept libvirt thread then parks
  blocks nobody reuses: 2 a class was ~5 MiB less at 20,000 instances with 200 hosts, at no measurable
  cost in instructions (docs/scaling.md, perf-mem4). `serve` re-executes itself once with it, so every
  way of starting the server (`make run`, a service unit, `cloudctl serve`, the benches) gets it.
  With it `glibc.malloc.mmap_threshold=1048576`: blocks of 1 MiB and more (the tables of a large
  state, a 50,000-entry dict is ~2.5 MiB) are mapped on their own and given back when a resize frees
  them. glibc's default threshold rises to the size of each such block freed, so the next tables came
  from the heap and the old ones left holes in it that it kept (~4 MiB at 50,000 instances). The price
  is page faults for each such block made again: ~10,000 per checkpoint at 50,000 (its encoding's
  buffers; 43,000 with a 128 KiB threshold), nothing a launch or a describe by id allocates
  (docs/scaling.md, perf-mem7).
  The same exec gives the interpreter `PYTHONNODEBUGRANGES=1` unless the environment has it (even
  empty): code objects without their column tables (~0.35 MiB of the base RSS, docs/scaling.md,
  perf-base5); tracebacks then name the line without carets under the failing expression.

Elsewhere than glibc (musl, macOS) none of these does anything.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger("cloudctl")

M_ARENA_MAX = -8   # <malloc.h>
ARENAS = 2
MMAP_THRESHOLD = 1 << 20
TUNABLES = f"glibc.malloc.tcache_count=2:glibc.malloc.mmap_threshold={MMAP_THRESHOLD}"
# The re-exec's switch: "0" (or "no", "off", "false") in the environment turns it off; the re-executed
# process gets "done", so nothing execs twice even if the loader dropped GLIBC_TUNABLES.
EXEC_SWITCH = "CLOUDCTL_MALLOC_EXEC"
NO_DEBUG_RANGES = "PYTHONNODEBUGRANGES"   # (read by the interpreter at its start only, as glibc's tunables)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas for the whole process; True if glibc took it."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return ok


def trim() -> bool:
    """Give the heap's free pages back to the kernel; True if any were (blocks for ~1 ms: call it
    off the event loop)."""
    libc = _libc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False


def plain_glib_slices() -> bool:
    """GLib slices from plain malloc (`G_SLICE=always-malloc`) unless the environment says otherwise;
    True if that is what GLib will use. GLib reads G_SLICE once, at its first slice, so this must run
    before libvirt is loaded (False after: too late to know). Children inherit it, harmlessly."""
    if "libvirt" in sys.modules:
        return False
    return os.environ.setdefault("G_SLICE", "always-malloc") == "always-malloc"


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def exec_reason(env: Mapping[str, str]) -> str | None:
    """Why the process should not re-execute itself with the tunables (None: it should)."""
    if env.get("GLIBC_TUNABLES") is not None:
        return "GLIBC_TUNABLES is set"   # the operator's own (or ours, after the exec): kept as is
    if env.get(EXEC_SWITCH, "").lower() in ("0", "no", "off", "false", "done"):
        return f"{EXEC_SWITCH} says so"
    if env.get("LD_PRELOAD"):
        # valgrind (vgpreload), heaptrack or another allocator is in charge: an exec would lose the
        # tool's hold on the process (valgrind --trace-children=no) or measure another malloc anyway.
        return "LD_PRELOAD is set"
    if not _glibc():
        return "not glibc"
    if not sys.executable or not getattr(sys, "orig_argv", None):
        return "no interpreter path to exec"
    return None


def exec_with_tunables() -> None:
    """Replace this process (same pid, interpreter, command line and environment) by one started with
    `GLIBC_TUNABLES` and `PYTHONNODEBUGRANGES` (see the module's docstring), unless `exec_reason` says
    not to; returns only then.
    Call it first in `serve`, before threads, open files or state: nothing started here survives."""
    reason = exec_reason(os.environ)
    if reason is not None:
        log.debug("no re-exec for GLIBC_TUNABLES: %s", reason)
        return
    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
    env.setdefault(NO_DEBUG_RANGES, "1")   # (an operator's own value, even empty, is kept)
    env[EXEC_SWITCH] = "done"
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, sys.orig_argv, env)
