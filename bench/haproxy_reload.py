"""ELB data plane: how long a change takes to be served, and what a reload costs under load.

    .venv/bin/python bench/haproxy_reload.py [--rounds 20] [--reloads 20] [--seconds 10]

On a random loopback address, with two local HTTP servers behind a real HAProxy (the
`HaproxyDriver`, as the controller runs it):

- listener change: `apply()` with one more listener, until a client gets an answer on its port;
- registration change: `apply()` with one more backend, until the runtime API lists it (the new
  config in force); for a few, also until a client gets its answer (after `rise` passed checks);
- failure detection: a backend killed, until `stats()` reports it down (against interval × fall);
- reloads under load: `wrk` on the first listener while `apply()` reloads `--reloads` times,
  alternating a deregistration and a registration; requests lost = wrk's socket errors,
  timeouts and non-2xx/3xx answers. Then the process tree: one master, one worker.

Goals (issue 16): change → served < 1 s (median and max), 0 requests lost.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloudctl.drivers.loadbalancer.base import (  # noqa: E402
    Backend,
    BalancerSpec,
    HealthCheck,
    Listener,
    Placement,
)
from cloudctl.drivers.loadbalancer.haproxy import HaproxyDriver  # noqa: E402

import history  # noqa: E402
from support.http_backends import HelloServer, Wrk, free_port, get, random_loopback  # noqa: E402


async def served(url: str, want: str | None, deadline_s: float = 10) -> float:
    """Seconds until `url` answers (with `want`'s body when given)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        try:
            body, _ = await asyncio.to_thread(get, url, None, 1)
            if want is None or body == want:
                return time.monotonic() - t0
        except OSError:
            pass
        await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} not served with {want!r} after {deadline_s} s")


def summary(xs: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(xs), 4), "max_s": round(max(xs), 4), "min_s": round(min(xs), 4)}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="changes timed, of each kind")
    ap.add_argument("--reloads", type=int, default=20, help="reloads under wrk load")
    ap.add_argument("--traffic-rounds", type=int, default=5,
                    help="registrations timed until the new backend's first answer (health checks included)")
    ap.add_argument("--seconds", type=int, default=10, help="wrk run length (must cover the reloads)")
    args = ap.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="haproxy-bench-"))
    front = random_loopback()
    addrs = [random_loopback() for _ in range(2 + args.rounds)]
    port = free_port(addrs[0])
    servers = [HelloServer(f"i-{k}", a, port).start() for k, a in enumerate(addrs)]
    driver = HaproxyDriver(run_dir)
    base_port = free_port(front)
    spec = BalancerSpec(name="bench", placement=Placement(front),
                        listeners=(Listener(base_port, "HTTP", port, "HTTP"),),
                        backends=(Backend("i-0", addrs[0]), Backend("i-1", addrs[1])),
                        health_check=HealthCheck(f"HTTP:{port}/", 1, 1, 2, 2), idle_timeout=10)
    figures: dict[str, float] = {}
    try:
        await driver.apply(spec)
        await served(f"http://{front}:{base_port}/", None)

        listener_s: list[float] = []
        for _ in range(args.rounds):        # one more listener each time, on a fresh port
            p = free_port(front)
            t0 = time.monotonic()
            await driver.apply(replace(spec, listeners=(*spec.listeners, Listener(p, "HTTP", port, "HTTP"))))
            await served(f"http://{front}:{p}/", None)
            listener_s.append(time.monotonic() - t0)
        await driver.apply(spec)

        register_s: list[float] = []
        traffic_s: list[float] = []
        for k in range(2, 2 + args.rounds):
            # One more backend: until the proxy's runtime API lists it (the new config in force),
            # then, for a few, until its own answer comes back (it must pass `rise` checks first).
            t0 = time.monotonic()
            await driver.apply(replace(spec, backends=(*spec.backends, Backend(f"i-{k}", addrs[k]))))
            while f"i-{k}" not in (await driver.stats("bench")).backends:
                await asyncio.sleep(0.005)
            register_s.append(time.monotonic() - t0)
            if k < 2 + args.traffic_rounds:
                await served(f"http://{front}:{base_port}/", f"i-{k}")
                traffic_s.append(time.monotonic() - t0)
        await driver.apply(spec)

        # Failure detection, against interval x fall (1 s x 2).
        await asyncio.sleep(3)
        servers[1].stop()
        t0 = time.monotonic()
        while (await driver.stats("bench")).backends["i-1"].up:
            await asyncio.sleep(0.02)
        detect_s = time.monotonic() - t0
        servers[1].start()
        while not (await driver.stats("bench")).backends["i-1"].up:
            await asyncio.sleep(0.05)

        # Reloads under load.
        first = await driver.processes("bench")
        wrk = Wrk(f"http://{front}:{base_port}/", seconds=args.seconds, connections=16)
        reload_s: list[float] = []
        try:
            await asyncio.sleep(0.5)
            one = replace(spec, backends=spec.backends[:1])
            for i in range(args.reloads):
                t0 = time.monotonic()
                await driver.apply(one if i % 2 == 0 else spec)
                reload_s.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)
            res = await asyncio.to_thread(wrk.result)
        finally:
            wrk.stop()
        t0 = time.monotonic()
        while True:
            p = await driver.processes("bench")
            if not p.old and len(p.current) == 1:
                break
            await asyncio.sleep(0.05)
        settle_s = time.monotonic() - t0
        with open(f"/proc/{p.master}/task/{p.master}/children") as f:
            children = [int(x) for x in f.read().split()]

        ls, rg, rl, tr = summary(listener_s), summary(register_s), summary(reload_s), summary(traffic_s)
        figures = {"listener_change_median_s": ls["median_s"], "listener_change_max_s": ls["max_s"],
                   "register_change_median_s": rg["median_s"], "register_change_max_s": rg["max_s"],
                   "register_first_answer_median_s": tr["median_s"],
                   "register_first_answer_max_s": tr["max_s"],
                   "reload_apply_median_s": rl["median_s"], "reload_apply_max_s": rl["max_s"],
                   "failure_detected_s": round(detect_s, 3), "wrk_requests": res.requests,
                   "requests_lost": res.lost, "old_workers_gone_after_s": round(settle_s, 3)}
        print(f"listener change -> served     median {ls['median_s']:.3f} s  max {ls['max_s']:.3f} s  "
              f"({args.rounds} changes; goal < 1 s)")
        print(f"registration change -> served median {rg['median_s']:.3f} s  max {rg['max_s']:.3f} s  "
              f"({args.rounds} changes; goal < 1 s)")
        print(f"registration -> its 1st answer median {tr['median_s']:.3f} s  max {tr['max_s']:.3f} s  "
              f"({args.traffic_rounds}; health checks: interval 1 s x rise 2)")
        print(f"apply() under load            median {rl['median_s']:.3f} s  max {rl['max_s']:.3f} s")
        print(f"backend killed -> down        {detect_s:.2f} s  (interval 1 s x fall 2)")
        print(f"{args.reloads} reloads under wrk        {res.requests} requests, lost {res.lost} "
              f"(connect {res.connect}, read {res.read}, write {res.write}, status {res.status}, "
              f"timeout {res.timeout}); goal 0")
        print(f"process tree after            master {p.master} (reloads {p.reloads - first.reloads}, "
              f"failed {p.failed}), workers {list(p.current)}, children {children}, "
              f"old workers gone {settle_s:.2f} s after wrk stopped")
        print(json.dumps(figures))
        print(history.record("haproxy_reload", history.meta(), {k: float(v) for k, v in figures.items()},
                             mode="full"))
        ok = ls["max_s"] < 1 and rg["max_s"] < 1 and res.lost == 0 and children == list(p.current)
        return 0 if ok else 1
    finally:
        await driver.remove("bench")
        for s in servers:
            s.stop()
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
