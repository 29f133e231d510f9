"""DescribeNetworkInterfaces: each instance's primary interface, as DescribeInstances shows it."""
from __future__ import annotations

from typing import Any

from ....core.addresses import public_dns
from ....core.cloud import Cloud
from ....core.compute import private_dns
from ....core.context import Caller
from ....core.instance_facts import InstanceFacts, facts_of
from ....core.interfaces import attachment_id
from ....core.network import interface_id
from ..requests import query
from .registry import action, ts


def interface_view(cloud: Cloud, f: InstanceFacts) -> dict[str, Any]:
    """The interface in the member order of EC2's DescribeNetworkInterfaces example."""
    i, eip = f.inst, f.address
    assert f.subnet is not None
    dns = private_dns(i, cloud.config.region) if i.private_ip else ""
    assoc = None
    if eip is not None and eip.launch:   # a launch's address is Amazon's, not an Elastic IP: no ids
        assoc = {"PublicIp": eip.public_ip, "PublicDnsName": public_dns(eip.public_ip, cloud.config.region),
                 "IpOwnerId": "amazon"}
    elif eip is not None:
        assoc = {"PublicIp": eip.public_ip, "PublicDnsName": public_dns(eip.public_ip, cloud.config.region),
                 "IpOwnerId": eip.owner, "AllocationId": eip.allocation_id, "AssociationId": eip.association_id}
    primary: dict[str, Any] = {"PrivateIpAddress": i.private_ip, "PrivateDnsName": dns, "Primary": True,
                               "Association": assoc}
    return {
        "NetworkInterfaceId": interface_id(i.id), "SubnetId": f.subnet.id, "VpcId": cloud.network.vpc_id,
        "AvailabilityZone": f.subnet.zone, "Description": "", "OwnerId": i.owner, "RequesterManaged": False,
        "Status": "in-use", "MacAddress": i.mac, "PrivateIpAddress": i.private_ip, "PrivateDnsName": dns,
        "SourceDestCheck": True, "Groups": [{"GroupId": g, "GroupName": n} for g, n in f.groups],
        "Attachment": {"AttachmentId": attachment_id(i.id), "InstanceId": i.id, "InstanceOwnerId": i.owner,
                       "DeviceIndex": 0, "Status": "attached", "AttachTime": ts(i.launch_time),
                       "DeleteOnTermination": True, "NetworkCardIndex": 0},
        "Association": assoc, "TagSet": [], "PrivateIpAddresses": [primary], "Ipv6Addresses": [],
        "InterfaceType": "interface", "Ipv4Prefixes": [], "Ipv6Prefixes": [],
    }


@action("DescribeNetworkInterfaces")
async def describe_network_interfaces(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    insts, token = cloud.interfaces.describe(caller, query(req, "NetworkInterfaceIds"))
    return {"NetworkInterfaces": [interface_view(cloud, f) for f in facts_of(cloud, insts)], "NextToken": token}
