"""AWS::EC2::Volume and VolumeAttachment over core/volumes (CreateVolume's ClientToken makes a
resumed create return the same volume)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import CloudError
from ...volumes import VolumeRequest
from . import Ctx, Failed, Handler, Made, as_int, gone, handler, need, until

WAIT_S = 300.0


def _volume(ctx: Ctx, vid: str) -> Any:
    return ctx.services.volumes.table.get(vid)


@handler
class Volume(Handler):
    type = "AWS::EC2::Volume"
    attributes = frozenset({"VolumeId"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        tags = ctx.system_tags + tuple((str(t["Key"]), str(t.get("Value", ""))) for t in props.get("Tags") or ())
        v = await ctx.services.volumes.create(ctx.caller, VolumeRequest(
            zone=str(need(props, "AvailabilityZone")), size=as_int(props, "Size"),
            snapshot_id=props.get("SnapshotId"), volume_type=props.get("VolumeType"), iops=as_int(props, "Iops"),
            client_token=ctx.token, tags=tags))

        def ready() -> bool:
            row = _volume(ctx, v.id)
            if row is None or row.state == "error":
                raise Failed(f"Volume {v.id} failed: {getattr(row, 'state_message', None) or 'gone'}")
            return bool(row.state in ("available", "in-use"))

        await until(ready, WAIT_S, f"Volume {v.id}")
        return Made(v.id, {"VolumeId": v.id})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.volumes.delete(ctx.caller, physical)
        except CloudError as e:
            if not gone(e):
                raise


@handler
class VolumeAttachment(Handler):
    type = "AWS::EC2::VolumeAttachment"

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        vid, iid = str(need(props, "VolumeId")), str(need(props, "InstanceId"))
        row = _volume(ctx, vid)
        if row is None or row.instance_id != iid:   # (else attached before a restart)
            await ctx.services.volumes.attach(ctx.caller, vid, iid, str(need(props, "Device")))

        def attached() -> bool:
            r = _volume(ctx, vid)
            if r is None or r.instance_id != iid:
                raise Failed(f"Volume {vid} is not attached to {iid}")
            return bool(r.attach_state == "attached")

        await until(attached, WAIT_S, f"Attachment of {vid}")
        return Made(vid, {"_instance": iid})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        row = _volume(ctx, physical)
        if row is None or row.instance_id is None:
            return
        try:
            await ctx.services.volumes.detach(ctx.caller, physical)
        except CloudError as e:
            if not gone(e):
                raise
        await until(lambda: getattr(_volume(ctx, physical), "instance_id", None) is None, WAIT_S,
                    f"Detachment of {physical}")
