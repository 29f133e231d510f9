"""ImportImage, DescribeImportImageTasks, CancelImportTask."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.errors import CloudError
from ....core.imports import FORMATS, ImportRequest
from ....store.records import ImportTask
from .. import requests
from .registry import action, tag_list

# ImportImage members this cloud refuses whatever their value.
_UNSUPPORTED = {"Encrypted": "encrypted images", "KmsKeyId": "encryption keys",
                "LicenseSpecifications": "license configurations", "UsageOperation": "usage operations"}


def task_view(cloud: Cloud, t: ImportTask) -> dict[str, Any]:
    done, total = cloud.imports.progress.get(t.id, (0, None))
    size = t.size if t.size is not None else total
    snapshot: dict[str, Any] = {
        "DeviceName": "/dev/vda", "Url": t.url, "Description": t.description,
        "Format": t.disk_format or _probed_format(cloud, t),
        "Status": {"active": "active", "completed": "completed"}.get(t.state, "deleted"),
    }
    if size is not None:
        snapshot["DiskImageSize"] = float(size)
    progress = cloud.imports.progress_of(t)
    if progress is not None:
        snapshot["Progress"] = progress
    return {
        "ImportTaskId": t.id, "Architecture": t.architecture, "Description": t.description,
        "Platform": t.platform, "Status": t.state, "StatusMessage": t.status_message or None,
        "Progress": progress, "ImageId": t.image_id, "Encrypted": False, "Hypervisor": "xen",
        "SnapshotDetails": [snapshot], "Tags": tag_list(cloud, t.id), "BootMode": "legacy-bios",
    }


def _probed_format(cloud: Cloud, t: ImportTask) -> str | None:
    image = cloud.images.table.get(t.image_id) if t.image_id else None
    if image is None:
        return None
    return {v: k for k, v in FORMATS.items()}.get(image.disk_format, image.disk_format.upper())


@action("ImportImage")
async def import_image(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    view = task_view(cloud, await cloud.imports.start(caller, _import_request(req)))
    del view["BootMode"]    # not in ImportImage's result shape
    return view


def _import_request(req: dict[str, Any]) -> ImportRequest:
    """ImportImage's one disk from a URL; what this cloud cannot import is refused here."""
    for key, what in _UNSUPPORTED.items():
        if req.get(key):
            raise CloudError("InvalidParameterValue", f"{key}: {what} are not supported by this cloud")
    disks = req.get("DiskContainers") or []
    if not disks:
        raise CloudError("MissingParameter", "The request must contain the parameter DiskContainers")
    if len(disks) > 1:
        raise CloudError("InvalidParameterValue", "Only one disk can be imported per image in this cloud")
    disk = disks[0]
    if disk.get("SnapshotId"):
        raise CloudError("InvalidParameterValue", "Importing from a snapshot is not supported; give a Url")
    if disk.get("UserBucket") and not disk.get("Url"):
        raise CloudError("InvalidParameterValue",
                         "This cloud has no S3: give the disk image's http(s) Url instead of a UserBucket")
    if not disk.get("Url"):
        raise CloudError("MissingParameter", "The disk container must contain the parameter Url")
    return ImportRequest(
        url=disk["Url"], disk_format=disk.get("Format"),
        description=req.get("Description") or disk.get("Description") or "",
        architecture=req.get("Architecture") or "x86_64", platform=req.get("Platform") or "Linux",
        client_token=req.get("ClientToken"), tags=requests.tags_for(req, "import-image-task"))


@action("DescribeImportImageTasks")
async def describe_import_image_tasks(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    tasks, token = cloud.imports.describe(caller, requests.query(req, "ImportTaskIds"))
    return {"ImportImageTasks": [task_view(cloud, t) for t in tasks], "NextToken": token}


@action("CancelImportTask")
async def cancel_import_task(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    old, new = await cloud.imports.cancel(caller, req.get("ImportTaskId") or "", req.get("CancelReason"))
    return {"ImportTaskId": new.id, "PreviousState": old.state, "State": new.state}
