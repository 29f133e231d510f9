"""The event loop's longest stalls while a large state is checkpointed and while 200 hosts are polled,
without hosts or a server: the store and the collector's part of issue 14's stall goals, in seconds.

    .venv/bin/python bench/synth_state.py /tmp/s50 --instances 50000     # once
    .venv/bin/python bench/store_stalls.py /tmp/s50 [--checkpoints 3] [--rounds 3] [--repo CHECKOUT]

In a fresh process (of `--repo`'s cloudctl, default this checkout): loads STATE as start-up does
(`Store.open`: the load with the collector off, the state frozen; the directory is copied first and
the copy used), applies the collector policy (`core/gcpolicy.py`, where the checkout has it, with its
young sweep), starts the server's `LoopMonitor` (a 10 ms ticker: wall-clock and own lateness, as
`/v0/stats` reports it), and a request stand-in: every 5 ms a transaction that replaces one
instance row (a state change).

- checkpoints: `Store.checkpoint()` in turn; per checkpoint its duration and the longest stall.
- poll rounds: 200 hosts × (instances / 200) domains over one 10 s interval (here: `--round-s`), each host's
  poll built on a worker thread by the checkout's libvirt driver (`_poll_sync`) from a stand-in connection
  that answers as libvirt's bindings do (a handle object and a typed-parameter dict per domain: the
  allocation that sets off the collector's automatic collections on that thread), and handled on the
  loop as `Monitor.poll_host` handles it (the running instances of the host, the poll's powers by
  name, the check of each one, the result kept as the host's last poll); the longest stall per round.

Every figure comes with the cycle collector's longest pause in the same window (`gc.callbacks`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r'''
import asyncio, dataclasses, gc, json, sys, time, threading, os
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from cloudctl.server import LoopMonitor
from cloudctl.store.store import Store, MultiIndex
from cloudctl.store.records import Instance
from cloudctl.drivers.hypervisor.base import Power
from cloudctl.drivers.hypervisor.libvirt import LibvirtDriver
try:
    from cloudctl.drivers.hypervisor.base import PolledDomains
except ImportError:   # a checkout from before the packed polls: a list of DomainStats
    PolledDomains = None
try:
    from cloudctl.core import gcpolicy
except ImportError:
    gcpolicy = None
state, checkpoints, rounds, round_s = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
if float(sys.argv[6]) > 0:
    sys.setswitchinterval(float(sys.argv[6]))

pauses = []
slow = []
def on_gc(phase, info, _t=[0.0, None]):
    if phase == "start":
        _t[1] = gc.get_count()
        _t[0] = time.thread_time()
    else:
        d = time.thread_time() - _t[0]
        pauses.append((info["generation"], d))
        if d > 0.01 and len(slow) < 20:
            slow.append((info["generation"], round(d * 1000, 1), _t[1], info["collected"],
                         threading.current_thread().name))
gc.callbacks.append(on_gc)

def gc_max(since, gen=None):
    xs = [p for g, p in pauses[since:] if gen is None or g == gen]
    return round(max(xs, default=0.0) * 1000, 1)

async def main():
    s = Store(state)
    t0 = time.perf_counter()
    await s.open()
    load_s = time.perf_counter() - t0
    if gcpolicy is not None and hasattr(gcpolicy, "install"):
        gcpolicy.install(s)
    else:
        gc.freeze()
    if gcpolicy is not None and hasattr(gcpolicy, "sweep_young"):   # as the server's periodic task
        async def sweeper():
            while True:
                await asyncio.sleep(gcpolicy.YOUNG_SWEEP_S)
                await gcpolicy.sweep_young()
        sweeping = asyncio.create_task(sweeper())
    # One full collection, as a server that has run a while has had one: CPython holds back a due
    # full collection until what reached the oldest generation since the last one is a quarter of
    # what that one left (`long_lived_pending`, `long_lived_total`), so the rounds are measured
    # against a recent one, not against whatever start-up left.
    gc.collect()
    insts = s.table(Instance)
    by_host = insts.add_index(MultiIndex(lambda i: i.host))
    hosts = sorted(by_host._groups)
    mon = LoopMonitor()
    mon.start()
    cpu_max = [0.0]

    async def cpu_ticker():   # the loop thread's CPU between two 10 ms ticks: its own work, no waits
        while True:
            c0 = time.thread_time()
            await asyncio.sleep(0.01)
            cpu_max[0] = max(cpu_max[0], time.thread_time() - c0)

    def cpu_reset():
        v, cpu_max[0] = cpu_max[0], 0.0
        return round(v * 1000, 1)

    ticker = asyncio.create_task(cpu_ticker())
    stop = False
    ids = list(insts.rows)

    async def requests():   # a state change every 5 ms: an instance row replaced, journaled
        k = 0
        while not stop:
            old = insts.get(ids[k % len(ids)])
            with s.txn() as tx:
                tx.put(dataclasses.replace(old, transition_reason=f"r{k}"))
            s.flush()
            k += 1
            await asyncio.sleep(0.005)

    req = asyncio.create_task(requests())
    await asyncio.sleep(1.0)
    mon.reset()
    out = {"load_s": round(load_s, 2), "rows": sum(len(t) for t in s.tables.values()),
           "tracked_after_load": len(gc.get_objects()), "checkpoints": [], "rounds": []}
    for _ in range(checkpoints):
        await asyncio.sleep(0.5)
        mon.reset(); cpu_reset(); g0 = len(pauses); t = time.perf_counter()
        await s.checkpoint()
        await asyncio.sleep(0.05)
        lag, own = mon.reset()
        out["checkpoints"].append({"s": round(time.perf_counter() - t, 2), "loop_cpu_ms": cpu_reset(),
                                   "stall_ms": round(lag * 1000, 1),
                                   "own_ms": round(own * 1000, 1), "gc_max_ms": gc_max(g0),
                                   "gc_by_gen": [[sum(1 for g, _ in pauses[g0:] if g == k), gc_max(g0, k)]
                                                 for k in range(3)]})

    last = {}

    class Dom:   # libvirt's virDomain: a handle object per domain (its connection and C pointer)
        def __init__(self, conn, name):
            self._conn, self._o, self._name = conn, id(name), name

        def name(self):
            return self._name

    class Conn:   # what the driver's _poll_sync asks a libvirt connection, with a running guest's figures
        def __init__(self, host):
            self.host = host

        def getInfo(self):
            return ["x86_64", 2 << 20, 256, 2400, 1, 2, 64, 2]

        def getCPUStats(self, cpu):
            return {"kernel": 10**12, "user": 3 * 10**12, "idle": 9 * 10**13, "iowait": 10**10}

        def getAllDomainStats(self, groups, flags=0):   # a (handle, typed parameters) pair per domain
            out = []
            for n, i in enumerate(by_host.get(self.host).values(), 1):
                out.append((Dom(self, i.id), {
                    "state.state": 1, "state.reason": 1, "cpu.time": n * 10**9 + 7, "cpu.user": n * 10**8,
                    "cpu.system": n * 10**7, "balloon.current": 524288, "balloon.maximum": 524288,
                    "net.count": 1, "net.0.name": f"vnet{n}", "net.0.rx.bytes": n << 18, "net.0.rx.pkts": n,
                    "net.0.tx.bytes": n << 17, "net.0.tx.pkts": n, "block.count": 1, "block.0.name": "vda",
                    "block.0.path": f"/var/lib/cloudctl/volumes/vol-{n:017x}.qcow2", "block.0.rd.bytes": n << 20,
                    "block.0.rd.reqs": n, "block.0.wr.bytes": n << 19, "block.0.wr.reqs": n}))
            return out

    drivers = {h: LibvirtDriver(h, "test:///") for h in hosts}   # never opened: _poll_sync on the stand-in

    def poll_sync(host):   # the checkout's own driver code, as a poll runs it on the driver's worker thread
        return drivers[host]._poll_sync(Conn(host))

    missing = {}
    async def poll_host(host):   # as Monitor.poll_host, on the loop
        before = {i.id: i for i in by_host.get(host).values() if i.state == "running"}
        result = await asyncio.to_thread(poll_sync, host)
        last[host] = result
        power = ({d.name: d.power for d in result.domains} if PolledDomains is None
                 else result.domains.powers())
        now = set()
        for iid, inst in before.items():
            p = power.get(iid)
            if p is not None and p not in (Power.OFF, Power.CRASHED):
                continue
            now.add(iid)
        missing[host] = now
        for name in (d.name for d in result.domains) if PolledDomains is None else result.domains.names:
            inst = insts.get(name)
            if inst is not None and inst.host != host:
                pass

    for r in range(rounds):
        mon.reset(); cpu_reset(); g0 = len(pauses); t = time.perf_counter()
        gap = round_s / len(hosts)
        tasks = []
        for h in hosts:
            tasks.append(asyncio.create_task(poll_host(h)))
            await asyncio.sleep(gap)
        await asyncio.gather(*tasks)
        lag, own = mon.reset()
        out["rounds"].append({"s": round(time.perf_counter() - t, 2), "loop_cpu_ms": cpu_reset(),
                              "stall_ms": round(lag * 1000, 1),
                              "own_ms": round(own * 1000, 1), "gc_max_ms": gc_max(g0),
                              "gc_full": sum(1 for g, _ in pauses[g0:] if g == 2),
                              "gc_by_gen": [[sum(1 for g, _ in pauses[g0:] if g == k), gc_max(g0, k)]
                                            for k in range(3)],
                              "old_tracked": len(gc.get_objects(2))})
    stop = True
    await req
    mon.stop()
    ticker.cancel()
    out["tracked_at_end"] = len(gc.get_objects())
    out["slow_collections"] = slow
    await s.close()
    print(json.dumps(out))

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-s", type=float, default=10.0)
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval for the process (0: the checkout's own, as `cloudctl serve` sets it)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-stalls-") as tmp:
        copy = Path(tmp) / "state"
        shutil.copytree(a.state, copy)
        out = subprocess.run([sys.executable, "-c", PROBE, str(a.repo.resolve()), str(copy), str(a.checkpoints),
                              str(a.rounds), str(a.round_s), str(a.switch_interval)], capture_output=True, text=True)
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        return out.returncode
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["repo"] = str(a.repo)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
