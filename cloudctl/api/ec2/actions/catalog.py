"""DescribeRegions, DescribeAvailabilityZones, DescribeInstanceTypes, DescribeAccountAttributes."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ....config import InstanceType
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
    names = req.get("ZoneNames") or []
    if VERBOSE in names:   # Eucalyptus's keyword: the capacity listing for admins, dropped for others
        if cloud.catalog.is_admin(caller):
            caller.check_dry_run()
            return {"AvailabilityZones": _verbose_view(cloud)}
        req = {**req, "ZoneNames": [n for n in names if n != VERBOSE]}
    zones = cloud.catalog.describe_zones(caller, requests.query(req, "ZoneNames"), tuple(req.get("ZoneIds") or ()))
    return {"AvailabilityZones": [{
        "ZoneName": z.name, "ZoneId": z.zone_id, "State": "available", "RegionName": z.region,
        "ZoneType": "availability-zone", "OptInStatus": "opt-in-not-required", "GroupName": z.region,
        "NetworkBorderGroup": z.region, "Messages": []} for z in zones]}


VERBOSE = "verbose"
#: Eucalyptus's header row and per-type row (ClusterEndpoint.java): free, max, CPUs, RAM MiB, disk GiB.
_VM_TYPES_HEADER = "free / max   cpu   ram  disk"
_VM_TYPE_ROW = "%04d / %04d  %2d   %4d  %4d"


def _verbose_view(cloud: Cloud) -> list[dict[str, Any]]:
    """`euca-describe-availability-zones verbose`: per zone its entry, then `|- vm types` and one
    `|- <type>` entry per instance type, the text in ZoneName/ZoneState (wire `zoneState`)."""
    out = []
    host = urlsplit(cloud.endpoint).hostname or cloud.endpoint
    for zone, rows in cloud.catalog.zone_capacity(cloud.scheduler):
        out.append({"ZoneName": zone, "State": f"{host} arn:euca:eucalyptus:{zone}:cluster:{zone}-cc/",
                    "RegionName": ""})
        out.append({"ZoneName": "|- vm types", "State": _VM_TYPES_HEADER, "RegionName": ""})
        for r in rows:
            out.append({"ZoneName": f"|- {r.name}", "RegionName": "",
                        "State": _VM_TYPE_ROW % (r.free, r.max, r.vcpus, r.memory_mib, r.disk_gib)})
    return out


def _storage_view(s: InstanceType) -> dict[str, Any]:
    """Instance-store disks, as EC2 describes a type's (only for types that have them)."""
    if not s.ephemeral_gib:
        return {"InstanceStorageSupported": False}
    return {"InstanceStorageSupported": True, "InstanceStorageInfo": {
        "TotalSizeInGB": s.ephemeral_gib * s.ephemeral_disks,
        "Disks": [{"SizeInGB": s.ephemeral_gib, "Count": s.ephemeral_disks, "Type": "hdd"}],
        "NvmeSupport": "unsupported"}}


def _type_view(t: TypeInfo) -> dict[str, Any]:
    s = t.spec
    return {
        "InstanceType": t.name, "CurrentGeneration": True, "FreeTierEligible": False,
        "SupportedUsageClasses": ["on-demand"], "SupportedRootDeviceTypes": ["instance-store"],
        "SupportedVirtualizationTypes": ["hvm"], "BareMetal": False, "Hypervisor": "nitro",
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
        "VCpuInfo": {"DefaultVCpus": s.vcpus, "DefaultCores": s.vcpus, "DefaultThreadsPerCore": 1},
        "MemoryInfo": {"SizeInMiB": s.memory_mib},
        **_storage_view(s),
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
