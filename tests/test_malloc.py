"""glibc malloc tuning at start (cloudctl/malloc.py): the calls reach glibc and it takes them."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from child_imports import loaded_after

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
    assert loaded_after("import cloudctl.cli, cloudctl.server", ("libvirt", "libvirtmod")) == [False, False]


# A process that notes each start (pid and GLIBC_TUNABLES) in a file, calls the re-exec, then says
# how glibc treats 7 freed 100-byte blocks: with 7 a class (glibc's default) all stay in the thread's
# tcache; with tcache_count=2 five go to the fastbins, which mallinfo2 counts (fsmblks); and whether
# its code objects keep their column tables (PYTHONNODEBUGRANGES).
STARTS = """
import ctypes, os, sys
from pathlib import Path
with Path(sys.argv[1]).open("a") as f:
    print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "-"), file=f)
from cloudctl import malloc
malloc.exec_with_tunables()

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
blocks = [libc.malloc(100) for _ in range(7)]   # (takes whatever the tcache held for the size first)
before = libc.mallinfo2().fsmblks
for b in blocks:
    libc.free(b)
fastbin = libc.mallinfo2().fsmblks - before
# A 2 MiB block is mapped on its own; freed, glibc's default raises its threshold past that size, so a
# second one comes from the heap; with the threshold fixed it is mapped again (mallinfo2's hblks).
big = libc.malloc(2 << 20)
libc.free(big)
held = libc.mallinfo2().hblks
big = libc.malloc(2 << 20)
mapped = libc.mallinfo2().hblks - held
libc.free(big)
columns = list(compile("a + b", "<s>", "eval").co_positions())[0][2] is not None
print(os.getpid(), fastbin, columns, mapped)
"""


def _starts(tmp_path: Path, **env: str) -> tuple[list[list[str]], list[str]]:
    """Run STARTS as a script (its own command line is what the exec repeats): (each start's pid and
    GLIBC_TUNABLES, the last process's pid, fastbin bytes freed and whether code keeps columns)."""
    script, log = tmp_path / "starts.py", tmp_path / "starts.log"
    script.write_text(STARTS)
    log.unlink(missing_ok=True)
    repo = Path(__file__).resolve().parent.parent
    decided = ("GLIBC_TUNABLES", "LD_PRELOAD", malloc.EXEC_SWITCH, malloc.NO_DEBUG_RANGES)
    clean = {k: v for k, v in os.environ.items() if k not in decided} | {"PYTHONPATH": str(repo)} | env
    done = subprocess.run([sys.executable, str(script), str(log)], env=clean, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in log.read_text().splitlines()], done.stdout.split()


@glibc
def test_serve_re_executes_itself_once_with_the_tcache_tunable_in_effect(tmp_path: Path) -> None:
    starts, (pid, fastbin, columns, mapped) = _starts(tmp_path)
    assert starts == [[pid, "-"], [pid, malloc.TUNABLES]]   # one exec, the same process
    assert int(fastbin) >= 5 * 100   # 5 of the 7 blocks past the 2-block tcache
    assert columns == "False"   # code objects without their column tables
    assert int(mapped) >= 1   # the mmap threshold fixed: a big block made again is mapped again


@glibc
def test_the_operators_debug_ranges_setting_is_kept_through_the_exec(tmp_path: Path) -> None:
    starts, (pid, _, columns, _) = _starts(tmp_path, **{malloc.NO_DEBUG_RANGES: ""})   # (empty: columns kept)
    assert starts == [[pid, "-"], [pid, malloc.TUNABLES]]
    assert columns == "True"


@glibc
def test_the_operators_tunables_and_switch_are_kept_without_an_exec(tmp_path: Path) -> None:
    own = "glibc.malloc.tcache_count=7"
    starts, (pid, fastbin, _, mapped) = _starts(tmp_path, GLIBC_TUNABLES=own)
    assert starts == [[pid, own]]
    assert int(fastbin) == 0   # glibc's 7 a class: every block stays in the tcache
    assert int(mapped) == 0    # glibc's own threshold, raised by the first big block freed
    starts, (pid, _, _, _) = _starts(tmp_path, **{malloc.EXEC_SWITCH: "0"})
    assert starts == [[pid, "-"]]
    # A preloaded tool (valgrind's vgpreload, heaptrack) or allocator: an exec would lose or skew it.
    starts, (pid, _, _, _) = _starts(tmp_path, LD_PRELOAD="libc.so.6")
    assert starts == [[pid, "-"]]


@glibc
def test_a_served_controller_runs_with_the_tunable(tmp_path: Path, model_cache: Path) -> None:
    """`cloudctl serve` as the tests (and an operator without `make run`) start it: the process
    serving is the one started (same pid), with the tunable glibc read at its exec."""
    from support import Server, write_config
    env_before = os.environ.get("GLIBC_TUNABLES")
    if env_before is not None or os.environ.get("LD_PRELOAD"):
        pytest.skip("this test process's environment already decides the tunables")
    srv = Server(write_config(tmp_path, model_cache)).start()
    try:
        assert srv.proc is not None
        raw = Path(f"/proc/{srv.proc.pid}/environ").read_bytes()
        environ = raw.split(b"\0")
        # (glibc's loader cuts the variable's value at its colons in place as it reads the tunables:
        # /proc shows each tunable as its own string)
        want = f"GLIBC_TUNABLES={malloc.TUNABLES}"
        assert f"\0{want}\0".encode() in b"\0" + raw or f"\0{want}\0".replace(":", "\0").encode() in b"\0" + raw
        if malloc.NO_DEBUG_RANGES not in os.environ:
            assert f"{malloc.NO_DEBUG_RANGES}=1".encode() in environ
        assert srv.admin("GET", "/v0/health")
    finally:
        srv.stop()


def test_make_run_starts_serve_as_the_re_exec_would(tmp_path: Path) -> None:
    """`make run` sets glibc's tunables itself, so `serve` does not re-execute: it must then give
    everything the re-exec gives, or `make run`'s controller keeps code objects' column tables
    (~0.3 MiB: docs/scaling.md, perf-base5). The target is run with the interpreter replaced by a
    script that writes the environment it was started with."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    out = tmp_path / "env"
    py = tmp_path / "py"
    py.write_text(f"#!/bin/sh\nenv > '{out}'\n")
    py.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", malloc.NO_DEBUG_RANGES, malloc.EXEC_SWITCH, "MAKEFLAGS", "MAKELEVEL")}
    subprocess.run(["make", "-s", "run", f"PY={py}"], cwd=Path(__file__).resolve().parent.parent, env=env,
                   check=True, capture_output=True, timeout=60)
    started = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert started["GLIBC_TUNABLES"] == malloc.TUNABLES
    assert started[malloc.NO_DEBUG_RANGES] == "1"
    assert malloc.exec_reason(started) is not None   # (so nothing re-executes to add what is missing)
