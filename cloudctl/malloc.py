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

Elsewhere than glibc (musl, macOS) the first two do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("cloudctl")

M_ARENA_MAX = -8   # <malloc.h>
ARENAS = 2


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
