"""An instance-store disk on a real TCG guest: the guest sees /dev/vdb of its type's size, writes
it and reads it back; after stop/start it is empty again; after terminate its file is gone from
the host. The guest's user-data script (run at every boot) reports on the serial console."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import MEASUREMENTS, ROOT, URI
from support import DEFAULT_CONFIG, Server, wait_state, write_config

EPHEMERAL_GIB = 1
# Reports the disk's size (512-byte sectors), whether it holds an earlier boot's mark, then writes
# this boot's mark and reads it back from the disk (the page cache dropped first). fsync: the
# device flush that makes qemu write its qcow2 metadata, so the host sees the data in the file.
SCRIPT = """#!/bin/sh
echo "EPH-BOOT {boot}"
echo "EPH-SIZE $(cat /sys/block/vdb/size 2>/dev/null || echo none)"
if dd if=/dev/vdb bs=512 count=1 2>/dev/null | grep -q EPH-MARK; then echo "EPH-STATE marked"; \
else echo "EPH-STATE empty"; fi
printf 'EPH-MARK-%s\\n' "$(cat /proc/sys/kernel/random/uuid)" > /tmp/mark
dd if=/tmp/mark of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
if dd if=/dev/vdb bs=512 count=1 2>/dev/null | grep -q -f /tmp/mark; then echo "EPH-READBACK ok"; \
else echo "EPH-READBACK failed"; fi
"""


def cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_console(ec2: Any, iid: str, *needles: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = (ec2.get_console_output(InstanceId=iid).get("Output") or "").replace("\r\n", "\n")
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    raise AssertionError(f"console of {iid} lacks {needles} after {timeout}s:\n{text[-3000:]}")


def script_output(text: str) -> list[str]:
    """The EPH- lines the user-data script printed (not its echo in the user-data listing)."""
    after = text.split("CLOUDCTL-USERDATA-DONE", 1)[1]
    return [line.strip() for line in after.split("\n") if line.strip().startswith("EPH-")]


def host_read(path: Path) -> str:
    """The disk's first bytes as qemu-io dumps them (hex and text), read beside the running guest."""
    out = subprocess.run(["qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -v 0 16", str(path)],
                         capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


@pytest.fixture
def ephemeral_server(libvirtd: str, work_dir: Path, model_cache: Path) -> Any:
    d = work_dir / f"ctl-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    path = write_config(
        d, model_cache,
        hosts=[{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a", "disk_gib": 4}],
        subnets={"cloudctl-1a": "10.128.0.0/16"}, networks=[],
        instance_types={"m1.small": {"vcpus": 1, "memory_mib": 512, "disk_gib": 8, "ephemeral_gib": EPHEMERAL_GIB}},
        domain_template=str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"), stop_timeout_s=30)
    srv = Server(path).start()
    yield srv
    srv.stop()


def test_guest_writes_its_ephemeral_disk_which_a_stop_empties(ephemeral_server: Server,
                                                              guest_image: dict[str, Path]) -> None:
    srv = ephemeral_server
    ids: dict[str, str] = {}
    for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
        extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
        ids[kind] = cli(srv, "image", "import", str(guest_image[key]), "--name", f"eph-{kind}",
                        "--type", kind, *extra).split()[0]
    ec2 = srv.client(srv.create_user("ephemeral-e2e"))
    t0 = time.monotonic()
    iid = ec2.run_instances(ImageId=ids["machine"], InstanceType="m1.small", MinCount=1, MaxCount=1,
                            UserData=SCRIPT.format(boot=1))["Instances"][0]["InstanceId"]
    try:
        check_lifecycle(srv, ec2, iid, t0)
    finally:   # a failed check leaves no guest running
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})


def check_lifecycle(srv: Server, ec2: Any, iid: str, t0: float) -> None:
    text = wait_console(ec2, iid, "CLOUDCTL-USERDATA-EXIT", "CLOUDCTL-GUEST-READY")
    MEASUREMENTS["RunInstances with an ephemeral disk → script done"] = f"{time.monotonic() - t0:.1f} s"
    sectors = EPHEMERAL_GIB * 1024 ** 3 // 512
    assert script_output(text) == ["EPH-BOOT 1", f"EPH-SIZE {sectors}", "EPH-STATE empty", "EPH-READBACK ok"], \
        text[-2000:]
    disk = Path(srv.cfg["state_dir"]) / "instances" / iid / "ephemeral0.qcow2"
    seen = host_read(disk)
    assert "45 50 48 2d 4d 41 52 4b" in seen, seen   # "EPH-MARK": what the guest wrote is in the host's file

    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    assert not disk.exists()                      # instance store is not kept across a stop
    # the second boot's script says so: its output cannot be mistaken for the first boot's
    ec2.modify_instance_attribute(InstanceId=iid, UserData={"Value": SCRIPT.format(boot=2).encode()})
    ec2.start_instances(InstanceIds=[iid])
    assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"
    text = wait_console(ec2, iid, "EPH-BOOT 2", "CLOUDCTL-USERDATA-EXIT", "CLOUDCTL-GUEST-READY")
    assert script_output(text) == ["EPH-BOOT 2", f"EPH-SIZE {sectors}", "EPH-STATE empty", "EPH-READBACK ok"], \
        text[-2000:]

    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    deadline = time.monotonic() + 10
    while disk.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not disk.exists() and not disk.parent.exists()
