"""RegisterImage, DescribeImages, DeregisterImage."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.errors import CloudError
from ....core.images import CLOUD_OWNER, ROOT_DEVICE_NAME, ImageRegistration, Images, root_device_type
from ....core.instance_store import DEFAULT_DEVICE
from ....store.records import Image
from .. import requests
from .registry import action, tag_list, ts


def image_view(cloud: Cloud, im: Image) -> dict[str, Any]:
    return {
        "ImageId": im.id, "ImageLocation": f"{im.owner}/{im.name}", "State": im.state,
        "OwnerId": im.owner, "CreationDate": ts(im.created).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "Public": im.public, "Architecture": im.architecture, "ImageType": im.image_type,
        "KernelId": im.kernel_id, "RamdiskId": im.ramdisk_id,
        "Name": im.name, "Description": im.description, "RootDeviceType": root_device_type(im),
        "RootDeviceName": ROOT_DEVICE_NAME, "VirtualizationType": "hvm", "Hypervisor": "xen",
        "BlockDeviceMappings": _mappings(cloud, im),
        "Tags": tag_list(cloud, im.id), "PlatformDetails": "Linux/UNIX",
        "UsageOperation": "RunInstances", "BootMode": "legacy-bios",
        "ImageOwnerAlias": CLOUD_OWNER if im.owner == CLOUD_OWNER else None,
        "DeprecationTime": (ts(im.deprecation_time).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                            if im.deprecation_time is not None else None),
    }


def _mappings(cloud: Cloud, im: Image) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if root_device_type(im) == "ebs":
        out.append({"DeviceName": ROOT_DEVICE_NAME, "Ebs": {
            "DeleteOnTermination": True, "VolumeType": "gp2", "Encrypted": False,
            "VolumeSize": Images.min_root_gib(im)}})
    if cloud.catalog.has_instance_store and im.image_type == "machine":
        out.append({"DeviceName": DEFAULT_DEVICE, "VirtualName": "ephemeral0"})
    return out


@action("RegisterImage")
async def register_image(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    location = req.get("ImageLocation")
    if req.get("BlockDeviceMappings") and not location:
        raise CloudError("InvalidParameterValue",
                         "Registering from snapshots is not supported; give ImageLocation, a file in the image store")
    reg = ImageRegistration(
        name=req.get("Name") or "", location=location, description=req.get("Description") or "",
        architecture=req.get("Architecture") or "x86_64", kernel_id=req.get("KernelId"),
        ramdisk_id=req.get("RamdiskId"), tags=requests.tags_for(req, "image"))
    im = await cloud.images.register(caller, reg)
    return {"ImageId": im.id}


@action("DescribeImages")
async def describe_images(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    images, token = cloud.images.describe(caller, requests.query(req, "ImageIds"), tuple(req.get("Owners") or ()),
                                          bool(req.get("IncludeDeprecated")))
    return {"Images": [image_view(cloud, i) for i in images], "NextToken": token}


@action("DeregisterImage")
async def deregister_image(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.images.deregister(caller, req["ImageId"])
    return {}


@action("CreateImage")
async def create_image(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    tags = requests.tag_specs(req, ("image", "snapshot")).get("image", ())
    im = await cloud.compute.create_image(caller, req["InstanceId"], req.get("Name") or "",
                                          req.get("Description") or "", bool(req.get("NoReboot")), tags)
    return {"ImageId": im.id}
