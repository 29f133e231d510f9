"""cloudctl vs moto (and a bare aiohttp handler), side by side in one run.

Usage:  .venv/bin/python bench/run.py [--quick] [--skip-moto] [--strict] [--keep] [--repo PATH]
        (`make bench` installs moto[server] first, then runs this)

The box is small and shared, so absolute numbers drift from run to run; the ratios taken
within one run (same machine, same minute) are what the targets are about. Servers run one
at a time, the client is sequential, and every wrk run records the foreign CPU it saw.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ec2load  # noqa: E402
import history  # noqa: E402
import procs  # noqa: E402
import wrkload  # noqa: E402
from ec2load import Target  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SERVE_REPO = procs.REPO   # the checkout whose cloudctl is measured (--repo: another one, for before/after)
T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr with elapsed time: a full run takes minutes and moto is slow."""
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def plan(quick: bool) -> dict[str, Any]:
    """Sizes per mode: full is what the targets are defined for, quick is a smoke run (N ≤ 1000)."""
    if quick:
        return {"stages": [200, 1000], "run_calls": {"cloudctl": 100, "moto": 50}, "warmup": 10,
                "describe_reps": {"cloudctl": 3, "moto": {200: 2, 1000: 1}},
                "raw_reps": {"cloudctl": 3, "moto": 1},
                "tag_reps": {"cloudctl": 30, "moto": 2},
                "wrk": {"cloudctl": (2, 32, 5), "moto": (2, 8, 3), "hello": (2, 32, 5), "hello_get": (2, 32, 3)}}
    return {"stages": [1000, 5000], "run_calls": {"cloudctl": 400, "moto": 150}, "warmup": 10,
            "describe_reps": {"cloudctl": 3, "moto": {1000: 2, 5000: 1}},
            "raw_reps": {"cloudctl": 3, "moto": 1},
            "tag_reps": {"cloudctl": 30, "moto": 1},
            "wrk": {"cloudctl": (2, 32, 10), "moto": (2, 8, 5), "hello": (2, 32, 10), "hello_get": (2, 32, 5)}}


# --------------------------------------------------------------------------- phases


def measured(st: dict[str, Any], key: str, server: procs.Proc, fn: Callable[[], Any]) -> Any:
    """Run one measurement, storing its result and the foreign CPU it competed with."""
    probe = procs.NoiseProbe([server])
    probe.start()
    st[key] = fn()
    foreign = probe.stop()
    if isinstance(st[key], dict):
        st[key]["foreign_cores"] = round(foreign, 3)
    return st[key]


class Session:
    """One server process plus a client target; cloudctl sessions also track event-loop stalls.

    Each phase group gets a fresh server so both peers see the same population: moto pages
    DescribeInstances by *reservations* (100), so leftover single-instance reservations from
    the RunInstances-rate phase would make it return a partial listing.
    """

    def __init__(self, proc: procs.Proc, target: Target, cc: procs.Cloudctl | None = None) -> None:
        self.proc, self.target, self.cc = proc, target, cc
        self.lags: dict[str, float] = {}
        self.own_lags: dict[str, float] = {}   # less the waits for a CPU (see procs.reset_lags)

    def checkpoint(self, phase: str) -> None:
        if self.cc is not None:
            self.lags[phase], self.own_lags[phase] = self.cc.reset_lags()

    def died(self) -> str:
        """Why the server is gone, if it is: exit code or signal and its last log lines."""
        rc = self.proc.popen.poll()
        if rc is None:
            return ""
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        return f"{self.proc.name} (pid {self.proc.pid}) {how}; log tail:\n{self.proc.log_tail(15)}"

    def close(self, out: dict[str, Any]) -> None:
        """Read the final stall/stats if the server is still up, then stop it (by PID)."""
        why = self.died()
        if self.cc is not None and not why:
            try:
                stats = self.cc.stats()
                self.lags["end"] = float(stats.get("loop_lag_max_ms", 0.0))
                out["final_stats"] = stats
            except Exception as e:  # the server may be wedged; the stop below still runs
                out["final_stats_error"] = repr(e)
        if self.lags:
            out["lag_by_phase_ms"] = self.lags
            out["loop_lag_max_ms"] = max(self.lags.values())
            out["worst_phase"] = max(self.lags, key=lambda k: self.lags[k])
        if self.own_lags:
            out["own_lag_by_phase_ms"] = self.own_lags
            out["loop_lag_own_max_ms"] = max(self.own_lags.values())
            out["worst_own_phase"] = max(self.own_lags, key=lambda k: self.own_lags[k])
        if why:
            out["server_died"] = why
        self.proc.stop()
        out["exit_code"] = self.proc.popen.returncode


def open_cloudctl(tmp: Path, started: list[procs.Proc], out: dict[str, Any]) -> Session:
    tmp.mkdir(parents=True, exist_ok=True)
    w0 = time.perf_counter()
    cc = procs.start_cloudctl(tmp, repo=SERVE_REPO)
    started.append(cc.proc)
    out["startup_s"] = round(time.perf_counter() - w0, 2)
    user = cc.admin("POST", "/v0/users", {"name": "bench"})
    t = Target("cloudctl", cc.ec2_url, "cloudctl-1", user["AccessKeyId"], user["SecretAccessKey"])
    imgs = t.client().describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
    if not imgs:
        raise RuntimeError("cloudctl: no image named cloudctl-blank")
    t.image_id = imgs[0]["ImageId"]
    out["rss_mib_start"] = round(cc.proc.rss_mib(), 1)
    out["startup_lag_ms"] = cc.reset_lag()   # not counted: the stall clock starts here
    return Session(cc.proc, t, cc)


def open_moto(tmp: Path, started: list[procs.Proc], out: dict[str, Any]) -> Session:
    tmp.mkdir(parents=True, exist_ok=True)
    proc, url = procs.start_moto(tmp)
    started.append(proc)
    t = Target("moto", url, "us-east-1", "AKIDBENCHMOTO", "bench-secret")
    w0 = time.perf_counter()
    imgs = t.client().describe_images(Owners=["amazon"])["Images"]   # also loads moto's EC2 backend
    out["first_call_s"] = round(time.perf_counter() - w0, 2)
    t.image_id = imgs[0]["ImageId"] if imgs else "ami-12c6146b"
    out["rss_mib_start"] = round(proc.rss_mib(), 1)
    return Session(proc, t)


def guarded(s: Session, out: dict[str, Any], body: Callable[[], None]) -> None:
    """Run a phase group; if the server died under it, say so instead of 'connection refused'."""
    try:
        body()
    except Exception as e:
        why = s.died()
        raise RuntimeError(why or f"{type(e).__name__}: {e}") from e
    finally:
        s.close(out)


def rate_phase(s: Session, p: dict[str, Any], out: dict[str, Any]) -> None:
    """RunInstances 1/call from one sequential boto3 client on a fresh server (as in the anchors)."""
    name = s.target.name
    log(f"{name}: RunInstances 1/call × {p['run_calls'][name]} (+{p['warmup']} warm-up)")
    procs.wait_quiet([s.proc], max_wait_s=10)
    cpu0 = s.proc.cpu_s()
    r = measured(out, "run_one", s.proc,
                 lambda: ec2load.run_one_per_call(s.target, p["run_calls"][name], p["warmup"]))
    # Server CPU (all threads) per call: unlike a raw latency it also counts the work a server
    # does after answering (cloudctl's pending→running convergence), which competes for the 2 cores.
    r["server_cpu_ms_per_call"] = (s.proc.cpu_s() - cpu0) / (r["calls"] + r["warmup"]) * 1000
    log(f"{name}: {r['calls_per_s']:.1f} calls/s, median {r['latency_ms']['median']:.2f} ms, "
        f"server CPU {r['server_cpu_ms_per_call']:.2f} ms/call, client CPU {r['client_cpu_ms_per_call']:.2f} ms/call "
        f"(foreign {r['foreign_cores']:.2f} cores)")
    s.checkpoint("run_one")


def scale_phase(s: Session, p: dict[str, Any], out: dict[str, Any]) -> None:
    """Populate to each stage; unfiltered describes (boto3 and raw), tag filter and RSS at the top."""
    t, server, name = s.target, s.proc, s.target.name
    batches = [0]
    out["stages"] = {}
    last = p["stages"][-1]
    for n in p["stages"]:
        st: dict[str, Any] = {}
        out["stages"][str(n)] = st
        log(f"{name}: populate to {n}")
        r = measured(st, "populate", server,
                     lambda: ec2load.populate(t, n, tag_x_last=(n == last), batch_counter=batches))
        log(f"{name}: {r['instances_per_s']:.0f} instances/s")
        st["rss_mib_after_populate"] = round(server.rss_mib(), 1)
        s.checkpoint(f"populate_{n}")
        reps = p["describe_reps"][name]
        reps = reps[n] if isinstance(reps, dict) else reps
        log(f"{name}: DescribeInstances unfiltered @{n} boto3 × {reps}")
        procs.wait_quiet([server], max_wait_s=10)
        b = measured(st, "describe_boto3", server, lambda: ec2load.describe_boto3(t, reps, expect=t.count))
        log(f"{name}: boto3 median {b['s']['median']:.3f}s (client CPU {b['client_cpu_s']['median']:.3f}s), "
            f"returned {b['returned']}, foreign {b['foreign_cores']:.2f} cores")
        s.checkpoint(f"describe_boto3_{n}")
        log(f"{name}: DescribeInstances unfiltered @{n} raw × {p['raw_reps'][name]}")
        r = measured(st, "describe_raw", server, lambda: ec2load.describe_raw(t, p["raw_reps"][name]))
        st["share"] = r["s"]["median"] / b["s"]["median"]
        log(f"{name}: raw median {r['s']['median']:.3f}s ({r['bytes'] / 2**20:.1f} MiB), share {st['share']:.1%}")
        s.checkpoint(f"describe_raw_{n}")
        if n == last:
            log(f"{name}: tag:Name=x @{n} × {p['tag_reps'][name]}")
            procs.wait_quiet([server], max_wait_s=10)
            r = measured(st, "tag_x", server, lambda: ec2load.describe_tag_x(t, p["tag_reps"][name]))
            log(f"{name}: tag filter median {r['s']['median'] * 1000:.2f} ms, matched {r['matched']}")
            if name == "cloudctl":   # moto's raw tag filter would cost another ~20 s for nothing new
                r = measured(st, "tag_x_raw", server, lambda: ec2load.tag_x_raw(t, p["tag_reps"][name]))
                log(f"{name}: raw tag filter median {r['s']['median'] * 1000:.2f} ms")
            s.checkpoint(f"tag_x_{n}")
            if s.cc is not None:
                log(f"{name}: POST /v0/checkpoint @{n} × 5")
                procs.wait_quiet([server], max_wait_s=10)
                cc = s.cc
                r = measured(st, "checkpoint", server, lambda: checkpoints(cc, 5))
                log(f"{name}: checkpoint median {r['ms']['median']:.1f} ms (max {r['ms']['max']:.1f})")
                s.checkpoint(f"checkpoint_{n}")
        st["rss_mib_after_describes"] = round(server.rss_mib(), 1)


def checkpoints(cc: procs.Cloudctl, reps: int) -> dict[str, Any]:
    """The store's time per full checkpoint (`last_checkpoint_ms`: the snapshot of the rows on the
    loop, their encoding and the fsync on a worker thread), `reps` in a row."""
    ms = []
    for _ in range(reps):
        cc.admin("POST", "/v0/checkpoint")
        ms.append(float(cc.stats()["last_checkpoint_ms"]))
    return {"ms": {"median": statistics.median(ms), "max": max(ms), "all": ms}}


def wrk_by_id(s: Session, tmp: Path, spec: tuple[int, int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Capture a boto3-signed DescribeInstances(InstanceIds=[id]) and hammer the server with it."""
    t = s.target
    iid = t.ids[len(t.ids) // 2]
    req = wrkload.capture_describe_by_id(t, iid)
    size = wrkload.check_replay(req, iid)
    script = wrkload.write_lua(req, tmp / f"{t.name}_by_id.lua")
    thr, conns, secs = spec
    log(f"{t.name}: wrk by id -t{thr} -c{conns} -d{secs}s (response {size} B)")
    s.checkpoint("wrk_setup")
    r = wrkload.run_wrk_clean(t.url + "/", script, thr, conns, secs, [s.proc], mark=s.checkpoint)
    r["response_bytes"] = size
    if s.cc is not None:
        r["loop_lag_max_ms"] = s.lags.get(f"wrk_run{r['attempt']}")
    log(f"{t.name}: wrk {r['rps']:.0f} req/s, p50 {r['p50_us'] / 1000:.2f} ms, non-2xx {r['non_2xx']}, "
        f"server {r['server_cores']:.2f} cores, foreign {r['foreign_cores']:.2f} cores")
    return r, req


def phase_server(kind: str, p: dict[str, Any], tmp: Path, res: dict[str, Any],
                 started: list[procs.Proc]) -> dict[str, Any] | None:
    """Both phase groups for one peer, each on a fresh server; returns the signed by-id request."""
    out: dict[str, Any] = {"rate_server": {}, "scale_server": {}}
    res[kind] = out
    opener = open_cloudctl if kind == "cloudctl" else open_moto
    log(f"{kind}: starting a fresh server for the RunInstances rate")
    s = opener(tmp / f"{kind}-rate", started, out["rate_server"])
    guarded(s, out["rate_server"], lambda: rate_phase(s, p, out))
    log(f"{kind}: starting a fresh server for the population phases")
    s = opener(tmp / f"{kind}-scale", started, out["scale_server"])
    box: dict[str, Any] = {}

    def scale() -> None:
        scale_phase(s, p, out)
        out["wrk"], box["req"] = wrk_by_id(s, tmp, p["wrk"][kind])

    try:
        guarded(s, out["scale_server"], scale)
    finally:
        out["instances_created"] = s.target.count
        out["rss_mib_start"] = out["scale_server"].get("rss_mib_start")
        lags = [v for v in (out["rate_server"].get("loop_lag_max_ms"), out["scale_server"].get("loop_lag_max_ms"))
                if v is not None]
        if lags:
            out["loop_lag_max_ms"] = max(lags)
            which = "rate_server" if out["rate_server"].get("loop_lag_max_ms") == max(lags) else "scale_server"
            out["worst_phase"] = out[which].get("worst_phase")
            outside = [v for srv in ("rate_server", "scale_server")
                       for k, v in (out[srv].get("lag_by_phase_ms") or {}).items() if not k.startswith("wrk_run")]
            out["loop_lag_max_outside_wrk_ms"] = max(outside) if outside else None
            log(f"{kind}: longest loop stall {out['loop_lag_max_ms']:.1f} ms (in {out['worst_phase']})")
        own = [out[srv][k] for srv in ("rate_server", "scale_server") for k in ("loop_lag_own_max_ms",)
               if out[srv].get(k) is not None]
        if own:
            out["loop_lag_own_max_ms"] = max(own)
            which = "rate_server" if out["rate_server"].get("loop_lag_own_max_ms") == max(own) else "scale_server"
            out["worst_own_phase"] = out[which].get("worst_own_phase")
    return box.get("req")


def phase_hello(p: dict[str, Any], tmp: Path, res: dict[str, Any], req: dict[str, Any] | None,
                started: list[procs.Proc]) -> None:
    """The ceiling: the same signed POST against a handler that only reads it and returns 2 KB."""
    out: dict[str, Any] = {}
    res["hello"] = out
    log("hello: starting")
    proc, url = procs.start_hello(tmp)
    started.append(proc)
    try:
        if req is None:   # cloudctl did not get that far: sign a comparable request ourselves
            _, headers, body = ec2load.signed_raw_request(
                Target("hello", url, "cloudctl-1", "AKIDBENCH", "secret"),
                "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0")
            req = {"method": "POST", "path": "/", "headers": headers, "body": body.decode()}
        script = wrkload.write_lua(req, tmp / "hello_post.lua")
        thr, conns, secs = p["wrk"]["hello"]
        log(f"hello: wrk same signed POST -t{thr} -c{conns} -d{secs}s")
        out["wrk_post"] = wrkload.run_wrk_clean(url + "/", script, thr, conns, secs, [proc])
        log(f"hello: {out['wrk_post']['rps']:.0f} req/s, server {out['wrk_post']['server_cores']:.2f} cores")
        thr, conns, secs = p["wrk"]["hello_get"]
        out["wrk_get"] = wrkload.run_wrk_clean(url + "/", wrkload.write_lua(None, tmp / "hello_get.lua"),
                                               thr, conns, secs, [proc])
        log(f"hello GET: {out['wrk_get']['rps']:.0f} req/s")
        out["rss_mib"] = round(proc.rss_mib(), 1)
    finally:
        proc.stop()


# --------------------------------------------------------------------------- report


def _f(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _get(d: dict[str, Any], *path: Any) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def build_rows(res: dict[str, Any], p: dict[str, Any]) -> tuple[list[list[str]], list[str], bool]:
    """Table rows, notes, and whether every evaluated target passed."""
    c, m, h = res.get("cloudctl", {}), res.get("moto", {}), res.get("hello", {})
    full = p["stages"][-1] == 5000
    rows: list[list[str]] = []
    notes: list[str] = []
    ok = True

    def verdict(passed: bool | None, applies: bool = True) -> str:
        nonlocal ok
        if passed is None:
            return "n/a"
        if not applies:
            return "info"
        ok = ok and passed
        return "PASS" if passed else "FAIL"

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b not in (None, 0) else None

    def times(r: float | None) -> str:
        """'7.97×' rather than a rounded '8.0×' next to a FAIL: near a target the digits matter."""
        if r is None:
            return "–"
        return f"{r:.2f}×" if r < 10 else f"{r:.1f}×" if r < 100 else f"{r:.0f}×"

    # 1. RunInstances
    cr, mr = _get(c, "run_one", "calls_per_s"), _get(m, "run_one", "calls_per_s")
    r = ratio(cr, mr)
    rows.append(["RunInstances 1/call, boto3 seq, calls/s", _f(cr, ".1f"), _f(mr, ".1f"),
                 times(r), "≥ 8×", verdict(None if r is None else r >= 8)])
    crr, mrr = _get(c, "run_one", "server_cpu_ms_per_call"), _get(m, "run_one", "server_cpu_ms_per_call")
    rows.append(["  server CPU per RunInstances(1), ms", _f(crr, ".2f"), _f(mrr, ".2f"),
                 times(ratio(mrr, crr)), "", "info"])
    ccl = _get(c, "run_one", "client_cpu_ms_per_call")
    rows.append(["  boto3 client CPU per call, ms", _f(ccl, ".2f"),
                 _f(_get(m, "run_one", "client_cpu_ms_per_call"), ".2f"),
                 "", "", "info"])
    for n in p["stages"]:
        k = str(n)
        cs, ms = _get(c, "stages", k), _get(m, "stages", k)
        cp, mp = _get(cs or {}, "populate", "instances_per_s"), _get(ms or {}, "populate", "instances_per_s")
        rows.append([f"populate to {n} (MaxCount=100), inst/s", _f(cp, ".0f"), _f(mp, ".0f"),
                     times(ratio(cp, mp)), "", "info"])
    # 2. DescribeInstances unfiltered
    for n in p["stages"]:
        k = str(n)
        cb, mb = (_get(c, "stages", k, "describe_boto3", "s", "median"),
                  _get(m, "stages", k, "describe_boto3", "s", "median"))
        r = ratio(mb, cb)
        is5k = n == 5000
        rows.append([f"DescribeInstances all @{n}, boto3 s", _f(cb, ".3f"), _f(mb, ".2f"),
                     times(r), "≥ 9×" if is5k else "",
                     verdict(None if r is None else r >= 9, is5k) if is5k else "info"])
        craw, mraw = (_get(c, "stages", k, "describe_raw", "s", "median"),
                      _get(m, "stages", k, "describe_raw", "s", "median"))
        rows.append([f"  raw (server+transport) @{n}, s", _f(craw, ".3f"), _f(mraw, ".2f"),
                     times(ratio(mraw, craw)), "", "info"])
        csh, msh = _get(c, "stages", k, "share"), _get(m, "stages", k, "share")
        rows.append([f"  server share raw/boto3 @{n}", _f(csh and csh * 100, ".1f") + "%" if csh else "–",
                     _f(msh and msh * 100, ".0f") + "%" if msh else "–", "",
                     "≤ 10%" if is5k else "", verdict(None if csh is None else csh <= 0.10, is5k) if is5k else "info"])
        for who, st in (("cloudctl", cs), ("moto", ms)):
            db = _get(st or {}, "describe_boto3")
            if db and (db["returned"] != db["expected"] or db["next_token"]):
                notes.append(f"{who} @{n}: unfiltered DescribeInstances returned {db['returned']} of "
                             f"{db['expected']} instances (NextToken={'yes' if db['next_token'] else 'no'})")
    # 3. tag filter
    last = str(p["stages"][-1])
    ct, mt = _get(c, "stages", last, "tag_x", "s", "median"), _get(m, "stages", last, "tag_x", "s", "median")
    r = ratio(mt, ct)
    rows.append([f"tag:Name=x @{last}, boto3 ms", _f(ct and ct * 1000, ".2f"), _f(mt and mt * 1000, ".0f"),
                 times(r), "≥ 1000×", verdict(None if r is None else r >= 1000, full)])
    ctr = _get(c, "stages", last, "tag_x_raw", "s", "median")
    rows.append([f"  raw tag:Name=x @{last}, ms", _f(ctr and ctr * 1000, ".2f"), "", "", "", "info"])
    for who, d in (("cloudctl", c), ("moto", m)):
        matched = _get(d, "stages", last, "tag_x", "matched")
        if matched is not None and matched != 1:
            notes.append(f"{who}: tag:Name=x matched {matched} instances, expected 1")
    # 4. RSS
    rows.append(["server RSS at start (after 1st EC2 call), MiB", _f(_get(c, "rss_mib_start"), ".1f"),
                 _f(_get(m, "rss_mib_start"), ".0f"), "", "", "info"])
    crs, mrs = _get(c, "stages", last, "rss_mib_after_populate"), _get(m, "stages", last, "rss_mib_after_populate")
    rows.append([f"server RSS @{last}, MiB", _f(crs, ".1f"), _f(mrs, ".0f"),
                 times(ratio(mrs, crs)), "≤ 80 MiB",
                 verdict(None if crs is None else crs <= 80, full)])
    crs2, mrs2 = _get(c, "stages", last, "rss_mib_after_describes"), _get(m, "stages", last, "rss_mib_after_describes")
    def per_inst(d: dict[str, Any]) -> float | None:
        a, b, n = (_get(d, "rss_mib_start"), _get(d, "stages", last, "rss_mib_after_populate"),
                   _get(d, "instances_created"))
        return (b - a) * 1024 / n if a is not None and b is not None and n else None
    rows.append(["  RSS growth per instance, KiB", _f(per_inst(c), ".1f"), _f(per_inst(m), ".1f"), "", "", "info"])
    rows.append([f"  RSS @{last} after the describes, MiB", _f(crs2, ".1f"), _f(mrs2, ".0f"), "", "", "info"])
    rows.append([f"checkpoint (POST /v0/checkpoint) @{last}, median ms", _f(_get(c, "stages", last, "checkpoint", "ms",
                                                                                "median"), ".1f"), "", "", "", "info"])
    # 5. wrk
    cw, mw = _get(c, "wrk", "rps"), _get(m, "wrk", "rps")
    rows.append([f"wrk DescribeInstances by id @{last}, req/s", _f(cw, ".0f"), _f(mw, ".0f") + " (moto)" if mw else "–",
                 times(ratio(cw, mw)), "", "info"])
    hw = _get(h, "wrk_post", "rps")
    r = ratio(cw, hw)
    sc = _get(c, "wrk", "server_cores")
    if sc is not None and sc < 0.9:
        notes.append(f"cloudctl wrk: the server used only {sc:.2f} cores, "
                     "so wrk (or noise), not the server, may be the limit")
    rows.append(["wrk by id vs bare aiohttp hello, req/s", _f(cw, ".0f"), _f(hw, ".0f") + " (hello)" if hw else "–",
                 _f(r, ".2f") if r else "–", "≥ 0.50", verdict(None if r is None else r >= 0.5)])
    hg = _get(h, "wrk_get", "rps")
    rows.append(["  hello with plain GET, req/s", "", _f(hg, ".0f") + " (hello)" if hg else "–",
                 _f(ratio(cw, hg), ".2f") if ratio(cw, hg) else "–", "", "info"])
    cn = _get(c, "wrk", "non_2xx")
    rows.append(["  cloudctl wrk non-2xx + socket errors", "–" if cn is None else str(cn + c["wrk"]["socket_errors"]),
                 "", "", "= 0", verdict(None if cn is None else cn + c["wrk"]["socket_errors"] == 0)])
    for who, w in (("cloudctl", _get(c, "wrk")), ("moto", _get(m, "wrk")), ("hello", _get(h, "wrk_post"))):
        if w and w.get("noisy"):
            notes.append(f"{who} wrk: every attempt saw ≥0.15 foreign cores (best {w['foreign_cores']:.2f}); "
                         f"runs {w['all_rps']}")
    for who, d in (("cloudctl", c), ("moto", m)):
        phases = [("run_one", _get(d, "run_one"))] + [
            (f"{k}/{key}", v) for k, st in (_get(d, "stages") or {}).items() for key, v in st.items()
            if isinstance(v, dict)]
        loud = [f"{ph} {v['foreign_cores']:.2f}" for ph, v in phases if v and v.get("foreign_cores", 0) >= 0.3]
        if loud:
            notes.append(f"{who}: other processes used ≥0.3 cores during: {', '.join(loud)}")
    # 6. loop stall
    lag = _get(c, "loop_lag_max_ms")
    rows.append(["cloudctl longest event-loop stall, ms", _f(lag, ".1f") + (f" ({c['worst_phase']})" if lag else ""),
                 "", "", "< 20 ms", verdict(None if lag is None else lag < 20)])
    lo, lw = _get(c, "loop_lag_max_outside_wrk_ms"), _get(c, "wrk", "loop_lag_max_ms")
    rows.append(["  stall outside the wrk runs, ms", _f(lo, ".1f"), "", "", "", "info"])
    own = _get(c, "loop_lag_own_max_ms")
    rows.append(["  own stall (less waits for a CPU), ms",
                 _f(own, ".1f") + (f" ({c['worst_own_phase']})" if own else ""), "", "", "", "info"])
    rows.append(["  stall during the kept wrk run, ms", _f(lw, ".1f"), "", "", "", "info"])
    for who in ("cloudctl", "moto", "hello"):
        if _get(res, who, "error"):
            notes.append(f"{who} phase failed: {res[who]['error'].splitlines()[0][:200]}")
    if not full:
        notes.append("--quick: the 5000-instance targets are shown as 'info' (evaluated only in a full run)")
    return rows, notes, ok


def render(rows: list[list[str]]) -> str:
    head = ["metric", "cloudctl", "moto / hello", "ratio", "target", "result"]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i]) for i in range(len(r)))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * x for x in w)] + [line(r) for r in rows])


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("boto3", "botocore", "aiohttp", "uvloop", "moto", "Werkzeug"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: N up to 1000, shorter wrk")
    ap.add_argument("--skip-moto", action="store_true", help="no moto phase (ratios to moto are n/a)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state, wrk scripts)")
    ap.add_argument("--repo", type=Path, help="serve the cloudctl of another checkout (before/after figures)")
    args = ap.parse_args(argv)
    if args.repo is not None:
        global SERVE_REPO
        SERVE_REPO = args.repo.resolve()
    p = plan(args.quick)
    tmp = procs.make_tmp()
    started: list[procs.Proc] = []
    res: dict[str, Any] = {"meta": {
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "args": vars(args),
        "plan": {k: v for k, v in p.items() if k != "wrk"} | {"wrk": {k: list(v) for k, v in p["wrk"].items()}},
        "versions": versions(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()} | history.meta()}
    log(f"bench {'quick' if args.quick else 'full'} run, temp dir {tmp}")
    try:
        req = None
        try:
            req = phase_server("cloudctl", p, tmp, res, started)
        except Exception as e:  # keep going: moto/hello numbers are still worth having
            res.setdefault("cloudctl", {})["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
            log(f"cloudctl phase failed: {res['cloudctl']['error'][:2000]}")
        try:
            phase_hello(p, tmp, res, req, started)
        except Exception as e:
            res.setdefault("hello", {})["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
            log(f"hello phase failed: {res['hello']['error']}")
        if not args.skip_moto:
            try:
                phase_server("moto", p, tmp, res, started)
            except Exception as e:
                res.setdefault("moto", {})["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
                log(f"moto phase failed: {res['moto']['error']}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        for pr in started:
            pr.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["runtime_s"] = round(time.monotonic() - T0, 1)
    rows, notes, ok = build_rows(res, p)
    table = render(rows)
    res["table"] = table
    res["notes"] = notes
    res["all_targets_passed"] = ok
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    print()
    print(table)
    for n in notes:
        print(f"note: {n}")
    print(f"\nratios are within this one run on a {os.cpu_count()}-core shared box "
          f"(load avg {res['meta']['loadavg_start'][0]:.2f} → {res['meta']['loadavg_end'][0]:.2f}); "
          f"runtime {res['meta']['runtime_s']:.0f}s; "
          f"results in {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    mode = ("quick" if args.quick else "full") + (" skip-moto" if args.skip_moto else "") + \
        (f" repo {args.repo}" if args.repo else "")
    print(history.record("run", res["meta"] | {"loadavg_start": res["meta"]["loadavg_start"]}, headline(res, p),
                         mode=mode))
    return 1 if (args.strict and not ok) else 0


def headline(res: dict[str, Any], p: dict[str, Any]) -> dict[str, float]:
    """The figures compared run to run in bench/results/history.jsonl (ratios are within one run)."""
    c, m, h = res.get("cloudctl", {}), res.get("moto", {}), res.get("hello", {})
    last = str(p["stages"][-1])
    figures = {
        "run_one_per_s": _get(c, "run_one", "calls_per_s"),
        "run_one_server_cpu_ms": _get(c, "run_one", "server_cpu_ms_per_call"),
        "run_one_ratio_moto": (_get(c, "run_one", "calls_per_s") or 0) / (_get(m, "run_one", "calls_per_s") or 1e9),
        f"describe_all_boto3_s @{last}": _get(c, "stages", last, "describe_boto3", "s", "median"),
        f"describe_all_raw_s @{last}": _get(c, "stages", last, "describe_raw", "s", "median"),
        f"tag_x_raw_ms @{last}": (_get(c, "stages", last, "tag_x_raw", "s", "median") or 0) * 1000 or None,
        "rss_mib_start": _get(c, "rss_mib_start"),
        f"rss_mib @{last}": _get(c, "stages", last, "rss_mib_after_populate"),
        f"checkpoint_ms @{last}": _get(c, "stages", last, "checkpoint", "ms", "median"),
        "wrk_by_id_rps": _get(c, "wrk", "rps"),
        "wrk_by_id_ratio_hello": (_get(c, "wrk", "rps") or 0) / (_get(h, "wrk_post", "rps") or 1e9),
        "loop_lag_max_ms": _get(c, "loop_lag_max_ms"),
    }
    return {k: round(v, 4) for k, v in figures.items() if isinstance(v, (int, float)) and v}


if __name__ == "__main__":
    sys.exit(main())
