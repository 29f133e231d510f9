"""Fixtures: a real cloudctl server in a subprocess, driven by real clients (boto3, AWS CLI)."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "cloudctl.yaml"
REGION = "cloudctl-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory: Path, cache_dir: Path, **overrides: Any) -> Path:
    """A copy of the embedded default config with private state and free ports."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["state_dir"] = str(directory / "state")
    cfg["image_store"] = str(directory / "state" / "images")
    cfg["cache_dir"] = str(cache_dir)
    cfg["ec2"] = {"listen": "127.0.0.1", "port": free_port()}
    cfg["admin"] = {"listen": "127.0.0.1", "port": free_port()}
    cfg["metadata"] = {"listen": "127.0.0.1", "port": free_port()}
    for h in cfg["hosts"]:
        h["node_xml"] = str(DEFAULT_CONFIG.parent / h["node_xml"])
    cfg["domain_template"] = str(DEFAULT_CONFIG.parent / cfg["domain_template"])
    for im in cfg["images"]:
        im["file"] = str(DEFAULT_CONFIG.parent / im["file"])
    cfg.update(overrides)
    path = directory / "cloudctl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Server:
    """A `cloudctl serve` process; `kill()` is SIGKILL, as a crash would be."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        cfg = yaml.safe_load(config_path.read_text())
        self.cfg = cfg
        self.endpoint = f"http://127.0.0.1:{cfg['ec2']['port']}"
        self.admin_url = f"http://127.0.0.1:{cfg['admin']['port']}"
        self.state_dir = Path(cfg["state_dir"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.parent / "server.log"

    def start(self, timeout: float = 60) -> "Server":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "cloudctl", "serve", "--config", str(self.config_path)],
                                     stdout=log, stderr=log, cwd=ROOT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                self.admin("GET", "/v0/health")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log_path.read_text()}")

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


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def new_server(tmp_path: Path, model_cache: Path) -> Iterator[Any]:
    """Factory for servers private to one test (for crash and restart tests)."""
    servers: list[Server] = []

    def make(**overrides: Any) -> Server:
        d = tmp_path / f"srv{len(servers)}"
        d.mkdir()
        s = Server(write_config(d, model_cache, **overrides))
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("shared-server")
    s = Server(write_config(d, model_cache)).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def alice(server: Server) -> dict[str, str]:
    return server.create_user("alice")


@pytest.fixture(scope="session")
def bob(server: Server) -> dict[str, str]:
    return server.create_user("bob")


@pytest.fixture(scope="session")
def ec2(server: Server, alice: dict[str, str]) -> Any:
    return server.client(alice)


@pytest.fixture(scope="session")
def image_id(ec2: Any) -> str:
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
    assert len(images) == 1
    return images[0]["ImageId"]


def wait_state(ec2: Any, ids: list[str], state: str, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    while True:
        res = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        insts = [i for r in res for i in r["Instances"]]
        if all(i["State"]["Name"] == state for i in insts) or time.time() > deadline:
            return insts
        time.sleep(0.05)
