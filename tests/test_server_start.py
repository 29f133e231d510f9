"""A start that fails half-way (a port in use after the state was opened) says so in one line,
closes what it opened, and leaves the state as it was for the next start."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from support import ROOT, Server, wait_state, write_config


def test_a_taken_port_fails_the_start_in_one_line_and_leaves_the_state_intact(tmp_path: Path,
                                                                               model_cache: Path) -> None:
    srv = Server(write_config(tmp_path, model_cache)).start()
    try:
        user = srv.create_user("alice")
        ec2 = srv.client(user)
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        wait_state(ec2, [iid], "running")
    finally:
        srv.stop()

    admin_port = srv.cfg["admin"]["port"]   # the second listener: EC2's is up when it fails
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # the stopped server's TIME_WAITs
        taken.bind(("127.0.0.1", admin_port))
        taken.listen()
        failed = subprocess.run([sys.executable, "-m", "cloudctl", "serve", "--config", str(srv.config_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = failed.stderr.strip().splitlines()
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert out[-1] == f"cloudctl: admin API: cannot listen on 127.0.0.1:{admin_port}: Address already in use"
    assert any("state closed: journal generation" in line for line in out[:-1])   # closed, not abandoned

    again = Server(srv.config_path).start()
    try:
        ec2 = again.client(user)   # the same keys: the user is still there
        (inst,) = wait_state(ec2, [iid], "running")
        assert inst["ImageId"] == image
        assert len(again.admin("GET", "/v0/users")) == 1
    finally:
        again.stop()
