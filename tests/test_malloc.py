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


def _in_child(code: str, **env: str) -> list[str]:
    """Run `code` in a fresh interpreter (GLib is set once per process) and return its output lines."""
    clean = {k: v for k, v in os.environ.items() if k != "G_SLICE"} | env
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return out.stdout.split()


SLICES = "import os; from cloudctl import malloc; print(malloc.plain_glib_slices(), os.environ.get('G_SLICE'))"


def test_glib_slices_are_plain_malloc_unless_the_environment_says_otherwise() -> None:
    assert _in_child(SLICES) == ["True", "always-malloc"]
    assert _in_child(SLICES, G_SLICE="debug-blocks") == ["False", "debug-blocks"]   # the operator's own


def test_glib_slices_are_left_alone_once_libvirt_is_loaded() -> None:
    """GLib has read G_SLICE by then (or will not again): setting it would only mislead children."""
    assert _in_child("import libvirt; " + SLICES) == ["False", "None"]


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
