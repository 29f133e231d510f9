"""Where a launch's and a by-id describe's time go, and what an instance costs in memory, at 5,000.

Usage:  .venv/bin/python bench/profile_hot.py [--instances 5000] [--hosts 20] [--calls 300] [--json out.json]

Two controllers in turn, each through bench/served.py over `--hosts` simulated hosts (out of process, as in
bench/scale.py), filled as the scale bench fills them (tags, groups, volumes, addresses):

1. memory: tracemalloc from the first import; the baseline is taken with the users made and no
   instance, the comparison once `--instances` run: Python allocations still live, by file and by
   line, and per instance. (C allocations, libvirt's for one, are not traced; RSS is given beside.)
2. time: the handler's own time for `--calls` sequential RunInstances(1) and 5 × that many
   DescribeInstances by id, first unprofiled (server-side p50/mean), then twice under cProfile on
   the event-loop thread (work on the journal and libvirt threads is not in it): with the wall
   clock (waits for the GIL, for libvirt's locks and for a CPU included) and with the thread's
   CPU clock (the code's own cost); the top functions by own and by cumulative time, per request.
   cProfile adds its own cost per call, so read the shares, and the unprofiled figures for the
   absolute time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import scale  # noqa: E402
from scale_load import Client  # noqa: E402


async def memory(b: scale.Bench, n: int) -> dict[str, Any]:
    assert b.cc is not None
    async with Client(b.cc.ec2_url, "cloudctl-1") as c:
        await b.make_accounts(c)
        rss0 = b.rss()
        b.admin("POST", "/v0/bench/memory")
        await b.fill(c, n)
        await b.converged(c)
        await b.add_addresses(c)
        await asyncio.sleep(2)
        out = b.admin("GET", "/v0/bench/memory?top=30")
        out["rss_growth_mib"] = round(b.rss() - rss0, 1)
        out["instances"] = b.count
        out["bytes_per_instance"] = round(out["total_bytes"] / b.count)
        for row in out["filename"] + out["lineno"]:
            row["bytes_per_instance"] = round(row["bytes"] / b.count)
        return out


CALLGRIND = ("valgrind --tool=callgrind --instr-atstart=no --collect-systime=no --trace-children=no "
             "--separate-threads=yes --callgrind-out-file={out}")


def _callgrind(b: scale.Bench, *args: str) -> None:
    assert b.cc is not None
    subprocess.run(["callgrind_control", *args, str(b.cc.proc.pid)], check=True, capture_output=True)


def _instructions(b: scale.Bench) -> tuple[int, int]:
    """Instructions executed by the server while collection was on, since the last dump: (all
    its threads, the event loop's thread alone): the figures that do not move with the load."""
    for old in b.tmp.glob("callgrind.out*"):
        old.unlink()
    _callgrind(b, "-d")
    dumps: list[Path] = []
    for _ in range(100):
        time.sleep(0.5)
        now = [p for p in b.tmp.glob("callgrind.out*") if p.stat().st_size]
        if now and len(now) == len(dumps):
            break
        dumps = now
    total = loop = 0
    for p in dumps:
        for line in p.read_text().splitlines():
            if line.startswith("totals:"):   # ("summary:" is 0 when collection starts off)
                n = int(line.split()[1])
                total += n
                if p.name.endswith("-01"):   # (thread 1: the main thread, which runs the loop)
                    loop += n
                break
    return total, loop


async def timing(b: scale.Bench, n: int, calls: int, dump_dir: str | None = None,
                 callgrind: bool = False) -> dict[str, Any]:
    assert b.cc is not None
    out: dict[str, Any] = {}
    async with Client(b.cc.ec2_url, "cloudctl-1") as c:
        await b.make_accounts(c)
        await b.fill(c, n)
        await b.converged(c)
        await b.add_addresses(c)
        a = b.accounts[0]

        def runs(k: int) -> list[Any]:
            return [b.launch_req(c, b.accounts[i % len(b.accounts)], 1, f"p-{b.batch}") for i in range(k)]

        def by_id(k: int) -> list[Any]:
            picks = b.rng.sample(a.instances, min(100, len(a.instances)))
            one_each = [c.sign(a, {"Action": "DescribeInstances", "InstanceId.1": iid}) for iid in picks]
            return (one_each * (k // len(one_each) + 1))[:k]

        phases = (("RunInstances", runs, calls, 1), ("DescribeInstances", by_id, calls * 5, 1),
                  ("RunInstances", runs, calls, 32))
        for action, make, k, clients in phases:
            await c.sequential(make(50), "warm-up")
            await b.converged(c)
            b.samples(action)
            reqs = make(k)
            k = len(reqs)
            cpu0 = b.admin("GET", "/v0/bench/cpu")
            w0 = time.perf_counter()
            if callgrind:
                _callgrind(b, "-i", "on")
            if clients == 1:
                walls = await c.sequential(reqs, action)
            else:   # (group commit: the launches in flight share their journal writes)
                wall = await c.concurrent(reqs, clients, action)
                walls = [wall / k]
            await b.converged(c)   # (a launch's convergence is part of its cost)
            if callgrind:
                _callgrind(b, "-i", "off")
            cpu1 = b.admin("GET", "/v0/bench/cpu")
            xs = b.samples(action)
            plain = {"p50_us": round(statistics.median(xs) * 1e6, 1), "mean_us": round(statistics.fmean(xs) * 1e6, 1),
                     "client_p50_us": round(statistics.median(walls) * 1e6, 1)}
            if cpu0 is not None and cpu1 is not None:
                # CPU, not wall clock: what the loop thread and the whole server spent per call,
                # the convergence and the polls meanwhile included (steadier than wall clock on a
                # shared box; the convergence wait's few admin calls are in it too).
                plain["loop_cpu_us"] = round((cpu1["loop"] - cpu0["loop"]) / k * 1e6, 1)
                plain["process_cpu_us"] = round((cpu1["process"] - cpu0["process"]) / k * 1e6, 1)
            name = action if clients == 1 else f"{action} x{clients}"
            out[name] = {"calls": k, "clients": clients, "unprofiled": plain}
            if clients > 1:
                plain["calls_per_s"] = round(1 / walls[0], 1)
            if callgrind:
                span = time.perf_counter() - w0
                total, loop = _instructions(b)
                plain["instructions_per_call"] = round(total / k)
                plain["loop_instructions_per_call"] = round(loop / k)
                # What the server does when idle for as long (the loop's tickers, timers, keepalives)
                # was counted in too, and it grows with the wall time, so with the box's load: at
                # load ~18 it was ~40 % of a by-id describe's count. Taken out here.
                _callgrind(b, "-i", "on")
                time.sleep(span)
                _callgrind(b, "-i", "off")
                idle_total, idle_loop = _instructions(b)
                plain["busy_instructions_per_call"] = round((total - idle_total) / k)
                plain["busy_loop_instructions_per_call"] = round((loop - idle_loop) / k)
            if callgrind or clients > 1:
                continue
            for clock in ("wall", "cpu"):
                reqs = make(k)
                b.admin("POST", f"/v0/bench/profile?clock={clock}")
                await c.sequential(reqs, action)
                await b.converged(c)
                dump = f"&dump={Path(dump_dir, f'{action}-{clock}.prof').resolve()}" if dump_dir else ""
                out[name][clock] = b.admin("GET", f"/v0/bench/profile?top=40&calls={k}{dump}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--dump", help="a directory for the raw cProfile stats (ACTION-CLOCK.prof)")
    ap.add_argument("--callgrind", action="store_true",
                    help="run the server under valgrind's callgrind and count the instructions per call of the "
                         "unprofiled runs, all threads (no cProfile runs; ~50x slower: use few instances)")
    a = ap.parse_args()
    res: dict[str, Any] = {"instances": a.instances, "hosts": a.hosts}
    for name in ([] if a.skip_memory else ["memory"]) + ([] if a.skip_timing else ["timing"]):
        tmp = Path(procs.make_tmp())
        if a.callgrind:
            os.environ["CLOUDCTL_BENCH_WRAP"] = CALLGRIND.format(out=tmp / "callgrind.out")
            scale.POLL_S = 3600.0   # no poll rounds counted in with the calls
        b = scale.Bench(tmp, a, n_hosts=a.hosts, env={"CLOUDCTL_BENCH_TRACEMALLOC": "1"} if name == "memory" else None)
        try:
            b.start_hosts()
            b.start_controller(timeout=900 if a.callgrind else 120)
            scale.log(f"{name}: filling to {a.instances}")
            t0 = time.monotonic()
            job = memory(b, a.instances) if name == "memory" else timing(b, a.instances, a.calls, a.dump, a.callgrind)
            res[name] = asyncio.run(job)
            scale.log(f"{name}: done in {time.monotonic() - t0:.0f} s")
        finally:
            b.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
