"""What clients read about the default VPC besides DescribeVpcs: its attributes, route table,
internet gateways (none), DHCP options (none)."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.vpc import OWNER_ID, RouteTable
from ..requests import query
from .registry import action

_ATTRIBUTE_MEMBER = {"enableDnsSupport": "EnableDnsSupport", "enableDnsHostnames": "EnableDnsHostnames",
                     "enableNetworkAddressUsageMetrics": "EnableNetworkAddressUsageMetrics"}


@action("DescribeVpcAttribute")
async def describe_vpc_attribute(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    value = cloud.vpc.attribute(caller, req["VpcId"], req["Attribute"])
    return {"VpcId": req["VpcId"], _ATTRIBUTE_MEMBER[req["Attribute"]]: {"Value": value}}


def route_table_view(t: RouteTable) -> dict[str, Any]:
    return {
        "RouteTableId": t.id, "VpcId": t.vpc_id, "OwnerId": OWNER_ID,
        "Routes": [{"DestinationCidrBlock": r.destination, "GatewayId": r.gateway_id, "State": r.state,
                    "Origin": r.origin} for r in t.routes],
        "Associations": [{"RouteTableAssociationId": t.main_association_id, "RouteTableId": t.id, "Main": True,
                          "AssociationState": {"State": "associated"}}],
        "PropagatingVgws": [], "Tags": [],
    }


@action("DescribeRouteTables")
async def describe_route_tables(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"RouteTables": [route_table_view(t) for t in cloud.vpc.route_tables(caller, query(req, "RouteTableIds"))]}


@action("DescribeInternetGateways")
async def describe_internet_gateways(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    cloud.vpc.internet_gateways(caller, query(req, "InternetGatewayIds"))
    return {"InternetGateways": []}


@action("DescribeDhcpOptions")
async def describe_dhcp_options(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    cloud.vpc.dhcp_options(caller, query(req, "DhcpOptionsIds"))
    return {"DhcpOptions": []}
