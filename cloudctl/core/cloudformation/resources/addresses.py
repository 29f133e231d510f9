"""AWS::EC2::EIP and EIPAssociation over core/addresses. An address is found again after a restart
by the stack's tags on it (AllocateAddress has no ClientToken)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...addresses import Association
from ...errors import CloudError
from . import LOGICAL_ID, STACK_ID, Ctx, Failed, Handler, Made, gone, handler


def _made_before(ctx: Ctx) -> Any:
    tags = ctx.services.tags
    ids = tags.resources_with(STACK_ID, {ctx.stack_id}) & tags.resources_with(LOGICAL_ID, {ctx.logical})
    for a in ctx.services.addresses.table.values():
        if a.allocation_id in ids and a.owner == ctx.owner:
            return a
    return None


@handler
class Eip(Handler):
    type = "AWS::EC2::EIP"
    attributes = frozenset({"AllocationId", "PublicIp"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        addrs = ctx.services.addresses
        a = _made_before(ctx) or await addrs.allocate(ctx.caller, props.get("Domain"), None, ctx.system_tags)
        if props.get("InstanceId") and a.instance_id != props["InstanceId"]:
            a = await addrs.associate(ctx.caller, Association(allocation_id=a.allocation_id,
                                                              instance_id=str(props["InstanceId"])))
        return Made(a.public_ip, {"AllocationId": a.allocation_id, "PublicIp": a.public_ip})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        addrs = ctx.services.addresses
        try:
            a = addrs.table.get(physical)
            if a is not None and a.association_id:
                await addrs.disassociate(ctx.caller, a.association_id, None)
            await addrs.release(ctx.caller, ctx.attributes.get("AllocationId"), None)
        except CloudError as e:
            if not gone(e):
                raise


@handler
class EipAssociation(Handler):
    type = "AWS::EC2::EIPAssociation"

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        addrs = ctx.services.addresses
        alloc, ip, iid = props.get("AllocationId"), props.get("EIP"), props.get("InstanceId")
        if not (alloc or ip) or not (iid or props.get("NetworkInterfaceId")):
            raise Failed("Property AllocationId or EIP, and InstanceId or NetworkInterfaceId, must be specified.")
        a = await addrs.associate(ctx.caller, Association(
            allocation_id=alloc, public_ip=None if alloc else ip, instance_id=iid,
            network_interface_id=props.get("NetworkInterfaceId"), private_ip=props.get("PrivateIpAddress"),
            allow_reassociation=True))
        return Made(a.association_id or a.public_ip, {"_ip": a.public_ip})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.addresses.disassociate(ctx.caller, physical, None)
        except CloudError as e:
            if not gone(e) and e.code != "InvalidAssociationID.NotFound":
                raise
