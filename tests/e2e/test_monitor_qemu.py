"""A real guest whose qemu process dies (SIGKILL, as the OOM killer would) is recorded as
stopped with a server-side reason, and the host stays `on`. One TCG guest."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import MEASUREMENTS, ROOT, URI
from support import DEFAULT_CONFIG, Server, wait_state, write_config

INTERVAL = 2.0


def _cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def qemu_server(libvirtd: str, work_dir: Path, model_cache: Path, guest_image: dict[str, Path]) -> Any:
    d = work_dir / f"mon-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    path = write_config(
        d, model_cache, hosts=[{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}],
        subnets={"cloudctl-1a": "10.128.0.0/16"}, networks=[],
        domain_template=str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"),
        stop_timeout_s=30, monitor={"interval_s": INTERVAL})
    srv = Server(path).start()
    yield srv
    srv.stop()


def _qemu_pid(iid: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{iid}.pid").read_text().strip())


def test_killed_qemu_is_stopped_with_reason(qemu_server: Server, guest_image: dict[str, Path]) -> None:
    srv = qemu_server
    ids: dict[str, str] = {}
    for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
        extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
        ids[kind] = _cli(srv, "image", "import", str(guest_image[key]), "--name", f"mon-{kind}",
                         "--type", kind, *extra).split()[0]
    ec2 = srv.client(srv.create_user("mallory"))
    iid = ec2.run_instances(ImageId=ids["machine"], InstanceType="t3.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        assert wait_state(ec2, [iid], "running", timeout=120)[0]["State"]["Name"] == "running"
        pid = _qemu_pid(iid)
        os.kill(pid, signal.SIGKILL)   # the qemu this test's controller started for this instance
        t0 = time.monotonic()
        [inst] = wait_state(ec2, [iid], "stopped", timeout=60)
        MEASUREMENTS["qemu SIGKILL → instance stopped"] = \
            f"{time.monotonic() - t0:.2f} s (poll interval {INTERVAL:g} s; {inst['StateReason']['Message']})"
        assert inst["State"]["Name"] == "stopped"
        assert inst["StateReason"]["Code"] == "Server.InternalError"
        host = srv.admin("GET", "/v0/hosts/qemu1")
        assert host["state"] == "on"
        events = srv.admin("GET", f"/v0/events?kind=instance.state&subject={iid}")
        assert events[-1]["code"] == "Server.InternalError"
        # Nothing was deleted: the instance starts again on the same host.
        ec2.start_instances(InstanceIds=[iid])
        assert wait_state(ec2, [iid], "running", timeout=120)[0]["State"]["Name"] == "running"
        assert _qemu_pid(iid) != pid
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        wait_state(ec2, [iid], "terminated", timeout=120)
