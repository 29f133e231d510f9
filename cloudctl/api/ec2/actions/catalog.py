"""DescribeRegions, DescribeAvailabilityZones, DescribeInstanceTypes, DescribeAccountAttributes."""
from __future__ import annotations

from typing import Any

from ....core.catalog import TypeInfo
from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.errors import CloudError
from .. import requests
from .registry import action


@action("DescribeRegions")
async def describe_regions(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    regions = cloud.catalog.describe_regions(caller, requests.query(req, "RegionNames"))
    return {"Regions": [{"RegionName": r, "Endpoint": cloud.endpoint, "OptInStatus": "opt-in-not-required"}
                        for r in regions]}


@action("DescribeAvailabilityZones")
async def describe_zones(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    zones = cloud.catalog.describe_zones(caller, requests.query(req, "ZoneNames"), tuple(req.get("ZoneIds") or ()))
    return {"AvailabilityZones": [{
        "ZoneName": z.name, "ZoneId": z.zone_id, "State": "available", "RegionName": z.region,
        "ZoneType": "availability-zone", "OptInStatus": "opt-in-not-required", "GroupName": z.region,
        "NetworkBorderGroup": z.region, "Messages": []} for z in zones]}


def _type_view(t: TypeInfo) -> dict[str, Any]:
    s = t.spec
    return {
        "InstanceType": t.name, "CurrentGeneration": True, "FreeTierEligible": False,
        "SupportedUsageClasses": ["on-demand"], "SupportedRootDeviceTypes": ["instance-store"],
        "SupportedVirtualizationTypes": ["hvm"], "BareMetal": False, "Hypervisor": "nitro",
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
        "VCpuInfo": {"DefaultVCpus": s.vcpus, "DefaultCores": s.vcpus, "DefaultThreadsPerCore": 1},
        "MemoryInfo": {"SizeInMiB": s.memory_mib},
        "InstanceStorageSupported": True,
        "InstanceStorageInfo": {"TotalSizeInGB": s.disk_gib,
                                "Disks": [{"SizeInGB": s.disk_gib, "Count": 1, "Type": "ssd"}]},
        "EbsInfo": {"EbsOptimizedSupport": "unsupported", "EncryptionSupport": "unsupported"},
        "NetworkInfo": {"NetworkPerformance": "Up to 10 Gigabit", "MaximumNetworkInterfaces": 1,
                        "Ipv4AddressesPerInterface": 1, "Ipv6Supported": False, "EnaSupport": "unsupported"},
        "PlacementGroupInfo": {"SupportedStrategies": []},
        "HibernationSupported": False, "BurstablePerformanceSupported": False,
        "DedicatedHostsSupported": False, "AutoRecoverySupported": False,
        "SupportedBootModes": ["legacy-bios"],
    }


@action("DescribeInstanceTypes")
async def describe_instance_types(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    types, token = cloud.catalog.describe_types(caller, requests.query(req, "InstanceTypes"))
    return {"InstanceTypes": [_type_view(t) for t in types], "NextToken": token}


@action("DescribeAccountAttributes")
async def describe_account_attributes(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    caller.check_dry_run()
    attrs = {
        "supported-platforms": ["VPC"],
        "default-vpc": [cloud.network.vpc_id],
        "max-instances": [str(max(int(c["total"]) for c in cloud.scheduler.capacity(by_zone=False)))],
        "vpc-max-security-groups-per-interface": ["5"],
        "max-elastic-ips": ["0"],
        "vpc-max-elastic-ips": ["0"],
    }
    names = req.get("AttributeNames") or list(attrs)
    for n in names:
        if n not in attrs:
            raise CloudError("InvalidParameterValue", f"Invalid attribute name: {n}")
    return {"AccountAttributes": [{"AttributeName": n, "AttributeValues": [{"AttributeValue": v}
                                                                          for v in attrs[n]]}
                                  for n in names]}
