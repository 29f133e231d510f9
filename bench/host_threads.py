"""What the controller's threads spend as the hosts grow: idle, and per launch.

    .venv/bin/python bench/host_threads.py [--hosts 20,200,400] [--instances 1000] [--launches 600]
                                           [--idle-s 20] [--repo CHECKOUT ...]

For each host count (a libvirtd each, bench/scale_hosts.py, in the scale bench's 4 zones) and each
`--repo` checkout in turn: the controller filled to `--instances` as the scale bench fills it, then
`--idle-s` seconds of nothing (the monitor's polls and libvirt's keepalives only) and `--launches`
sequential RunInstances(1) with their convergence. Reported, from bench/served.py's per-thread CPU
(`/v0/bench/cpu?threads=1`): each kind of thread's share of a core while idle, and its CPU per launch
(`MainThread` is the event loop; `libvirt` the hosts' calls; `libvirt-events` libvirt's event loop;
`journal` the journal's writer). The figures are CPU, not wall clock, so they hold on a shared box;
a share is counted in 10 ms ticks, so 600 launches resolve ~17 us a launch.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import scale  # noqa: E402
import scale_hosts  # noqa: E402
from scale_load import Client  # noqa: E402


def _per(c0: dict[str, Any], c1: dict[str, Any], scale_by: float) -> dict[str, float]:
    out = {k: round((v - c0["threads"].get(k, 0.0)) * scale_by, 1) for k, v in c1["threads"].items()}
    out["process"] = round((c1["process"] - c0["process"]) * scale_by, 1)
    return {k: v for k, v in out.items() if v}


async def measure(b: scale.Bench, instances: int, launches: int, idle_s: float) -> dict[str, Any]:
    assert b.cc is not None
    async with Client(b.cc.ec2_url, "cloudctl-1") as c:
        await b.make_accounts(c)
        await b.fill(c, instances)
        await b.converged(c)
        await b.add_addresses(c)
        await asyncio.sleep(5)   # (the fill's tail: its last polls and checkpoint)
        c0 = b.admin("GET", "/v0/bench/cpu?threads=1")
        w0 = time.perf_counter()
        await asyncio.sleep(idle_s)
        c1 = b.admin("GET", "/v0/bench/cpu?threads=1")
        idle = _per(c0, c1, 100 / (time.perf_counter() - w0))
        reqs = [b.launch_req(c, b.accounts[i % len(b.accounts)], 1, f"h-{b.batch}") for i in range(launches)]
        c0 = b.admin("GET", "/v0/bench/cpu?threads=1")
        w0 = time.perf_counter()
        await c.sequential(reqs, "RunInstances")
        await b.converged(c)
        wall = time.perf_counter() - w0
        c1 = b.admin("GET", "/v0/bench/cpu?threads=1")
        return {"idle_pct_of_a_core": idle, "per_launch_us": _per(c0, c1, 1e6 / launches),
                "launch_wall_ms": round(wall / launches * 1000, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="20,200,400")
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--launches", type=int, default=600)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--repo", action="append", type=Path, help="a checkout to serve (repeat for A/B)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if why := scale_hosts.missing():
        print(f"SKIP: {why}")
        return 0
    repos = [r.resolve() for r in a.repo] if a.repo else [procs.REPO]
    res: list[dict[str, Any]] = []
    for n in [int(x) for x in a.hosts.split(",")]:
        for repo in repos:
            tmp = Path(procs.make_tmp())
            b = scale.Bench(tmp, a, n_hosts=n, repo=repo)
            try:
                b.start_hosts()
                b.start_controller()
                r = {"hosts": n, "repo": repo.name} | asyncio.run(measure(b, a.instances, a.launches, a.idle_s))
            finally:
                b.stop()
                shutil.rmtree(tmp, ignore_errors=True)
            res.append(r)
            print(json.dumps(r), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
