"""The whole path on real qemu: a served controller whose host is qemu:///system, driven by
boto3 and the admin CLI. Launch with user data and a key → the console shows them → attach a
volume, the guest sees it → stop/start → terminate removes the domain and its files."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .conftest import MEASUREMENTS, ROOT, URI
from support import DEFAULT_CONFIG, Server, wait_state, write_config


def cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def volume_store(srv: Server) -> Path:
    return Path(srv.cfg["state_dir"]) / "volumes"


def overlays_image(srv: Server, path: Path, image_id: str) -> bool:
    """Is the file at `path` a qcow2 overlay whose backing file is the image's, in the image store?"""
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    backing = Path(info.get("backing-filename") or "/nonexistent")
    sha = next(i["Sha256"] for i in srv.admin("GET", "/v0/images") if i["ImageId"] == image_id)
    return (info["format"] == "qcow2" and backing.parent == Path(srv.cfg["image_store"]).resolve()
            and hashlib.sha256(backing.read_bytes()).hexdigest() == sha)


def console(ec2: Any, iid: str) -> str:
    """The serial log; botocore has already base64-decoded what the server sent."""
    return ec2.get_console_output(InstanceId=iid).get("Output") or ""


def wait_console(ec2: Any, iid: str, *needles: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(ec2, iid)
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    raise AssertionError(f"console of {iid} ({inst['State']['Name']}, {inst.get('StateReason')}) lacks {needles} "
                         f"after {timeout}s:\n{text[-3000:]}")


@pytest.fixture
def qemu_server(libvirtd: str, work_dir: Path, model_cache: Path, guest_image: dict[str, Path]) -> Any:
    d = work_dir / f"ctl-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    path = write_config(
        d, model_cache,
        hosts=[{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}],
        subnets={"cloudctl-1a": "10.128.0.0/16"}, networks=[],
        domain_template=str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"),
        stop_timeout_s=30, user_image_urls=True, user_image_urls_local=True)   # a loopback HTTP server
    srv = Server(path).start()
    yield srv
    srv.stop()


def test_real_guest_lifecycle(qemu_server: Server, guest_image: dict[str, Path]) -> None:
    srv = qemu_server
    ids = {}
    for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
        extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
        ids[kind] = cli(srv, "image", "import", str(guest_image[key]), "--name", f"guest-{kind}",
                        "--type", kind, *extra).split()[0]
    user = srv.create_user("eve")
    ec2 = srv.client(user)
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    ec2.import_key_pair(KeyName="eve-key", PublicKeyMaterial=pub)

    t0 = time.monotonic()
    inst = ec2.run_instances(ImageId=ids["machine"], InstanceType="t3.nano", MinCount=1, MaxCount=1,
                             KeyName="eve-key", UserData="#!/bin/sh\necho e2e-user-data-ok\n")["Instances"][0]
    iid = inst["InstanceId"]
    text = wait_console(ec2, iid, "CLOUDCTL-GUEST-BOOTED", "e2e-user-data-ok", "CLOUDCTL-GUEST-READY")
    MEASUREMENTS["RunInstances → user data on the console"] = f"{time.monotonic() - t0:.1f} s"
    assert pub.decode().split()[1] in text          # the injected key reached the guest
    assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"
    inst_dir = Path(srv.cfg["state_dir"]) / "instances" / iid
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["RootDeviceType"] == "ebs"
    root_vol = desc["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    root_file = volume_store(srv) / f"{root_vol}.qcow2"
    assert overlays_image(srv, root_file, ids["machine"])
    assert not (inst_dir / "root.qcow2").exists()   # the root disk is a volume, in the volume store
    assert ec2.describe_volumes(VolumeIds=[root_vol])["Volumes"][0]["State"] == "in-use"
    base = Path(srv.cfg["image_store"])
    assert not any("backing" in p.name for p in base.iterdir())   # the image itself is untouched

    vol = ec2.create_volume(Size=1, AvailabilityZone="cloudctl-1a")["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
    wait_console(ec2, iid, "CLOUDCTL-DISK-ADDED", timeout=60)
    ec2.detach_volume(VolumeId=vol)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    t0 = time.monotonic()
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    MEASUREMENTS["StopInstances → stopped (graceful)"] = f"{time.monotonic() - t0:.1f} s"
    new_image = ec2.create_image(InstanceId=iid, Name="from-guest", Description="captured")["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[new_image], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    captured = ec2.describe_images(ImageIds=[new_image])["Images"][0]
    assert captured["KernelId"] == ids["kernel"]
    conn = libvirt.open(URI)
    try:
        assert conn.lookupByName(iid).isActive() == 0
        clone = ec2.run_instances(ImageId=new_image, InstanceType="t3.nano", MinCount=1, MaxCount=1,
                                  UserData="#!/bin/sh\necho from-captured-image\n")["Instances"][0]["InstanceId"]
        wait_console(ec2, clone, "from-captured-image", "CLOUDCTL-GUEST-READY")
        ec2.terminate_instances(InstanceIds=[clone])
        ec2.start_instances(InstanceIds=[iid])
        wait_console(ec2, iid, "CLOUDCTL-GUEST-READY", "e2e-user-data-ok")
        assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"

        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        assert iid not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while inst_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not inst_dir.exists()                    # config drive and console log removed
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[root_vol], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert not root_file.exists()                   # the root volume went with its instance (the default)
    ec2.delete_volume(VolumeId=vol)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


def test_kept_root_volume_carries_its_data_to_another_instance(qemu_server: Server,
                                                               guest_image: dict[str, Path]) -> None:
    """ImportImage of the guest's disk over HTTP; a root volume kept (DeleteOnTermination=false)
    after its instance, with what the guest wrote on it, read by a second instance."""
    srv = qemu_server
    ids = {kind: cli(srv, "image", "import", str(guest_image[key]), "--name", f"guest-{kind}",
                     "--type", kind).split()[0] for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"))}
    user = srv.create_user("kim")
    ec2 = srv.client(user)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(guest_image["root.qcow2"].parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/root.qcow2"
        t0 = time.monotonic()
        tid = ec2.import_image(Description="the test guest's disk",
                               DiskContainers=[{"Url": url, "Format": "QCOW2"}])["ImportTaskId"]
        deadline = time.monotonic() + 120
        while (task := ec2.describe_import_image_tasks(ImportTaskIds=[tid])["ImportImageTasks"][0])["Status"] \
                == "active":
            assert time.monotonic() < deadline, task
            time.sleep(0.2)
        MEASUREMENTS["ImportImage of the guest disk (loopback HTTP)"] = \
            f"{time.monotonic() - t0:.1f} s, {task['SnapshotDetails'][0].get('DiskImageSize', 0) / 1e6:.1f} MB"
    finally:
        httpd.shutdown()
    assert task["Status"] == "completed", task
    image = task["ImageId"]
    boot = {"KernelId": ids["kernel"], "RamdiskId": ids["ramdisk"], "InstanceType": "t3.nano",
            "MinCount": 1, "MaxCount": 1}

    token = f"kept-{time.monotonic_ns()}"
    first = ec2.run_instances(ImageId=image, **boot, BlockDeviceMappings=[
        {"DeviceName": "/dev/vda", "Ebs": {"DeleteOnTermination": False}}],
        UserData=f"#!/bin/sh\ncloudctl-mount-root /mnt/root && echo {token} > /mnt/root/marker "
                 f"&& sync && umount /mnt/root && echo ROOT-WRITTEN\n")["Instances"][0]
    iid = first["InstanceId"]
    kept = first["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert first["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is False
    wait_console(ec2, iid, "CLOUDCTL-USERDATA-EXIT 0", "CLOUDCTL-GUEST-READY")
    assert "ROOT-WRITTEN\n" in console(ec2, iid).replace("\r\n", "\n").split("CLOUDCTL-USERDATA-DONE", 1)[1]
    kept_file = volume_store(srv) / f"{kept}.qcow2"
    assert overlays_image(srv, kept_file, image)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    ec2.get_waiter("volume_available").wait(VolumeIds=[kept], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert kept_file.exists()

    # The second guest's own root is vda; the kept volume, hot-plugged, is the next virtio disk.
    second = ec2.run_instances(ImageId=image, **boot, UserData=(
        "#!/bin/sh\ni=0\nwhile [ ! -b /dev/vdb ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i+1)); done\n"
        "mkdir -p /mnt/kept && mount -t ext4 /dev/vdb /mnt/kept && echo \"found: $(cat /mnt/kept/marker)\"\n"
    ))["Instances"][0]
    other = second["InstanceId"]
    other_root = second["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    wait_state(ec2, [other], "running", timeout=60)
    ec2.attach_volume(VolumeId=kept, InstanceId=other, Device="/dev/sdf")
    text = wait_console(ec2, other, f"found: {token}", "CLOUDCTL-GUEST-READY", timeout=150)
    assert "CLOUDCTL-USERDATA-EXIT 0" in text
    ec2.terminate_instances(InstanceIds=[other])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[other], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[other_root], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert not (volume_store(srv) / f"{other_root}.qcow2").exists()   # the default: gone with its instance
    ec2.get_waiter("volume_available").wait(VolumeIds=[kept], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    ec2.delete_volume(VolumeId=kept)
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[kept], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert not kept_file.exists()
    ec2.deregister_image(ImageId=image)      # no root volume overlays it any more
