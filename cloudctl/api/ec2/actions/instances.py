"""Instance actions: Run/Describe/Terminate/Start/Stop/Reboot, status, attributes, console."""
from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from typing import Any

from ....core.addresses import public_dns
from ....core.cloud import Cloud
from ....core.compute import STATE_CODES, DeleteOnTermination, InstanceAttributes, InstanceChanges, private_dns
from ....core.context import Caller
from ....core.errors import CloudError
from ....core.instance_facts import InstanceFacts, describe_page, facts_of
from ....core.launch import LaunchSpec
from ....core.network import interface_id
from ....core.volumes import ROOT_DEVICE
from ....store.records import Instance, Reservation, Volume
from .. import requests
from ..launch import counts, flat_spec, launch_spec, request_data, template_ref
from ..protocol import Cached, LazyList, Leaves
from .registry import action, form, ts


def _state(name: str) -> dict[str, Any]:
    return {"Code": STATE_CODES[name], "Name": name}


# Members every instance shows the same way (shared: the serializer only reads them).
_MONITORING = {"State": "disabled"}
_HIBERNATION = {"Configured": False}
_METADATA_OPTIONS = {"State": "applied", "HttpTokens": "optional", "HttpPutResponseHopLimit": 1,
                     "HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled", "InstanceMetadataTags": "disabled"}
_ENCLAVE = {"Enabled": False}
_MAINTENANCE = {"AutoRecovery": "default"}


def instance_view(cloud: Cloud, f: InstanceFacts) -> dict[str, Any]:
    """An instance as EC2 describes it, from facts read earlier (see core.instance_facts)."""
    shape, leaves = instance_leaves(cloud, f)
    return instance_from(shape, leaves)


def instance_leaves(cloud: Cloud, f: InstanceFacts) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What an instance's description shows, flat (`instance_from` builds the view): the values
    that vary (str, int, None, and the times as seconds since the epoch, each put in the view as
    is: the renderer writes a number in a timestamp member as that time), and what decides the
    view's members beyond them (list lengths, flags, the members shown only sometimes)."""
    i = f.inst
    region = cloud.config.region
    t = cloud.config.instance_types.get(i.instance_type)
    dns = private_dns(i, region) if i.private_ip else ""
    eip = f.address
    public = public_dns(eip.public_ip, region) if eip else ""
    leaves: list[Any] = [
        i.id, i.image_id, STATE_CODES[i.state], i.state, dns, public, eip.public_ip if eip else None,
        i.transition_reason, i.key_name, i.launch_index, i.instance_type, i.launch_time, i.zone, i.private_ip,
        "ebs" if i.root_device else "instance-store", i.root_device or ROOT_DEVICE, i.client_token or "",
        t.vcpus if t else 1, f.kernel_id]
    for v in f.volumes:
        leaves += (v.device, v.id, v.attach_state, v.attach_time or v.created)
    for pair in f.tags:
        leaves += pair
    for pair in f.groups:
        leaves += pair
    nic = f.subnet is not None and i.state != "terminated"
    if nic:
        assert f.subnet is not None
        leaves += (cloud.network.vpc_id, f.subnet.id, interface_id(i.id), i.owner, i.mac,
                   "eni-attach-" + i.id.removeprefix("i-"))
        if eip is not None:
            leaves += (eip.public_ip, "amazon" if eip.launch else eip.owner, public)
    reason = bool(i.state_reason_code)
    if reason:
        leaves += (i.state_reason_code, i.state_reason_message or "")
    shape = (tuple(v.delete_on_termination for v in f.volumes), len(f.tags), len(f.groups), nic,
             nic and eip is not None, reason)
    return shape, tuple(leaves)


def instance_from(shape: tuple[Any, ...], leaves: tuple[Any, ...]) -> dict[str, Any]:
    """`instance_leaves`' values as EC2's description of the instance (each value put in as is:
    `protocol.Leaves` renders this view from placeholders once per shape and the leaves' types)."""
    flags, n_tags, n_groups, nic, assoc_shown, reason = shape
    (iid, image_id, code, state, dns, public, public_ip, transition, key_name, index, itype, launched, zone,
     private_ip, root_type, root_name, token, vcpus, kernel) = leaves[:19]
    at = 19
    mappings = []
    for dot in flags:
        device, vid, status, attached = leaves[at:at + 4]
        at += 4
        mappings.append({"DeviceName": device, "Ebs": {
            "VolumeId": vid, "Status": status, "AttachTime": attached, "DeleteOnTermination": dot}})
    tags = [{"Key": leaves[n], "Value": leaves[n + 1]} for n in range(at, at + 2 * n_tags, 2)]
    at += 2 * n_tags
    groups = [(leaves[n], leaves[n + 1]) for n in range(at, at + 2 * n_groups, 2)]
    at += 2 * n_groups
    view: dict[str, Any] = {
        "InstanceId": iid, "ImageId": image_id, "State": {"Code": code, "Name": state},
        "PrivateDnsName": dns, "PublicDnsName": public,
        "PublicIpAddress": public_ip, "StateTransitionReason": transition,
        "KeyName": key_name, "AmiLaunchIndex": index, "ProductCodes": [],
        "InstanceType": itype, "LaunchTime": launched,
        "Placement": {"AvailabilityZone": zone, "GroupName": "", "Tenancy": "default"},
        "Monitoring": _MONITORING, "PrivateIpAddress": private_ip,
        "Architecture": "x86_64", "RootDeviceType": root_type,
        "RootDeviceName": root_name,
        "BlockDeviceMappings": mappings,
        "VirtualizationType": "hvm", "ClientToken": token,
        "Tags": tags,
        "SecurityGroups": [{"GroupId": g, "GroupName": n} for g, n in groups],
        "SourceDestCheck": True, "Hypervisor": "xen",
        "EbsOptimized": False, "EnaSupport": False,
        "CpuOptions": {"CoreCount": vcpus, "ThreadsPerCore": 1},
        "HibernationOptions": _HIBERNATION,
        "MetadataOptions": _METADATA_OPTIONS,
        "EnclaveOptions": _ENCLAVE, "PlatformDetails": "Linux/UNIX", "UsageOperation": "RunInstances",
        "UsageOperationUpdateTime": launched,
        "MaintenanceOptions": _MAINTENANCE, "CurrentInstanceBootMode": "legacy-bios",
        "KernelId": kernel,
    }
    if nic:
        vpc_id, subnet_id, eni, owner, mac, attachment = leaves[at:at + 6]
        at += 6
        view["VpcId"], view["SubnetId"] = vpc_id, subnet_id
        primary: dict[str, Any] = {"PrivateIpAddress": private_ip, "PrivateDnsName": dns, "Primary": True}
        assoc = None
        if assoc_shown:
            assoc = {"PublicIp": leaves[at], "IpOwnerId": leaves[at + 1], "PublicDnsName": leaves[at + 2]}
            at += 3
            primary["Association"] = assoc
        view["NetworkInterfaces"] = [{
            "Association": assoc,
            "NetworkInterfaceId": eni, "SubnetId": subnet_id, "VpcId": vpc_id,
            "OwnerId": owner, "Status": "in-use", "MacAddress": mac, "PrivateIpAddress": private_ip,
            "PrivateDnsName": dns, "SourceDestCheck": True,
            "Groups": [{"GroupId": g, "GroupName": n} for g, n in groups], "Ipv6Addresses": [],
            "InterfaceType": "interface", "Description": "",
            "Attachment": {"AttachmentId": attachment, "DeviceIndex": 0,
                           "Status": "attached", "AttachTime": launched, "DeleteOnTermination": True,
                           "NetworkCardIndex": 0},
            "PrivateIpAddresses": [primary],
        }]
    if reason:
        view["StateReason"] = {"Code": leaves[at], "Message": leaves[at + 1]}
    return view


def mappings_view(vols: Iterable[Volume]) -> list[dict[str, Any]]:
    """The instance's EBS block device mappings, the root volume first."""
    return [{"DeviceName": v.device, "Ebs": {
        "VolumeId": v.id, "Status": v.attach_state, "AttachTime": ts(v.attach_time or v.created),
        "DeleteOnTermination": v.delete_on_termination}} for v in vols]


def cached_view(cloud: Cloud, f: InstanceFacts) -> Cached:
    """An instance's description, rendered once and reused while everything instance_view reads
    is the same: its rows are immutable (a change replaces them), so the same objects mean the
    same text. The key lists every input of instance_view and network_interface_view (the tags by
    their packed entry, which any change to them replaces: `Tags.version_of`, read with the
    facts, so that an answer shows every instance as of one moment)."""
    i = f.inst
    config = cloud.config
    key = (i, f.address, f.subnet, f.kernel_id, config, config.region, config.instance_types.get(i.instance_type),
           cloud.network.vpc_id, f.tags_version, len(f.volumes), *f.volumes,
           *[part for group in f.groups for part in group])
    return Cached(i.id, key, lambda: instance_view(cloud, f))


def reservation_view(cloud: Cloud, res: Reservation, facts: list[InstanceFacts]) -> dict[str, Any]:
    return {"ReservationId": res.id, "OwnerId": res.owner, "Groups": [],
            "Instances": LazyList((cached_view(cloud, f) for f in facts), len(facts))}


def small_reservation_view(cloud: Cloud, res: Reservation, facts: list[InstanceFacts]) -> dict[str, Any]:
    """`reservation_view` for an answer rendered whole (`WHOLE_DESCRIBE`): the same kept text per
    instance, without the slices' lazy lists and generators."""
    return _reservation(res.id, res.owner, [cached_view(cloud, f) for f in facts])


def _reservation(rid: str, owner: str, instances: list[Cached]) -> dict[str, Any]:
    return {"ReservationId": rid, "OwnerId": owner, "Groups": [], "Instances": instances}


#: A launch's answer of at most this many instances is rendered in one piece (~0.1 ms each); a
#: longer one in slices, as a describe's, so that the loop runs between them.
WHOLE_LAUNCH = 16
#: A describe's answer of at most this many instances is rendered in one piece, from the kept
#: fragments (~10 µs each when kept), without the slices' machinery; a longer one in slices.
WHOLE_DESCRIBE = 16


def launch_view(cloud: Cloud, res: Reservation, facts: list[InstanceFacts]) -> dict[str, Any]:
    """RunInstances' answer: `reservation_view`'s text, but its instances rendered afresh, not
    through the renderer's kept fragments (`cached_view`): a launched row is replaced within
    milliseconds (pending -> running), so its text would never be reused, only push out the
    describes' kept text; and a small answer is one piece, not a stream of slices."""
    if len(facts) <= WHOLE_LAUNCH:   # (each instance's text from its leaves: no view made)
        instances: Any = [Leaves(*instance_leaves(cloud, f), instance_from) for f in facts]
    else:
        instances = LazyList((instance_view(cloud, f) for f in facts), len(facts))
    return {"ReservationId": res.id, "OwnerId": res.owner, "Groups": [], "Instances": instances}


@action("RunInstances")
async def run_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    template = req.get("LaunchTemplate")
    if template is None:
        spec = launch_spec(req)
    else:
        spec = cloud.launch_templates.run_spec(caller, template_ref(template), template.get("Version"),
                                               request_data(req), *counts(req), req.get("ClientToken"))
    return await run_spec(cloud, caller, spec)


@form("RunInstances", flat_spec)
async def run_spec(cloud: Cloud, caller: Caller, spec: LaunchSpec) -> dict[str, Any]:
    """RunInstances of a spec: the usual form's, read straight from its fields (`flat_spec`), or
    `run_instances`' from the parsed request."""
    res, insts = await cloud.compute.run(caller, spec)
    return launch_view(cloud, res, facts_of(cloud, insts))


@action("DescribeInstances")
async def describe_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    # The page's state is read here, as of one moment; the answer is then written in slices from it.
    page, token = await describe_page(cloud, caller, requests.query(req, "InstanceIds"))
    if sum(len(f) for _, f in page) <= WHOLE_DESCRIBE:   # (a by-id describe: one quick piece)
        return {"Reservations": [small_reservation_view(cloud, r, f) for r, f in page], "NextToken": token}
    views = (reservation_view(cloud, r, f) for r, f in page)
    return {"Reservations": LazyList(views, len(page)), "NextToken": token}


def by_id_form(params: dict[str, str]) -> tuple[str, bool] | None:
    """DescribeInstances' usual by-id form, one `InstanceId.1` and no other field: its id (no
    DryRun). Anything else (filters, pages, more ids, DryRun) goes the general way."""
    if len(params) != 1:
        return None
    iid = params.get("InstanceId.1")
    return (iid, False) if iid else None


@form("DescribeInstances", by_id_form)
async def describe_by_id(cloud: Cloud, caller: Caller, iid: str) -> Cached:
    """`describe_instances` for one id, no filter and no page (`by_id_form`), in one step: what
    `Compute.describe` and `describe_page` do then (the caller's instance by id, `Compute.owned_one`;
    the dry run checked; its reservation; its facts read now) without the query, the filters'
    compilation, the page and the grouping. The answer is given whole as a `Cached` (its view
    `describe_instances`' result): its text is kept while what the instance's text is made from
    (`cached_view`'s key, the instance's row first) and what its reservation shows are the same
    objects (the protocol's `serialize_whole`). A reservation showing the instance's own
    reservation id and owner (always, but for a row written otherwise) is keyed by the instance's
    row: a reservation row read from the store need not be the same object each time."""
    inst = cloud.compute.owned_one(caller, iid)
    caller.check_dry_run()
    rid = inst.reservation_id
    res = cloud.compute.reservations.get(rid)
    one = cached_view(cloud, facts_of(cloud, (inst,))[0])
    if res is None or (res.id == rid and res.owner == inst.owner):
        shown, key = (rid, inst.owner), one.key
    else:
        shown, key = (res.id, res.owner), (res, *one.key)
    return Cached(inst.id, key, lambda: {"Reservations": [_reservation(*shown, [one])], "NextToken": None})


def _changes(pairs: list[tuple[Instance, Instance]]) -> list[dict[str, Any]]:
    return [{"InstanceId": new.id, "PreviousState": _state(old.state), "CurrentState": _state(new.state)}
            for old, new in pairs]


@action("TerminateInstances")
async def terminate_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"TerminatingInstances": _changes(await cloud.compute.terminate(caller, req["InstanceIds"]))}


@action("StopInstances")
async def stop_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    pairs = await cloud.compute.stop(caller, req["InstanceIds"], force=bool(req.get("Force")))
    return {"StoppingInstances": _changes(pairs)}


@action("StartInstances")
async def start_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return {"StartingInstances": _changes(await cloud.compute.start(caller, req["InstanceIds"]))}


@action("RebootInstances")
async def reboot_instances(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.compute.reboot(caller, req["InstanceIds"])
    return {}


@action("DescribeInstanceStatus")
async def describe_instance_status(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    statuses, token = cloud.compute.describe_status(caller, requests.query(req, "InstanceIds"),
                                                    bool(req.get("IncludeAllInstances")))
    out = []
    for i, status, why in statuses:
        detail: dict[str, Any] = {"Name": "reachability", "Status": "passed" if status == "ok" else
                                  "initializing" if status == "initializing" else "failed"}
        if why is not None:
            # EC2 has no free-text field for the cause (its scheduled-event codes mean planned
            # work, which this is not): the time is here, the reason in the operator's event log.
            detail["ImpairedSince"] = cloud.monitor.impaired_since(i.host)
        ok = {"Status": status} if status == "not-applicable" else {"Status": status, "Details": [detail]}
        out.append({"InstanceId": i.id, "AvailabilityZone": i.zone, "InstanceState": _state(i.state),
                    "SystemStatus": ok, "InstanceStatus": ok, "Events": []})
    return {"InstanceStatuses": out, "NextToken": token}


# DescribeInstanceAttribute: attribute name -> (output member, the value, whether it is wrapped in {"Value"})
_ATTR_OUT: dict[str, tuple[str, Callable[[InstanceAttributes], Any], bool]] = {
    "instanceType": ("InstanceType", lambda a: a.instance.instance_type, True),
    "userData": ("UserData", lambda a: a.instance.user_data, True),
    "disableApiTermination": ("DisableApiTermination", lambda a: a.instance.disable_api_termination, True),
    "instanceInitiatedShutdownBehavior": ("InstanceInitiatedShutdownBehavior",
                                          lambda a: a.instance.shutdown_behavior, True),
    "disableApiStop": ("DisableApiStop", lambda a: False, True),
    "ebsOptimized": ("EbsOptimized", lambda a: False, True),
    "sourceDestCheck": ("SourceDestCheck", lambda a: True, True),
    "groupSet": ("Groups", lambda a: [{"GroupId": g, "GroupName": n} for g, n in a.groups], False),
    "blockDeviceMapping": ("BlockDeviceMappings", lambda a: mappings_view(a.volumes), False),
    "productCodes": ("ProductCodes", lambda a: [], False),
    "rootDeviceName": ("RootDeviceName", lambda a: a.instance.root_device or "/dev/vda", True),
    "kernel": ("KernelId", lambda a: None, True),
    "ramdisk": ("RamdiskId", lambda a: None, True),
    "enaSupport": ("EnaSupport", lambda a: False, True),
    "sriovNetSupport": ("SriovNetSupport", lambda a: None, True),
}


@action("DescribeInstanceAttribute")
async def describe_instance_attribute(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    attribute = req["Attribute"]
    if attribute not in _ATTR_OUT:
        raise CloudError("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid. "
                         f"Unknown attribute.")
    attrs = cloud.compute.attributes(caller, req["InstanceId"])
    member, value_of, wrapped = _ATTR_OUT[attribute]
    value = value_of(attrs)
    out: dict[str, Any] = {"InstanceId": attrs.instance.id}
    if not wrapped:
        out[member] = value
    elif value is not None:
        out[member] = {"Value": value}
    return out


# ModifyInstanceAttribute members -> the attribute names of its older Attribute=name&Value=v form.
_ATTR_IN = {"InstanceType": "instanceType", "UserData": "userData",
            "DisableApiTermination": "disableApiTermination",
            "InstanceInitiatedShutdownBehavior": "instanceInitiatedShutdownBehavior",
            "SourceDestCheck": "sourceDestCheck", "Groups": "groupSet", "EbsOptimized": "ebsOptimized",
            "Kernel": "kernel", "Ramdisk": "ramdisk", "SriovNetSupport": "sriovNetSupport",
            "EnaSupport": "enaSupport", "DisableApiStop": "disableApiStop",
            "BlockDeviceMappings": "blockDeviceMapping"}


@action("ModifyInstanceAttribute")
async def modify_instance_attribute(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for member, attr in _ATTR_IN.items():
        if member in req:
            v = req[member]
            changes[attr] = v.get("Value") if isinstance(v, dict) else v
    if "Attribute" in req:  # the older Attribute=name&Value=v form
        if "Value" not in req:
            raise CloudError("MissingParameter", "The request must contain the parameter Value")
        value: Any = req["Value"]
        if req["Attribute"] == "userData":
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError:
                raise CloudError("InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
        changes[req["Attribute"]] = value
    fields: dict[str, Any] = {}
    for name, value in changes.items():
        field, typed = _attribute_change(name, value)
        fields[field] = typed
    await cloud.compute.modify_attribute(caller, req["InstanceId"], InstanceChanges(**fields))
    return {}


def _attribute_change(name: str, value: Any) -> tuple[str, Any]:
    """One attribute's new value as an `InstanceChanges` field; an attribute this cloud cannot
    change is refused."""
    if name == "instanceType":
        return "instance_type", str(value)
    if name == "userData":
        return "user_data", value if isinstance(value, bytes) else str(value).encode()
    if name == "disableApiTermination":
        return "disable_api_termination", _as_bool(value, name)
    if name == "instanceInitiatedShutdownBehavior":
        return "shutdown_behavior", str(value)
    if name == "groupSet":
        return "group_ids", (value,) if isinstance(value, str) else tuple(value or ())
    if name == "blockDeviceMapping" and isinstance(value, list) and value:
        return "delete_on_termination", tuple(_delete_on_termination(m) for m in value)
    raise CloudError("InvalidParameterValue", f"Modifying the attribute '{name}' is not supported by this cloud")


def _delete_on_termination(mapping: dict[str, Any]) -> DeleteOnTermination:
    device = mapping.get("DeviceName") or ""
    ebs = mapping.get("Ebs") or {}
    if "DeleteOnTermination" not in ebs:
        raise CloudError("MissingParameter", f"The mapping of {device} must give Ebs.DeleteOnTermination")
    return DeleteOnTermination(device, bool(ebs["DeleteOnTermination"]), ebs.get("VolumeId") or None)


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise CloudError("InvalidParameterValue", f"Invalid value '{value}' for {name}; expected true or false")


@action("GetConsoleOutput")
async def get_console_output(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    inst, data = await cloud.compute.console_output(caller, req["InstanceId"])
    return {"InstanceId": inst.id, "Timestamp": ts(time.time()), "Output": base64.b64encode(data).decode()}


@action("DescribeInstanceCreditSpecifications")
async def describe_credit_specs(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    groups, token = cloud.compute.describe(caller, requests.query(req, "InstanceIds"))
    return {"InstanceCreditSpecifications": [{"InstanceId": i.id, "CpuCredits": "standard"}
                                             for _, insts in groups for i in insts],
            "NextToken": token}
