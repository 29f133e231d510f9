"""ImportImage, DescribeImportImageTasks, CancelImportTask."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.imports import FORMATS
from ....store.records import ImportTask
from .registry import action, tag_list


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
    view = task_view(cloud, await cloud.imports.start(caller, req))
    del view["BootMode"]    # not in ImportImage's result shape
    return view


@action("DescribeImportImageTasks")
async def describe_import_image_tasks(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    tasks, token = cloud.imports.describe(caller, req)
    return {"ImportImageTasks": [task_view(cloud, t) for t in tasks], "NextToken": token}


@action("CancelImportTask")
async def cancel_import_task(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    old, new = await cloud.imports.cancel(caller, req.get("ImportTaskId") or "", req.get("CancelReason"))
    return {"ImportTaskId": new.id, "PreviousState": old.state, "State": new.state}
