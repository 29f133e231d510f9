"""How one controller's costs grow with its population: 200 simulated hosts, up to 50,000 instances.

Usage:  .venv/bin/python bench/scale.py [--quick] [--sizes 1000,5000] [--journal-records N] [--keep]
        (`make bench-scale`; `make bench-scale QUICK=1` for 1k and 5k only)

200 hosts in 4 zones, each a libvirtd serving libvirt's test driver (bench/scale_hosts.py), so the
controller's memory is its own. The cloud is filled to each size with instances launched 50 at
a time by 10 users (half of them the first user's), each instance with 3 tags, a root volume and a
security group (one group per 50 instances, two rules each); one data volume per 20 instances and one
elastic IP (allocated and associated) per 20.
At each size, once every instance is running:

- controller RSS, and its growth per instance (from the empty controller, and since the last size);
- one monitoring round (every host polled once, interval 10 s): the longest loop stall, the polls' times;
- DescribeInstances by id, by tag filter (one match), and a 1,000-instance page: server-side p50/p99;
- POST /v0/checkpoint: its duration and the longest loop stall while it runs;
- RunInstances(1): server-side p50/p99 and calls/s from 1 sequential client, and calls/s with 32
  concurrent clients (group commit).

At the largest size, the controller is stopped and restarted on its state plus a journal of
1,000,000 records (by default), against the same 200 hosts still holding their domains: start-up
time (checkpoint load + replay, host connections + reconcile) and RSS after it.

"Server-side" is the EC2 handler's own time (bench/served.py: from the handler's start, after the
headers were read, to the answer rendered; fsync included, socket writes not). A 1,000-instance
page is streamed, so its handler time stops at the first slices: the client-side time of the
whole page on loopback is reported beside it. Results: bench/results/scale-<stamp>.json and
.png (one panel per metric), scale-latest.*, and a line in bench/results/history.jsonl.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history  # noqa: E402
import procs  # noqa: E402
import scale_hosts  # noqa: E402
import scale_report  # noqa: E402
import scale_state  # noqa: E402
from scale_load import Account, Client, Signed, ids, run_params  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HOSTS, ZONES, USERS = 200, ("cloudctl-1a", "cloudctl-1b", "cloudctl-1c", "cloudctl-1d"), 10
BATCH = 50                 # instances per RunInstances call while filling
# Instances per security group / data volume / elastic IP. Every instance also has its root volume
# (EBS-backed), so volumes outnumber instances; a data volume costs a qemu-img run (~0.1 s here), so
# more of them would make the fill, not the controller, what the run's half hour is spent on.
PER_GROUP, PER_VOLUME, PER_ADDRESS = 50, 20, 20
POLL_S = 10.0
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ms(xs: list[float]) -> dict[str, float]:
    """p50/p99/max of durations in seconds, as ms."""
    return {"n": len(xs), "p50_ms": round(pct(xs, .5) * 1000, 3), "p99_ms": round(pct(xs, .99) * 1000, 3),
            "mean_ms": round(statistics.fmean(xs) * 1000, 3), "max_ms": round(max(xs) * 1000, 3)} if xs else {"n": 0}


class Bench:
    def __init__(self, tmp: Path, args: argparse.Namespace, n_hosts: int = HOSTS,
                 env: dict[str, str] | None = None, hosts_nice: int = scale_hosts.HOSTS_NICE,
                 repo: Path = procs.REPO) -> None:
        self.tmp, self.args, self.n_hosts, self.env, self.repo = tmp, args, n_hosts, env, repo
        self.hosts_nice = hosts_nice   # (the libvirtds' niceness: scale_hosts.HOSTS_NICE)
        self.started: list[procs.Proc] = []
        self.host_list: list[scale_hosts.Host] = []
        self.hosts: list[dict[str, Any]] = []
        self.cc: procs.Cloudctl | None = None
        self.hello_url = ""     # the bare aiohttp hello: what this client reaches against no work at all
        self.accounts: list[Account] = []
        self.image = ""
        self.count = 0          # instances launched (none are terminated)
        self.batch = 0
        self.volumes = self.addresses = 0
        self.unassociated: list[str] = []   # instances that should get an elastic IP once running
        self.singles: list[str] = []        # Name tags carried by exactly one instance
        self.rng = random.Random(14)

    # -- set-up ------------------------------------------------------------------------------
    def overrides(self) -> dict[str, Any]:
        return {"hosts": self.hosts,
                "networks": [{"name": f"net-{z[-2:]}", "zone": z, "cidr": f"10.{128 + i}.0.0/16"}
                             for i, z in enumerate(ZONES)],
                "elastic_ips": {"pool": ["198.18.0.0/16"], "max_addresses_per_user": 100_000},
                "monitor": {"interval_s": POLL_S, "grace_s": 120, "timeout_s": 60},
                "metadata": {"listen": "127.0.0.1", "port": 0}}

    def start_hosts(self) -> None:
        self.host_list = scale_hosts.start_hosts(self.tmp, [(f"h{i:03d}", ZONES[i % len(ZONES)])
                                                            for i in range(self.n_hosts)], self.hosts_nice)
        self.hosts = [h.config() for h in self.host_list]

    def start_controller(self, log_name: str = "cloudctl.log", timeout: float = 120.0) -> float:
        w0 = time.perf_counter()
        self.cc = procs.start_cloudctl(self.tmp, timeout=timeout, overrides=self.overrides(), probed=True,
                                       log_name=log_name, env=self.env, repo=self.repo)
        self.started.append(self.cc.proc)
        return time.perf_counter() - w0

    def stop(self) -> None:
        """Everything this bench started, the controller first, then the hosts' daemons (by PID)."""
        for p in reversed(self.started):
            p.stop()
        scale_hosts.stop_hosts(self.host_list)
        self.host_list = []

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        assert self.cc is not None
        return self.cc.admin(method, path, body, timeout=600)

    def samples(self, action: str) -> list[float]:
        return self.admin("GET", f"/v0/bench/samples?action={action}")

    # -- filling -----------------------------------------------------------------------------
    def owner(self) -> Account:
        """Half of the instances are the first user's (a large project: its describes walk the most
        rows, and its 1,000-instance page is full from 2,000 instances on); the rest spread evenly."""
        return self.accounts[0] if self.batch % 2 == 0 else self.accounts[1 + (self.batch // 2) % (USERS - 1)]

    async def make_accounts(self, c: Client) -> None:
        for i in range(USERS):
            u = self.admin("POST", "/v0/users", {"name": f"scale{i}"})
            self.accounts.append(Account(u["UserName"], u["AccessKeyId"], u["SecretAccessKey"]))
        a = self.accounts[0]
        data = await c.ok(c.sign(a, {"Action": "DescribeImages", "Filter.1.Name": "name",
                                     "Filter.1.Value.1": "cloudctl-blank"}), "DescribeImages")
        self.image = data.split(b"<imageId>")[1].split(b"<")[0].decode()

    async def add_group(self, c: Client, a: Account) -> None:
        name = f"g{len(a.groups)}"
        data = await c.ok(c.sign(a, {"Action": "CreateSecurityGroup", "GroupName": name,
                                     "GroupDescription": "scale bench"}), "CreateSecurityGroup")
        gid = ids("groupId", data)[0]
        await c.ok(c.sign(a, {"Action": "AuthorizeSecurityGroupIngress", "GroupId": gid,
                              "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": 22,
                              "IpPermissions.1.ToPort": 22, "IpPermissions.1.IpRanges.1.CidrIp": "10.0.0.0/8",
                              "IpPermissions.2.IpProtocol": "tcp", "IpPermissions.2.FromPort": 443,
                              "IpPermissions.2.ToPort": 443, "IpPermissions.2.IpRanges.1.CidrIp": "0.0.0.0/0"}),
                   "AuthorizeSecurityGroupIngress")
        a.groups.append(gid)

    def launch_req(self, c: Client, a: Account, n: int, name: str) -> Signed:
        zone = ZONES[self.batch % len(ZONES)]
        tags = {"Name": name, "env": ("prod", "staging", "dev")[self.batch % 3], "team": f"team-{self.batch % 40}"}
        self.batch += 1
        return c.sign(a, run_params(self.image, n, zone, self.rng.choice(a.groups), tags))

    async def fill(self, c: Client, target: int) -> dict[str, Any]:
        """Launch in batches of 50 (4 in flight), with the groups, volumes and addresses that go with them."""
        w0, start = time.perf_counter(), self.count
        for a in self.accounts:   # one group per 50 of the user's instances, made before they are needed
            while len(a.groups) * PER_GROUP * USERS < target or not a.groups:
                await self.add_group(c, a)
        reqs: list[tuple[Account, Signed, int]] = []
        planned = self.count
        while planned < target:
            n = min(BATCH, target - planned)
            a = self.owner()
            reqs.append((a, self.launch_req(c, a, n, f"web-{self.batch}"), n))
            planned += n

        async def worker() -> None:
            while reqs:
                a, req, n = reqs.pop()
                data = await c.ok(req, "RunInstances")
                got = ids("instanceId", data)
                if len(got) != n:
                    raise RuntimeError(f"RunInstances MaxCount={n} returned {len(got)} instances")
                a.instances.extend(got)
                self.count += n

        await asyncio.gather(*(worker() for _ in range(4)))
        launched = time.perf_counter() - w0
        vol_reqs = []
        while self.volumes < self.count // PER_VOLUME:
            a = self.accounts[self.volumes % USERS]
            vol_reqs.append(c.sign(a, {"Action": "CreateVolume", "Size": 8, "VolumeType": "gp3",
                                       "AvailabilityZone": ZONES[self.volumes % len(ZONES)],
                                       "ClientToken": f"v{self.volumes}-{os.getpid()}"}))
            self.volumes += 1
        if vol_reqs:
            await c.concurrent(vol_reqs, 4, "CreateVolume")
        return {"instances": self.count - start, "launch_s": round(launched, 1),
                "instances_per_s": round((self.count - start) / launched, 1) if launched else None,
                "total_s": round(time.perf_counter() - w0, 1)}

    async def converged(self, c: Client, timeout: float = 1800.0) -> float:
        """Wait until no instance is pending; seconds waited."""
        w0 = time.perf_counter()
        while time.perf_counter() - w0 < timeout:
            reqs = [c.sign(a, {"Action": "DescribeInstances", "MaxResults": 5, "Filter.1.Name": "instance-state-name",
                               "Filter.1.Value.1": "pending"}) for a in self.accounts]   # (each sees its own)
            pending = 0
            for r in reqs:
                pending += len(ids("instanceId", await c.ok(r, "DescribeInstances pending")))
            if not pending:
                return time.perf_counter() - w0
            await asyncio.sleep(1.0)
        raise RuntimeError(f"instances still pending after {timeout:.0f}s")

    async def add_addresses(self, c: Client) -> None:
        """One elastic IP per 20 instances, allocated and associated (after the instances run)."""
        want = self.count // PER_ADDRESS
        alloc, assoc = [], []
        pool = [(a, i) for a in self.accounts for i in a.instances]
        chosen = self.rng.sample(pool, max(0, want - self.addresses))
        for k, (a, iid) in enumerate(chosen):
            alloc.append((a, iid, c.sign(a, {"Action": "AllocateAddress", "Domain": "vpc",
                                             "TagSpecification.1.ResourceType": "elastic-ip",
                                             "TagSpecification.1.Tag.1.Key": "for",
                                             "TagSpecification.1.Tag.1.Value": f"{iid}-{self.addresses + k}"})))
        for a, iid, req in alloc:
            data = await c.ok(req, "AllocateAddress")
            assoc.append(c.sign(a, {"Action": "AssociateAddress", "AllocationId": ids("allocationId", data)[0],
                                    "InstanceId": iid}))
        if assoc:
            await c.concurrent(assoc, 4, "AssociateAddress")
        self.addresses += len(chosen)

    # -- measuring ---------------------------------------------------------------------------
    def rss(self) -> float:
        assert self.cc is not None
        return round(self.cc.proc.rss_mib(), 1)

    def heap(self) -> dict[str, Any]:
        """Where the RSS is (bench/served.py's GET /v0/bench/heap), with a summary in MiB: Python's
        small-object arenas, glibc's heap in use and free, thread stacks, the rest."""
        h: dict[str, Any] = self.admin("GET", "/v0/bench/heap")
        mi, pm, kinds = h.get("mallinfo2", {}), h.get("pymalloc", {}), h["rss_by_kind_kib"]
        mib = 1 / 2**20
        arenas = next((v for k, v in pm.items() if k.startswith("arenas * ")), 0)   # (count * arena size)
        h["summary_mib"] = {
            "pymalloc_arenas": round(arenas * mib, 1),
            "pymalloc_in_use": round(pm.get("bytes in allocated blocks", 0) * mib, 1),
            "malloc_in_use": round(mi.get("uordblks", 0) * mib, 1),
            "malloc_free": round(mi.get("fordblks", 0) * mib, 1),
            "thread_stacks": round(kinds.get("thread_stacks", 0) / 1024, 1), "threads": h.get("threads"),
            "files": round(kinds.get("file", 0) / 1024, 1)}
        return h

    def threads(self) -> int:
        assert self.cc is not None
        with open(f"/proc/{self.cc.proc.pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("Threads:"))

    def poll_round(self) -> dict[str, Any]:
        """One monitoring interval with no API traffic: every host polled once."""
        assert self.cc is not None
        before = {h["name"]: h["polls"] for h in self.admin("GET", "/v0/hosts")}
        self.admin("GET", "/v0/bench/gc")
        self.cc.reset_lags()
        cpu0, w0 = self.cc.proc.cpu_s(), time.perf_counter()
        time.sleep(POLL_S * 1.15)   # the interval is jittered by ±10 %
        wall, own = self.cc.reset_lags()
        gcp = self.admin("GET", "/v0/bench/gc")
        cpu, span = self.cc.proc.cpu_s() - cpu0, time.perf_counter() - w0
        hosts = self.admin("GET", "/v0/hosts")
        polled = sum(1 for h in hosts if h["polls"] > before.get(h["name"], 0))
        last = [h["last_poll_ms"] for h in hosts if h.get("last_poll_ms") is not None]
        return {"window_s": round(span, 1), "hosts_polled": polled, "hosts": len(hosts),
                "stall_ms": wall, "own_stall_ms": own, "controller_cpu_s": round(cpu, 2),
                "controller_cores": round(cpu / span, 3),
                "poll_ms_p50": round(statistics.median(last), 1) if last else None,
                "poll_ms_max": round(max(last), 1) if last else None,
                "domains_seen": sum(h.get("domains") or 0 for h in hosts), "gc_pause_max_ms": max(gcp["max_ms"]),
                "gc_full_collections": gcp["count"][2]}

    async def describes(self, c: Client) -> dict[str, Any]:
        a = self.accounts[0]
        out: dict[str, Any] = {}
        picks = self.rng.sample(a.instances, min(50, len(a.instances)))
        by_id = [c.sign(a, {"Action": "DescribeInstances", "InstanceId.1": iid}) for iid in picks] * 6
        self.samples("DescribeInstances")
        walls = await c.sequential(by_id, "DescribeInstances by id")
        out["by_id"] = ms(self.samples("DescribeInstances")) | {"client": ms(walls)}
        owner = {iid: acct for acct in self.accounts for iid in acct.instances}
        tagged = [(owner[iid], name) for iid, name in self.singles if iid in owner][:20]
        if tagged:
            reqs = [c.sign(acct, {"Action": "DescribeInstances", "Filter.1.Name": "tag:Name",
                                  "Filter.1.Value.1": name}) for acct, name in tagged] * (200 // len(tagged))
            walls = await c.sequential(reqs, "DescribeInstances tag filter")
            out["tag_filter"] = ms(self.samples("DescribeInstances")) | {"client": ms(walls)}
        page = c.sign(a, {"Action": "DescribeInstances", "MaxResults": 1000})
        status, data, _ = await c.send(page)
        got = len(ids("instanceId", data))
        walls = await c.sequential([page] * 20, "DescribeInstances page")
        out["page_1000"] = ms(self.samples("DescribeInstances")) | {"client": ms(walls), "instances": got,
                                                                    "bytes": len(data)}
        return out

    async def launches(self, c: Client, seq: int, conc: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        reqs, names = [], []
        for k in range(seq):
            a = self.accounts[k % USERS]
            name = f"one-{self.batch}"
            names.append((a, name))
            reqs.append(self.launch_req(c, a, 1, name))
        self.samples("RunInstances")
        probe = bool(os.environ.get("CLOUDCTL_BENCH_LAUNCHES"))   # (bench/launch_probe.py)
        if probe:
            self.admin("GET", "/v0/bench/launches")
        walls = []
        # CLOUDCTL_BENCH_PROFILE_FIRST=DIR: the first launch of each size under cProfile (the loop
        # thread's CPU clock: whatever the loop ran meanwhile), its stats in DIR/first-launch-<n>.pstats.
        first = os.environ.get("CLOUDCTL_BENCH_PROFILE_FIRST")
        for k, ((a, name), r) in enumerate(zip(names, reqs)):
            if first and k == 0:
                self.admin("POST", "/v0/bench/profile?clock=cpu")
            status, data, wall = await c.send(r)
            if first and k == 0:
                self.admin("GET", f"/v0/bench/profile?top=5&dump={first}/first-launch-{self.count}.pstats")
            if status != 200:
                raise RuntimeError(f"RunInstances: HTTP {status}: {data[:300]!r}")
            iid = ids("instanceId", data)[0]
            a.instances.append(iid)
            self.singles.append((iid, name))
            walls.append(wall)
        self.count += seq
        out["sequential"] = ms(self.samples("RunInstances")) | {
            "client": ms(walls), "calls_per_s": round(len(walls) / sum(walls), 1)}
        if probe:
            out["sequential"]["each"] = self.admin("GET", "/v0/bench/launches")["launches"]
        reqs = [self.launch_req(c, self.accounts[k % USERS], 1, f"c-{self.batch}") for k in range(conc)]
        self.samples("RunInstances")
        wall = await c.concurrent(reqs, 32, "RunInstances x32")
        self.count += conc
        out["concurrent_32"] = ms(self.samples("RunInstances")) | {"calls": conc,
                                                                   "calls_per_s": round(conc / wall, 1)}
        if self.hello_url:   # the same signed bodies, the same 32 workers, right after: the client's ceiling
            async with Client(self.hello_url, c.region) as h:
                out["concurrent_32"]["hello_calls_per_s"] = round(conc / await h.concurrent(reqs, 32, "hello x32"), 1)
        return out

    def checkpoints(self, reps: int = 3) -> dict[str, Any]:
        assert self.cc is not None
        durs, stalls, own, gcs = [], [], [], []
        for _ in range(reps):
            self.admin("GET", "/v0/bench/gc")
            self.cc.reset_lags()
            self.admin("POST", "/v0/checkpoint")
            time.sleep(0.05)
            w, o = self.cc.reset_lags()
            gcs.append(max(self.admin("GET", "/v0/bench/gc")["max_ms"]))
            durs.append(float(self.cc.stats()["last_checkpoint_ms"]))
            stalls.append(w)
            own.append(o)
        return {"ms_median": statistics.median(durs), "ms_max": max(durs), "stall_ms_max": max(stalls),
                "own_stall_ms_max": max(own), "all_ms": durs, "stalls_ms": stalls, "gc_pause_max_ms": max(gcs)}

    async def stage(self, c: Client, n: int, seq: int, conc: int) -> dict[str, Any]:
        st: dict[str, Any] = {}
        log(f"fill to {n}")
        st["fill"] = await self.fill(c, n)
        st["fill"]["converge_s"] = round(await self.converged(c), 1)
        await self.add_addresses(c)
        log(f"  filled {self.count} instances in {st['fill']['total_s']} s (+{st['fill']['converge_s']} s to run)")
        await asyncio.sleep(2)
        st["instances"] = self.count
        st["gc_during_fill"] = self.admin("GET", "/v0/bench/gc?objects=1")   # (fill, convergence, addresses)
        st["rss_mib"] = self.rss()
        st["threads"] = self.threads()
        st["heap"] = heap = self.heap()
        log(f"  RSS {st['rss_mib']} MiB: {heap['summary_mib']}")
        st["checkpoint"] = self.checkpoints()   # (before the poll round: a running controller checkpoints often)
        log(f"  checkpoint {st['checkpoint']['ms_median']} ms, stall {st['checkpoint']['stall_ms_max']} ms")
        st["poll_round"] = self.poll_round()
        log(f"  RSS {st['rss_mib']} MiB; poll round: stall {st['poll_round']['stall_ms']} ms "
            f"(own {st['poll_round']['own_stall_ms']}), {st['poll_round']['hosts_polled']} hosts")
        st["describe"] = await self.describes(c)
        log("  describe by id p50 {p50_ms} ms p99 {p99_ms} ms".format(**st["describe"]["by_id"]))
        st["run_instances"] = await self.launches(c, seq, conc)
        r = st["run_instances"]
        log(f"  RunInstances seq p50 {r['sequential'].get('p50_ms')} ms p99 {r['sequential'].get('p99_ms')} ms, "
            f"{r['sequential']['calls_per_s']}/s; x32 {r['concurrent_32']['calls_per_s']}/s "
            f"(against the bare hello {r['concurrent_32'].get('hello_calls_per_s')}/s)")
        await self.converged(c)
        st["counts"] = {"instances": self.count, "volumes_data": self.volumes, "addresses": self.addresses,
                        "groups": sum(len(a.groups) for a in self.accounts), "users": USERS}
        return st

    async def restart(self, records: int) -> dict[str, Any]:
        """Stop, add a journal of `records` records, restart against hosts that kept their domains."""
        assert self.cc is not None
        self.admin("POST", "/v0/checkpoint")
        state = self.cc.state_dir
        self.cc.proc.stop(timeout=120)
        rows = scale_state.latest_rows(state)   # (the hosts kept running: their daemons hold the domains)
        log(f"writing a journal of {records:,} records")
        j = scale_state.write_journal(state, rows, records)
        log(f"  {j['bytes'] / 2**20:.0f} MiB; restarting")
        daemons0 = scale_hosts.cpu_s(self.host_list)
        wall = self.start_controller("cloudctl-restart.log", timeout=1800)
        daemons = scale_hosts.cpu_s(self.host_list) - daemons0
        phases = self.admin("GET", "/v0/bench/startup")
        findings = [ln.split("reconcile: ", 1)[1] for ln in
                    (self.tmp / "cloudctl-restart.log").read_text(errors="replace").splitlines() if "reconcile: " in ln]
        return {"journal": j, "ready_s": round(wall, 2), "libvirtd_cpu_s": round(daemons, 2),
                "phases_s": {k: round(v, 2) for k, v in phases.items()},
                "rss_mib": self.rss(), "threads": self.threads(), "reconcile_findings": len(findings),
                "reconcile_findings_first": findings[:5]}


async def main_async(b: Bench, sizes: list[int], res: dict[str, Any], quick: bool) -> None:
    b.start_hosts()
    log(f"{b.n_hosts} hosts (a libvirtd each) in {len(ZONES)} zones started; starting the controller")
    res["start"] = {"ready_s": round(b.start_controller(), 2)}
    res["start"]["rss_mib"] = b.rss()
    res["start"]["threads"] = b.threads()
    res["start"]["phases_s"] = b.admin("GET", "/v0/bench/startup")
    hello, b.hello_url = procs.start_hello(b.tmp)
    b.started.append(hello)
    assert b.cc is not None
    async with Client(b.cc.ec2_url, "cloudctl-1") as c:
        await b.make_accounts(c)
        res["start"]["rss_mib_after_first_call"] = b.rss()
        res["start"]["heap"] = b.heap()
        log(f"controller up in {res['start']['ready_s']} s, RSS {res['start']['rss_mib']} MiB")
        seq, conc = (100, 320) if quick else (200, 640)
        for n in sizes:
            res["stages"][str(n)] = await b.stage(c, n, seq, conc)
            (RESULTS / "scale-partial.json").write_text(json.dumps(res, indent=1, default=str))
    log("restart with the journal")
    res["restart"] = await b.restart(b.args.journal_records)
    log(f"  ready in {res['restart']['ready_s']} s: {res['restart']['phases_s']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 and 5,000 instances only")
    ap.add_argument("--sizes", help="comma-separated instance counts (default 1000,5000,20000,50000)")
    ap.add_argument("--journal-records", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state, node files)")
    ap.add_argument("--hosts-nice", type=int, default=scale_hosts.HOSTS_NICE,
                    help="the simulated hosts' libvirtds' niceness (default %(default)s: the controller's "
                         "priority; a run with another is not compared with the history's)")
    ap.add_argument("--freeze-after-checkpoint", action="store_true",
                    help="experiment: the served controller calls gc.freeze() after every checkpoint")
    args = ap.parse_args(argv)
    if why := scale_hosts.missing():
        print(f"SKIP: {why}")
        return 0
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else \
        [1000, 5000] if args.quick else [1000, 5000, 20000, 50000]
    RESULTS.mkdir(exist_ok=True)
    tmp = Path(procs.make_tmp())
    b = Bench(tmp, args, env={"CLOUDCTL_BENCH_FREEZE_AFTER_CHECKPOINT": "1"} if args.freeze_after_checkpoint else None,
              hosts_nice=args.hosts_nice)
    meta = {"sizes": sizes, "hosts": HOSTS, "zones": len(ZONES), "users": USERS,
            "freeze_after_checkpoint": args.freeze_after_checkpoint, "hosts_nice": args.hosts_nice}
    res: dict[str, Any] = {"meta": history.meta(quick=args.quick) | meta, "stages": {}}
    log(f"scale bench, sizes {sizes}, temp dir {tmp}")
    ok = True

    def stop(signum: int, frame: object) -> None:   # (SIGTERM: still stop the daemons and the server)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(main_async(b, sizes, res, args.quick))
    except (Exception, KeyboardInterrupt) as e:
        ok = False
        res["error"] = f"{type(e).__name__}: {e}"
        log(f"FAILED: {res['error']}")
        if b.cc is not None:
            log(b.cc.proc.log_tail(20))
    finally:
        b.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["meta"]["loadavg_end"] = list(os.getloadavg())
    res["meta"]["runtime_s"] = round(time.monotonic() - T0, 1)
    res["verdict"] = scale_report.verdict(res)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"scale-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    shutil.copyfile(path, RESULTS / "scale-latest.json")
    png = scale_report.plot(res, path.with_suffix(".png"))
    if png is not None:
        shutil.copyfile(png, RESULTS / "scale-latest.png")
    (RESULTS / "scale-partial.json").unlink(missing_ok=True)
    print(scale_report.render(res))
    if ok:   # (a failed run's figures would be compared with the next one)
        mode = "quick" if args.quick and not args.sizes else "full" if not args.sizes else f"sizes {args.sizes}"
        mode += " freeze-after-checkpoint" if args.freeze_after_checkpoint else ""
        mode += f" hosts-nice {args.hosts_nice}" if args.hosts_nice else ""   # (another set-up: not compared)
        print(history.record("scale", res["meta"], scale_report.headline(res), mode=mode))
    print(f"\nresults: {path}" + (f", {png}" if png else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
