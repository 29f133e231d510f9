"""AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress, DescribeAddresses."""
from __future__ import annotations

from typing import Any

from ....core.addresses import Association
from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.errors import CloudError
from ....store.records import Address
from ..requests import query, tags_for
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


def _check_border_group(cloud: Cloud, req: dict[str, Any], hint: str = "") -> None:
    """This cloud is one network border group, named as its region."""
    if req.get("NetworkBorderGroup") not in (None, "", cloud.config.region):
        raise CloudError("InvalidParameterValue",
                         f"The network border group '{req['NetworkBorderGroup']}' is invalid{hint}")


@action("AllocateAddress")
async def allocate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    if req.get("CustomerOwnedIpv4Pool") or req.get("IpamPoolId"):
        raise CloudError("InvalidParameterValue", "Customer-owned address pools are not supported by this cloud")
    if req.get("PublicIpv4Pool") not in (None, "", "amazon"):
        raise CloudError("InvalidParameterValue",
                         f"The public IPv4 pool '{req['PublicIpv4Pool']}' does not exist; use 'amazon' or none")
    _check_border_group(cloud, req, f"; this cloud has one, '{cloud.config.region}'")
    a = await cloud.addresses.allocate(caller, req.get("Domain"), req.get("Address"), tags_for(req, "elastic-ip"))
    return {"PublicIp": a.public_ip, "AllocationId": a.allocation_id, "Domain": a.domain,
            "PublicIpv4Pool": "amazon", "NetworkBorderGroup": cloud.config.region}


@action("AssociateAddress")
async def associate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    ask = Association(allocation_id=req.get("AllocationId"), public_ip=req.get("PublicIp"),
                      instance_id=req.get("InstanceId"), network_interface_id=req.get("NetworkInterfaceId"),
                      private_ip=req.get("PrivateIpAddress"), allow_reassociation=bool(req.get("AllowReassociation")))
    return {"AssociationId": (await cloud.addresses.associate(caller, ask)).association_id}


@action("DisassociateAddress")
async def disassociate_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.addresses.disassociate(caller, req.get("AssociationId"), req.get("PublicIp"))
    return {}


@action("ReleaseAddress")
async def release_address(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    _check_border_group(cloud, req)
    await cloud.addresses.release(caller, req.get("AllocationId"), req.get("PublicIp"))
    return {}


@action("DescribeAddresses")
async def describe_addresses(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    rows = cloud.addresses.describe(caller, query(req, "AllocationIds"), tuple(req.get("PublicIps") or ()))
    return {"Addresses": [address_view(cloud, a) for a in rows]}
