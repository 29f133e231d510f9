"""The scale bench's restart alone: a 50,000-instance state plus 1,000,000 journal records, 200 hosts.

    .venv/bin/python bench/restart.py [--instances 50000] [--journal-records 1000000] [--runs 1]
                                      [--source DIR] [--repo CHECKOUT ...] [--profile DIR] [--keep]

`bench/scale.py` reaches its restart after a fill of ~10 minutes; this starts from rows written
directly (`bench/synth_state.py`) plus the journal the scale bench adds before its restart
(`bench/scale_state.py`: one-row puts cycling over every row), so a start-up measurement takes about
a minute. The prepared state is kept in `--source` (made once, reused by later runs) and copied for
each start, since a start writes a new generation and prunes the old ones.

Per start: 200 libvirtds (bench/scale_hosts.py, one a host) holding the state's running instances as
domains before the controller starts (hosts that kept running while it was down), then the controller through
bench/served.py. Reported per phase (seconds of wall clock, and CPU seconds of the controller's
process meanwhile: on a shared box the CPU is the figure that the code decides):
- `state_load`: checkpoint + journal replay, on a worker thread (also its own thread's CPU, and its
  wait for a CPU, `state_load_runq_s`: the wall clock less both is what it slept, GIL or reads);
- `hosts_connect`: every host opened and listed, while the state loads;
- `hosts_and_reconcile` (`Cloud._start`), `reconcile` (`Compute.reconcile`) after the load;
- `cloud_open`: all of the above; `ready`: from the process's spawn to /v0/health answering, with the
  process's CPU and the libvirtds' CPU by then;
- `first_checkpoint` / `checkpoint_write`: the checkpoint of the state as loaded (after the start,
  with `*_end_at_s` saying when it ended relative to the others); `checkpoint_write` only where a
  thread of the controller writes it (a forked writer's own figures stay in the child).
`rss_mib` is read once that checkpoint is on disk, and `heap` then (bench/served.py's /v0/bench/heap:
smaps by kind, glibc's mallinfo2, pymalloc's arenas) says where it is.
For the phases on the loop (`reconcile`, ...) also the loop thread's own CPU (`*_thread_cpu_s`), the
CPU of each kind of thread meanwhile (`*_threads_<kind>_cpu_s`: `libvirt` is the hosts' calls) and
the cycle collector's seconds (`*_gc_s`).

Several `--repo` checkouts are started in turn, `--runs` times each, interleaved (A B A B ...): the
A/B on a loaded box. `--profile DIR` runs the controller under cProfile (`cProfile.run` of the whole
process, all of it: the load's thread is profiled too through threading.setprofile) and writes
DIR/<n>.pstats.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import scale_hosts  # noqa: E402
import scale_state  # noqa: E402

ZONES = ("cloudctl-1a", "cloudctl-1b", "cloudctl-1c", "cloudctl-1d")
HOSTS = 200
CONTROLLER = "0" * 31 + "1"   # controller.id: the one the domains' metadata names


def prepare(source: Path, instances: int, records: int) -> dict[str, Any]:
    """The state (checkpoint of `instances` + a journal of `records`) in `source`, unless there."""
    meta = source / "restart-source.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if info["instances"] == instances and info["records"] == records:
            return info
        raise SystemExit(f"{source} holds another state ({info}); give another --source")
    source.mkdir(parents=True, exist_ok=True)
    if any(source.iterdir()):
        raise SystemExit(f"{source} is not empty and not a prepared source")
    import subprocess
    subprocess.run([sys.executable, str(procs.BENCH / "synth_state.py"), str(source), "--instances",
                    str(instances)], check=True)
    rows = scale_state.latest_rows(source)
    j = scale_state.write_journal(source, rows, records) if records else {}
    (source / "controller.id").write_text(CONTROLLER + "\n")
    per_host = scale_state.domains_by_host(rows)
    (source / "domains.json").write_text(json.dumps(per_host))
    info = {"instances": instances, "records": records, "journal": j, "hosts_with_domains": len(per_host)}
    meta.write_text(json.dumps(info))
    return info


def host_names(per_host: dict[str, list[Any]]) -> list[str]:
    names = sorted(per_host)
    i = 0
    while len(names) < HOSTS:
        if (n := f"spare-{i:03d}") not in per_host:
            names.append(n)
        i += 1
    return names


def start_once(tmp: Path, source: Path, repo: Path, profile: Path | None,
               hosts_nice: int = scale_hosts.HOSTS_NICE) -> dict[str, Any]:
    """One start of `repo`'s controller on a copy of `source` against 200 hosts: its figures."""
    started: list[procs.Proc] = []
    hosts: list[scale_hosts.Host] = []
    try:
        state = tmp / "state"
        shutil.copytree(source, state, ignore=shutil.ignore_patterns("restart-source.json", "domains.json"))
        per_host: dict[str, list[list[str]]] = json.loads((source / "domains.json").read_text())
        hosts = scale_hosts.start_hosts(tmp, [(name, ZONES[i % len(ZONES)])
                                              for i, name in enumerate(host_names(per_host))], hosts_nice)
        scale_hosts.fill_hosts(hosts, {k: [tuple(d) for d in v] for k, v in per_host.items()}, CONTROLLER)
        overrides = {"hosts": [h.config() for h in hosts],
                     "networks": [{"name": f"net-{z[-2:]}", "zone": z, "cidr": f"10.{128 + i}.0.0/16"}
                                  for i, z in enumerate(ZONES)],
                     "elastic_ips": {"pool": ["198.18.0.0/16"], "max_addresses_per_user": 100_000},
                     "monitor": {"interval_s": 10.0, "grace_s": 120, "timeout_s": 60},
                     "metadata": {"listen": "127.0.0.1", "port": 0}}
        env = {"CLOUDCTL_BENCH_REPO": str(repo)}
        if profile is not None:
            env["CLOUDCTL_BENCH_PROFILE"] = str(profile)
        daemons0 = scale_hosts.cpu_s(hosts)
        w0 = time.perf_counter()
        cc = procs.start_cloudctl(tmp, timeout=900, overrides=overrides, probed=True, repo=repo,
                                  log_name="cloudctl.log", env=env)
        ready = time.perf_counter() - w0
        started.append(cc.proc)
        out: dict[str, Any] = {"ready_s": round(ready, 2), "ready_cpu_s": round(cc.proc.cpu_s(), 2),
                               "libvirtd_cpu_s": round(scale_hosts.cpu_s(hosts) - daemons0, 2)}
        # (Each kind of thread's CPU from the spawn to about now: where `ready_cpu_s` went.)
        out["ready_threads_cpu_s"] = cc.admin("GET", "/v0/bench/cpu?threads=1").get("threads")
        phases = cc.admin("GET", "/v0/bench/startup")
        text = cc.proc.log.read_text(errors="replace")
        said = [ln for ln in text.splitlines() if ln.startswith("cloudctl ready in ")]
        out["ready_in_process_s"] = float(said[0].split()[3].rstrip("s")) if said else None
        deadline = time.monotonic() + 300   # the checkpoint of the state as loaded: when it is on disk
        # (`checkpoint_write_s` is timed where it runs: a forked writer's figures stay in the child)
        while not {"checkpoint_write_s", "first_checkpoint_s"} & phases.keys() and time.monotonic() < deadline \
                and cc.proc.alive():
            time.sleep(0.5)
            phases = cc.admin("GET", "/v0/bench/startup")
        out["phases"] = {k: round(v, 2) for k, v in sorted(phases.items())}
        out["rss_mib"] = round(cc.proc.rss_mib(), 1)
        out["heap"] = cc.admin("GET", "/v0/bench/heap")
        out["reconcile_findings"] = sum(1 for ln in text.splitlines() if "reconcile: " in ln)
        out["errors"] = [ln for ln in text.splitlines() if " ERROR " in ln][:5]
        cc.proc.stop(timeout=120)
        return out
    finally:
        for p in reversed(started):
            p.stop()
        scale_hosts.stop_hosts(hosts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=50_000)
    ap.add_argument("--journal-records", type=int, default=1_000_000)
    ap.add_argument("--source", type=Path, help="where the prepared state is kept (default: a temp dir, removed)")
    ap.add_argument("--repo", type=Path, action="append", help="a checkout to start (repeat for an A/B)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", type=Path, help="cProfile the controller; pstats files into this directory")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, state)")
    ap.add_argument("--hosts-nice", type=int, default=scale_hosts.HOSTS_NICE,
                    help="the simulated hosts' libvirtds' niceness (as bench/scale.py's)")
    a = ap.parse_args()
    if why := scale_hosts.missing():
        print(f"SKIP: {why}")
        return 0
    repos = [r.resolve() for r in a.repo] if a.repo else [procs.REPO]
    own_source = a.source is None
    source = a.source or procs.make_tmp() / "source"
    t0 = time.perf_counter()
    info = prepare(source, a.instances, a.journal_records)
    print(json.dumps({"source": str(source), "prepared_s": round(time.perf_counter() - t0, 1)} | info), flush=True)
    if a.profile is not None:
        a.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {str(r): [] for r in repos}
    try:
        for run in range(a.runs):
            for k, repo in enumerate(repos):
                tmp = procs.make_tmp()
                if os.geteuid() == 0:
                    os.chmod(tmp, 0o755)
                try:
                    prof = a.profile / f"{run}-{k}.pstats" if a.profile is not None else None
                    res = start_once(tmp, source, repo, prof, a.hosts_nice)
                finally:
                    if a.keep:
                        print(f"kept {tmp}", file=sys.stderr)
                    else:
                        shutil.rmtree(tmp, ignore_errors=True)
                res |= {"repo": str(repo), "run": run, "loadavg": [round(x, 1) for x in os.getloadavg()]}
                results[str(repo)].append(res)
                print(json.dumps(res), flush=True)
    finally:
        if own_source and not a.keep:
            shutil.rmtree(source.parent, ignore_errors=True)
    for repo, rs in results.items():
        if not rs:
            continue
        keys = ["ready_s", "ready_cpu_s", "libvirtd_cpu_s"]
        line = {k: statistics.median(r[k] for r in rs) for k in keys}
        for k in ("state_load_s", "state_load_thread_cpu_s", "hosts_connect_s", "reconcile_s", "reconcile_cpu_s",
                  "reconcile_thread_cpu_s", "hosts_and_reconcile_s", "cloud_open_s", "cloud_open_cpu_s",
                  "checkpoint_write_s", "first_checkpoint_s"):
            vals = [r["phases"][k] for r in rs if k in r["phases"]]
            if vals:
                line[k] = statistics.median(vals)
        print(f"median of {len(rs)}: {repo}: {json.dumps(line)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
