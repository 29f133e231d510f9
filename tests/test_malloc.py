"""glibc malloc tuning at start (cloudctl/malloc.py): the calls reach glibc and it takes them."""
from __future__ import annotations

import platform

import pytest

from cloudctl import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt and malloc_trim")


@glibc
def test_glibc_takes_the_arena_limit() -> None:
    assert malloc.limit_arenas(8)   # (8 per core is glibc's own default: this test process is not changed)


@glibc
def test_trim_reaches_glibc() -> None:
    """(Whether pages were freed depends on the heap's state; a missing symbol or a wrong
    signature raises.)"""
    assert malloc._libc() is not None
    assert malloc.trim() in (True, False)
