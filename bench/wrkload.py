"""Server-only throughput: replay a boto3-signed request with wrk.

One boto3 client tops out near 600–950 calls/s whatever the server does, so server throughput
is measured by capturing a request exactly as boto3 signs it (headers, X-Amz-Date, body) and
replaying it with wrk; the signature stays valid inside the server's 15-minute skew window.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ec2load import Target, send_raw
from procs import NoiseProbe, Proc, wait_quiet

# wrk computes these itself; sending boto3's values would duplicate or contradict them.
_DROP = {"content-length", "connection", "transfer-encoding"}


def capture_describe_by_id(t: Target, instance_id: str) -> dict[str, Any]:
    """Call DescribeInstances(InstanceIds=[id]) through boto3 and keep the signed request it sent."""
    ec2 = t.client()
    captured: list[Any] = []

    def grab(request: Any, **_: Any) -> None:
        captured.append(request)

    ec2.meta.events.register("before-send.ec2.DescribeInstances", grab)
    r = ec2.describe_instances(InstanceIds=[instance_id])
    got = [i["InstanceId"] for res in r["Reservations"] for i in res["Instances"]]
    if got != [instance_id]:
        raise RuntimeError(f"{t.name}: DescribeInstances by id returned {got}")
    req = captured[-1]
    u = urlsplit(req.url)
    headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in req.headers.items()
               if k.lower() not in _DROP}
    # urllib3 adds Host at send time; wrk would send it without the port, breaking the signature.
    headers.setdefault("Host", u.netloc)
    body = req.body if isinstance(req.body, str) else (req.body or b"").decode()
    return {"method": req.method, "path": u.path or "/", "headers": headers, "body": body,
            "url": f"{u.scheme}://{u.netloc}"}


def check_replay(req: dict[str, Any], must_contain: str) -> int:
    """Send the captured request once more outside boto3: a replay must still answer 200."""
    headers = {k: v for k, v in req["headers"].items() if k.lower() != "host"}
    status, data, _ = send_raw(req["url"], req["path"], headers, req["body"].encode())
    if status != 200 or must_contain.encode() not in data:
        raise RuntimeError(f"replayed request answered {status}: {data[:300]!r}")
    return len(data)


def _lua_str(s: str) -> str:
    out = []
    for ch in s.encode():
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03d}")
    return '"' + "".join(out) + '"'


_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
'''


def write_lua(req: dict[str, Any] | None, path: Path) -> Path:
    """A wrk script setting wrk.method/body/headers (static request: the cheapest for wrk itself)."""
    lines = []
    if req is not None:
        lines.append(f"wrk.method = {_lua_str(req['method'])}")
        lines.append(f"wrk.path = {_lua_str(req['path'])}")
        lines.append(f"wrk.body = {_lua_str(req['body'])}")
        for k, v in req["headers"].items():
            lines.append(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}")
    path.write_text("\n".join(lines) + "\n" + _DONE)
    return path


def run_wrk(url: str, script: Path, threads: int, conns: int, duration_s: int,
            servers: list[Proc]) -> dict[str, Any]:
    """One wrk run with the foreign-CPU reading taken over exactly that run."""
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk not found (apt-get install wrk, or `make deps`)")
    argv = [wrk, f"-t{threads}", f"-c{conns}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(script), url]
    probe = NoiseProbe(servers)
    probe.start()
    srv0 = sum(p.cpu_s() for p in servers)
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    srv_cpu = sum(p.cpu_s() for p in servers) - srv0
    foreign = probe.stop()
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if cp.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({cp.returncode}): {cp.stdout[-800:]} {cp.stderr[-800:]}")
    r: dict[str, Any] = json.loads(line[len("BENCHJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["non_2xx"] = r["err_status"]
    r["socket_errors"] = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    r["foreign_cores"] = round(foreign, 3)
    # ~1.0 means the (single-threaded) server was saturated, i.e. the number is the server's limit
    r["server_cores"] = round(srv_cpu / (r["duration_us"] / 1e6), 3)
    r["args"] = f"-t{threads} -c{conns} -d{duration_s}s"
    return r


def run_wrk_clean(url: str, script: Path, threads: int, conns: int, duration_s: int,
                  servers: list[Proc], attempts: int = 3, noisy: float = 0.15,
                  mark: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run wrk until one run sees < `noisy` foreign cores (bounded); keep the least disturbed run.

    `mark(label)` is called after each wait and each run (cloudctl resets its stall maximum there),
    so a loop stall can be pinned to the attempt it happened in.
    """
    runs: list[dict[str, Any]] = []
    for i in range(attempts):
        wait_quiet(servers, threshold=noisy)
        if mark:
            mark(f"wrk_wait{i}")
        runs.append(run_wrk(url, script, threads, conns, duration_s, servers))
        runs[-1]["attempt"] = i
        if mark:
            mark(f"wrk_run{i}")
        if runs[-1]["foreign_cores"] < noisy:
            break
    best = min(runs, key=lambda r: r["foreign_cores"])
    return {**best, "noisy": best["foreign_cores"] >= noisy, "attempts": len(runs),
            "all_rps": [round(r["rps"], 1) for r in runs],
            "all_foreign_cores": [r["foreign_cores"] for r in runs]}
