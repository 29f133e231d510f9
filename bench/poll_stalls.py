"""The event loop's stalls while the monitor polls 200 hosts of 250 domains, with libvirt's own binding:
no served controller, no fill, ~1.5 min a run.

    .venv/bin/python bench/poll_stalls.py [--hosts 200] [--domains 250] [--rounds 4] [--interval 10]
                                          [--repo CHECKOUT] [--limit N] [--switch-interval S]

In a fresh process of `--repo`'s cloudctl (default this checkout): `--hosts` of its `LibvirtDriver`s, each
on its own in-process connection to libvirt's test driver (`test:///<node file>`: a private copy of
`--domains` running domains a host), polled as the monitor polls them (`Monitor._run`: the first
rounds spread over the interval, each next one `interval` × U(0.9, 1.1) after the last ended; the
hosts' calls on the driver's shared threads). Each poll is handled on the loop as `Monitor.poll_host`
handles it (the host's running instances, the poll's powers checked against them, the names walked
against the instance table), and the checkout's collector policy applies (`core/gcpolicy.py`: the
state frozen, young sweeps). After one interval of warm-up, per round of `interval` × 1.15 s:

- the longest lateness of a 10 ms ticker on the loop, wall-clock and own (less the loop thread's
  run-queue wait, as the server's `LoopMonitor`); the loop thread's CPU in that tick, and what the
  own lateness has beyond it (time off a CPU without waiting for one: the interpreter lock);
- how many ticks were late by more than 1, 2, 5 and 10 ms (own), the 99th percentile, and the own
  lateness beyond 1 ms summed over the round;
- the host threads' CPU per poll (median; here it includes the test driver's own work, which the
  binding runs without the lock), the most polls in flight at once, the loop thread's CPU share;
- the collector's longest pause and its full collections.

`--limit N`: at most N polls at once (an asyncio semaphore around each, an experiment);
`--switch-interval S`: `sys.setswitchinterval(S)` for the process (an experiment). The test driver
reports only the state group, so a poll's record is smaller than a qemu host's; `bench/store_stalls.py`
polls with qemu-shaped records on a stand-in connection. Results are one JSON line per round on
stderr and the whole run on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOMAIN = ("<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>512</memory>"
          "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
          "<metadata><cc:instance xmlns:cc='urn:cloudctl:instance'/></metadata></domain>")


@dataclass
class Row:   # what the monitor reads of an instance row
    id: str
    host: str
    state: str = "running"


def node_file(repo: Path, domains: int, folder: Path) -> Path:
    """One node file with `domains` running domains: every connection to it gets a private copy."""
    src = (repo / "config" / "hosts" / "host-a.xml").read_text()
    doms = "".join(DOMAIN.format(name=f"i-{n:017x}", uuid=uuid.UUID(int=n + 1)) for n in range(domains))
    path = folder / "node.xml"
    path.write_text(src.replace("</node>", doms + "</node>"))
    return path


async def run(a: argparse.Namespace, node: Path) -> dict[str, Any]:
    from cloudctl.core import gcpolicy
    from cloudctl.drivers.hypervisor.base import Power
    from cloudctl.drivers.hypervisor.libvirt import LibvirtDriver

    loop = asyncio.get_running_loop()
    hosts = [f"h{h:03d}" for h in range(a.hosts)]
    by_host = {h: {f"i-{n:017x}": Row(f"i-{n:017x}", h) for n in range(a.domains)} for h in hosts}
    table: dict[str, Row] = {}
    for h in hosts:
        table.update(by_host[h])
    t0 = time.perf_counter()
    drivers = {}
    for h in hosts:
        d = LibvirtDriver(h, f"test://{node}")
        await d.open(lambda ev: None)
        drivers[h] = d
        for dom in d._conn.listAllDomains():   # (a node file's domains may come up defined, off)
            if not dom.isActive():
                dom.create()
    open_s = time.perf_counter() - t0

    worker_cpu: list[float] = []
    inflight = [0, 0]
    lock = threading.Lock()
    for d in drivers.values():
        real = d._poll_sync

        def timed(conn: Any, _real: Any = real) -> Any:   # on the host's thread, as the driver runs it
            c0 = time.thread_time()
            with lock:
                inflight[0] += 1
                inflight[1] = max(inflight[1], inflight[0])
            try:
                return _real(conn)
            finally:
                worker_cpu.append(time.thread_time() - c0)
                with lock:
                    inflight[0] -= 1
        d._poll_sync = timed   # type: ignore[method-assign]

    fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)

    def waited() -> float:   # the loop thread's time runnable, waiting for a CPU
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9

    ticks: list[tuple[float, float, float]] = []   # (lateness, run-queue wait, loop CPU) per tick

    async def ticker() -> None:
        while True:
            w0, q0, c0 = time.perf_counter(), waited(), time.thread_time()
            await asyncio.sleep(0.01)
            ticks.append((time.perf_counter() - w0 - 0.01, waited() - q0, time.thread_time() - c0))

    gcpolicy.freeze_long_lived()   # (the state as loaded, frozen: the policy after start-up's checkpoint)
    gc.callbacks.append(gcpolicy._after_collection)
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))
    gc.callbacks.append(on_gc)

    async def sweeper() -> None:   # as the server's periodic task
        while True:
            await asyncio.sleep(gcpolicy.YOUNG_SWEEP_S)
            await gcpolicy.sweep_young()

    sem = asyncio.Semaphore(a.limit) if a.limit else None
    kept: dict[str, Any] = {}
    missing: dict[str, set[str]] = {}

    async def poll_host(host: str) -> None:   # as Monitor.poll_host, on the loop
        before = {i.id: i for i in by_host[host].values() if i.state == "running"}
        if sem is not None:
            async with sem:
                result = await asyncio.wait_for(drivers[host].poll(), 30)
        else:
            result = await asyncio.wait_for(drivers[host].poll(), 30)
        kept[host] = result
        power = result.domains.powers()
        missing[host] = {iid for iid in before if power.get(iid) in (None, Power.OFF, Power.CRASHED)}
        names = []
        for name in result.domains.names:
            row = table.get(name)
            names.append(row.id if row is not None else name)
        result.domains.names = tuple(names)

    due = [(loop.time() + random.uniform(0, a.interval), h) for h in hosts]
    heapq.heapify(due)
    running: set[asyncio.Task[None]] = set()

    async def one(host: str) -> None:
        await poll_host(host)
        heapq.heappush(due, (loop.time() + a.interval * random.uniform(0.9, 1.1), host))

    async def schedule() -> None:   # as Monitor._run
        while True:
            now = loop.time()
            while due and due[0][0] <= now + 0.001:
                t = asyncio.create_task(one(heapq.heappop(due)[1]))
                running.add(t)
                t.add_done_callback(running.discard)
            await asyncio.sleep(min(due[0][0] - now, 0.9 * a.interval) if due else 0.9 * a.interval)

    side = [asyncio.create_task(c) for c in (ticker(), sweeper(), schedule())]
    await asyncio.sleep(a.interval * 1.15)   # warm-up: the first, spread round
    out: dict[str, Any] = {"open_s": round(open_s, 1), "hosts": a.hosts, "domains": a.domains, "rounds": []}
    for _ in range(a.rounds):
        ticks.clear()
        worker_cpu.clear()
        pauses.clear()
        inflight[1] = 0
        c0, w0 = time.thread_time(), time.perf_counter()
        await asyncio.sleep(a.interval * 1.15)
        span = time.perf_counter() - w0
        own = sorted(((late - rq, late, cpu) for late, rq, cpu in ticks), reverse=True)
        worst = own[0]
        r = {"polls": len(worker_cpu), "ticks": len(own),
             "own_max_ms": round(worst[0] * 1e3, 2), "wall_max_ms": round(max(t[1] for t in own) * 1e3, 2),
             "worst_tick_loop_cpu_ms": round(worst[2] * 1e3, 2),
             "worst_tick_off_cpu_ms": round(max(0.0, worst[0] - worst[2]) * 1e3, 2),
             "own_over_ms": {str(x): sum(1 for t in own if t[0] > x / 1e3) for x in (1, 2, 5, 10)},
             "own_p99_ms": round(own[len(own) // 100][0] * 1e3, 2),
             "own_beyond_1ms_sum_ms": round(sum(t[0] - 0.001 for t in own if t[0] > 0.001) * 1e3, 1),
             "worker_cpu_ms_p50": round(statistics.median(worker_cpu) * 1e3, 3) if worker_cpu else None,
             "max_inflight": inflight[1], "loop_cpu_share": round((time.thread_time() - c0) / span, 4),
             "gc_max_ms": round(max((p for _, p in pauses), default=0.0) * 1e3, 2),
             "gc_full": sum(1 for g, _ in pauses if g == 2), "load": os.getloadavg()[0]}
        out["rounds"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    for t in side:
        t.cancel()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--domains", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=0, help="at most N polls at once (0: no limit)")
    ap.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval (0: the default)")
    a = ap.parse_args()
    repo = a.repo.resolve()
    sys.path.insert(0, str(repo))
    if a.switch_interval > 0:
        sys.setswitchinterval(a.switch_interval)
    import uvloop
    with tempfile.TemporaryDirectory(prefix="poll-stalls-") as tmp:
        node = node_file(repo, a.domains, Path(tmp))
        out = uvloop.run(run(a, node))
    out["repo"] = str(repo)
    print(json.dumps(out))
    os._exit(0)   # (200 open connections: their teardown is not what is measured)


if __name__ == "__main__":
    sys.exit(main())
