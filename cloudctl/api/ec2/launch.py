"""RunInstances' request, as the core's `LaunchSpec`.

What is EC2's wire shape to refuse is refused here: parameters this cloud does not support, the
two ways of naming the network interface used together, a block device mapping with no Ebs
section, a tag specification for a resource type the launch does not make. What the request
names (images, subnets, groups, sizes, counts) the core checks, as it does for every front end.
"""
from __future__ import annotations

from typing import Any

from ...core.errors import CloudError
from ...core.launch import BlockDevice, LaunchSpec
from .requests import tag_specs

# Accepted in TagSpecifications: instance and volume tags are applied to what the launch makes;
# network interfaces are not resources of their own here, so their tags have nothing to carry them.
_TAGGABLE = ("instance", "volume", "network-interface")
_UNSUPPORTED = {
    "ElasticGpuSpecification": "elastic GPUs", "LaunchTemplate": "launch templates",
    "InstanceMarketOptions": "spot instances",
}


def launch_spec(req: dict[str, Any]) -> LaunchSpec:
    """The parsed RunInstances request as a LaunchSpec."""
    for key, what in _UNSUPPORTED.items():
        if req.get(key):
            raise CloudError("InvalidParameterValue", f"{key}: {what} are not supported by this cloud yet")
    image_id = req.get("ImageId")
    if not image_id:
        raise CloudError("MissingParameter", "The request must contain the parameter ImageId")
    lo, hi = req.get("MinCount"), req.get("MaxCount")
    if lo is None or hi is None:
        raise CloudError("MissingParameter", "The request must contain the parameters MinCount and MaxCount")
    subnet_id, private_ip, nic_groups, public_ip = _interface(req)
    tags = tag_specs(req, _TAGGABLE)
    return LaunchSpec(
        image_id=image_id, min_count=lo, max_count=hi, instance_type=req.get("InstanceType") or None,
        kernel_id=req.get("KernelId") or None, ramdisk_id=req.get("RamdiskId") or None,
        zone=(req.get("Placement") or {}).get("AvailabilityZone") or None,
        subnet_id=subnet_id, private_ip=private_ip, public_ip=public_ip,
        group_ids=tuple(req.get("SecurityGroupIds") or ()) + nic_groups,
        group_names=tuple(req.get("SecurityGroups") or ()),
        key_name=req.get("KeyName") or None, user_data=req.get("UserData") or None,
        block_devices=_block_devices(req.get("BlockDeviceMappings")),
        instance_tags=tags.get("instance", ()), volume_tags=tags.get("volume", ()),
        client_token=req.get("ClientToken"),
        shutdown_behavior=req.get("InstanceInitiatedShutdownBehavior") or "stop",
        disable_api_termination=bool(req.get("DisableApiTermination")))


def _interface(req: dict[str, Any]) -> tuple[str | None, str | None, tuple[str, ...], bool | None]:
    """(subnet, private address, groups, public address wanted): from SubnetId/PrivateIpAddress or
    one NetworkInterface (its AssociatePublicIpAddress; None: as the subnet maps them)."""
    nics = req.get("NetworkInterfaces") or []
    subnet_id, ip = req.get("SubnetId") or None, req.get("PrivateIpAddress")
    if not nics:
        return subnet_id, ip, (), None
    if subnet_id or ip:
        raise CloudError("InvalidParameterCombination",
                         "Network interfaces and an instance-level subnet ID or private IP address "
                         "may not be specified on the same request")
    if len(nics) > 1 or (nics[0].get("DeviceIndex") or 0) != 0:
        raise CloudError("InvalidParameterValue", "Instances in this cloud have one network interface (DeviceIndex 0)")
    nic = nics[0]
    for key in ("NetworkInterfaceId", "Ipv6Addresses", "SecondaryPrivateIpAddressCount"):
        if nic.get(key):
            raise CloudError("InvalidParameterValue", f"NetworkInterface.{key} is not supported by this cloud yet")
    ip = nic.get("PrivateIpAddress") or next(
        (a.get("PrivateIpAddress") for a in nic.get("PrivateIpAddresses") or [] if a.get("Primary")), None)
    public = nic.get("AssociatePublicIpAddress")
    return nic.get("SubnetId") or None, ip, tuple(nic.get("Groups") or ()), None if public is None else bool(public)


def _block_devices(mappings: list[dict[str, Any]] | None) -> tuple[BlockDevice, ...]:
    """The EBS mappings; those suppressing or naming instance-store devices make nothing."""
    out = []
    for m in mappings or ():
        device = m.get("DeviceName") or ""
        if m.get("NoDevice") is not None or m.get("VirtualName"):
            continue
        ebs = m.get("Ebs")
        if not ebs:
            raise CloudError("InvalidParameterValue", f"Block device mapping {device} needs an Ebs section")
        out.append(BlockDevice(device, ebs.get("VolumeSize"), ebs.get("VolumeType") or None,
                               ebs.get("SnapshotId") or None, ebs.get("DeleteOnTermination", True) is not False))
    return tuple(out)
