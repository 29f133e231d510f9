"""A launch's row writes through the production indexes, counted in instructions: load-proof and
without the server's noise (libvirt's events and the request's batching move whole-server counts by
several %).

    .venv/bin/python bench/store_writes.py [--repo DIR] [--launches 20] [--replays 200]

Opens a cloud (`test:///` hosts, the embedded default config, a temp dir) of `--repo`'s cloudctl
(default: this checkout), launches `--launches` instances one at a time with 3 tags each, and records
every row write (`Table._set`) of the last launch, its convergence included. Then it replays those
writes `--replays` times, each followed by their undo (the old values written back, newest first, as a
rolled-back transaction does), alone on the thread, under valgrind's callgrind when `--callgrind` (the
default when valgrind is found): instructions per launch's writes (and their undo), and the thread's
CPU time for comparison. Run it for main and a branch in the same session.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _callgrind(args: list[str]) -> None:
    """callgrind_control on this process, which keeps running (sleeping) so valgrind serves it."""
    proc = subprocess.Popen(["callgrind_control", *args, str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        time.sleep(0.01)
    if proc.returncode:
        raise RuntimeError(f"callgrind_control {args} failed")


async def measure(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(a.repo.resolve() / "tests"))
    from cloudctl.config import load_config  # noqa: PLC0415
    from cloudctl.core.cloud import Cloud  # noqa: PLC0415
    from cloudctl.core.context import Caller  # noqa: PLC0415
    from cloudctl.core.launch import LaunchSpec  # noqa: PLC0415
    from cloudctl.store import store as store_mod  # noqa: PLC0415

    from support import write_config  # noqa: PLC0415

    cfg_path = write_config(tmp, tmp / "cache")
    cloud = await Cloud.open(load_config(cfg_path), "http://127.0.0.1:0")
    try:
        caller = Caller(await cloud.users.create("bench"))
        image = next(iter(cloud.images.table.values()))
        writes: list[tuple[Any, str, Any, Any]] = []
        real_set = store_mod.Table._set

        def recording(table: Any, key: str, row: Any) -> Any:
            old = real_set(table, key, row)
            writes.append((table, key, old, row))
            return old

        for n in range(a.launches):
            last = n == a.launches - 1
            if last:
                store_mod.Table._set = recording   # type: ignore[method-assign]
            await cloud.compute.run(caller, LaunchSpec(image.id, 1, 1, instance_type="t3.nano",
                                                       instance_tags=(("Name", f"n{n}"), ("env", "bench"),
                                                                      ("team", f"t{n % 5}"))))
            await cloud.compute.idle()
            await asyncio.sleep(0.2)   # the state change to running, the group filters
            if last:
                store_mod.Table._set = real_set   # type: ignore[method-assign]
        by_table: dict[str, int] = {}
        for t, _, old, row in writes:
            kind = "put" if old is None else ("delete" if row is None else "update")
            by_table[f"{t.name} {kind}"] = by_table.get(f"{t.name} {kind}", 0) + 1
        # Undo first so each replay starts from the state before the launch's writes.
        for t, key, old, _ in reversed(writes):
            t._set(key, old)
        redo = [(t._set, key, row) for t, key, _, row in writes]
        undo = [(t._set, key, old) for t, key, old, _ in reversed(writes)]
        cg = a.callgrind
        if cg:
            _callgrind(["-z"])
        cpu = time.thread_time()
        for _ in range(a.replays):
            for fn, key, row in redo:
                fn(key, row)
            for fn, key, row in undo:
                fn(key, row)
        cpu = time.thread_time() - cpu
        instructions = None
        if cg:
            _callgrind(["-d", "replay"])
            for f in sorted(Path.cwd().glob(f"cg.{os.getpid()}*")):
                text = f.read_text(errors="replace")
                if "replay" in text.split("\nevents:", 1)[0]:
                    instructions = next(int(line.split()[1]) for line in text.splitlines()
                                        if line.startswith(("summary:", "totals:")))
        for fn, key, row in redo:   # leave the launch applied, as it was
            fn(key, row)
        return {"writes_per_launch": len(writes), "by_table": by_table, "replays": a.replays,
                "instructions_per_launch_writes_and_undo": None if instructions is None
                else round(instructions / a.replays),
                "cpu_us_per_launch_writes_and_undo": round(cpu / a.replays * 1e6, 1)}
    finally:
        await cloud.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose cloudctl to measure")
    p.add_argument("--launches", type=int, default=20)
    p.add_argument("--replays", type=int, default=200)
    p.add_argument("--no-callgrind", dest="callgrind", action="store_false")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)   # already under valgrind
    a = p.parse_args()
    if a.callgrind and not a.inner:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind not found: use --no-callgrind")
        with tempfile.TemporaryDirectory(prefix="store-writes-") as d:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p",
                   sys.executable, __file__, "--inner", "--repo", str(a.repo), "--launches", str(a.launches),
                   "--replays", str(a.replays)]
            sys.exit(subprocess.run(cmd, cwd=d, stderr=subprocess.DEVNULL).returncode)
    sys.path.insert(0, str(a.repo.resolve()))
    with tempfile.TemporaryDirectory(prefix="store-writes-") as d:
        res = asyncio.run(measure(a, Path(d)))
    res["repo"] = str(a.repo)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
