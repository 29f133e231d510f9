"""glibc (and GLib) allocator tuning for the server process (issue 14: base RSS).

Measured savings (`make run`'s config; 200 hosts behind libvirtds in bench/scale.py):

- `limit_arenas`: glibc gives each thread that allocates its own arena, up to 8 per core; every
  host's libvirt worker thread then keeps its own partly used heap. Two arenas save ~1.3 MiB with
  200 hosts (~0.5 MiB with 2). Little contends for them: Python's small objects come from its own
  allocator under the GIL; only large blocks and C libraries (libvirt, OpenSSL) call malloc.
  Must run before the first thread is started (an arena, once given, stays the thread's).
- `trim`: start-up (imports, pydantic schema building, the checkpoint's load) leaves free memory
  inside the heap that glibc keeps; one malloc_trim after start returns ~1.7 MiB of it.
- `glib_slices_from_malloc`: GLib before 2.76 (libvirt's; Debian 12 has 2.74) gives every thread
  that allocates through GSlice its own magazines of cached blocks; each host's libvirt worker
  thread then keeps ~24 KiB of them (bench/base_rss.py: ~4.7 MiB with 200 hosts). G_SLICE=always-malloc,
  GLib's documented switch, sends GSlice to malloc, as GLib 2.76 and later always do.

Elsewhere than glibc (musl, macOS) the first two do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

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


def glib_slices_from_malloc() -> None:
    """G_SLICE=always-malloc unless the environment already says otherwise. GLib reads it once, at
    its first slice allocation: call before libvirt is loaded. (Children inherit it: qemu-img then
    allocates as GLib 2.76 does.)"""
    os.environ.setdefault("G_SLICE", "always-malloc")


def trim() -> bool:
    """Give the heap's free pages back to the kernel; True if any were (blocks for ~1 ms: call it
    off the event loop)."""
    libc = _libc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False
