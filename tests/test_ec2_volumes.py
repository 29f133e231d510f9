"""Volumes and snapshots: boto3 and the AWS CLI against the real server, then the core in-process
to see what reaches the hypervisor (the domain XML) and what survives a restart."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec
from cloudctl.core.volumes import VolumeRequest

from support import wait_state, write_config

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")

FAST = {"Delay": 0.1, "MaxAttempts": 200}   # waiters: EC2's 15 s delay is for EC2
ZONE_A, ZONE_B = "cloudctl-1a", "cloudctl-1b"


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def fails(code: str, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    assert code_of(e) == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


def volume_store(server: Any) -> Path:
    return Path(server.cfg.get("volume_store") or Path(server.cfg["state_dir"]) / "volumes")


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def qemu_io(path: Path, command: str) -> str:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr, \
        out.stdout + out.stderr
    return out.stdout


def tag_spec(rtype: str, **tags: str) -> list[dict[str, Any]]:
    return [{"ResourceType": rtype, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def root_volume(ec2: Any, iid: str) -> str:
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    first = inst["BlockDeviceMappings"][0]
    assert first["DeviceName"] == inst["RootDeviceName"]
    return str(first["Ebs"]["VolumeId"])


def running_instance(ec2: Any, image_id: str, zone: str = ZONE_A) -> str:
    iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": zone})["Instances"][0]["InstanceId"]
    assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"
    return iid


# -- create, describe ----------------------------------------------------------------------------


def test_create_describe_filters_pagination_tags(server: Any, ec2: Any) -> None:
    run = uuid.uuid4().hex[:8]
    made = [ec2.create_volume(Size=n, AvailabilityZone=ZONE_A if n % 2 else ZONE_B,
                              VolumeType=("standard", "gp2", "gp3")[n % 3],
                              TagSpecifications=tag_spec("volume", run=run, n=str(n)))
            for n in range(1, 8)]
    first = made[0]
    assert first["State"] == "creating" and first["Size"] == 1 and first["VolumeType"] == "gp2"
    assert sorted((t["Key"], t["Value"]) for t in first["Tags"]) == [("n", "1"), ("run", run)]
    assert first["Encrypted"] is False and first["Attachments"] == [] and first["SnapshotId"] == ""
    assert made[1]["VolumeType"] == "gp3" and made[1]["Iops"] == 3000 and made[1]["Throughput"] == 125
    assert made[0]["Iops"] == 100 and made[2]["VolumeType"] == "standard" and "Iops" not in made[2]
    ids = [v["VolumeId"] for v in made]
    ec2.get_waiter("volume_available").wait(VolumeIds=ids, WaiterConfig=FAST)

    mine = [{"Name": "tag:run", "Values": [run]}]
    def ids_of(**kw: Any) -> list[str]:
        return sorted(v["VolumeId"] for v in ec2.describe_volumes(**kw)["Volumes"])
    assert ids_of(Filters=mine) == sorted(ids)
    assert ids_of(VolumeIds=ids[:2]) == sorted(ids[:2])
    assert ids_of(Filters=[*mine, {"Name": "size", "Values": ["3", "4"]}]) == sorted(ids[2:4])
    assert ids_of(Filters=[*mine, {"Name": "volume-type", "Values": ["gp3"]}]) == sorted([ids[1], ids[4]])
    assert ids_of(Filters=[*mine, {"Name": "availability-zone", "Values": [ZONE_B]}]) == sorted(ids[1::2])
    assert ids_of(Filters=[*mine, {"Name": "status", "Values": ["available"]}]) == sorted(ids)
    assert ids_of(Filters=[*mine, {"Name": "status", "Values": ["in-use"]}]) == []
    assert ids_of(Filters=[*mine, {"Name": "volume-id", "Values": [ids[4]]}]) == [ids[4]]
    assert ids_of(Filters=[*mine, {"Name": "snapshot-id", "Values": [""]}]) == sorted(ids)
    assert ids_of(Filters=[*mine, {"Name": "create-time", "Values": ["20*Z"]}]) == sorted(ids)
    assert ids_of(Filters=[*mine, {"Name": "tag:n", "Values": ["1", "7"]}]) == sorted([ids[0], ids[6]])
    assert ids_of(Filters=[*mine, {"Name": "tag-key", "Values": ["n"]}]) == sorted(ids)
    assert ids_of(Filters=[*mine, {"Name": "tag-value", "Values": ["5"]}]) == [ids[4]]
    assert ids_of(Filters=[*mine, {"Name": "attachment.status", "Values": ["attached"]}]) == []
    fails("InvalidParameterValue", ec2.describe_volumes, Filters=[{"Name": "colour", "Values": ["red"]}])

    pages = list(ec2.get_paginator("describe_volumes").paginate(Filters=mine, PaginationConfig={"PageSize": 5}))
    assert [len(p["Volumes"]) for p in pages] == [5, 2]
    assert sorted(v["VolumeId"] for p in pages for v in p["Volumes"]) == sorted(ids)
    assert len(ec2.describe_volumes(MaxResults=1000, Filters=mine)["Volumes"]) == 7   # what the AWS CLI sends
    fails("InvalidParameterCombination", ec2.describe_volumes, VolumeIds=ids[:1], MaxResults=5)
    fails("InvalidPaginationToken", ec2.describe_volumes, Filters=mine, MaxResults=5, NextToken="garbage")

    fails("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=["vol-00000000000000000"])
    fails("InvalidVolumeID.Malformed", ec2.describe_volumes, VolumeIds=["volume-1"])
    fails("InvalidParameterValue", ec2.create_volume, Size=0, AvailabilityZone=ZONE_A)
    fails("InvalidParameterValue", ec2.create_volume, Size=16385, AvailabilityZone=ZONE_A)
    fails("InvalidParameterValue", ec2.create_volume, Size=1, AvailabilityZone="cloudctl-1z")
    fails("MissingParameter", ec2.create_volume, Size=1)
    fails("MissingParameter", ec2.create_volume, AvailabilityZone=ZONE_A)
    fails("InvalidParameterValue", ec2.create_volume, Size=1, AvailabilityZone=ZONE_A, VolumeType="io9")
    fails("InvalidParameterCombination", ec2.create_volume, Size=1, AvailabilityZone=ZONE_A, VolumeType="gp2",
          Iops=500)
    fails("InvalidParameterValue", ec2.create_volume, Size=1, AvailabilityZone=ZONE_A, Encrypted=True)
    fails("InvalidParameterValue", ec2.create_volume, Size=1, AvailabilityZone=ZONE_A,
          TagSpecifications=tag_spec("instance", a="b"))
    big = ec2.create_volume(Size=16384, AvailabilityZone=ZONE_A, VolumeType="gp3", Iops=16000, Throughput=1000)
    assert (big["Size"], big["Iops"], big["Throughput"]) == (16384, 16000, 1000)

    # The file is a sparse qcow2 of the asked size.
    info = qemu_img_info(volume_store(server) / f"{ids[1]}.qcow2")
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 * 1024**3 and info["actual-size"] < 1024**2

    # ClientToken: the same token gives the same volume back.
    a = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A, ClientToken=f"tok-{run}")
    b = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A, ClientToken=f"tok-{run}")
    assert a["VolumeId"] == b["VolumeId"]

    ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "later", "Value": "yes"}])
    assert ids_of(Filters=[{"Name": "tag:later", "Values": ["yes"]}]) == [ids[0]]
    assert {t["ResourceType"] for t in ec2.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"]} == {"volume"}
    for v in [*ids, big["VolumeId"], a["VolumeId"]]:
        ec2.delete_volume(VolumeId=v)
    ec2.get_waiter("volume_deleted").wait(VolumeIds=ids, WaiterConfig=FAST)
    assert not (volume_store(server) / f"{ids[1]}.qcow2").exists()
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"] == []
    fails("InvalidVolume.NotFound", ec2.delete_volume, VolumeId=ids[0])


# -- attach, detach ------------------------------------------------------------------------------


def test_attach_detach_and_delete_while_attached(ec2: Any, image_id: str) -> None:
    iid = running_instance(ec2, image_id)
    vol = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    other = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    far = ec2.create_volume(Size=1, AvailabilityZone=ZONE_B)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol, other, far], WaiterConfig=FAST)

    att = ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    assert (att["VolumeId"], att["InstanceId"], att["Device"], att["State"]) == (vol, iid, "/dev/sdf", "attaching")
    assert att["DeleteOnTermination"] is False and att["AttachTime"].year >= 2024
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig=FAST)
    deadline = time.time() + 10
    while (v := ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0])["Attachments"][0]["State"] != "attached":
        assert time.time() < deadline
        time.sleep(0.05)
    assert v["State"] == "in-use"
    assert v["Attachments"][0]["InstanceId"] == iid and v["Attachments"][0]["Device"] == "/dev/sdf"
    by = [{"Name": "attachment.instance-id", "Values": [iid]}]
    # The instance's root volume (EBS-backed) and the new one.
    assert {x["Attachments"][0]["Device"]: x["VolumeId"] for x in ec2.describe_volumes(Filters=by)["Volumes"]} \
        == {"/dev/vda": root_volume(ec2, iid), "/dev/sdf": vol}
    assert [x["VolumeId"] for x in ec2.describe_volumes(
        Filters=[*by, {"Name": "attachment.device", "Values": ["/dev/sdf"]},
                 {"Name": "attachment.status", "Values": ["attached"]}])["Volumes"]] == [vol]

    assert "attached" in fails("VolumeInUse", ec2.delete_volume, VolumeId=vol)
    fails("VolumeInUse", ec2.attach_volume, VolumeId=vol, InstanceId=iid, Device="/dev/sdg")
    assert "in use" in fails("InvalidParameterValue", ec2.attach_volume, VolumeId=other, InstanceId=iid,
                             Device="/dev/sdf")
    # /dev/vdf is the same guest disk as /dev/sdf
    fails("InvalidParameterValue", ec2.attach_volume, VolumeId=other, InstanceId=iid, Device="/dev/vdf")
    fails("InvalidParameterValue", ec2.attach_volume, VolumeId=other, InstanceId=iid, Device="/dev/sda")
    fails("InvalidParameterValue", ec2.attach_volume, VolumeId=other, InstanceId=iid, Device="sdg")
    fails("InvalidVolume.ZoneMismatch", ec2.attach_volume, VolumeId=far, InstanceId=iid, Device="/dev/sdh")
    fails("InvalidInstanceID.NotFound", ec2.attach_volume, VolumeId=other, InstanceId="i-00000000000000000",
          Device="/dev/sdg")
    ec2.attach_volume(VolumeId=other, InstanceId=iid, Device="/dev/vdb")

    fails("InvalidAttachment.NotFound", ec2.detach_volume, VolumeId=vol, Device="/dev/sdz")
    fails("IncorrectState", ec2.detach_volume, VolumeId=far)
    det = ec2.detach_volume(VolumeId=vol, InstanceId=iid)
    assert det["State"] == "detaching" and det["InstanceId"] == iid
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"] == []
    ec2.detach_volume(VolumeId=other, Force=True)
    ec2.get_waiter("volume_available").wait(VolumeIds=[other], WaiterConfig=FAST)

    # A stopped instance takes volumes too (recorded in its definition for the next start).
    ec2.stop_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "stopped")
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/xvdc")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.detach_volume(VolumeId=vol)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.terminate_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "terminated")
    fails("IncorrectInstanceState", ec2.attach_volume, VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    for v in (vol, other, far):
        ec2.delete_volume(VolumeId=v)


# -- snapshots -----------------------------------------------------------------------------------


def test_snapshot_and_volume_from_snapshot_carry_the_data(server: Any, ec2: Any) -> None:
    store = volume_store(server)
    vol = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    qemu_io(store / f"{vol}.qcow2", "write -P 0xab 1M 64k")   # what a guest would have written

    snap = ec2.create_snapshot(VolumeId=vol, Description="before upgrade",
                               TagSpecifications=tag_spec("snapshot", purpose="test"))
    sid = snap["SnapshotId"]
    assert snap["State"] == "pending" and snap["VolumeId"] == vol and snap["VolumeSize"] == 1
    assert snap["Description"] == "before upgrade" and snap["Progress"] == "0%" and snap["Encrypted"] is False
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    got = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert got["State"] == "completed" and got["Progress"] == "100%"
    assert got["Tags"] == [{"Key": "purpose", "Value": "test"}]
    owner = got["OwnerId"]
    info = qemu_img_info(store / "snapshots" / f"{sid}.qcow2")
    assert info["format"] == "qcow2" and info["virtual-size"] == 1024**3 and "backing-filename" not in info

    def snap_ids(**kw: Any) -> list[str]:
        return [s["SnapshotId"] for s in ec2.describe_snapshots(**kw)["Snapshots"]]
    assert sid in snap_ids(OwnerIds=["self"]) and sid in snap_ids(OwnerIds=[owner]) and sid in snap_ids()
    assert sid not in snap_ids(OwnerIds=["amazon"])
    assert snap_ids(Filters=[{"Name": "volume-id", "Values": [vol]}]) == [sid]
    assert snap_ids(Filters=[{"Name": "volume-id", "Values": [vol]}, {"Name": "status", "Values": ["completed"]},
                             {"Name": "owner-id", "Values": [owner]}, {"Name": "tag:purpose", "Values": ["te*"]},
                             {"Name": "description", "Values": ["before*"]}]) == [sid]
    assert snap_ids(Filters=[{"Name": "volume-id", "Values": [vol]}, {"Name": "status", "Values": ["pending"]}]) == []
    assert sid in snap_ids(OwnerIds=["self"], MaxResults=1000)          # what the AWS CLI sends
    fails("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=["snap-00000000000000000"])

    # The source changes afterwards; the snapshot keeps the old data.
    qemu_io(store / f"{vol}.qcow2", "write -P 0xcd 1M 64k")
    fails("InvalidParameterValue", ec2.create_volume, SnapshotId=sid, Size=0, AvailabilityZone=ZONE_B)
    same = ec2.create_volume(SnapshotId=sid, AvailabilityZone=ZONE_B)
    bigger = ec2.create_volume(SnapshotId=sid, Size=3, AvailabilityZone=ZONE_A, VolumeType="gp3")
    assert same["Size"] == 1 and same["SnapshotId"] == sid and bigger["Size"] == 3
    ids = [same["VolumeId"], bigger["VolumeId"]]
    ec2.get_waiter("volume_available").wait(VolumeIds=ids, WaiterConfig=FAST)
    assert [v["VolumeId"] for v in ec2.describe_volumes(
        Filters=[{"Name": "snapshot-id", "Values": [sid]}])["Volumes"]] == sorted(ids)
    for v, size in zip(ids, (1, 3)):
        info = qemu_img_info(store / f"{v}.qcow2")
        assert info["format"] == "qcow2" and info["virtual-size"] == size * 1024**3
        assert "backing-filename" not in info          # standalone: the snapshot may go
        qemu_io(store / f"{v}.qcow2", "read -P 0xab 1M 64k")

    ec2.delete_snapshot(SnapshotId=sid)
    fails("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=[sid])
    fails("InvalidSnapshot.NotFound", ec2.delete_snapshot, SnapshotId=sid)
    fails("InvalidSnapshot.NotFound", ec2.create_volume, SnapshotId=sid, AvailabilityZone=ZONE_A)
    deadline = time.time() + 10
    while (store / "snapshots" / f"{sid}.qcow2").exists():
        assert time.time() < deadline
        time.sleep(0.05)
    qemu_io(store / f"{ids[1]}.qcow2", "read -P 0xab 1M 64k")
    for v in (vol, *ids):
        ec2.delete_volume(VolumeId=v)


def test_snapshot_of_an_attached_volume(ec2: Any, image_id: str) -> None:
    iid = running_instance(ec2, image_id)
    vol = ec2.create_volume(Size=2, AvailabilityZone=ZONE_A)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["VolumeSize"] == 2
    ec2.detach_volume(VolumeId=vol)   # before terminating: termination itself detaches it
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.delete_volume(VolumeId=vol)
    ec2.delete_snapshot(SnapshotId=sid)


# -- isolation, DryRun, the AWS CLI ----------------------------------------------------------------


def test_other_accounts_see_nothing(server: Any, ec2: Any, bob: dict[str, str], image_id: str) -> None:
    bob_ec2 = server.client(bob)
    vol = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    assert vol not in [v["VolumeId"] for v in bob_ec2.describe_volumes()["Volumes"]]
    assert sid not in [s["SnapshotId"] for s in bob_ec2.describe_snapshots()["Snapshots"]]
    owner = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["OwnerId"]
    assert bob_ec2.describe_snapshots(OwnerIds=[owner])["Snapshots"] == []
    fails("InvalidVolume.NotFound", bob_ec2.describe_volumes, VolumeIds=[vol])
    fails("InvalidVolume.NotFound", bob_ec2.delete_volume, VolumeId=vol)
    fails("InvalidVolume.NotFound", bob_ec2.create_snapshot, VolumeId=vol)
    fails("InvalidVolume.NotFound", bob_ec2.detach_volume, VolumeId=vol)
    fails("InvalidVolume.NotFound", bob_ec2.create_tags, Resources=[vol], Tags=[{"Key": "a", "Value": "b"}])
    fails("InvalidSnapshot.NotFound", bob_ec2.describe_snapshots, SnapshotIds=[sid])
    fails("InvalidSnapshot.NotFound", bob_ec2.delete_snapshot, SnapshotId=sid)
    fails("InvalidSnapshot.NotFound", bob_ec2.create_volume, SnapshotId=sid, AvailabilityZone=ZONE_A)
    fails("InvalidSnapshot.NotFound", bob_ec2.create_tags, Resources=[sid], Tags=[{"Key": "a", "Value": "b"}])
    # Neither can bob attach his volume to alice's instance, nor hers to his.
    iid = running_instance(ec2, image_id)
    bob_vol = bob_ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    bob_ec2.get_waiter("volume_available").wait(VolumeIds=[bob_vol], WaiterConfig=FAST)
    fails("InvalidInstanceID.NotFound", bob_ec2.attach_volume, VolumeId=bob_vol, InstanceId=iid, Device="/dev/sdf")
    fails("InvalidVolume.NotFound", bob_ec2.attach_volume, VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    ec2.terminate_instances(InstanceIds=[iid])
    bob_ec2.delete_volume(VolumeId=bob_vol)
    ec2.delete_snapshot(SnapshotId=sid)
    ec2.delete_volume(VolumeId=vol)


def test_dry_run_changes_nothing(ec2: Any, image_id: str) -> None:
    run = uuid.uuid4().hex[:8]
    fails("DryRunOperation", ec2.create_volume, Size=1, AvailabilityZone=ZONE_A, DryRun=True,
          TagSpecifications=tag_spec("volume", run=run))
    assert ec2.describe_volumes(Filters=[{"Name": "tag:run", "Values": [run]}])["Volumes"] == []
    fails("InvalidParameterValue", ec2.create_volume, Size=0, AvailabilityZone=ZONE_A, DryRun=True)  # validated first
    iid = running_instance(ec2, image_id)
    vol = ec2.create_volume(Size=1, AvailabilityZone=ZONE_A)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    fails("DryRunOperation", ec2.describe_volumes, VolumeIds=[vol], DryRun=True)
    fails("DryRunOperation", ec2.attach_volume, VolumeId=vol, InstanceId=iid, Device="/dev/sdf", DryRun=True)
    fails("DryRunOperation", ec2.create_snapshot, VolumeId=vol, DryRun=True)
    assert ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])["Snapshots"] == []
    fails("DryRunOperation", ec2.delete_volume, VolumeId=vol, DryRun=True)
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available"
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    fails("DryRunOperation", ec2.detach_volume, VolumeId=vol, DryRun=True)
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"][0]["State"] in ("attaching", "attached")
    ec2.detach_volume(VolumeId=vol)
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig=FAST)
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    fails("DryRunOperation", ec2.delete_snapshot, SnapshotId=sid, DryRun=True)
    fails("DryRunOperation", ec2.describe_snapshots, SnapshotIds=[sid], DryRun=True)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig=FAST)
    ec2.delete_snapshot(SnapshotId=sid)
    ec2.delete_volume(VolumeId=vol)
    ec2.terminate_instances(InstanceIds=[iid])


@pytest.mark.slow
def test_aws_cli(server: Any, alice: dict[str, str]) -> None:
    from test_ec2_wire import aws
    vol = aws(server, alice, "create-volume", "--size", "1", "--availability-zone", ZONE_A,
              "--tag-specifications", "ResourceType=volume,Tags=[{Key=via,Value=cli}]")["VolumeId"]
    aws(server, alice, "wait", "volume-available", "--volume-ids", vol)
    listed = aws(server, alice, "describe-volumes")   # the CLI injects MaxResults=1000 here
    assert vol in [v["VolumeId"] for v in listed["Volumes"]]
    snap = aws(server, alice, "create-snapshot", "--volume-id", vol)["SnapshotId"]
    aws(server, alice, "wait", "snapshot-completed", "--snapshot-ids", snap)
    assert snap in [s["SnapshotId"]
                    for s in aws(server, alice, "describe-snapshots", "--owner-ids", "self")["Snapshots"]]
    aws(server, alice, "delete-snapshot", "--snapshot-id", snap)
    aws(server, alice, "delete-volume", "--volume-id", vol)
    aws(server, alice, "wait", "volume-deleted", "--volume-ids", vol)


# -- in-process: the hypervisor's side, restarts ---------------------------------------------------


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    cfg = load_config(write_config(tmp_path, model_cache))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def _launch(cloud: Cloud, caller: Caller, zone: str = ZONE_A) -> str:
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(caller, LaunchSpec(image.id, instance_type="t3.nano", zone=zone))
    await cloud.compute.idle()
    return insts[0].id


async def _persistent_xml(cloud: Cloud, iid: str) -> str:
    import libvirt  # type: ignore[import-untyped]
    conn = cloud.drivers[cloud.compute.table.get(iid).host]._conn  # type: ignore[attr-defined]
    return await asyncio.to_thread(lambda: conn.lookupByName(iid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


async def test_attached_volume_reaches_the_domain_definition(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    iid = await _launch(cloud, caller)
    v1 = await cloud.volumes.create(caller, VolumeRequest(ZONE_A, size=1))
    v2 = await cloud.volumes.create(caller, VolumeRequest(ZONE_A, size=2))
    await cloud.volumes.idle()
    await cloud.volumes.attach(caller, v1.id, iid, "/dev/sdf")
    await cloud.volumes.attach(caller, v2.id, iid, "/dev/vdg")
    assert cloud.volumes.disks_for(iid) == [(str(cloud.volumes.volume_path(v1.id)), "vdf"),
                                            (str(cloud.volumes.volume_path(v2.id)), "vdg")]
    await cloud.volumes.idle()
    assert cloud.volumes.table.get(v1.id).attach_state == "attached"
    xml = await _persistent_xml(cloud, iid)
    assert f"<source file='{cloud.volumes.volume_path(v1.id)}'/>" in xml and "<target dev='vdf' bus='virtio'/>" in xml
    assert "<target dev='vdg' bus='virtio'/>" in xml
    assert "urn:cloudctl:instance" in xml     # still cloudctl's domain after the rewrite
    assert {d.name: d.managed for d in await cloud.drivers["host-a"].list_domains()}[iid] is True

    await cloud.volumes.detach(caller, v1.id)
    assert [t for _, t in cloud.volumes.disks_for(iid)] == ["vdg"]
    await cloud.volumes.idle()
    xml = await _persistent_xml(cloud, iid)
    assert "vdf" not in xml and "<target dev='vdg' bus='virtio'/>" in xml
    assert cloud.volumes.table.get(v1.id).state == "available"

    # Terminated: the instance's volumes come free (or go, with DeleteOnTermination).
    from dataclasses import replace
    with cloud.store.txn() as tx:
        tx.put(replace(cloud.volumes.table.get(v2.id), delete_on_termination=True))
    with pytest.raises(CloudError) as e:
        await cloud.volumes.delete(caller, v2.id)
    assert e.value.code == "VolumeInUse"
    root = cloud.volumes.root_of(iid)
    assert root is not None and root.delete_on_termination
    assert sorted(cloud.volumes.release_instance(iid)) == sorted([root.id, v2.id])
    await cloud.volumes.idle()
    assert cloud.volumes.table.get(v2.id) is None
    assert not cloud.volumes.volume_path(v2.id).exists()


async def test_transitional_work_is_redone_after_a_restart(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    first = await Cloud.open(cfg, "http://127.0.0.1:0")
    caller = Caller(await first.users.create("u"))
    # Requests acknowledged, then the process dies before the files are made.
    first.volumes._serial = lambda keys, coro: coro.close()  # type: ignore[method-assign]
    vol = await first.volumes.create(caller, VolumeRequest(ZONE_A, size=1))
    assert not first.volumes.volume_path(vol.id).exists()
    await first.stop()

    second = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        await second.volumes.idle()
        assert second.volumes.table.get(vol.id).state == "available"
        assert second.volumes.volume_path(vol.id).exists()
        del_caller = Caller(second.users.table.get("u"))
        snap = await second.volumes.create_snapshot(del_caller, vol.id)
        await second.volumes.idle()
        assert second.volumes.snapshots.get(snap.id).state == "completed"
    finally:
        await second.stop()


def test_block_device_mappings_at_launch(ec2: Any, image_id: str) -> None:
    """Data volumes made and attached by RunInstances; DeleteOnTermination decides their end."""
    inst = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "cloudctl-1a"},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20}},
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}},
            {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}},
        ])["Instances"][0]
    iid = inst["InstanceId"]
    mapped = {m["DeviceName"]: m["Ebs"] for m in inst["BlockDeviceMappings"]}
    assert [m["DeviceName"] for m in inst["BlockDeviceMappings"]] == ["/dev/sda1", "/dev/sdf", "/dev/sdg"]
    assert inst["RootDeviceType"] == "ebs" and inst["RootDeviceName"] == "/dev/sda1"
    assert mapped["/dev/sdf"]["DeleteOnTermination"] is True and mapped["/dev/sdg"]["DeleteOnTermination"] is False
    vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]
    assert sorted(v["Size"] for v in vols) == [1, 2, 20]
    assert {v["State"] for v in vols} == {"in-use"}
    keep = mapped["/dev/sdg"]["VolumeId"]
    gone = mapped["/dev/sdf"]["VolumeId"]
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    ec2.get_waiter("volume_available").wait(VolumeIds=[keep], WaiterConfig={"Delay": 1})
    ec2.get_waiter("volume_deleted").wait(VolumeIds=[gone, mapped["/dev/sda1"]["VolumeId"]],
                                          WaiterConfig={"Delay": 1})
    ec2.delete_volume(VolumeId=keep)


@pytest.mark.parametrize("mappings,code", [
    ([{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}], "MissingParameter"),
    ([{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 0}}], "InvalidParameterValue"),
    ([{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 2}}, {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 2}}],
     "InvalidParameterValue"),
    ([{"DeviceName": "/dev/sda1", "Ebs": {"VolumeType": "io9"}}], "InvalidParameterValue"),
    ([{"DeviceName": "/dev/hda", "Ebs": {"VolumeSize": 1}}], "InvalidParameterValue"),
    ([{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}, {"DeviceName": "/dev/vdf", "Ebs": {"VolumeSize": 1}}],
     "InvalidParameterValue"),
])
def test_bad_block_device_mappings_change_nothing(ec2: Any, image_id: str, mappings: Any, code: str) -> None:
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, BlockDeviceMappings=mappings)
    assert e.value.response["Error"]["Code"] == code
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} - before == set()   # nothing made
