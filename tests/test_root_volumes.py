"""Root disks are EBS-style volumes: boto3 and the AWS CLI against the real server (simulated
hosts), then the core in-process with a domain template that names `$root_disk`, so that the
root volume's file really exists (a qcow2 overlay over the image) on libvirt's test driver."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import BlockDevice, LaunchSpec
from cloudctl.core.query import Filter
from cloudctl.store.records import Instance

from support import wait_state, write_config

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")

FAST = {"Delay": 0.1, "MaxAttempts": 200}
ZONE_A = "cloudctl-1a"


def fails(code: str, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


def describe(ec2: Any, iid: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def launch(ec2: Any, image_id: str, **kw: Any) -> str:
    iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType=kw.pop("InstanceType", "t3.small"),
                            Placement={"AvailabilityZone": ZONE_A}, **kw)["Instances"][0]["InstanceId"]
    assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"
    return iid


def root_of(ec2: Any, iid: str) -> str:
    return str(describe(ec2, iid)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"])


# -- over the wire -------------------------------------------------------------------------------


def test_the_root_disk_is_a_volume(ec2: Any, image_id: str) -> None:
    iid = launch(ec2, image_id)
    inst = describe(ec2, iid)
    assert (inst["RootDeviceType"], inst["RootDeviceName"]) == ("ebs", "/dev/vda")
    root = inst["BlockDeviceMappings"][0]
    assert root["DeviceName"] == "/dev/vda" and root["Ebs"]["DeleteOnTermination"] is True
    vol = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
    assert vol["State"] == "in-use" and vol["Size"] == 16          # t3.small's disk
    assert vol["Attachments"][0]["InstanceId"] == iid and vol["Attachments"][0]["Device"] == "/dev/vda"
    assert vol["AvailabilityZone"] == ZONE_A and vol["VolumeType"] == "gp2"

    by_type = lambda t: [i["InstanceId"] for r in ec2.describe_instances(  # noqa: E731
        Filters=[{"Name": "root-device-type", "Values": [t]}, {"Name": "instance-id", "Values": [iid]}]
    )["Reservations"] for i in r["Instances"]]
    assert by_type("ebs") == [iid] and by_type("instance-store") == []
    by_vol = ec2.describe_instances(Filters=[{"Name": "block-device-mapping.volume-id", "Values": [vol["VolumeId"]]}])
    assert [i["InstanceId"] for r in by_vol["Reservations"] for i in r["Instances"]] == [iid]

    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert (image["RootDeviceType"], image["RootDeviceName"]) == ("ebs", "/dev/vda")
    assert image["BlockDeviceMappings"][0]["DeviceName"] == "/dev/vda"
    assert image_id in [i["ImageId"] for i in ec2.describe_images(
        Filters=[{"Name": "root-device-type", "Values": ["ebs"]}])["Images"]]

    # A running instance keeps its root; nor can it be deleted while attached.
    assert "root volume" in fails("IncorrectInstanceState", ec2.detach_volume, VolumeId=vol["VolumeId"])
    fails("VolumeInUse", ec2.delete_volume, VolumeId=vol["VolumeId"])
    assert describe(ec2, iid)["BlockDeviceMappings"][0]["Ebs"]["Status"] == "attached"

    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[vol["VolumeId"]], WaiterConfig=FAST)
    gone = describe(ec2, iid)
    assert gone["RootDeviceType"] == "ebs" and gone["BlockDeviceMappings"] == []


def test_a_kept_root_volume_outlives_its_instance(ec2: Any, image_id: str) -> None:
    iid = launch(ec2, image_id, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 3, "VolumeType": "gp3", "DeleteOnTermination": False}}])
    inst = describe(ec2, iid)
    assert inst["RootDeviceName"] == "/dev/xvda"
    root = inst["BlockDeviceMappings"][0]["Ebs"]
    assert root["DeleteOnTermination"] is False
    vol = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"][0]
    assert (vol["Size"], vol["VolumeType"]) == (3, "gp3")

    other = launch(ec2, image_id)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("volume_available").wait(VolumeIds=[root["VolumeId"]], WaiterConfig=FAST)
    assert ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"][0]["Attachments"] == []
    # Now a data volume like any other: attached elsewhere, snapshotted, deleted.
    ec2.attach_volume(VolumeId=root["VolumeId"], InstanceId=other, Device="/dev/sdf")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[root["VolumeId"]], WaiterConfig=FAST)
    snap = ec2.create_snapshot(VolumeId=root["VolumeId"])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig=FAST)
    assert [m["DeviceName"] for m in describe(ec2, other)["BlockDeviceMappings"]] == ["/dev/vda", "/dev/sdf"]
    ec2.detach_volume(VolumeId=root["VolumeId"])
    ec2.get_waiter("volume_available").wait(VolumeIds=[root["VolumeId"]], WaiterConfig=FAST)
    ec2.delete_volume(VolumeId=root["VolumeId"])
    ec2.delete_snapshot(SnapshotId=snap)
    ec2.terminate_instances(InstanceIds=[other])


def test_launch_tag_specifications_tag_the_launch_volumes(ec2: Any, image_id: str) -> None:
    """TagSpecifications ResourceType=volume tag every volume the launch makes (root and data), not
    the instance; instance tags stay on the instance."""
    iid = launch(ec2, image_id, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}],
                 TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "blue"}]},
                                    {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}])
    vids = [m["Ebs"]["VolumeId"] for m in describe(ec2, iid)["BlockDeviceMappings"]]
    assert len(vids) == 2
    for vol in ec2.describe_volumes(VolumeIds=vids)["Volumes"]:
        assert vol["Tags"] == [{"Key": "team", "Value": "blue"}], vol
    assert describe(ec2, iid)["Tags"] == [{"Key": "Name", "Value": "web"}]
    found = ec2.describe_volumes(Filters=[{"Name": "tag:team", "Values": ["blue"]},
                                          {"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]
    assert sorted(v["VolumeId"] for v in found) == sorted(vids)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("volume_deleted").wait(VolumeIds=vids, WaiterConfig=FAST)   # (deleted after the instance)
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": vids}])["Tags"] == []


def test_delete_on_termination_of_the_root_can_change(ec2: Any, image_id: str) -> None:
    iid = launch(ec2, image_id)
    vid = root_of(ec2, iid)
    before = ec2.describe_instance_attribute(InstanceId=iid, Attribute="blockDeviceMapping")["BlockDeviceMappings"]
    assert before[0]["Ebs"]["DeleteOnTermination"] is True
    # A device with nothing mapped changes nothing.
    fails("InvalidInstanceAttributeValue", ec2.modify_instance_attribute, InstanceId=iid, BlockDeviceMappings=[
        {"DeviceName": "/dev/vda", "Ebs": {"DeleteOnTermination": False}},
        {"DeviceName": "/dev/sdq", "Ebs": {"DeleteOnTermination": False}}])
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="blockDeviceMapping")[
        "BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is True
    ec2.modify_instance_attribute(InstanceId=iid, BlockDeviceMappings=[
        {"DeviceName": "/dev/vda", "Ebs": {"DeleteOnTermination": False}}])
    after = ec2.describe_instance_attribute(InstanceId=iid, Attribute="blockDeviceMapping")["BlockDeviceMappings"]
    assert after[0]["Ebs"] | {"DeleteOnTermination": True} == before[0]["Ebs"]
    assert after[0]["Ebs"]["DeleteOnTermination"] is False
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="rootDeviceName")["RootDeviceName"]["Value"] \
        == "/dev/vda"
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("volume_available").wait(VolumeIds=[vid], WaiterConfig=FAST)
    ec2.delete_volume(VolumeId=vid)


def test_root_of_a_stopped_instance_can_be_swapped(ec2: Any, image_id: str) -> None:
    iid = launch(ec2, image_id)
    vid = root_of(ec2, iid)
    spare = ec2.create_volume(Size=16, AvailabilityZone=ZONE_A)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[spare], WaiterConfig=FAST)
    fails("InvalidParameterValue", ec2.attach_volume, VolumeId=spare, InstanceId=iid, Device="/dev/vda")  # taken
    ec2.stop_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "stopped")
    ec2.detach_volume(VolumeId=vid)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vid], WaiterConfig=FAST)
    assert "does not have a volume attached at root" in fails("InvalidParameterValue", ec2.start_instances,
                                                              InstanceIds=[iid])
    fails("InvalidParameterValue", ec2.attach_volume, VolumeId=spare, InstanceId=iid, Device="/dev/sda1")
    ec2.attach_volume(VolumeId=spare, InstanceId=iid, Device="/dev/vda")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[spare], WaiterConfig=FAST)
    ec2.start_instances(InstanceIds=[iid])
    assert wait_state(ec2, [iid], "running")[0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] == spare
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.delete_volume(VolumeId=vid)


def test_root_volumes_count_in_the_volume_quotas(new_server: Any) -> None:
    srv = new_server(limits={"volumes": 3, "volume_gib": 20})
    ec2 = srv.client(srv.create_user("q"))
    image = ec2.describe_images()["Images"][0]["ImageId"]
    # t3.nano's root is 8 GiB: three would need 24 GiB of the 20
    assert "storage limit" in fails("VolumeLimitExceeded", ec2.run_instances, ImageId=image, MinCount=3, MaxCount=3,
                                    InstanceType="t3.nano")
    assert ec2.describe_volumes()["Volumes"] == [] and ec2.describe_instances()["Reservations"] == []
    two = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.nano")["Instances"]
    assert len(ec2.describe_volumes()["Volumes"]) == 2
    fails("VolumeLimitExceeded", ec2.create_volume, AvailabilityZone=ZONE_A, Size=5)   # 16 + 5 > 20
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in two])


@pytest.mark.slow
def test_aws_cli_launch_with_a_kept_root(server: Any, alice: dict[str, str], image_id: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": alice["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": alice["SecretAccessKey"],
           "AWS_DEFAULT_REGION": "cloudctl-1", "PATH": "/usr/bin:/bin"}
    aws = [str(Path(shutil.which("aws") or Path(__import__("sys").executable).parent / "aws")),
           "--endpoint-url", server.endpoint, "--output", "json", "ec2"]
    out = subprocess.run([*aws, "run-instances", "--image-id", image_id, "--count", "1",
                          "--block-device-mappings", "DeviceName=/dev/sda1,Ebs={DeleteOnTermination=false}"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    inst = json.loads(out.stdout)["Instances"][0]
    assert inst["RootDeviceType"] == "ebs" and inst["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is False
    vid = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    out = subprocess.run([*aws, "describe-volumes", "--filters", "Name=attachment.device,Values=/dev/sda1",
                          f"Name=volume-id,Values={vid}", "--query", "Volumes[].State"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(out.stdout) == ["in-use"], out.stderr
    subprocess.run([*aws, "terminate-instances", "--instance-ids", inst["InstanceId"]], check=True,
                   capture_output=True, env=env, timeout=60)
    subprocess.run([*aws, "wait", "volume-available", "--volume-ids", vid], check=True, capture_output=True,
                   env=env, timeout=60)
    subprocess.run([*aws, "delete-volume", "--volume-id", vid], check=True, capture_output=True, env=env, timeout=60)


# -- in-process, with root disk files ------------------------------------------------------------

# libvirt's test driver takes a disk element (it opens no file), so the root volume's file is
# made and named in the definition as on a real host.
DISK_TEMPLATE = """<domain type='test'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>$memory_mib</memory>
  <vcpu>$vcpus</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$root_disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    $volumes
  </devices>
  $metadata
</domain>
"""


def disk_config(tmp_path: Path, model_cache: Path) -> Path:
    tpl = tmp_path / "domain-disk.xml"
    tpl.write_text(DISK_TEMPLATE)
    return write_config(tmp_path, model_cache, domain_template=str(tpl), terminated_visible_s=3600)


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(disk_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


async def run_one(cloud: Cloud, caller: Caller, **extra: Any) -> str:
    image = next(i for i in cloud.images.table.values() if i.name == "cloudctl-blank")
    _, insts = await cloud.compute.run(caller, LaunchSpec(image.id, instance_type="t3.nano", zone=ZONE_A, **extra))
    await cloud.compute.idle()
    await cloud.volumes.idle()
    return insts[0].id


def backing_of(path: Path) -> str | None:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    return info.get("backing-filename")


def qemu_io(path: Path, command: str) -> str:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr, out.stdout + out.stderr
    return out.stdout


async def xml_of(cloud: Cloud, iid: str) -> str:
    dom = cloud.drivers[cloud.compute.table.get(iid).host]._conn.lookupByName(iid)  # type: ignore[attr-defined]
    return await asyncio.to_thread(dom.XMLDesc, 0)


async def test_root_volume_file_overlays_the_image_and_follows_delete_on_termination(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    image = next(i for i in cloud.images.table.values() if i.name == "cloudctl-blank")
    base = cloud.images.path_of(image)
    base_bytes = base.read_bytes()
    gone = await run_one(cloud, caller)
    kept = await run_one(cloud, caller, block_devices=(BlockDevice("/dev/vda", delete_on_termination=False),))
    gone_vol, kept_vol = cloud.volumes.root_of(gone), cloud.volumes.root_of(kept)
    assert gone_vol is not None and kept_vol is not None
    for iid, vol in ((gone, gone_vol), (kept, kept_vol)):
        path = cloud.volumes.volume_path(vol.id)
        assert backing_of(path) == str(base.resolve())            # an overlay over the image's file
        assert f"<source file='{path}'/>" in await xml_of(cloud, iid)
        assert not (cloud.compute.files.dir(iid) / "root.qcow2").exists()   # not the old place
    kept_path = cloud.volumes.volume_path(kept_vol.id)
    qemu_io(kept_path, "write -P 0x5a 0 64k")                      # the guest writes to its disk

    # stop/start keeps the disk; reconciliation after a lost domain reuses it
    await cloud.compute.stop(caller, [kept])
    await cloud.compute.idle()
    await cloud.compute.start(caller, [kept])
    await cloud.compute.idle()
    qemu_io(kept_path, "read -P 0x5a 0 64k")

    await cloud.compute.terminate(caller, [gone, kept])
    await cloud.compute.idle()
    await cloud.volumes.idle()
    assert cloud.volumes.table.get(gone_vol.id) is None
    assert not cloud.volumes.volume_path(gone_vol.id).exists()
    left = cloud.volumes.table.get(kept_vol.id)
    assert left.state == "available" and left.instance_id is None
    qemu_io(kept_path, "read -P 0x5a 0 64k")                       # its data survived
    assert base.read_bytes() == base_bytes                         # the image is untouched
    # CreateImage of the terminated instance is refused; its kept volume can be snapshotted.
    snap = await cloud.volumes.create_snapshot(caller, kept_vol.id)
    await cloud.volumes.idle()
    assert cloud.volumes.snapshots.get(snap.id).state == "completed"
    assert backing_of(cloud.volumes.snapshot_path(snap.id)) is None   # flattened


async def test_create_image_reads_the_root_volume(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    iid = await run_one(cloud, caller)
    qemu_io(cloud.volumes.volume_path(cloud.volumes.root_of(iid).id), "write -P 0x33 1M 64k")
    await cloud.compute.stop(caller, [iid])
    await cloud.compute.idle()
    im = await cloud.compute.create_image(caller, iid, "captured")
    for _ in range(500):
        if cloud.images.table.get(im.id).state != "pending":
            break
        await asyncio.sleep(0.01)
    captured = cloud.images.table.get(im.id)
    assert captured.state == "available"
    qemu_io(cloud.images.path_of(captured), "read -P 0x33 1M 64k")

    # An image stays while a root volume overlays it, even one kept after its instance.
    _, (clone,) = await cloud.compute.run(caller, LaunchSpec(
        im.id, block_devices=(BlockDevice("/dev/vda", delete_on_termination=False),)))
    await cloud.compute.idle()
    vol = cloud.volumes.root_of(clone.id)
    qemu_io(cloud.volumes.volume_path(vol.id), "read -P 0x33 1M 64k")   # the clone sees the captured data
    await cloud.compute.terminate(caller, [clone.id])
    await cloud.compute.idle()
    with pytest.raises(CloudError) as e:
        await cloud.images.deregister(caller, im.id)
    assert e.value.code == "InvalidParameterValue" and vol.id in e.value.message
    await cloud.volumes.delete(caller, vol.id)
    await cloud.images.deregister(caller, im.id)


async def test_a_lost_domain_is_defined_again_over_the_same_root(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(disk_config(tmp_path, model_cache))
    first = await Cloud.open(cfg, "http://127.0.0.1:0")
    caller = Caller(await first.users.create("u"))
    iid = await run_one(first, caller)
    vid = first.volumes.root_of(iid).id
    path = first.volumes.volume_path(vid)
    qemu_io(path, "write -P 0x77 0 4k")
    await first.stop()
    # The test driver forgets its domains with the process: the instance's domain is lost.
    second = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        assert any(f"{iid}: running but no domain" in line for line in second.compute.reconcile_report)
        await second.compute.idle()
        assert second.compute.table.get(iid).state == "running"
        assert second.volumes.root_of(iid).id == vid and len(second.volumes.table) == 1
        assert f"<source file='{path}'/>" in await xml_of(second, iid)
        qemu_io(path, "read -P 0x77 0 4k")                        # reused, not made anew
    finally:
        await second.stop()


async def test_instances_of_the_previous_version_keep_their_own_overlay(tmp_path: Path, model_cache: Path) -> None:
    """State written before root volumes: an instance row without root_device and no root
    volume. It must load, run on its overlay in the instance directory, and terminate."""
    cfg = load_config(disk_config(tmp_path, model_cache))
    first = await Cloud.open(cfg, "http://127.0.0.1:0")
    caller = Caller(await first.users.create("u"))
    image = next(i for i in first.images.table.values() if i.name == "cloudctl-blank")
    old = {"id": "i-0123456789abcdef0", "owner": caller.account, "reservation_id": "r-0123456789abcdef0",
           "image_id": image.id, "instance_type": "t3.nano", "host": "host-a", "zone": ZONE_A, "state": "pending",
           "launch_time": 1.0, "uuid": "6f1c2a4e-0000-4000-8000-000000000001", "mac": "02:00:00:00:00:01"}
    with first.store.txn() as tx:
        tx.put(Instance.from_dict(old))     # as an older journal holds it: no root_device key
    await first.store.sync()
    await first.stop()

    second = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        await second.compute.idle()
        inst = second.compute.table.get(old["id"])
        assert inst.state == "running" and inst.root_device is None
        overlay = second.compute.files.dir(inst.id) / "root.qcow2"
        assert overlay.exists() and f"<source file='{overlay}'/>" in await xml_of(second, inst.id)
        assert second.volumes.root_of(inst.id) is None and len(second.volumes.table) == 0
        assert second.compute.filters.compile([Filter("root-device-type", ("instance-store",))])(inst)
        await second.compute.terminate(caller, [inst.id])
        await second.compute.idle()
        assert second.compute.table.get(inst.id).state == "terminated" and not overlay.exists()
    finally:
        await second.stop()

