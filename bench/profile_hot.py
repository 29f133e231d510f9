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
import shutil
import statistics
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


async def timing(b: scale.Bench, n: int, calls: int) -> dict[str, Any]:
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
            return [c.sign(a, {"Action": "DescribeInstances", "InstanceId.1": iid}) for iid in picks] * (k // 100)

        for action, make, k in (("RunInstances", runs, calls), ("DescribeInstances", by_id, calls * 5)):
            await c.sequential(make(50), "warm-up")
            b.samples(action)
            walls = await c.sequential(make(k), action)
            xs = b.samples(action)
            plain = {"p50_us": round(statistics.median(xs) * 1e6, 1), "mean_us": round(statistics.fmean(xs) * 1e6, 1),
                     "client_p50_us": round(statistics.median(walls) * 1e6, 1)}
            await b.converged(c)
            out[action] = {"calls": k, "unprofiled": plain}
            for clock in ("wall", "cpu"):
                reqs = make(k)
                b.admin("POST", f"/v0/bench/profile?clock={clock}")
                await c.sequential(reqs, action)
                out[action][clock] = b.admin("GET", f"/v0/bench/profile?top=40&calls={k}")
                await b.converged(c)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    res: dict[str, Any] = {"instances": a.instances, "hosts": a.hosts}
    for name in ([] if a.skip_memory else ["memory"]) + ([] if a.skip_timing else ["timing"]):
        tmp = Path(procs.make_tmp())
        b = scale.Bench(tmp, a, n_hosts=a.hosts, env={"CLOUDCTL_BENCH_TRACEMALLOC": "1"} if name == "memory" else None)
        try:
            b.start_hosts()
            b.start_controller()
            scale.log(f"{name}: filling to {a.instances}")
            t0 = time.monotonic()
            res[name] = asyncio.run(memory(b, a.instances) if name == "memory" else timing(b, a.instances, a.calls))
            scale.log(f"{name}: done in {time.monotonic() - t0:.0f} s")
        finally:
            for p in reversed(b.started):
                p.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
