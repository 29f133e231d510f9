"""Process plumbing for the bench: start servers, wait until ready, read RSS/CPU, stop by PID.

Every process started here is tracked in a `Proc` and stopped by its PID only, so a crashed
bench never leaves servers behind and never touches processes it did not start.
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port the kernel says is free now; the tiny race is acceptable on a bench box."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process we own, with its log file, so failures can be shown and it can be stopped."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def rss_mib(self) -> float:
        """VmRSS from /proc: what the kernel charges the server, independent of its own report."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

    def cpu_s(self) -> float:
        """utime+stime of the server (all threads), for the noise accounting."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            return 0.0

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`: by PID, never by name."""
        if not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(5)
        except ProcessLookupError:
            pass


def spawn(name: str, argv: list[str], log: Path, cwd: Path = REPO,
          env: dict[str, str] | None = None, clean_env: bool = False) -> Proc:
    """Start a child with stdout+stderr to a log file (moto logs every request; keep it off the terminal).
    `clean_env`: only `env`, not this process's environment (a daemon run as another user)."""
    fh = open(log, "wb")
    try:
        p = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(env or {}) if clean_env else {**os.environ, **(env or {})})
    finally:
        fh.close()
    return Proc(name, p, log)


def wait_tcp(proc: Proc, port: int, timeout: float = 60.0) -> None:
    """Wait until something accepts on the port, failing fast if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout:.0f}s:\n{proc.log_tail()}")


# --------------------------------------------------------------------------- cloudctl


def write_cloudctl_config(tmp: Path, ec2_port: int, admin_port: int,
                          overrides: dict[str, Any] | None = None) -> Path:
    """The embedded default config with ports/state moved into `tmp` and relative paths made absolute.

    The bench must not touch the repo's ./state, and the config's relative paths are relative
    to config/, not to the temp dir the copy is written into.
    """
    src = REPO / "config" / "cloudctl.yaml"
    base = src.parent
    cfg: dict[str, Any] = yaml.safe_load(src.read_text())

    def absolute(p: str) -> str:
        return str(p) if os.path.isabs(p) else str((base / p).resolve())

    cfg["state_dir"] = str(tmp / "state")
    cfg["image_store"] = str(tmp / "images")
    cfg["ec2"] = {"listen": "127.0.0.1", "port": ec2_port}
    cfg["admin"] = {"listen": "127.0.0.1", "port": admin_port}
    if cfg.get("metadata"):   # (the default's fixed 8775 collides with another run's server)
        cfg["metadata"] = {**cfg["metadata"], "listen": "127.0.0.1", "port": free_port()}
    for h in cfg.get("hosts") or []:
        if h.get("node_xml"):
            h["node_xml"] = absolute(h["node_xml"])
    if cfg.get("domain_template"):
        cfg["domain_template"] = absolute(cfg["domain_template"])
    for im in cfg.get("images") or []:
        if im.get("file"):
            im["file"] = absolute(im["file"])
    for it in (cfg.get("instance_types") or {}).values():
        if isinstance(it, dict) and it.get("template"):
            it["template"] = absolute(it["template"])
    if cfg.get("cache_dir"):
        cfg["cache_dir"] = str(tmp / "cache")
    # The benches launch thousands of instances on the default subnets, each taking a public address
    # on launch (as make run's do): a pool that holds them, not the default config's /24.
    cfg["elastic_ips"] = {**cfg.get("elastic_ips", {}), "pool": ["198.18.0.0/18"]}
    overrides = dict(overrides or {})
    cfg["ec2"].update(overrides.pop("ec2", {}))   # ec2 and admin settings other than the address
    cfg["admin"].update(overrides.pop("admin", {}))
    cfg.update(overrides)
    out = tmp / "cloudctl.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@dataclass
class Cloudctl:
    """A running cloudctl with its admin API client."""

    proc: Proc
    ec2_url: str
    admin_url: str
    token: str
    state_dir: Path

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.admin_url + path, data=data, method=method, headers=hdrs)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "/v0/stats")

    def reset_lag(self) -> float:
        return self.reset_lags()[0]

    def reset_lags(self) -> tuple[float, float]:
        """(wall-clock, own) longest stall since the last reset; own = less the loop thread's
        waits for a CPU (other jobs on this box), the same as wall on servers that lack it."""
        r = self.admin("POST", "/v0/stats/reset-lag")
        wall = float(r.get("loop_lag_max_ms", 0.0))
        return wall, float(r.get("loop_lag_own_max_ms", wall))


def start_cloudctl(tmp: Path, timeout: float = 90.0, overrides: dict[str, Any] | None = None,
                   repo: Path = REPO, probed: bool = False, log_name: str = "cloudctl.log",
                   env: dict[str, str] | None = None) -> Cloudctl:
    """Start `python -m cloudctl serve` on free ports and wait for /v0/health with the admin token.
    `repo`: the checkout whose `cloudctl` package runs (another one serves as a before/after peer).
    `probed`: through bench/served.py, which adds exact server-side timings to the admin API (the
    served checkout's own when it has one: served.py puts its checkout's cloudctl first on the path)."""
    ec2_port, admin_port = free_port(), free_port()
    cfg = write_cloudctl_config(tmp, ec2_port, admin_port, overrides)
    served = repo / "bench" / "served.py"
    entry = [str(served if served.exists() else BENCH / "served.py")] if probed else ["-m", "cloudctl"]
    # CLOUDCTL_BENCH_WRAP: a command the server runs under (bench/profile_hot.py --callgrind)
    wrap = shlex.split(os.environ.get("CLOUDCTL_BENCH_WRAP", ""))
    proc = spawn("cloudctl", [*wrap, sys.executable, *entry, "serve", "--config", str(cfg)],
                 tmp / log_name, cwd=repo, env={"CLOUDCTL_LOG": "WARNING", **(env or {})})
    state_dir = tmp / "state"
    token_file = state_dir / "admin.token"
    admin_url = f"http://127.0.0.1:{admin_port}"
    deadline = time.monotonic() + timeout
    last_err = "no token yet"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"cloudctl exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        if token_file.exists():
            token = token_file.read_text().strip()
            if token:
                req = urllib.request.Request(admin_url + "/v0/health",
                                             headers={"Authorization": f"Bearer {token}"})
                try:
                    with urllib.request.urlopen(req, timeout=2) as resp:
                        if resp.status == 200:
                            return Cloudctl(proc, f"http://127.0.0.1:{ec2_port}", admin_url, token, state_dir)
                except (urllib.error.URLError, OSError) as e:
                    last_err = str(e)
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"cloudctl not healthy after {timeout:.0f}s ({last_err}):\n{proc.log_tail()}")


# --------------------------------------------------------------------------- moto, hello


def start_moto(tmp: Path) -> tuple[Proc, str]:
    """moto's Werkzeug server, as the anchors measured it (its per-request log goes to a file)."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = spawn("moto", argv + ["-p", str(port), "-H", "127.0.0.1"], tmp / "moto.log")
    wait_tcp(proc, port)
    return proc, f"http://127.0.0.1:{port}"


def start_hello(tmp: Path) -> tuple[Proc, str]:
    """The bare aiohttp+uvloop handler: the per-process ceiling cloudctl is compared against."""
    port = free_port()
    proc = spawn("hello", [sys.executable, str(BENCH / "hello_server.py"), "--port", str(port)],
                 tmp / "hello.log")
    wait_tcp(proc, port)
    return proc, f"http://127.0.0.1:{port}"


def make_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="cloudctl-bench-"))


# --------------------------------------------------------------------------- noise


def _cpu_busy_s() -> float:
    """Machine-wide busy CPU seconds from /proc/stat (guest time is already inside user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    idle = v[3] + v[4]
    return (total - idle) / CLK_TCK


@dataclass
class NoiseProbe:
    """CPU used by processes that are not ours during a measurement ("foreign cores").

    The box has 2 shared cores; a burst from someone else's job skews a wrk run far more than
    any code change, so each wrk run records how much foreign CPU it competed with.
    """

    servers: list[Proc] = field(default_factory=list)
    _t0: float = 0.0
    _busy0: float = 0.0
    _own0: float = 0.0

    def _own(self) -> float:
        ru_s = resource.getrusage(resource.RUSAGE_SELF)
        ru_c = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited children, i.e. wrk
        return (ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime
                + sum(p.cpu_s() for p in self.servers))

    def start(self) -> None:
        self._t0, self._busy0, self._own0 = time.monotonic(), _cpu_busy_s(), self._own()

    def stop(self) -> float:
        """Foreign cores averaged over the interval since start()."""
        dt = max(time.monotonic() - self._t0, 1e-6)
        foreign = (_cpu_busy_s() - self._busy0) - (self._own() - self._own0)
        return max(0.0, foreign / dt)


def wait_quiet(servers: list[Proc], threshold: float = 0.15, need_s: float = 2.0,
               max_wait_s: float = 20.0) -> float:
    """Wait (bounded) for `need_s` of foreign load below `threshold` cores; returns the last reading."""
    deadline = time.monotonic() + max_wait_s
    quiet_since: float | None = None
    last = 0.0
    while time.monotonic() < deadline:
        probe = NoiseProbe(servers)
        probe.start()
        time.sleep(0.5)
        last = probe.stop()
        now = time.monotonic()
        if last < threshold:
            quiet_since = quiet_since or now - 0.5
            if now - quiet_since >= need_s:
                return last
        else:
            quiet_since = None
    return last
