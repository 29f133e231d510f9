"""A start that fails says so in one line, closes what it opened, and leaves the state as it was
for the next start. The listeners' addresses are bound first, so a port in use fails the start
before the state is opened, and the cloud is built knowing the ports it serves on (`port: 0`)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, Server, wait_state, write_config


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[Server, dict[str, str], str, str]:
    """A server that ran an instance for alice, stopped: (server, alice's keys, image, instance)."""
    srv = Server(write_config(tmp_path_factory.mktemp("start"), model_cache)).start()
    try:
        user = srv.create_user("alice")
        ec2 = srv.client(user)
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        wait_state(ec2, [iid], "running")
        # Built after binding: the catalog's endpoint (shown and filtered on) is the port it serves on.
        regions = ec2.describe_regions(Filters=[{"Name": "endpoint", "Values": [srv.endpoint]}])["Regions"]
        assert [r["Endpoint"] for r in regions] == [srv.endpoint]
    finally:
        srv.stop()
    return srv, user, image, iid


def serve(srv: Server) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudctl", "serve", "--config", str(srv.config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def state_files(srv: Server) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in srv.state_dir.iterdir()
            if p.name.startswith(("journal.", "checkpoint."))}


def assert_restarts(srv: Server, user: dict[str, str], image: str, iid: str) -> None:
    again = Server(srv.config_path).start()
    try:
        ec2 = again.client(user)   # the same keys: the user is still there
        (inst,) = wait_state(ec2, [iid], "running")
        assert inst["ImageId"] == image
        assert len(again.admin("GET", "/v0/users")) == 1
    finally:
        again.stop()


def test_a_taken_port_fails_the_start_in_one_line_before_the_state_opens(
        stopped: tuple[Server, dict[str, str], str, str]) -> None:
    srv, user, image, iid = stopped
    before = state_files(srv)
    admin_port = srv.cfg["admin"]["port"]   # the second listener: EC2's is bound when it fails
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # the stopped server's TIME_WAITs
        taken.bind(("127.0.0.1", admin_port))
        taken.listen()
        failed = serve(srv)
    out = failed.stderr.strip().splitlines()
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert out[-1] == f"cloudctl: admin API: cannot listen on 127.0.0.1:{admin_port}: Address already in use"
    assert not any("state loaded" in line for line in out)   # never opened: nothing to undo
    assert state_files(srv) == before
    assert_restarts(srv, user, image, iid)   # EC2's address, bound first, was let go


def test_a_start_failing_after_the_state_opened_closes_it(stopped: tuple[Server, dict[str, str], str, str]) -> None:
    srv, user, image, iid = stopped
    ports = srv.state_dir / "ports.json"
    ports.unlink(missing_ok=True)
    ports.mkdir()   # written last, once every listener serves: it cannot be
    try:
        failed = serve(srv)
    finally:
        ports.rmdir()
    out = failed.stderr.strip().splitlines()
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert out[-1] == f"cloudctl: cannot write {ports}: Is a directory"
    assert any("state closed: journal generation" in line for line in out[:-1])   # closed, not abandoned
    assert_restarts(srv, user, image, iid)
