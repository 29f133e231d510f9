"""CreateVolume, DescribeVolumes, DeleteVolume, AttachVolume, DetachVolume, CreateSnapshot,
DescribeSnapshots, DeleteSnapshot."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.volumes import effective_iops
from ....store.records import Snapshot, Volume
from ..protocol import LazyList
from .registry import action, tag_list, ts


def attachment_view(v: Volume) -> dict[str, Any]:
    return {"VolumeId": v.id, "InstanceId": v.instance_id, "Device": v.device,
            "State": v.attach_state, "AttachTime": ts(v.attach_time or v.created),
            "DeleteOnTermination": v.delete_on_termination}


def volume_view(v: Volume, tags: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "VolumeId": v.id, "Size": v.size, "SnapshotId": v.snapshot_id or "", "AvailabilityZone": v.zone,
        "State": v.state, "CreateTime": ts(v.created),
        "Attachments": [attachment_view(v)] if v.instance_id else [],
        "Encrypted": False, "VolumeType": v.volume_type, "Iops": effective_iops(v), "Throughput": v.throughput,
        "MultiAttachEnabled": False, "Tags": tags,
    }


def snapshot_view(s: Snapshot, tags: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "SnapshotId": s.id, "VolumeId": s.volume_id, "State": s.state, "StartTime": ts(s.started),
        "Progress": s.progress, "OwnerId": s.owner, "Description": s.description, "VolumeSize": s.volume_size,
        "Encrypted": False, "StorageTier": "standard", "StateMessage": s.state_message,
        "Tags": tags,
    }


@action("CreateVolume")
async def create_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    v = await cloud.volumes.create(caller, req)
    return volume_view(v, tag_list(cloud, v.id))


@action("DescribeVolumes")
async def describe_volumes(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    vols, token = cloud.volumes.describe(caller, req)
    # Rows are immutable; their tags are read now too: the answer is written later, in slices.
    tagged = [(v, tag_list(cloud, v.id)) for v in vols]
    return {"Volumes": LazyList((volume_view(v, t) for v, t in tagged), len(vols)), "NextToken": token}


@action("DeleteVolume")
async def delete_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.volumes.delete(caller, req["VolumeId"])
    return {}


@action("AttachVolume")
async def attach_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return attachment_view(await cloud.volumes.attach(caller, req))


@action("DetachVolume")
async def detach_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return attachment_view(await cloud.volumes.detach(caller, req))


@action("CreateSnapshot")
async def create_snapshot(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    snap = await cloud.volumes.create_snapshot(caller, req)
    return snapshot_view(snap, tag_list(cloud, snap.id))


@action("DescribeSnapshots")
async def describe_snapshots(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    snaps, token = cloud.volumes.describe_snapshots(caller, req)
    tagged = [(s, tag_list(cloud, s.id)) for s in snaps]   # read now (see DescribeVolumes)
    return {"Snapshots": LazyList((snapshot_view(s, t) for s, t in tagged), len(snaps)), "NextToken": token}


@action("DeleteSnapshot")
async def delete_snapshot(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.volumes.delete_snapshot(caller, req["SnapshotId"])
    return {}
