"""CreateVolume, DescribeVolumes, DeleteVolume, AttachVolume, DetachVolume, CreateSnapshot,
DescribeSnapshots, DeleteSnapshot."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.errors import CloudError
from ....core.volumes import VolumeRequest, effective_iops
from ....store.records import Snapshot, Volume
from ..protocol import LazyList
from ..requests import query, tags_for
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


_UNSUPPORTED = {"KmsKeyId": "encryption keys", "OutpostArn": "outposts", "AvailabilityZoneId": "zone ids "
                "(give AvailabilityZone)", "Operator": "managed volumes"}


def volume_request(req: dict[str, Any]) -> VolumeRequest:
    """CreateVolume's parameters; what this cloud does not have (encryption, Multi-Attach,
    outposts...) is refused here, before anything is looked at."""
    for key, what in _UNSUPPORTED.items():
        if req.get(key):
            raise CloudError("InvalidParameterValue", f"{key}: {what} are not supported by this cloud")
    if req.get("Encrypted"):
        raise CloudError("InvalidParameterValue", "Encrypted volumes are not supported by this cloud")
    if req.get("MultiAttachEnabled"):
        raise CloudError("InvalidParameterValue", "Multi-Attach is not supported by this cloud")
    return VolumeRequest(zone=req.get("AvailabilityZone"), size=req.get("Size"), snapshot_id=req.get("SnapshotId"),
                         volume_type=req.get("VolumeType"), iops=req.get("Iops"), throughput=req.get("Throughput"),
                         client_token=req.get("ClientToken"), tags=tags_for(req, "volume"))


@action("CreateVolume")
async def create_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    v = await cloud.volumes.create(caller, volume_request(req))
    return volume_view(v, tag_list(cloud, v.id))


@action("DescribeVolumes")
async def describe_volumes(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    vols, token = cloud.volumes.describe(caller, query(req, "VolumeIds"))
    # Rows are immutable; their tags are read now too: the answer is written later, in slices.
    tagged = [(v, tag_list(cloud, v.id)) for v in vols]
    return {"Volumes": LazyList((volume_view(v, t) for v, t in tagged), len(vols)), "NextToken": token}


@action("DeleteVolume")
async def delete_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.volumes.delete(caller, req["VolumeId"])
    return {}


@action("AttachVolume")
async def attach_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return attachment_view(await cloud.volumes.attach(caller, req.get("VolumeId") or "", req.get("InstanceId") or "",
                                                      req.get("Device") or ""))


@action("DetachVolume")
async def detach_volume(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return attachment_view(await cloud.volumes.detach(caller, req.get("VolumeId") or "", req.get("InstanceId"),
                                                      req.get("Device"), bool(req.get("Force"))))


@action("CreateSnapshot")
async def create_snapshot(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    for key in ("OutpostArn", "Location"):
        if req.get(key) and not (key == "Location" and req[key] == "regional"):
            raise CloudError("InvalidParameterValue", f"{key} is not supported by this cloud")
    snap = await cloud.volumes.create_snapshot(caller, req.get("VolumeId") or "", req.get("Description") or "",
                                               tags_for(req, "snapshot"))
    return snapshot_view(snap, tag_list(cloud, snap.id))


@action("DescribeSnapshots")
async def describe_snapshots(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    snaps, token = cloud.volumes.describe_snapshots(caller, query(req, "SnapshotIds"),
                                                    tuple(req.get("OwnerIds") or ()),
                                                    tuple(req.get("RestorableByUserIds") or ()))
    tagged = [(s, tag_list(cloud, s.id)) for s in snaps]   # read now (see DescribeVolumes)
    return {"Snapshots": LazyList((snapshot_view(s, t) for s, t in tagged), len(snaps)), "NextToken": token}


@action("DeleteSnapshot")
async def delete_snapshot(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.volumes.delete_snapshot(caller, req["SnapshotId"])
    return {}
