"""What one `/metrics` scrape costs the event loop, at ~2,000 instances and at a large population.

    .venv/bin/python bench/metrics.py [--sizes 2000,50000] [--hosts 16] [--scrapes 7]
                                      [--repo PATH] [--json out.json]

For each size, a fresh cloudctl with `--hosts` test:/// hosts (one zone) is populated with
RunInstances(MaxCount=100, t3.nano) until every instance is running and every host's poll has
seen its domains (polled every 2 s). Then two phases, each: three quiet 1 s windows (the loop's
longest stall with no scrape: the floor), and `--scrapes` sequential scrapes, each between two
`POST /v0/stats/reset-lag` calls, so the stall reported is the longest one while that scrape ran.
Reported per scrape: the client's wall time, the body size and line count, the stall (wall-clock
and "own", i.e. less the loop thread's waits for a CPU); summaries give the first scrape of a
phase apart and the median/max over the others.

- `polling`: the hosts are still polled every 2 s, so most scrapes find new polls to render.
- `no_polls`: every host taken offline (no more polls; the last poll's figures stay and are still
  exported), so the first scrape renders what the last polls left and the next ones find nothing new.

`--repo` serves another checkout's cloudctl (e.g. the main branch) for the before/after figures;
the bench itself, its config and the population are the same.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
from ec2load import Target  # noqa: E402

NODE = procs.REPO / "config" / "hosts" / "host-a.xml"   # 256 CPUs, 2 TiB: 4,096 t3.nano per host
INTERVAL_S = 2.0


def scrape(cc: procs.Cloudctl) -> dict[str, Any]:
    """One scrape between two lag resets: its client time, size and the loop's longest stall."""
    cc.reset_lags()
    t0 = time.perf_counter()
    with urllib.request.urlopen(cc.admin_url + "/metrics", timeout=600) as resp:
        body = resp.read()
    wall = time.perf_counter() - t0
    time.sleep(0.05)   # the ticker's next wake-up reports a stall that ended with the answer
    stall, own = cc.reset_lags()
    return {"ms": round(wall * 1000, 2), "bytes": len(body), "lines": body.count(b"\n"),
            "stall_ms": stall, "own_stall_ms": own}


def quiet(cc: procs.Cloudctl, windows: int = 3) -> dict[str, float]:
    """The longest stall over 1 s windows without a scrape: what the rest of the server costs."""
    cc.reset_lags()
    stalls = []
    for _ in range(windows):
        time.sleep(1.0)
        stalls.append(cc.reset_lags())
    return {"stall_ms_max": max(s[0] for s in stalls), "own_stall_ms_max": max(s[1] for s in stalls)}


def phase(cc: procs.Cloudctl, scrapes: int) -> dict[str, Any]:
    floor = quiet(cc)
    runs = [scrape(cc) for _ in range(scrapes)]
    first, rest = runs[0], runs[1:] or runs   # (the first may find more to render than the rest)
    return {"quiet": floor, "scrapes": runs, "first": first,
            "ms_median": statistics.median(r["ms"] for r in rest),
            "stall_ms_median": statistics.median(r["stall_ms"] for r in rest),
            "stall_ms_max": max(r["stall_ms"] for r in rest),
            "own_stall_ms_median": statistics.median(r["own_stall_ms"] for r in rest),
            "own_stall_ms_max": max(r["own_stall_ms"] for r in rest),
            "bytes": runs[-1]["bytes"], "lines": runs[-1]["lines"]}


def populate(cc: procs.Cloudctl, total: int, hosts: int) -> dict[str, Any]:
    user = cc.admin("POST", "/v0/users", {"name": "bench"})
    t = Target("cloudctl", cc.ec2_url, "cloudctl-1", user["AccessKeyId"], user["SecretAccessKey"])
    ec2 = t.client()
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    t0 = time.perf_counter()
    made = 0
    while made < total:
        n = min(100, total - made)
        ec2.run_instances(ImageId=image, MinCount=n, MaxCount=n, InstanceType="t3.nano")
        made += n
    launched = time.perf_counter() - t0
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        pending = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}],
                                         MaxResults=5)["Reservations"]
        seen = sum(h["domains"] or 0 for h in cc.admin("GET", "/v0/hosts"))
        if not pending and seen >= total:
            break
        time.sleep(1.0)
    else:
        raise RuntimeError(f"{total} instances not all running and polled after 30 min")
    time.sleep(2 * INTERVAL_S)   # one more round of polls: every domain seen running
    return {"launch_s": round(launched, 1), "running_and_polled_s": round(time.perf_counter() - t0, 1),
            "rss_mib": round(cc.proc.rss_mib(), 1)}


def one_size(tmp: Path, total: int, hosts: int, scrapes: int, repo: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True)
    cfg_hosts = [{"name": f"h{i:02d}", "uri": "test:///", "node_xml": str(NODE), "zone": "cloudctl-1a"}
                 for i in range(hosts)]
    overrides: dict[str, Any] = {"hosts": cfg_hosts, "subnets": {"cloudctl-1a": "10.128.0.0/16"}, "networks": [],
                                 "monitor": {"interval_s": INTERVAL_S, "grace_s": 600}}
    cc = procs.start_cloudctl(tmp, overrides=overrides, repo=repo)
    try:
        out: dict[str, Any] = {"instances": total, "hosts": hosts, "population": populate(cc, total, hosts)}
        out["polling"] = phase(cc, scrapes)
        for h in cfg_hosts:
            cc.admin("POST", f"/v0/hosts/{h['name']}/offline")
        time.sleep(INTERVAL_S * 1.2)   # a poll already under way ends
        out["no_polls"] = phase(cc, scrapes)
        out["rss_mib_end"] = round(cc.proc.rss_mib(), 1)
        return out
    finally:
        cc.proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,50000", help="instance counts, comma-separated")
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--scrapes", type=int, default=7)
    ap.add_argument("--repo", type=Path, default=procs.REPO, help="checkout whose cloudctl is served")
    ap.add_argument("--json")
    a = ap.parse_args()
    out: dict[str, Any] = {"repo": str(a.repo), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-metrics-") as d:
        for size in (int(x) for x in a.sizes.split(",")):
            r = one_size(Path(d) / str(size), size, a.hosts, a.scrapes, a.repo.resolve())
            out["sizes"][size] = r
            p, q = r["polling"], r["no_polls"]
            print(f"{size:>6} instances: {p['bytes'] / 2**20:.1f} MiB, {p['lines']} lines | polling: scrape "
                  f"{p['ms_median']:.0f} ms, stall median {p['stall_ms_median']:.1f} / max {p['stall_ms_max']:.1f} ms "
                  f"(own {p['own_stall_ms_max']:.1f}; quiet {p['quiet']['stall_ms_max']:.1f}) | no polls: first "
                  f"scrape {q['first']['ms']:.0f} ms stall {q['first']['stall_ms']:.1f} ms, then scrape "
                  f"{q['ms_median']:.0f} ms, stall median {q['stall_ms_median']:.1f} / max {q['stall_ms_max']:.1f} ms "
                  f"(own {q['own_stall_ms_max']:.1f}; quiet {q['quiet']['stall_ms_max']:.1f})", flush=True)
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
