"""AWS::EC2::LaunchTemplate over core/launch_templates (its ClientToken makes a resumed create
answer the template it made)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import CloudError
from ...launch_templates import TemplateData, TemplateRef
from . import Ctx, Handler, Made, as_bool, gone, handler


def _data(d: Mapping[str, Any]) -> TemplateData:
    names = tuple(str(g) for g in d.get("SecurityGroups") or ())
    return TemplateData(image_id=d.get("ImageId"), instance_type=d.get("InstanceType"), key_name=d.get("KeyName"),
                        kernel_id=d.get("KernelId"), ramdisk_id=d.get("RamDiskId"),
                        zone=(d.get("Placement") or {}).get("AvailabilityZone"), user_data=d.get("UserData"),
                        group_ids=tuple(str(g) for g in d.get("SecurityGroupIds") or ()), group_names=names,
                        shutdown_behavior=d.get("InstanceInitiatedShutdownBehavior"),
                        disable_api_termination=as_bool(d.get("DisableApiTermination")))


@handler
class LaunchTemplate(Handler):
    type = "AWS::EC2::LaunchTemplate"
    attributes = frozenset({"LaunchTemplateId", "DefaultVersionNumber", "LatestVersionNumber"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        name = props.get("LaunchTemplateName") or ctx.name(128)
        t, v = await ctx.services.launch_templates.create(ctx.caller, name, None,
                                                          _data(props.get("LaunchTemplateData") or {}),
                                                          (), ctx.token, system_tags=ctx.system_tags)
        return Made(t.id, {"LaunchTemplateId": t.id, "DefaultVersionNumber": "1", "LatestVersionNumber": "1"})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.launch_templates.delete(ctx.caller, TemplateRef(template_id=physical))
        except CloudError as e:
            if not gone(e):
                raise
