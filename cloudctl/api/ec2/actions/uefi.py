"""GetInstanceUefiData: every instance here boots legacy BIOS (DescribeInstances says so in
CurrentInstanceBootMode), so none has a UEFI variable store: EC2 answers such an instance with
its id and no UefiData."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from .registry import action


@action("GetInstanceUefiData")
async def get_instance_uefi_data(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    inst = cloud.compute.owned(caller, [req["InstanceId"]])[0]
    caller.check_dry_run()
    return {"InstanceId": inst.id}
