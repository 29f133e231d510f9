"""Real guests on qemu (TCG): how long from RunInstances to the user data's output on the console.

Usage:  .venv/bin/python bench/guests.py [--keep]

Measures, on one served controller whose only host is qemu:///system:
  1. RunInstances(1) → the user-data script's output line on the console, polling
     GetConsoleOutput every 0.2 s (boto3 decodes the base64). 3 sequential launches, each
     terminated (domain gone) before the next; the median is the number. Target < 10 s.
  2. RunInstances(MinCount=MaxCount=4, t3.nano) → all 4 consoles show their user-data output,
     and the longest event-loop stall over that window (`POST /v0/stats/reset-lag` just before,
     `GET /v0/stats` → loop_lag_max_ms just after).

libvirtd comes from scripts/libvirtd.sh (start/stop with a lease held by this process, so a daemon
someone else still uses is left running). The guest is guest/build.sh's (cached in .cache/guest).
State lives in a world-traversable dir under /var/tmp because qemu runs as libvirt-qemu.
Every instance is terminated at the end, and any domain of ours still defined is destroyed.
Skips (exit 0) when qemu-system-x86_64 is missing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
from ec2load import Target  # noqa: E402

REPO = procs.REPO
RESULTS = Path(__file__).resolve().parent / "results"
GUEST_CACHE = REPO / ".cache" / "guest"
LIBVIRTD_SH = REPO / "scripts" / "libvirtd.sh"
URI = "qemu:///system"
POLL_S = 0.2
BOOT_TIMEOUT_S = 180.0
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _world_traversable(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            if not p.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def build_guest(work: Path) -> dict[str, Path]:
    """vmlinuz / initrd.img / root.qcow2 from guest/build.sh (cached); copied if qemu can't reach them."""
    GUEST_CACHE.mkdir(parents=True, exist_ok=True)
    for d in (GUEST_CACHE.parent, GUEST_CACHE):
        d.chmod(d.stat().st_mode | 0o755)
    r = subprocess.run(["bash", str(REPO / "guest" / "build.sh"), str(GUEST_CACHE)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"guest/build.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    files = {n: GUEST_CACHE / n for n in ("vmlinuz", "initrd.img", "root.qcow2")}
    if not _world_traversable(GUEST_CACHE):
        copy = work / "guest"
        copy.mkdir(mode=0o755)
        for n, p in files.items():
            shutil.copy2(p, copy / n)
            files[n] = copy / n
    return files


def write_config(work: Path) -> Path:
    """bench/procs.py's config (free ports, private state) pointed at qemu:///system."""
    path = procs.write_cloudctl_config(work, procs.free_port(), procs.free_port())
    cfg = yaml.safe_load(path.read_text())
    cfg["metadata"] = {**(cfg.get("metadata") or {}), "listen": "127.0.0.1", "port": procs.free_port()}
    cfg["hosts"] = [{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}]
    cfg["subnets"], cfg["networks"] = {"cloudctl-1a": "10.128.0.0/16"}, []
    cfg["domain_template"] = str(REPO / "config" / "templates" / "domain-qemu.xml")
    cfg["stop_timeout_s"] = 30
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_server(work: Path, cfg_path: Path, timeout: float = 90.0) -> procs.Cloudctl:
    """Like procs.start_cloudctl, but with the config written above."""
    cfg = yaml.safe_load(cfg_path.read_text())
    proc = procs.spawn("cloudctl", [sys.executable, "-m", "cloudctl", "serve", "--config", str(cfg_path)],
                       work / "cloudctl.log", env={"CLOUDCTL_LOG": "WARNING"})
    state_dir = Path(cfg["state_dir"])
    admin_url = f"http://127.0.0.1:{cfg['admin']['port']}"
    ec2_url = f"http://127.0.0.1:{cfg['ec2']['port']}"
    deadline = time.monotonic() + timeout
    last = "no token yet"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"cloudctl exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        tf = state_dir / "admin.token"
        token = tf.read_text().strip() if tf.exists() else ""
        if token:
            cc = procs.Cloudctl(proc, ec2_url, admin_url, token, state_dir)
            try:
                cc.admin("GET", "/v0/health", timeout=2)
                return cc
            except Exception as e:  # noqa: BLE001 - not up yet
                last = str(e)
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"cloudctl not healthy after {timeout:.0f}s ({last}):\n{proc.log_tail()}")


def cli(cfg_path: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(cfg_path), *args],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"cloudctl {' '.join(args[:2])} failed:\n{r.stderr}")
    return r.stdout


def user_data(tag: str) -> tuple[str, str]:
    """A script and the line it prints. The guest echoes the script verbatim before running it, so
    the awaited line must not occur in the script text: quoting splits it there."""
    return f'#!/bin/sh\necho "bench-ud" "{tag}"\n', f"bench-ud {tag}"


def has_line(text: str, line: str) -> bool:
    return any(ln.rstrip("\r") == line for ln in text.replace("\r\n", "\n").split("\n"))


def wait_consoles(ec2: Any, t0: float, want: dict[str, str], timeout: float = BOOT_TIMEOUT_S) -> dict[str, float]:
    """Poll GetConsoleOutput for every instance every POLL_S until its line shows; seconds since t0."""
    seen: dict[str, float] = {}
    last: dict[str, str] = {}
    deadline = t0 + timeout
    while len(seen) < len(want):
        for iid, line in want.items():
            if iid in seen:
                continue
            text = ec2.get_console_output(InstanceId=iid).get("Output") or ""
            last[iid] = text
            if has_line(text, line):
                seen[iid] = time.monotonic() - t0
        if len(seen) == len(want):
            break
        if time.monotonic() > deadline:
            missing = [i for i in want if i not in seen]
            tails = "\n".join(f"--- {i}:\n{last.get(i, '')[-1500:]}" for i in missing)
            raise RuntimeError(f"no user-data output after {timeout:.0f}s on {missing}:\n{tails}")
        time.sleep(POLL_S)
    return seen


def terminate_and_wait(ec2: Any, ids: list[str], timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    if not ids:
        return 0.0
    ec2.terminate_instances(InstanceIds=ids)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        res = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        states = [i["State"]["Name"] for r in res for i in r["Instances"]]
        if all(s == "terminated" for s in states):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"{ids} not terminated after {timeout:.0f}s")


def destroy_leftovers(ids: set[str]) -> list[str]:
    """Any domain named after one of our instances that is still defined: destroy + undefine it."""
    try:
        import libvirt
    except ImportError:
        return []
    gone: list[str] = []
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError:
        return []
    try:
        for dom in conn.listAllDomains():
            if dom.name() in ids:
                try:
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
                except libvirt.libvirtError:
                    pass
                gone.append(dom.name())
    finally:
        conn.close()
    return gone


def measure(cc: procs.Cloudctl, cfg_path: Path, guest: dict[str, Path], res: dict[str, Any],
            created: set[str], ctx: dict[str, Any]) -> None:
    ids: dict[str, str] = {}
    for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
        extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
        ids[kind] = cli(cfg_path, "image", "import", str(guest[key]), "--name", f"bench-guest-{kind}",
                        "--type", kind, *extra).split()[0]
    log(f"images: {ids}")
    user = cc.admin("POST", "/v0/users", {"name": "bench"})
    ec2 = Target("cloudctl", cc.ec2_url, "cloudctl-1", user["AccessKeyId"], user["SecretAccessKey"]).client()
    ctx["ec2"] = ec2
    ami = ids["machine"]

    # 1. sequential single launches
    single: list[dict[str, Any]] = []
    res["single"] = {"runs": single}
    cc.reset_lag()
    for n in range(3):
        script, line = user_data(f"single-{n}-{os.getpid()}")
        t0 = time.monotonic()
        r = ec2.run_instances(ImageId=ami, InstanceType="t3.nano", MinCount=1, MaxCount=1, UserData=script)
        call_s = time.monotonic() - t0
        iid = r["Instances"][0]["InstanceId"]
        created.add(iid)
        seen = wait_consoles(ec2, t0, {iid: line})
        term = terminate_and_wait(ec2, [iid])
        single.append({"instance": iid, "run_call_s": round(call_s, 3), "to_user_data_s": round(seen[iid], 2),
                       "terminate_s": round(term, 2)})
        log(f"single #{n + 1}: {iid} user data after {seen[iid]:.2f} s (RunInstances call {call_s * 1000:.0f} ms, "
            f"terminated in {term:.1f} s)")
    xs = [s["to_user_data_s"] for s in single]
    res["single"].update(median_s=round(statistics.median(xs), 2), min_s=min(xs), max_s=max(xs),
                         loop_lag_max_ms=cc.reset_lag())

    # 2. four at once
    script, line = user_data(f"four-{os.getpid()}")
    lag_before = cc.reset_lag()
    t0 = time.monotonic()
    r = ec2.run_instances(ImageId=ami, InstanceType="t3.nano", MinCount=4, MaxCount=4, UserData=script)
    call_s = time.monotonic() - t0
    four = [i["InstanceId"] for i in r["Instances"]]
    created.update(four)
    seen = wait_consoles(ec2, t0, {i: line for i in four})
    lag = float(cc.stats().get("loop_lag_max_ms", 0.0))
    log(f"four: all consoles after {max(seen.values()):.2f} s "
        f"({', '.join(f'{v:.1f}' for v in sorted(seen.values()))}), loop lag max {lag:.1f} ms")
    term = terminate_and_wait(ec2, four)
    res["four"] = {"instances": four, "run_call_s": round(call_s, 3),
                   "per_instance_s": {k: round(v, 2) for k, v in seen.items()},
                   "all_s": round(max(seen.values()), 2), "first_s": round(min(seen.values()), 2),
                   "loop_lag_max_ms": lag, "lag_before_reset_ms": lag_before, "terminate_s": round(term, 2)}


def build_rows(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    s, f = res.get("single") or {}, res.get("four") or {}
    med = s.get("median_s")
    runs = ", ".join(f"{r['to_user_data_s']:.1f}" for r in s.get("runs", []))
    rows.append(["RunInstances → user data on console, median of 3, s", "–" if med is None else f"{med:.2f}",
                 "< 10 s", "–" if med is None else ("PASS" if med < 10 else "FAIL")])
    rows.append(["  the 3 launches, s", runs or "–", "", "info"])
    if s.get("runs"):
        rows.append(["  RunInstances call itself (median), ms",
                     f"{statistics.median(r['run_call_s'] for r in s['runs']) * 1000:.0f}", "", "info"])
    if "loop_lag_max_ms" in s:
        rows.append(["  longest loop stall over the 3 launches, ms", f"{s['loop_lag_max_ms']:.1f}", "", "info"])
    rows.append(["4 at once (t3.nano) → all 4 consoles, s", f"{f['all_s']:.2f}" if f else "–", "", "info"])
    if f:
        rows.append(["  first / each, s", f"{f['first_s']:.1f} / "
                     + ", ".join(f"{v:.1f}" for v in sorted(f["per_instance_s"].values())), "", "info"])
        rows.append(["  RunInstances(4) call itself, ms", f"{f['run_call_s'] * 1000:.0f}", "", "info"])
    rows.append(["longest event-loop stall during the 4, ms", f"{f['loop_lag_max_ms']:.1f}" if f else "–", "", "info"])
    return rows


def render4(rows: list[list[str]]) -> str:
    head = ["metric", "value", "target", "result"]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i]) for i in range(len(r)))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * x for x in w)] + [line(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the work dir under /var/tmp (logs, state)")
    args = ap.parse_args(argv)
    if shutil.which("qemu-system-x86_64") is None:
        print("SKIP: qemu-system-x86_64 not installed "
              "(apt-get install --no-install-recommends $(cat scripts/debian-packages.txt))")
        return 0
    res: dict[str, Any] = {"meta": {"started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                    "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                                    "poll_s": POLL_S, "accel": "tcg"}}
    work = Path(tempfile.mkdtemp(prefix="cloudctl-bench-guests-", dir="/var/tmp"))
    work.chmod(0o755)
    log(f"work dir {work}")
    created: set[str] = set()
    ctx: dict[str, Any] = {}
    cc: procs.Cloudctl | None = None
    libvirtd_started = False
    try:
        t = time.monotonic()
        guest = build_guest(work)
        res["meta"]["guest_build_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        r = subprocess.run(["bash", str(LIBVIRTD_SH), "start"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/libvirtd.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        libvirtd_started = True
        res["meta"]["libvirtd_start_s"] = round(time.monotonic() - t, 2)
        log(f"libvirtd: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'up'}")
        cfg_path = write_config(work)
        cc = start_server(work, cfg_path)
        log(f"cloudctl up at {cc.ec2_url}")
        measure(cc, cfg_path, guest, res, created, ctx)
    except KeyboardInterrupt:
        res["error"] = "interrupted"
        log("interrupted")
    except Exception as e:  # noqa: BLE001 - report what we have, clean up below
        res["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
        log(f"failed: {res['error'][:3000]}")
    finally:
        if cc is not None:
            if created and cc.proc.alive() and "ec2" in ctx:
                try:   # normally all are terminated already; after a failure this is the cleanup
                    terminate_and_wait(ctx["ec2"], sorted(created))
                except Exception as e:  # noqa: BLE001 - leftover domains are destroyed below
                    log(f"cleanup terminate failed: {e}")
            cc.proc.stop(timeout=60)
        left = destroy_leftovers(created)
        if left:
            res["leftover_domains_destroyed"] = left
            log(f"destroyed leftover domains: {left}")
        if libvirtd_started:
            r = subprocess.run(["bash", str(LIBVIRTD_SH), "stop"], capture_output=True, text=True, timeout=300)
            res["meta"]["libvirtd_stop"] = r.stderr.strip()
            log(f"libvirtd stop: {r.stderr.strip().replace(chr(10), '; ')}")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["meta"]["loadavg_end"] = os.getloadavg()
    res["meta"]["runtime_s"] = round(time.monotonic() - T0, 1)
    table = render4(build_rows(res))
    res["table"] = table
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"guests-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    print()
    print(table)
    if res.get("error"):
        print(f"error: {res['error'].splitlines()[0][:300]}")
    print(f"\nTCG on a {os.cpu_count()}-core shared box (load avg {res['meta']['loadavg_start'][0]:.2f} → "
          f"{res['meta']['loadavg_end'][0]:.2f}); runtime {res['meta']['runtime_s']:.0f}s; results in "
          f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 1 if res.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
