"""glibc malloc tuning at start (cloudctl/malloc.py): the calls reach glibc and it takes them."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

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


def test_glib_slices_go_to_malloc_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("G_SLICE", raising=False)
    malloc.glib_slices_from_malloc()
    assert os.environ["G_SLICE"] == "always-malloc"
    monkeypatch.setenv("G_SLICE", "debug-blocks")   # an operator's own setting stays
    malloc.glib_slices_from_malloc()
    assert os.environ["G_SLICE"] == "debug-blocks"


def test_libvirt_is_not_loaded_before_serve_sets_the_glib_switch() -> None:
    """GLib reads G_SLICE once, at its first slice: the server's and the CLI's imports (and the config's
    validation) must leave libvirt unloaded until serve() has set it."""
    repo = Path(__file__).resolve().parent.parent
    code = ("import sys, cloudctl.cli, cloudctl.server\n"
            "from cloudctl.config import load_config\n"
            "load_config(None)\n"
            "print('libvirt' in sys.modules, 'libvirtmod' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
