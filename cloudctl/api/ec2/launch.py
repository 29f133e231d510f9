"""RunInstances' request, as the core's `LaunchSpec`; a launch template's settings (and those a
RunInstances from a template gives itself), as the core's `TemplateData`.

What is EC2's wire shape to refuse is refused here: parameters this cloud does not support, the
two ways of naming the network interface used together, a block device mapping with no Ebs
section, a tag specification for a resource type the launch does not make. What the request
names (images, subnets, groups, sizes, counts) the core checks, as it does for every front end.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...core.errors import CloudError
from ...core.launch import BlockDevice, DeviceMapping, LaunchSpec
from ...core.launch_templates import TemplateData, TemplateRef
from ...core.tags import Tags
from .requests import Pair, tag_specs

# Accepted in TagSpecifications: instance and volume tags are applied to what the launch makes;
# network interfaces are not resources of their own here, so their tags have nothing to carry them.
_TAGGABLE = ("instance", "volume", "network-interface")
_UNSUPPORTED = {
    "ElasticGpuSpecification": "elastic GPUs", "InstanceMarketOptions": "spot instances",
}


def launch_spec(req: dict[str, Any]) -> LaunchSpec:
    """The parsed RunInstances request (one naming no LaunchTemplate) as a LaunchSpec."""
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
        device_mappings=_device_mappings(req.get("BlockDeviceMappings")),
        instance_tags=tags.get("instance", ()), volume_tags=tags.get("volume", ()),
        client_token=req.get("ClientToken"),
        shutdown_behavior=req.get("InstanceInitiatedShutdownBehavior") or "stop",
        disable_api_termination=bool(req.get("DisableApiTermination")))


# -- the usual RunInstances form, read at once ----------------------------------------------------------
# Each field name the quick read knows, written as clients write it (indices from 1, no leading zero,
# up to the bounds below), with what it sets: one dict lookup a field. Any other name: the general path.
_PLAIN, _COUNT, _FLAG, _GROUP, _NAME, _RTYPE, _TAG = range(7)
_FIELDS: dict[str, tuple[Any, ...]] = {
    # wire name: (_PLAIN, LaunchSpec field, whether `launch_spec` takes it as given, not `or None`)
    "ImageId": (_PLAIN, "image_id", True), "InstanceType": (_PLAIN, "instance_type", False),
    "KernelId": (_PLAIN, "kernel_id", False), "RamdiskId": (_PLAIN, "ramdisk_id", False),
    "Placement.AvailabilityZone": (_PLAIN, "zone", False), "SubnetId": (_PLAIN, "subnet_id", False),
    "PrivateIpAddress": (_PLAIN, "private_ip", True), "KeyName": (_PLAIN, "key_name", False),
    "UserData": (_PLAIN, "user_data", False), "ClientToken": (_PLAIN, "client_token", True),
    "InstanceInitiatedShutdownBehavior": (_PLAIN, "shutdown_behavior", False),
    "MinCount": (_COUNT, 0), "MaxCount": (_COUNT, 1), "DryRun": (_FLAG, 0), "DisableApiTermination": (_FLAG, 1),
}
_FIELDS.update({f"SecurityGroupId.{n}": (_GROUP, n) for n in range(1, 17)})
_FIELDS.update({f"SecurityGroup.{n}": (_NAME, n) for n in range(1, 17)})
_FIELDS.update({f"TagSpecification.{n}.ResourceType": (_RTYPE, n) for n in range(1, 4)})
_FIELDS.update({f"TagSpecification.{n}.Tag.{m}.{part}": (_TAG, n, m, part == "Value")
                for n in range(1, 4) for m in range(1, 17) for part in ("Key", "Value")})
_BOOL = {"true": True, "false": False}


def flat_spec(params: dict[str, str]) -> tuple[LaunchSpec, bool] | None:
    """`read_flat`'s answer from a function generated once per form *shape* (its field names in
    their order: a client's launches differ in values only), which reads each field by its name
    where `read_flat` looks every name up and branches on its kind: the same checks on the
    values, the same spec (`tests/test_launch_form.py` holds the two to the same answer)."""
    names = tuple(params)
    plan = _plans.get(names)
    if plan is None:
        plan = _plan(names)
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[names] = plan
    return plan(params)


def read_flat(params: dict[str, str]) -> tuple[LaunchSpec, bool] | None:
    """A usual RunInstances form (no Action, Version or auth fields), read in one pass: the spec and
    the DryRun flag that `Protocol.parse` and `launch_spec` give it, or None for anything else.

    What this reads: the image, type, counts, zone, subnet, address, key, user data, token,
    shutdown behaviour, termination protection, DryRun, up to 16 groups by id and by name
    (`SecurityGroupId.N`, `SecurityGroup.N`) and up to 3 TagSpecifications of 16 tags: what
    boto3, the CLI and the scale bench send. A field it does not know (or written otherwise: a
    leading zero, an index past those), a count that is not plain digits (or over 9 of them), a
    flag not `true`/`false` in any case, or a request `launch_spec` would refuse: None, and the
    general path parses and answers it as before (so every refusal is the general path's).
    `tests/test_launch_form.py` holds the two to the same spec."""
    plain: dict[str, Any] = {}
    counts = [-1, -1]
    flags = [False, False]
    groups: dict[int, str] = {}
    names: dict[int, str] = {}
    specs: dict[int, list[Any]] = {}   # TagSpecification index -> [resource type, {tag index: [key, value]}]
    get = _FIELDS.get
    for key, value in params.items():
        field = get(key)
        if field is None:
            return None
        kind = field[0]
        if kind == _TAG:
            spec = specs.get(field[1])
            if spec is None:
                spec = specs[field[1]] = [None, {}]
            pair = spec[1].get(field[2])
            if pair is None:
                pair = spec[1][field[2]] = [None, None]
            pair[field[3]] = value
        elif kind == _PLAIN:
            plain[field[1]] = value if field[2] else value or None
        elif kind == _COUNT:
            if not value.isdigit() or not value.isascii() or len(value) > 9:
                return None   # (signs, spaces, 10 digits and more: as `_to_int` decides)
            counts[field[1]] = int(value)
        elif kind == _GROUP:
            groups[field[1]] = value
        elif kind == _RTYPE:
            spec = specs.get(field[1])
            if spec is None:
                specs[field[1]] = [value, {}]
            else:
                spec[0] = value
        elif kind == _FLAG:
            flag = _BOOL.get(value.lower())
            if flag is None:
                return None
            flags[field[1]] = flag
        else:
            names[field[1]] = value
    lo, hi = counts
    if lo < 0 or hi < 0 or not plain.get("image_id"):
        return None
    tags: dict[str, list[Pair]] = {}
    try:
        for n in sorted(specs):
            rtype, tagged = specs[n]
            if rtype not in _TAGGABLE:
                return None
            tags.setdefault(rtype, []).extend(   # (as `requests.pairs` reads EC2's tags)
                Tags.validate_pairs([(k, v or "") for k, v in (tagged[m] for m in sorted(tagged))]))
    except CloudError:
        return None
    plain["shutdown_behavior"] = plain.get("shutdown_behavior") or "stop"
    return LaunchSpec(
        min_count=lo, max_count=hi, group_ids=tuple(groups[n] for n in sorted(groups)),
        group_names=tuple(names[n] for n in sorted(names)), instance_tags=tuple(tags.get("instance", ())),
        volume_tags=tuple(tags.get("volume", ())), disable_api_termination=flags[1], **plain), flags[0]


_MAX_PLANS = 64   # form shapes' functions kept (forgotten all at once past this)
_plans: dict[tuple[str, ...], Callable[[dict[str, str]], tuple[LaunchSpec, bool] | None]] = {}


def _never(params: dict[str, str]) -> None:
    """The plan of a shape `read_flat` never reads (an unknown field, a count or the image
    missing, a tag specification without its type or a tag without its key)."""
    return None


def _plan(names: tuple[str, ...]) -> Callable[[dict[str, str]], tuple[LaunchSpec, bool] | None]:
    """`read_flat` for forms of these field names, in one generated function (`_never` where
    the names alone decide that it answers None)."""
    fields = [_FIELDS.get(name) for name in names]
    if None in fields:
        return _never
    by_kind: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}
    for name, field in zip(names, fields):
        assert field is not None
        by_kind.setdefault(field[0], []).append((name, field))
    counts = {field[1]: name for name, field in by_kind.get(_COUNT, ())}
    plain = {field[1]: (name, field[2]) for name, field in by_kind.get(_PLAIN, ())}
    if set(counts) != {0, 1} or "image_id" not in plain:
        return _never
    flags = {field[1]: name for name, field in by_kind.get(_FLAG, ())}
    groups = sorted((field[1], name) for name, field in by_kind.get(_GROUP, ()))
    group_names = sorted((field[1], name) for name, field in by_kind.get(_NAME, ()))
    rtypes = {field[1]: name for name, field in by_kind.get(_RTYPE, ())}
    specs: dict[int, dict[int, list[str | None]]] = {}
    for name, field in by_kind.get(_TAG, ()):
        specs.setdefault(field[1], {}).setdefault(field[2], [None, None])[field[3]] = name
    if any(n not in rtypes or any(pair[0] is None for pair in tagged.values()) for n, tagged in specs.items()):
        return _never   # (a tag specification without its type, a tag without its key: refused)
    lines = ["def plan(p):", f"    image_id = p[{plain['image_id'][0]!r}]",
             "    if not image_id:", "        return None"]
    for n in (0, 1):
        lines += [f"    c{n} = p[{counts[n]!r}]",
                  f"    if not c{n}.isdigit() or not c{n}.isascii() or len(c{n}) > 9:", "        return None"]
    for n in (0, 1):
        if n in flags:
            lines += [f"    f{n} = _BOOL.get(p[{flags[n]!r}].lower())", f"    if f{n} is None:", "        return None"]
        else:
            lines.append(f"    f{n} = False")
    args = ["min_count=int(c0)", "max_count=int(c1)", "image_id=image_id", "disable_api_termination=f1",
            f"group_ids=({''.join(f'p[{name!r}], ' for _, name in groups)})",
            f"group_names=({''.join(f'p[{name!r}], ' for _, name in group_names)})"]
    for attr, (name, as_is) in plain.items():
        if attr == "image_id":
            continue
        value = f"p[{name!r}]" if as_is else f"(p[{name!r}] or None)"
        args.append(f"{attr}={value} or 'stop'" if attr == "shutdown_behavior" else f"{attr}={value}")
    if "shutdown_behavior" not in plain:
        args.append("shutdown_behavior='stop'")
    if specs or rtypes:
        lines.append("    tags = {}")
        for n in sorted(rtypes):
            tagged = specs.get(n, {})
            pairs = ", ".join(f"(p[{key!r}], " + (f"p[{value!r}] or ''" if value is not None else "''") + ")"
                              for key, value in (tagged[m] for m in sorted(tagged)))
            lines += [f"    r = p[{rtypes[n]!r}]", "    if r not in _TAGGABLE:", "        return None",
                      "    try:", f"        tags.setdefault(r, []).extend(_validate([{pairs}]))",
                      "    except CloudError:", "        return None"]
        args += ["instance_tags=tuple(tags.get('instance', ()))", "volume_tags=tuple(tags.get('volume', ()))"]
    lines.append(f"    return LaunchSpec({', '.join(args)}), f0")
    ns: dict[str, Any] = {"_BOOL": _BOOL, "_TAGGABLE": _TAGGABLE, "_validate": Tags.validate_pairs,
                          "CloudError": CloudError, "LaunchSpec": LaunchSpec}
    exec(compile("\n".join(lines), "<cloudctl.api.ec2.launch form plan>", "exec"), ns)
    plan: Callable[[dict[str, str]], tuple[LaunchSpec, bool] | None] = ns["plan"]
    return plan


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


def _device_mappings(mappings: list[dict[str, Any]] | None) -> tuple[DeviceMapping, ...]:
    """The mappings naming instance-store disks (VirtualName) or leaving a device out (NoDevice);
    one that also has an Ebs section, or both, is malformed."""
    out = []
    for m in mappings or ():
        virtual, no_device = m.get("VirtualName") or None, m.get("NoDevice") is not None
        if virtual is None and not no_device:
            continue
        device = m.get("DeviceName") or ""
        if m.get("Ebs") or (virtual is not None and no_device):
            raise CloudError("InvalidBlockDeviceMapping", f"The block device mapping for {device or '(no device)'} "
                             f"may give only one of Ebs, VirtualName and NoDevice")
        if not device:
            raise CloudError("InvalidBlockDeviceMapping", "A block device mapping needs a DeviceName")
        out.append(DeviceMapping(device, virtual))
    return tuple(out)


# -- launch templates --------------------------------------------------------------------------------
# Members of RequestLaunchTemplateData cloudctl carries (read in `template_data`).
_TEMPLATE_MEMBERS = frozenset({
    "ImageId", "InstanceType", "KeyName", "KernelId", "RamDiskId", "Placement", "UserData", "SecurityGroupIds",
    "SecurityGroups", "NetworkInterfaces", "BlockDeviceMappings", "TagSpecifications",
    "InstanceInitiatedShutdownBehavior", "DisableApiTermination"})
# Members accepted and not kept because they ask for what every instance here is anyway (no EBS
# optimisation, no detailed monitoring, hibernation or enclaves, no CPU credits to run out of,
# the metadata service open to IMDSv1 and v2, default tenancy and recovery). Any other value of
# them, and any member in neither list, is refused: a template never drops a setting silently.
_HARMLESS: dict[str, Any] = {
    "EbsOptimized": lambda v: v is False,
    "DisableApiStop": lambda v: v is False,
    "Monitoring": lambda v: not v.get("Enabled") and not v.get("MetricCategoryIds"),
    "HibernationOptions": lambda v: not v.get("Configured"),
    "EnclaveOptions": lambda v: not v.get("Enabled"),
    "CreditSpecification": lambda v: v.get("CpuCredits") in ("standard", "unlimited"),
    "MetadataOptions": lambda v: v.get("HttpTokens") in (None, "optional") and v.get("HttpEndpoint") in
    (None, "enabled") and v.get("HttpProtocolIpv6") in (None, "disabled") and v.get("InstanceMetadataTags") in
    (None, "disabled"),
    "MaintenanceOptions": lambda v: v.get("AutoRecovery") in (None, "default"),
}
_PLACEMENT = {"AvailabilityZone": None, "Tenancy": "default", "GroupName": ""}
_NIC_MEMBERS = frozenset({"DeviceIndex", "SubnetId", "Groups", "AssociatePublicIpAddress", "PrivateIpAddress",
                          "PrivateIpAddresses", "NetworkInterfaceId", "Ipv6Addresses",
                          "SecondaryPrivateIpAddressCount"})   # (the last three refused by _interface)
# Interface members that ask for what a launch's interface is anyway: deleted with the instance,
# a plain interface on network card 0, no IPv6.
_NIC_HARMLESS: dict[str, Any] = {
    "DeleteOnTermination": lambda v: v is True, "InterfaceType": lambda v: v == "interface",
    "NetworkCardIndex": lambda v: v == 0, "Ipv6AddressCount": lambda v: v == 0,
    "SecondaryPrivateIpAddressCount": lambda v: v == 0, "Description": lambda v: v == "",
}
_EBS_HARMLESS: dict[str, Any] = {"Encrypted": lambda v: v is False}
_EBS_MEMBERS = frozenset({"VolumeSize", "VolumeType", "SnapshotId", "DeleteOnTermination"})


def _refuse_unknown(where: str, given: dict[str, Any], known: frozenset[str], harmless: dict[str, Any]) -> None:
    for key, value in given.items():
        if key in known or value is None or value == [] or value == {}:
            continue
        check = harmless.get(key)
        if check is None or not check(value):
            raise CloudError("InvalidParameterValue",
                             f"{where}{key}={value!r} is not supported by this cloud in a launch template")


def template_data(data: dict[str, Any] | None) -> TemplateData:
    """CreateLaunchTemplate(Version)'s LaunchTemplateData as the core's TemplateData; a member this
    cloud cannot honour is refused (see _HARMLESS for those accepted as no-ops)."""
    data = data or {}
    _refuse_unknown("LaunchTemplateData.", data, _TEMPLATE_MEMBERS, _HARMLESS)
    placement = data.get("Placement") or {}
    for key, value in placement.items():
        if key not in _PLACEMENT or (_PLACEMENT[key] is not None and value not in (None, _PLACEMENT[key])):
            raise CloudError("InvalidParameterValue",
                             f"LaunchTemplateData.Placement.{key}={value!r} is not supported by this cloud")
    for nic in data.get("NetworkInterfaces") or ():
        _refuse_unknown("LaunchTemplateData.NetworkInterface.", nic, _NIC_MEMBERS, _NIC_HARMLESS)
    for m in data.get("BlockDeviceMappings") or ():
        _refuse_unknown(f"LaunchTemplateData.BlockDeviceMapping({m.get('DeviceName')}).Ebs.", m.get("Ebs") or {},
                        _EBS_MEMBERS, _EBS_HARMLESS)
    if data.get("NetworkInterfaces") and (data.get("SecurityGroupIds") or data.get("SecurityGroups")):
        raise CloudError("InvalidParameterCombination", "Network interfaces and an instance-level security "
                         "groups may not be specified on the same request")
    return _settings(data, data.get("RamDiskId"), ("instance", "volume"))


def request_data(req: dict[str, Any]) -> TemplateData:
    """The settings a RunInstances request naming a LaunchTemplate gives itself (over the template's)."""
    for key, what in _UNSUPPORTED.items():
        if req.get(key):
            raise CloudError("InvalidParameterValue", f"{key}: {what} are not supported by this cloud yet")
    return _settings(req, req.get("RamdiskId"), _TAGGABLE)


def template_ref(spec: dict[str, Any]) -> TemplateRef:
    """A LaunchTemplate(Specification) member, or an action's own LaunchTemplateId/-Name."""
    return TemplateRef(spec.get("LaunchTemplateId") or None, spec.get("LaunchTemplateName") or None)


def counts(req: dict[str, Any]) -> tuple[int, int]:
    lo, hi = req.get("MinCount"), req.get("MaxCount")
    if lo is None or hi is None:
        raise CloudError("MissingParameter", "The request must contain the parameters MinCount and MaxCount")
    return lo, hi


def _settings(req: dict[str, Any], ramdisk_id: str | None, taggable: tuple[str, ...]) -> TemplateData:
    subnet_id, private_ip, nic_groups, public_ip = _interface(req)
    tags = tag_specs(req, taggable)
    behaviour, protect = req.get("InstanceInitiatedShutdownBehavior"), req.get("DisableApiTermination")
    return TemplateData(
        image_id=req.get("ImageId") or None, instance_type=req.get("InstanceType") or None,
        key_name=req.get("KeyName") or None, kernel_id=req.get("KernelId") or None, ramdisk_id=ramdisk_id or None,
        zone=(req.get("Placement") or {}).get("AvailabilityZone") or None, user_data=req.get("UserData") or None,
        group_ids=tuple(req.get("SecurityGroupIds") or ()), group_names=tuple(req.get("SecurityGroups") or ()),
        interface=bool(req.get("NetworkInterfaces")), subnet_id=subnet_id, private_ip=private_ip,
        public_ip=public_ip, interface_group_ids=nic_groups,
        block_devices=_block_devices(req.get("BlockDeviceMappings")),
        instance_tags=tags.get("instance", ()), volume_tags=tags.get("volume", ()),
        shutdown_behavior=behaviour or None, disable_api_termination=None if protect is None else bool(protect))
