"""Password guessing on the bare-metal API (HTTP Basic): what a miss costs, and what a crowd of
guessers does to the checkpoint (issue 21, item 6).

Usage:  .venv/bin/python bench/login_throttle.py [--root CHECKOUT] [--clients 16] [--seconds 8]

`--root` runs the server from another checkout (e.g. an export of the commit before the
throttle, for the "before" figures); the config's `login_throttle` section is left out when
that checkout does not know it. Reported:

- the time of a wrong password for an existing and for an unknown user (median of 20 each,
  sequential, each from its own loopback address so no backoff is involved);
- `POST /v0/checkpoint` (`last_checkpoint_ms` from /v0/stats) idle, then while `--clients`
  threads (in a separate process) send wrong passwords as fast as they are answered:
  `one-address` (all from 127.0.0.2 for one user: the attack run's case), and `spread`
  (each request from a new address and name, so no backoff applies: only the hashing pool
  bounds the work). With the server's CPU use and the answers' status counts.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import free_port, write_config  # noqa: E402

PASSWORD = "bench-password-1"


def call(port: int, method: str, path: str, source: str = "127.0.0.250", basic: tuple[str, str] | None = None,
         token: str | None = None, body: Any = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def load(port: int, clients: int, seconds: float, mode: str) -> None:
    """The guessers (run in a child process): print the answers' status counts as JSON."""
    counts: Counter[int] = Counter()
    stop = time.time() + seconds
    lock = threading.Lock()

    def guesser(i: int) -> None:
        n = 0
        while time.time() < stop:
            n += 1
            if mode == "one-address":
                source, user = "127.0.0.2", "victim"   # (not the listeners' address: its TIME_WAITs block ports)
            else:   # a new address and name each time: 127.1-127.254.x.y
                k = i * 1_000_000 + n
                source, user = f"127.{1 + k % 250}.{(k // 250) % 250}.{1 + (k // 62500) % 250}", f"u{k}"
            try:
                status, _ = call(port, "GET", "/hil/v0/projects", source, (user, "wrong-password"))
            except OSError:
                status = 0
            with lock:
                counts[status] += 1

    threads = [threading.Thread(target=guesser, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(dict(counts)))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkpoints(port: int, token: str, n: int, gap: float) -> list[float]:
    out = []
    for _ in range(n):
        assert call(port, "POST", "/v0/checkpoint", token=token)[0] == 200
        out.append(json.loads(call(port, "GET", "/v0/stats", token=token)[1])["last_checkpoint_ms"])
        time.sleep(gap)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=HERE.parent)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--load", choices=["one-address", "spread"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        load(args.port, args.clients, args.seconds, args.load)
        return
    work = Path(tempfile.mkdtemp(prefix="loginbench"))
    cfg_path = write_config(work, work / "cache", baremetal={"audit_on_start": "off"},
                            admin={"port": free_port()})   # (a fixed port: --root may predate ports.json)
    if "class LoginThrottle" not in (args.root / "cloudctl" / "config.py").read_text():
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg.pop("login_throttle", None)
        cfg_path.write_text(yaml.safe_dump(cfg))
    cfg = yaml.safe_load(cfg_path.read_text())
    port = cfg["admin"]["port"]
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cloudctl", "serve", "--config", str(cfg_path)],
                            cwd=args.root, stdout=log, stderr=log)
    result: dict[str, Any] = {"root": str(args.root)}
    try:
        deadline = time.time() + 60
        while True:
            try:
                if call(port, "GET", "/v0/health")[0] in (200, 401):
                    break
            except (OSError, http.client.HTTPException):   # (not up yet; even a self-connect to the free port)
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start:\n" + (work / "server.log").read_text()[-2000:])
            time.sleep(0.2)
        token = (Path(cfg["state_dir"]) / "admin.token").read_text().strip()
        for i in range(20):
            assert call(port, "PUT", f"/hil/v0/auth/basic/user/known{i}", token=token,
                        body={"password": PASSWORD, "is_admin": False})[0] == 200
        assert call(port, "PUT", "/hil/v0/auth/basic/user/victim", token=token,
                    body={"password": PASSWORD, "is_admin": False})[0] == 200
        known, unknown = [], []
        for i in range(20):
            for user, into in ((f"known{i}", known), (f"nobody{i}", unknown)):
                t = time.perf_counter()
                status, _ = call(port, "GET", "/hil/v0/projects", f"127.0.{200 + len(into) % 2}.{1 + i}",
                                 (user, "wrong-password"))
                into.append((time.perf_counter() - t) * 1000)
                assert status == 401, status
        result["miss_ms"] = {"known_user_median": round(statistics.median(known), 2),
                             "unknown_user_median": round(statistics.median(unknown), 2)}
        idle = checkpoints(port, token, 10, 0.2)
        result["checkpoint_ms_idle"] = {"median": statistics.median(idle), "max": max(idle)}
        for mode in ("one-address", "spread"):
            child = subprocess.Popen([sys.executable, __file__, "--load", mode, "--port", str(port),
                                      "--clients", str(args.clients), "--seconds", str(args.seconds)],
                                     stdout=subprocess.PIPE)
            time.sleep(1.5)
            c0, t0 = cpu_s(proc.pid), time.perf_counter()
            busy = checkpoints(port, token, 10, 0.3)
            cpu = (cpu_s(proc.pid) - c0) / (time.perf_counter() - t0) * 100
            out, _ = child.communicate()
            result[f"checkpoint_ms_{mode}"] = {"median": statistics.median(busy), "max": max(busy),
                                               "server_cpu_pct": round(cpu), "answers": json.loads(out)}
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
