"""DescribeAddressesAttribute: the Elastic IPs' reverse DNS names (none are set in this cloud)."""
from __future__ import annotations

from typing import Any

from ....core import address_attributes
from ....core.cloud import Cloud
from ....core.context import Caller
from ..requests import query
from .registry import action


@action("DescribeAddressesAttribute")
async def describe_addresses_attribute(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    rows, token = address_attributes.describe(cloud.addresses, caller, req.get("Attribute"),
                                              query(req, "AllocationIds"))
    return {"Addresses": [{"PublicIp": a.public_ip, "AllocationId": a.allocation_id} for a in rows],
            "NextToken": token}
