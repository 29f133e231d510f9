"""VPC actions: the default VPC and its subnets (one per configured network)."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.network import Subnet
from .. import requests
from .registry import action

CLOUD_OWNER_ID = "000000000000"   # the VPC and subnets belong to the cloud, not to a user


def _subnet_view(cloud: Cloud, s: Subnet) -> dict[str, Any]:
    net = cloud.network
    return {
        "SubnetId": s.id, "State": "available", "VpcId": net.vpc_id, "CidrBlock": str(s.net),
        "AvailableIpAddressCount": net.available(s), "AvailabilityZone": s.zone,
        "AvailabilityZoneId": s.zone, "DefaultForAz": s.default_for_az, "MapPublicIpOnLaunch": s.map_public_ip,
        "MapCustomerOwnedIpOnLaunch": False, "OwnerId": CLOUD_OWNER_ID, "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [], "Ipv6Native": False, "EnableDns64": False,
        "SubnetArn": f"arn:aws:ec2:{cloud.config.region}:{CLOUD_OWNER_ID}:subnet/{s.id}",
        "Tags": [{"Key": "Name", "Value": s.name}],
        "PrivateDnsNameOptionsOnLaunch": {"HostnameType": "ip-name", "EnableResourceNameDnsARecord": False,
                                          "EnableResourceNameDnsAAAARecord": False},
    }


@action("DescribeSubnets")
async def describe_subnets(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    subnets, token = cloud.network.describe_subnets(caller, requests.query(req, "SubnetIds"))
    return {"Subnets": [_subnet_view(cloud, s) for s in subnets], "NextToken": token}


@action("DescribeVpcs")
async def describe_vpcs(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    net = cloud.network
    vpcs = net.describe_vpcs(caller, requests.query(req, "VpcIds"))
    cidr = str(net.vpc_cidr)
    return {"Vpcs": [{
        "VpcId": vid, "State": "available", "CidrBlock": cidr, "IsDefault": True, "InstanceTenancy": "default",
        "OwnerId": CLOUD_OWNER_ID, "DhcpOptionsId": "default",
        "CidrBlockAssociationSet": [{"AssociationId": vid.replace("vpc-", "vpc-cidr-assoc-"), "CidrBlock": cidr,
                                     "CidrBlockState": {"State": "associated"}}],
        "Ipv6CidrBlockAssociationSet": [], "Tags": []} for vid in vpcs]}
