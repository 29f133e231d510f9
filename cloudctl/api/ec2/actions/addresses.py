"""AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress, DescribeAddresses."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....store.records import Address
from .registry import action, tag_list


def address_view(cloud: Cloud, a: Address) -> dict[str, Any]:
    return {
        "PublicIp": a.public_ip, "AllocationId": a.allocation_id, "Domain": a.domain,
        "AssociationId": a.association_id, "InstanceId": a.instance_id, "PrivateIpAddress": a.private_ip,
        "NetworkInterfaceId": a.network_interface_id,
        "NetworkInterfaceOwnerId": a.owner if a.network_interface_id else None,
        "PublicIpv4Pool": "amazon", "NetworkBorderGroup": cloud.config.region,
        "Tags": tag_list(cloud, a.allocation_id),
    }


@action("AllocateAddress")
async def allocate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    a = await cloud.addresses.allocate(caller, req)
    return {"PublicIp": a.public_ip, "AllocationId": a.allocation_id, "Domain": a.domain,
            "PublicIpv4Pool": "amazon", "NetworkBorderGroup": cloud.config.region}


@action("AssociateAddress")
async def associate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"AssociationId": (await cloud.addresses.associate(caller, req)).association_id}


@action("DisassociateAddress")
async def disassociate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.addresses.disassociate(caller, req)
    return {}


@action("ReleaseAddress")
async def release_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.addresses.release(caller, req)
    return {}


@action("DescribeAddresses")
async def describe_addresses(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"Addresses": [address_view(cloud, a) for a in cloud.addresses.describe(caller, req)]}
