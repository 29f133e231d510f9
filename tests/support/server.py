"""A real `cloudctl serve` in a subprocess, on a private state dir, its listeners on port 0."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config" / "cloudctl.yaml"
REGION = "cloudctl-1"
LISTENERS = ("ec2", "admin", "metadata", "xmlrpc", "marketplace")


def free_port() -> int:
    """A port nobody listens on now. Only for daemons that cannot report a port they bound
    themselves (sshd, vbmcd, ipmi_sim) or for an address meant to stay dead: cloudctl's own
    listeners bind port 0 and report theirs in `ports.json`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def networks_without_public_ips() -> list[dict[str, Any]]:
    """The default config's networks with no public address mapped on launch: for tests that
    count what the elastic-IP pool and its scripts do for Elastic IPs alone."""
    nets = yaml.safe_load(DEFAULT_CONFIG.read_text())["networks"]
    return [{**n, "map_public_ip_on_launch": False} for n in nets]


def write_config(directory: Path, cache_dir: Path, **overrides: Any) -> Path:
    """A copy of the embedded default config with private state and every listener on port 0."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["state_dir"] = str(directory / "state")
    cfg["image_store"] = str(directory / "state" / "images")
    cfg["cache_dir"] = str(cache_dir)
    cfg["ec2"] = {"listen": "127.0.0.1", "port": 0}
    cfg["admin"] = {"listen": "127.0.0.1", "port": 0}
    cfg["metadata"] = {"listen": "127.0.0.1", "port": 0}
    for h in cfg["hosts"]:
        h["node_xml"] = str(DEFAULT_CONFIG.parent / h["node_xml"])
    cfg["domain_template"] = str(DEFAULT_CONFIG.parent / cfg["domain_template"])
    for im in cfg["images"]:
        im["file"] = str(DEFAULT_CONFIG.parent / im["file"])
    # Each server's load balancers listen on a loopback pool of its own (parallel servers never
    # share an address), and their proxies end with the server.
    cfg["elb"] = {"loopback_pool": f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24",
                  "remove_proxies_on_stop": True, "refresh_s": 1}
    for name in LISTENERS:   # a listener named in overrides: on loopback, port 0, unless said otherwise
        if isinstance(overrides.get(name), dict):
            overrides[name] = {"listen": "127.0.0.1", "port": 0, **overrides[name]}
    cfg.update(overrides)
    path = directory / "cloudctl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Server:
    """A `cloudctl serve` process; `kill()` is SIGKILL, as a crash would be.

    Its ports are read from `state_dir/ports.json` once it has started. After the first start
    they are written into its config, so a restart (after `kill()` or `stop()`) serves on the
    same ports and clients made before it keep working."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.cfg: dict[str, Any] = yaml.safe_load(config_path.read_text())
        self.state_dir = Path(self.cfg["state_dir"])
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.parent / "server.log"

    def url(self, listener: str) -> str:
        if listener not in self.ports:
            raise RuntimeError(f"no {listener} listener (not started, or not configured)")
        return f"http://127.0.0.1:{self.ports[listener]}"

    @property
    def endpoint(self) -> str:
        return self.url("ec2")

    @property
    def admin_url(self) -> str:
        return self.url("admin")

    def start(self, timeout: float = 60) -> "Server":
        ports_file = self.state_dir / "ports.json"
        ports_file.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "cloudctl", "serve", "--config", str(self.config_path)],
                                     stdout=log, stderr=log, cwd=ROOT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                self.ports = json.loads(ports_file.read_text())   # written once all listeners are up
                self.admin("GET", "/v0/health")
                self._pin_ports()
                return self
            except (OSError, ValueError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"server did not become ready:\n{self.log_path.read_text()}")

    def _pin_ports(self) -> None:
        """Write the bound ports into the config file, so a restart binds the same ones."""
        on_disk = yaml.safe_load(self.config_path.read_text())
        changed = False
        for name, port in self.ports.items():
            if isinstance(on_disk.get(name), dict) and on_disk[name].get("port") == 0:
                on_disk[name]["port"] = port
                changed = True
        if changed:
            self.cfg = on_disk
            self.config_path.write_text(yaml.safe_dump(on_disk))

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def create_user(self, name: str) -> dict[str, str]:
        return self.admin("POST", "/v0/users", {"name": name})

    def client(self, user: dict[str, str], **kw: Any) -> Any:
        return boto3.client("ec2", endpoint_url=self.endpoint, region_name=kw.pop("region", REGION),
                            aws_access_key_id=user["AccessKeyId"],
                            aws_secret_access_key=user["SecretAccessKey"],
                            config=BotoConfig(retries={"max_attempts": 1}, **kw))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stop_proxies()

    def _stop_proxies(self) -> None:
        """End the load-balancer proxies this server's controllers started and did not remove (a
        SIGKILLed controller leaves its proxies running, by design; one that died mid-start may
        leave one it no longer knows): by the PID in each pid file under this server's state,
        only if that process is HAProxy running a config from there. A master leads its own
        process group, workers included."""
        for pid_file in self.state_dir.glob("**/haproxy.pid"):
            try:
                pid = int(pid_file.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            cfg = str(pid_file.parent / "haproxy.cfg").encode()
            if not cmdline or not cmdline[0].endswith(b"haproxy") or cfg not in cmdline:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


class Servers:
    """A factory of started servers (the `server_with` and `new_server` fixtures): each call
    `servers(**config overrides)` starts one in a fresh directory from `base()`; `stop()` stops all."""

    def __init__(self, base: Callable[[], Path], model_cache: Path) -> None:
        self.base, self.model_cache = base, model_cache
        self.made: list[Server] = []

    def __call__(self, **overrides: Any) -> Server:
        s = Server(write_config(self.base(), self.model_cache, **overrides))
        self.made.append(s)
        return s.start()

    def stop(self) -> None:
        for s in self.made:
            s.stop()
