"""Instance actions: Run/Describe/Terminate/Start/Stop/Reboot, status, attributes, console."""
from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ....core.addresses import public_dns
from ....core.cloud import Cloud
from ....core.compute import STATE_CODES, DeleteOnTermination, InstanceAttributes, InstanceChanges, private_dns
from ....core.context import Caller
from ....core.errors import CloudError, not_found
from ....core.ids import well_formed
from ....core.instance_facts import InstanceFacts, describe_page, facts_of
from ....core.launch import LaunchSpec
from ....core.network import interface_id
from ....core.volumes import ROOT_DEVICE
from ....store.records import Instance, Reservation, Volume
from .. import requests
from ..launch import counts, flat_spec, launch_spec, request_data, template_ref
from ..protocol import Cached, LazyList
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
    i = f.inst
    region = cloud.config.region
    t = cloud.config.instance_types.get(i.instance_type)
    launched = ts(i.launch_time)
    dns = private_dns(i, region) if i.private_ip else ""
    eip = f.address
    view: dict[str, Any] = {
        "InstanceId": i.id, "ImageId": i.image_id, "State": _state(i.state),
        "PrivateDnsName": dns, "PublicDnsName": public_dns(eip.public_ip, region) if eip else "",
        "PublicIpAddress": eip.public_ip if eip else None, "StateTransitionReason": i.transition_reason,
        "KeyName": i.key_name, "AmiLaunchIndex": i.launch_index, "ProductCodes": [],
        "InstanceType": i.instance_type, "LaunchTime": launched,
        "Placement": {"AvailabilityZone": i.zone, "GroupName": "", "Tenancy": "default"},
        "Monitoring": _MONITORING, "PrivateIpAddress": i.private_ip,
        "Architecture": "x86_64", "RootDeviceType": "ebs" if i.root_device else "instance-store",
        "RootDeviceName": i.root_device or ROOT_DEVICE,
        "BlockDeviceMappings": mappings_view(f.volumes),
        "VirtualizationType": "hvm", "ClientToken": i.client_token or "",
        "Tags": [{"Key": k, "Value": v} for k, v in f.tags],
        "SecurityGroups": [{"GroupId": g, "GroupName": n} for g, n in f.groups],
        "SourceDestCheck": True, "Hypervisor": "xen",
        "EbsOptimized": False, "EnaSupport": False,
        "CpuOptions": {"CoreCount": t.vcpus if t else 1, "ThreadsPerCore": 1},
        "HibernationOptions": _HIBERNATION,
        "MetadataOptions": _METADATA_OPTIONS,
        "EnclaveOptions": _ENCLAVE, "PlatformDetails": "Linux/UNIX", "UsageOperation": "RunInstances",
        "UsageOperationUpdateTime": launched,
        "MaintenanceOptions": _MAINTENANCE, "CurrentInstanceBootMode": "legacy-bios",
        "KernelId": f.kernel_id,
    }
    if f.subnet is not None and i.state != "terminated":
        view["VpcId"], view["SubnetId"] = cloud.network.vpc_id, f.subnet.id
        view["NetworkInterfaces"] = [network_interface_view(cloud, f, dns, launched)]
    if i.state_reason_code:
        view["StateReason"] = {"Code": i.state_reason_code, "Message": i.state_reason_message or ""}
    return view


def network_interface_view(cloud: Cloud, f: InstanceFacts, dns: str, launched: datetime) -> dict[str, Any]:
    i, eip = f.inst, f.address
    assert f.subnet is not None
    groups = [{"GroupId": g, "GroupName": n} for g, n in f.groups]
    primary: dict[str, Any] = {"PrivateIpAddress": i.private_ip, "PrivateDnsName": dns, "Primary": True}
    assoc = {"PublicIp": eip.public_ip, "IpOwnerId": "amazon" if eip.launch else eip.owner,
             "PublicDnsName": public_dns(eip.public_ip, cloud.config.region)} if eip is not None else None
    if assoc is not None:
        primary["Association"] = assoc
    return {
        "Association": assoc,
        "NetworkInterfaceId": interface_id(i.id), "SubnetId": f.subnet.id, "VpcId": cloud.network.vpc_id,
        "OwnerId": i.owner, "Status": "in-use", "MacAddress": i.mac, "PrivateIpAddress": i.private_ip,
        "PrivateDnsName": dns, "SourceDestCheck": True, "Groups": groups, "Ipv6Addresses": [],
        "InterfaceType": "interface", "Description": "",
        "Attachment": {"AttachmentId": "eni-attach-" + i.id.removeprefix("i-"), "DeviceIndex": 0,
                       "Status": "attached", "AttachTime": launched, "DeleteOnTermination": True,
                       "NetworkCardIndex": 0},
        "PrivateIpAddresses": [primary],
    }


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
    return {"ReservationId": res.id, "OwnerId": res.owner, "Groups": [],
            "Instances": [cached_view(cloud, f) for f in facts]}


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
    views = (instance_view(cloud, f) for f in facts)
    return {"ReservationId": res.id, "OwnerId": res.owner, "Groups": [],
            "Instances": list(views) if len(facts) <= WHOLE_LAUNCH else LazyList(views, len(facts))}


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
async def describe_by_id(cloud: Cloud, caller: Caller, iid: str) -> dict[str, Any]:
    """`describe_instances` for one id, no filter and no page (`by_id_form`), in one step: what
    `Compute.describe` and `describe_page` do then (the caller's instance by id, a malformed or
    unknown one refused as `Compute.owned` refuses it; the dry run checked; its reservation; its
    facts read now) without the query, the filters' compilation, the page and the grouping."""
    if not well_formed(iid, "i"):   # (`Compute.owned`'s refusals, for one id)
        raise CloudError("InvalidInstanceID.Malformed", f"Invalid id: \"{iid}\"")
    inst = cloud.compute.of_owner(caller.account).get(iid)
    if inst is None:
        raise not_found("InstanceID", [iid])
    caller.check_dry_run()
    rid = inst.reservation_id
    res = cloud.compute.reservations.get(rid) or Reservation(id=rid, owner=inst.owner)
    return {"Reservations": [small_reservation_view(cloud, res, facts_of(cloud, (inst,)))], "NextToken": None}


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
