"""The controller's base RSS at start, split: what issue 14's "base RSS <= 70 MiB" is made of.

Usage:  .venv/bin/python bench/base_rss.py [--hosts 1,200] [--repo DIR] [--runs 2] [--top 12] [--probed]

For each host count, starts the empty controller as bench/scale.py does (N libvirt test-driver hosts,
a libvirtd each, bench/scale_hosts.py; `--probed`: through bench/served.py, as scale.py
does), waits for /v0/health plus `--settle` seconds, and prints VmRSS and its split from
/proc/PID/status and smaps: anonymous memory (the heap, arenas, thread stacks) against file-backed
pages (shared libraries, Python's extension modules), the largest mappings by file, and the thread
count. The difference between 1 and 200 hosts is the per-host cost (a config needs one host); `--hosts 0`:
the default config as `make run` serves it (its embedded test:/// hosts, no libvirtd).
`--repo` serves another checkout's cloudctl (a detached worktree of main: before/after in one run).
Memory figures are the kernel's, so the machine's load does not move them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import scale_hosts  # noqa: E402
from scale import HOSTS, ZONES  # noqa: E402


def status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem, Threads from /proc/PID/status (KiB, threads a count)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[k] = int(v.split()[0])
    return out


def mappings(pid: int) -> dict[str, int]:
    """Resident KiB by mapping: a file's path, [heap] (malloc's main arena: C libraries and Python
    objects over 512 bytes), '8 MiB (thread stacks)' (glibc's default stack, RLIMIT_STACK; a stack
    whose guard page split it counts under 'anon'), '64 MiB (malloc arenas)' (the other threads'
    arenas), and 'anon': the other unnamed mappings, mostly CPython's 1 MiB object arenas (which the
    kernel merges when adjacent, so their sizes say nothing)."""
    by: dict[str, int] = defaultdict(int)
    name = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else {8 << 20: "8 MiB (thread stacks)",
                                                       64 << 20: "64 MiB (malloc arenas)"}.get(hi - lo, "anon")
            elif head[0] == "Rss:":
                by[name] += int(head[1])
    return dict(by)


def measure(repo: Path, n_hosts: int, settle: float, probed: bool) -> dict[str, Any]:
    tmp = procs.make_tmp()
    started: list[procs.Proc] = []
    hosts: list[scale_hosts.Host] = []
    try:
        hosts = scale_hosts.start_hosts(tmp, [(f"h{i:03d}", ZONES[i % len(ZONES)]) for i in range(n_hosts)])
        zones = {h.zone for h in hosts}
        overrides: dict[str, Any] | None = None   # 0 hosts: the default config's (make run's test:///)
        if n_hosts:
            overrides = {"hosts": [h.config() for h in hosts],
                         "networks": [{"name": f"net-{z[-2:]}", "zone": z, "cidr": f"10.{128 + i}.0.0/16"}
                                      for i, z in enumerate(ZONES) if z in zones],
                         "elastic_ips": {"pool": ["198.18.0.0/16"], "max_addresses_per_user": 100_000},
                         "monitor": {"interval_s": 10.0, "grace_s": 120, "timeout_s": 60},
                         "metadata": {"listen": "127.0.0.1", "port": 0}}
        cc = procs.start_cloudctl(tmp, timeout=180, overrides=overrides, repo=repo, probed=probed)
        started.append(cc.proc)
        time.sleep(settle)
        st = status(cc.proc.pid)
        return {"hosts": n_hosts, "status_kib": st, "mappings_kib": mappings(cc.proc.pid)}
    finally:
        for p in reversed(started):
            p.stop()
        scale_hosts.stop_hosts(hosts)
        shutil.rmtree(tmp, ignore_errors=True)


def short(name: str) -> str:
    return name if name.startswith("[") or name == "anon" else os.path.basename(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default=f"1,{HOSTS}", help="comma-separated host counts (the config needs one)")
    ap.add_argument("--repo", type=Path, default=procs.REPO, help="the checkout whose cloudctl runs")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after /v0/health before reading")
    ap.add_argument("--top", type=int, default=12, help="largest mappings to list")
    ap.add_argument("--probed", action="store_true", help="through bench/served.py, as bench/scale.py")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    args = ap.parse_args(argv)
    if any(int(n) for n in args.hosts.split(",")) and (why := scale_hosts.missing()):
        print(f"cannot start hosts: {why}", file=sys.stderr)
        return 2
    results = []
    for _ in range(args.runs):
        for n in (int(x) for x in args.hosts.split(",")):
            r = measure(args.repo.resolve(), n, args.settle, args.probed)
            results.append(r)
            st = r["status_kib"]
            print(f"hosts {n:4d}: RSS {st['VmRSS'] / 1024:6.1f} MiB = anon {st['RssAnon'] / 1024:5.1f} + file "
                  f"{st['RssFile'] / 1024:5.1f} + shmem {st.get('RssShmem', 0) / 1024:4.1f}; "
                  f"threads {st['Threads']}", flush=True)
            top = sorted(r["mappings_kib"].items(), key=lambda kv: -kv[1])[:args.top]
            print("   " + ", ".join(f"{short(k)} {v / 1024:.1f}" for k, v in top), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
