"""Launch templates: Create/Describe/Modify/DeleteLaunchTemplate, Create/Describe/
DeleteLaunchTemplateVersions, GetLaunchTemplateData. (RunInstances from a template: instances.py.)"""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.launch_templates import TemplateData
from ....store.records import LaunchTemplate, LaunchTemplateVersion
from .. import requests
from ..launch import template_data, template_ref
from .registry import action, tag_list, ts


def _created_by(owner: str, user: str) -> str:
    return f"arn:aws:iam::{owner}:user/{user}"


def template_view(cloud: Cloud, t: LaunchTemplate) -> dict[str, Any]:
    return {"LaunchTemplateId": t.id, "LaunchTemplateName": t.name, "CreateTime": ts(t.created),
            "CreatedBy": _created_by(t.owner, t.created_by), "DefaultVersionNumber": t.default_version,
            "LatestVersionNumber": t.latest_version, "Tags": tag_list(cloud, t.id)}


def data_view(d: TemplateData) -> dict[str, Any]:
    """TemplateData as ResponseLaunchTemplateData: only what was set."""
    out: dict[str, Any] = {k: v for k, v in (
        ("ImageId", d.image_id), ("InstanceType", d.instance_type), ("KeyName", d.key_name),
        ("KernelId", d.kernel_id), ("RamDiskId", d.ramdisk_id), ("UserData", d.user_data),
        ("InstanceInitiatedShutdownBehavior", d.shutdown_behavior),
        ("DisableApiTermination", d.disable_api_termination)) if v is not None}
    if d.zone:
        out["Placement"] = {"AvailabilityZone": d.zone}
    if d.group_ids:
        out["SecurityGroupIds"] = list(d.group_ids)
    if d.group_names:
        out["SecurityGroups"] = list(d.group_names)
    if d.interface:
        nic: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": d.subnet_id, "PrivateIpAddress": d.private_ip,
                               "AssociatePublicIpAddress": d.public_ip}
        if d.interface_group_ids:
            nic["Groups"] = list(d.interface_group_ids)
        out["NetworkInterfaces"] = [{k: v for k, v in nic.items() if v is not None}]
    if d.block_devices:
        out["BlockDeviceMappings"] = [{"DeviceName": b.device, "Ebs": {k: v for k, v in (
            ("VolumeSize", b.size), ("VolumeType", b.volume_type), ("SnapshotId", b.snapshot_id),
            ("DeleteOnTermination", b.delete_on_termination)) if v is not None}} for b in d.block_devices]
    specs = [{"ResourceType": rtype, "Tags": [{"Key": k, "Value": v} for k, v in tags]}
             for rtype, tags in (("instance", d.instance_tags), ("volume", d.volume_tags)) if tags]
    if specs:
        out["TagSpecifications"] = specs
    return out


def version_view(t: LaunchTemplate, v: LaunchTemplateVersion) -> dict[str, Any]:
    # (no VersionDescription when there is none, as EC2: clients compare it with what they sent)
    return {"LaunchTemplateId": t.id, "LaunchTemplateName": t.name, "VersionNumber": v.number,
            "VersionDescription": v.description or None, "CreateTime": ts(v.created),
            "CreatedBy": _created_by(v.owner, v.created_by), "DefaultVersion": v.number == t.default_version,
            "LaunchTemplateData": data_view(TemplateData.from_record(v.data))}


@action("CreateLaunchTemplate")
async def create_launch_template(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    t, _ = await cloud.launch_templates.create(
        caller, req["LaunchTemplateName"], req.get("VersionDescription"), template_data(req["LaunchTemplateData"]),
        requests.tags_for(req, "launch-template"), req.get("ClientToken"))
    return {"LaunchTemplate": template_view(cloud, t)}


@action("CreateLaunchTemplateVersion")
async def create_launch_template_version(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    v = await cloud.launch_templates.create_version(caller, template_ref(req), req.get("SourceVersion"),
                                                    req.get("VersionDescription"),
                                                    template_data(req["LaunchTemplateData"]))
    t = cloud.launch_templates.table.get(v.template_id)
    assert t is not None
    return {"LaunchTemplateVersion": version_view(t, v)}


@action("DescribeLaunchTemplates")
async def describe_launch_templates(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    found, token = cloud.launch_templates.describe(caller, requests.query(req, "LaunchTemplateIds"),
                                                   tuple(req.get("LaunchTemplateNames") or ()))
    return {"LaunchTemplates": [template_view(cloud, t) for t in found], "NextToken": token}


@action("DescribeLaunchTemplateVersions")
async def describe_launch_template_versions(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    ref = template_ref(req) if req.get("LaunchTemplateId") or req.get("LaunchTemplateName") else None
    found, token = cloud.launch_templates.describe_versions(
        caller, ref, tuple(req.get("Versions") or ()), req.get("MinVersion"), req.get("MaxVersion"),
        requests.query(req))
    return {"LaunchTemplateVersions": [version_view(t, v) for t, v in found], "NextToken": token}


@action("ModifyLaunchTemplate")
async def modify_launch_template(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    t = await cloud.launch_templates.set_default(caller, template_ref(req), req.get("DefaultVersion"))
    return {"LaunchTemplate": template_view(cloud, t)}


@action("DeleteLaunchTemplate")
async def delete_launch_template(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    t = await cloud.launch_templates.delete(caller, template_ref(req))
    return {"LaunchTemplate": {**template_view(cloud, t), "Tags": []}}


@action("DeleteLaunchTemplateVersions")
async def delete_launch_template_versions(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    t, done, failed = await cloud.launch_templates.delete_versions(caller, template_ref(req), req["Versions"])
    who = {"LaunchTemplateId": t.id, "LaunchTemplateName": t.name}
    return {"SuccessfullyDeletedLaunchTemplateVersions": [{**who, "VersionNumber": n} for n in done],
            "UnsuccessfullyDeletedLaunchTemplateVersions": [
                {**who, **({"VersionNumber": int(v)} if v.isascii() and v.isdigit() and len(v) < 19 else {}),
                 "ResponseError": {"Code": code, "Message": message}} for v, code, message in failed]}


@action("GetLaunchTemplateData")
async def get_launch_template_data(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"LaunchTemplateData": data_view(cloud.launch_templates.instance_data(caller, req["InstanceId"]))}
