"""Unauthenticated floods against the EC2 listener: a normal call's latency and the longest loop stall.

    .venv/bin/python bench/flood.py [--senders 4] [--rate 5] [--seconds 3] [--rounds 3] [--repo PATH]
                                    [--json out.json]

One served cloudctl. A normal call (a raw DescribeInstances by id, signed once with botocore's
SigV4Auth, sent over http.client, sequentially) is timed idle, then while `--senders` processes
each POST `--rate` bodies a second (0: as fast as the server answers) that carry no valid
credentials, one kind per phase:

  noauth-wide      3.9 MiB, 100,000 short fields, no credentials (the attack of issue 21)
  noauth-escaped   3.9 MiB, 9,000 fields of %-escapes (under the parameter cap; the costliest parse)
  unknown-key-*    the same bodies, SigV4-signed (header) with an access key the cloud does not have
  sigv2-*          the same bodies with SigV2 fields (an unknown key, a fresh Timestamp) in front

The phases run in interleaved rounds (idle, then each flood, `--rounds` times), so the noise of
this shared machine falls on all of them alike.
Reported per phase: the normal call's p50/p99 and their ratio to idle, the server's longest
event-loop stall (`POST /v0/stats/reset-lag`: wall-clock, and "own", less the loop thread's
waits for a CPU), the server's CPU share, and what the senders got back (codes, requests/s).
Target (issue 21): p99 under each flood <= 2x idle. The senders and the client share one address,
so the login throttle is given budgets it never reaches (the bench measures the work a refused
request causes, not the backoff); `--throttle` keeps its defaults. `--repo` serves another
checkout's cloudctl and config (e.g. the main branch, for a before/after comparison).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ec2load  # noqa: E402
import history  # noqa: E402
import procs  # noqa: E402
from ec2load import EC2_VERSION, Target  # noqa: E402

FORM = "application/x-www-form-urlencoded; charset=utf-8"
UNKNOWN_KEY = ("AKIAFLOODUNKNOWN0001", "x" * 40)
SIZE = 3_900_000


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _pad(fields: list[bytes]) -> bytes:
    body = b"&".join(fields)
    return body + b"&Pad=" + b"x" * max(0, SIZE - len(body) - 5)


def wide_body() -> bytes:
    """100,000 short fields in 3.9 MiB (what parse_qsl took 143-233 ms on)."""
    return _pad([b"Action=RunInstances", b"Version=" + EC2_VERSION.encode()]
                + [b"Filter.%d.Name=v%d" % (i, i) for i in range(100_000)])


def escaped_body() -> bytes:
    """9,000 fields of valid %-escapes in 3.9 MiB: under the parameter cap, ~0.3 s to parse."""
    return _pad([b"Action=RunInstances", b"Version=" + EC2_VERSION.encode()]
                + [b"F%d=" % i + b"%C3%A9" * 71 for i in range(9_000)])


def flood_request(kind: str, shape: str, url: str, region: str) -> tuple[dict[str, str], bytes]:
    body = wide_body() if shape == "wide" else escaped_body()
    if kind == "noauth":
        return {"Content-Type": FORM}, body
    if kind == "unknown-key":
        req = AWSRequest(method="POST", url=url + "/", data=body, headers={"Content-Type": FORM})
        SigV4Auth(Credentials(*UNKNOWN_KEY), "ec2", region).add_auth(req)
        return {k: str(v) for k, v in req.prepare().headers.items()}, body
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ")
    v2 = (f"AWSAccessKeyId={UNKNOWN_KEY[0]}&SignatureVersion=2&SignatureMethod=HmacSHA256"
          f"&Timestamp={stamp}&Signature=bm90IGEgc2lnbmF0dXJl&").encode()
    return {"Content-Type": FORM}, v2 + body[: SIZE - len(v2)]


def sender(url: str, headers: dict[str, str], body: bytes, rate: float, stop: Any, out: Any) -> None:
    """POST the body again and again (each on a new connection) until told to stop."""
    u = urlsplit(url)
    codes: Counter[str] = Counter()
    sent, t0 = 0, time.monotonic()
    while not stop.is_set():
        if rate:
            wait = t0 + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        try:
            conn.request("POST", "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            code = data.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode() if b"<Code>" in data else ""
            codes[f"{resp.status} {code}".strip()] += 1
        except OSError as e:
            codes[type(e).__name__] += 1
        finally:
            conn.close()
        sent += 1
    out.put((sent, time.monotonic() - t0, dict(codes)))


def normal_calls(t: Target, request: tuple[str, dict[str, str], bytes], seconds: float) -> list[float]:
    path, headers, body = request
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(lat) < 20:
        status, _, wall = ec2load.send_raw(t.url, path, headers, body, timeout=120)
        if status != 200:
            raise RuntimeError(f"the normal call answered {status}")
        lat.append(wall)
    return lat


@dataclass
class Phase:
    """One phase's numbers, gathered over the rounds."""

    flood: tuple[dict[str, str], bytes] | None
    lat: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)       # wall, per round
    own_stalls: list[float] = field(default_factory=list)   # less the waits for a CPU, per round
    cpu_s: float = 0.0
    wall_s: float = 0.0
    sent: int = 0
    send_s: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)


def run_phase(cc: procs.Cloudctl, t: Target, request: tuple[str, dict[str, str], bytes], seconds: float,
              p: Phase, senders: int, rate: float) -> None:
    """One round of a phase: the flood (if any) under way, then `seconds` of normal calls."""
    ctx = mp.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=sender, args=(t.url, *p.flood, rate, stop, out))
               for _ in range(senders)] if p.flood else []
    for w in workers:
        w.start()
    try:
        if workers:
            time.sleep(1.0)   # the flood under way
        cc.reset_lags()
        cpu0, w0 = cc.proc.cpu_s(), time.monotonic()
        p.lat += normal_calls(t, request, seconds)
        p.wall_s += time.monotonic() - w0
        p.cpu_s += cc.proc.cpu_s() - cpu0
        stall, own = cc.reset_lags()
        p.stalls.append(stall)
        p.own_stalls.append(own)
    finally:
        stop.set()
        results = [out.get(timeout=180) for _ in workers]
        for w in workers:
            w.join(30)
    for sent, _, codes in results:
        p.sent += sent
        p.codes.update(codes)
    p.send_s += max((spent for _, spent, _ in results), default=0.0)


def summary(p: Phase) -> dict[str, Any]:
    return {"calls": len(p.lat), "p50_ms": round(_pct(p.lat, .5) * 1000, 2),
            "p99_ms": round(_pct(p.lat, .99) * 1000, 2), "max_ms": round(max(p.lat) * 1000, 2),
            "loop_stall_max_ms": max(p.stalls), "loop_stall_round_median_ms": statistics.median(p.stalls),
            "loop_stall_own_max_ms": max(p.own_stalls),
            "loop_stall_own_round_median_ms": statistics.median(p.own_stalls),
            "server_cpu_share": round(p.cpu_s / p.wall_s, 2),
            "flood_requests_per_s": round(p.sent / p.send_s, 1) if p.sent else 0.0,
            "flood_answers": dict(p.codes)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--rate", type=float, default=5.0, help="bodies per second per sender (0: unpaced)")
    ap.add_argument("--seconds", type=float, default=3.0, help="normal calls timed per phase and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all phases (interleaved: noise falls alike)")
    ap.add_argument("--kinds", default="noauth,unknown-key,sigv2")
    ap.add_argument("--shapes", default="wide,escaped")
    ap.add_argument("--repo", type=Path, default=procs.REPO, help="the checkout whose cloudctl is served")
    ap.add_argument("--throttle", action="store_true",
                    help="keep the login throttle's defaults (the senders' failures then back off)")
    ap.add_argument("--json")
    a = ap.parse_args()
    repo = a.repo.resolve()
    procs.REPO = repo   # its config (its own keys), and its `cloudctl` served
    out: dict[str, Any] = {"repo": str(repo), "senders": a.senders, "rate_per_sender": a.rate,
                           "rounds": a.rounds, "seconds_per_round": a.seconds}
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-flood-") as d:
        overrides: dict[str, Any] = {"metadata": {"listen": "127.0.0.1", "port": procs.free_port()}}
        if not a.throttle:   # every sender shares the client's address: measure the work, not the backoff
            overrides["login_throttle"] = {k: 10**9 for k in ("pair_free_failures", "source_free_failures",
                                                                "name_free_failures")}
        cc = procs.start_cloudctl(Path(d), overrides=overrides, repo=repo)
        try:
            user = cc.admin("POST", "/v0/users", {"name": "bench"})
            t = Target("cloudctl", cc.ec2_url, "cloudctl-1", user["AccessKeyId"], user["SecretAccessKey"])
            ec2 = t.client()
            image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]
            iid = ec2.run_instances(ImageId=image["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
            request = ec2load.signed_raw_request(
                t, f"Action=DescribeInstances&Version={EC2_VERSION}&InstanceId.1={iid}")
            normal_calls(t, request, 1.0)   # warm
            phases = {"idle": Phase(None)}
            for kind in a.kinds.split(","):
                for shape in a.shapes.split(","):
                    phases[f"{kind}-{shape}"] = Phase(flood_request(kind, shape, t.url, t.region))
            for r in range(a.rounds):
                for name, p in phases.items():
                    run_phase(cc, t, request, a.seconds, p, a.senders, a.rate)
                print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
            out["server_alive"] = cc.proc.alive()
        finally:
            cc.proc.stop()
    for name, p in phases.items():
        out[name] = summary(p)
    idle = out["idle"]
    floods = [n for n in phases if n != "idle"]
    for n in floods:
        out[n]["p50_vs_idle"] = round(out[n]["p50_ms"] / idle["p50_ms"], 2)
        out[n]["p99_vs_idle"] = round(out[n]["p99_ms"] / idle["p99_ms"], 2)
    out["load_average"] = os.getloadavg()
    out["verdict"] = {n: out[n]["p99_vs_idle"] <= 2.0 for n in floods}
    print(json.dumps(out, indent=2))
    for n in phases:
        v = out[n]
        print(f"{n:22s} p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:8.2f} ms ({v.get('p99_vs_idle', 1.0):5.2f}x idle)"
              f"  stall max {v['loop_stall_max_ms']:6.1f} ms (own {v['loop_stall_own_max_ms']:5.1f})"
              f"  cpu {v['server_cpu_share']:.2f}  flood {v['flood_requests_per_s']}/s {v['flood_answers']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    figures = {"idle_p50_ms": idle["p50_ms"], "idle_p99_ms": idle["p99_ms"]}
    for n in floods:
        figures[f"{n} p99_ms"] = out[n]["p99_ms"]
        figures[f"{n} stall_own_ms"] = out[n]["loop_stall_own_max_ms"]
    mode = f"senders {a.senders} rate {a.rate} rounds {a.rounds}" + \
        (f" repo {repo}" if repo != procs.BENCH.parent else "")
    print(history.record("flood", history.meta(), figures, mode=mode))


if __name__ == "__main__":
    main()
