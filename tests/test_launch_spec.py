"""The launch seam: RunInstances' wire dict becomes a `LaunchSpec` in the EC2 layer, the core's
request hash is a property of the spec, and no other front end speaks EC2 to the core. Launches
through every front end (and their errors on the wire) are in test_ec2_instances.py,
test_xmlrpc.py and test_hil_headnodes.py."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloudctl.api.ec2.launch import launch_spec
from cloudctl.core import launch
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import BlockDevice, DeviceMapping, LaunchSpec, VlanNic

ROOT = Path(__file__).resolve().parent.parent / "cloudctl"
BASE = {"ImageId": "ami-0123456789abcdef0", "MinCount": 1, "MaxCount": 3}


def test_every_run_instances_parameter_reaches_the_spec() -> None:
    spec = launch_spec({
        **BASE, "InstanceType": "t3.small", "KernelId": "aki-1", "RamdiskId": "ari-1",
        "Placement": {"AvailabilityZone": "zone-a"}, "KeyName": "k", "UserData": "aGk=",
        "SecurityGroupIds": ["sg-1"], "SecurityGroups": ["web"],
        "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "subnet-1", "Groups": ["sg-2"],
                               "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.9", "Primary": True}]}],
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/vda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3", "DeleteOnTermination": False}},
            {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": "snap-1"}},
            {"DeviceName": "/dev/sdg", "NoDevice": ""},                 # suppresses a device
            {"DeviceName": "/dev/sdh", "VirtualName": "ephemeral0"}],   # an instance-store disk
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "n"}]},
                              {"ResourceType": "volume", "Tags": [{"Key": "v", "Value": "1"}]},
                              {"ResourceType": "network-interface", "Tags": [{"Key": "e", "Value": "2"}]}],
        "ClientToken": "tok", "InstanceInitiatedShutdownBehavior": "terminate", "DisableApiTermination": True,
        "DryRun": False,
    })
    assert spec == LaunchSpec(
        image_id="ami-0123456789abcdef0", min_count=1, max_count=3, instance_type="t3.small",
        kernel_id="aki-1", ramdisk_id="ari-1", zone="zone-a", subnet_id="subnet-1", private_ip="10.0.0.9",
        group_ids=("sg-1", "sg-2"), group_names=("web",), key_name="k", user_data="aGk=",
        block_devices=(BlockDevice("/dev/vda", 20, "gp3", None, False), BlockDevice("/dev/sdf", snapshot_id="snap-1")),
        device_mappings=(DeviceMapping("/dev/sdg", None), DeviceMapping("/dev/sdh", "ephemeral0")),
        instance_tags=(("Name", "n"),), volume_tags=(("v", "1"),), client_token="tok",
        shutdown_behavior="terminate", disable_api_termination=True)


def test_defaults_of_a_minimal_request() -> None:
    spec = launch_spec({**BASE, "SubnetId": "subnet-2", "PrivateIpAddress": "10.0.1.5"})
    assert (spec.subnet_id, spec.private_ip, spec.instance_type, spec.zone) == ("subnet-2", "10.0.1.5", None, None)
    assert (spec.shutdown_behavior, spec.disable_api_termination, spec.group_ids, spec.block_devices) == \
        ("stop", False, (), ())


@pytest.mark.parametrize("extra, code, message", [
    ({"ImageId": None}, "MissingParameter", "The request must contain the parameter ImageId"),
    ({"MaxCount": None}, "MissingParameter", "The request must contain the parameters MinCount and MaxCount"),
    ({"InstanceMarketOptions": {"MarketType": "spot"}}, "InvalidParameterValue",
     "InstanceMarketOptions: spot instances are not supported by this cloud yet"),
    ({"SubnetId": "subnet-1", "NetworkInterfaces": [{"DeviceIndex": 0}]}, "InvalidParameterCombination",
     "Network interfaces and an instance-level subnet ID or private IP address may not be specified on the "
     "same request"),
    ({"NetworkInterfaces": [{"DeviceIndex": 1}]}, "InvalidParameterValue",
     "Instances in this cloud have one network interface (DeviceIndex 0)"),
    ({"NetworkInterfaces": [{"DeviceIndex": 0, "NetworkInterfaceId": "eni-1"}]}, "InvalidParameterValue",
     "NetworkInterface.NetworkInterfaceId is not supported by this cloud yet"),
    ({"BlockDeviceMappings": [{"DeviceName": "/dev/sdf"}]}, "InvalidParameterValue",
     "Block device mapping /dev/sdf needs an Ebs section"),
    ({"TagSpecifications": [{"ResourceType": "image", "Tags": []}]}, "InvalidParameterValue",
     "'image' is not a valid taggable resource type for this operation"),
])
def test_wire_shape_refusals_keep_ec2_codes(extra: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(CloudError) as e:
        launch_spec({**BASE, **extra})
    assert (e.value.code, e.value.message) == (code, message)


def test_request_hash_is_the_spec_without_its_token() -> None:
    spec = launch_spec({**BASE, "InstanceType": "t3.nano", "ClientToken": "a",
                        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v"}]}]})
    same = launch_spec({"ClientToken": "b", "MaxCount": 3, "MinCount": 1, "ImageId": BASE["ImageId"],
                        "TagSpecifications": [{"Tags": [{"Value": "v", "Key": "k"}], "ResourceType": "instance"}],
                        "InstanceType": "t3.nano", "DryRun": True})
    assert spec.request_hash() == same.request_hash()
    # headnode NICs may move between a lost answer and its retry: the launch is the same one
    assert (LaunchSpec("ami-1").request_hash()
            == LaunchSpec("ami-1", vlan_nics=(VlanNic("eth0", "m", 7),)).request_hash())
    hashes = {s.request_hash() for s in (
        spec, LaunchSpec(spec.image_id), LaunchSpec("ami-2"), LaunchSpec("ami-1", max_count=2),
        LaunchSpec("ami-1", instance_tags=(("k", "v"),)), LaunchSpec("ami-1", volume_tags=(("k", "v"),)),
        LaunchSpec("ami-1", block_devices=(BlockDevice("/dev/vda", 9),)),
        LaunchSpec("ami-1", block_devices=(BlockDevice("/dev/vda", 10),)),
        LaunchSpec("ami-1", user_data="aGk="), LaunchSpec("ami-1", group_names=("web",)))}
    assert len(hashes) == 10


def _strings(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_front_end_forges_a_run_instances_request() -> None:
    """RunInstances' own parameter names belong to the EC2 layer alone. (Names it shares with other
    actions whose core methods still take the request dict — ClientToken, BlockDeviceMappings — are
    checked only in the launching front ends.)"""
    wire = {"MinCount", "MaxCount", "SecurityGroupIds", "NetworkInterfaces", "InstanceInitiatedShutdownBehavior",
            "DisableApiTermination"}
    # (CloudFormation's resource properties share these names: they are its template language,
    # which core/cloudformation reads — its replace-or-update table names them too — and its
    # handlers build typed LaunchSpecs from them.)
    found = {str(p.relative_to(ROOT)): sorted(_strings(p) & wire) for p in ROOT.rglob("*.py")
             if "api/ec2" not in p.as_posix() and "core/cloudformation/resources" not in p.as_posix()
             and not p.as_posix().endswith("core/cloudformation/replacement.py")}
    assert {p: names for p, names in found.items() if names} == {}
    for launcher in (ROOT / "api" / "xmlrpc" / "app.py", ROOT / "core" / "baremetal" / "headnodes.py"):
        assert not _strings(launcher) & {"ImageId", "TagSpecifications", "SubnetId",
                                         "UserData", "ClientToken"}, launcher


def test_request_hash_text_is_pinned() -> None:
    """Hashes are stored with reservations: a retry after an upgrade must match the hash an older
    release stored, so the hashed text never changes (these are main's hashes at 18e9fc1)."""
    assert LaunchSpec("ami-1").request_hash() == "69e90627fb1fc38f72cce7931ed7a727"
    full = LaunchSpec(
        "ami-2", 2, 5, "t1.micro", "aki-1", "ari-1", "z1", "subnet-1", "10.0.0.5", True, ("sg-1", "sg-2"),
        ("web",), "key", "dXNlcg==",
        (BlockDevice("/dev/sda1", 10, "gp2"), BlockDevice("/dev/sdb", None, None, "snap-1", False)),
        (DeviceMapping("/dev/sdc", "ephemeral0"), DeviceMapping("/dev/sdd")),
        (("Name", "x"), ("é", 'ü"')), (("v", "1"),), (("aws:x", "y"),), "tok", "terminate", True,
        (VlanNic("n", "m", 3),), "123")
    assert full.request_hash() == "446930dc0d16f8c044239d65a23cc357"


class _Text(str):
    pass


_texts = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10), st.text(max_size=6),
                   st.builds(_Text, st.text(max_size=4)))
_maybe = st.one_of(st.none(), _texts)
_tags = st.one_of(st.lists(st.tuples(_texts, _texts), max_size=3).map(tuple), st.just([]))
_spec = st.builds(
    LaunchSpec, _texts, st.integers(0, 2 ** 40), st.one_of(st.integers(-3, 1001), st.booleans()), _maybe, _maybe,
    _maybe, _maybe, _maybe, _maybe, st.one_of(st.none(), st.booleans()),
    st.lists(_texts, max_size=3).map(tuple), st.lists(_texts, max_size=2).map(tuple), _maybe, _maybe,
    st.lists(st.builds(BlockDevice, _texts, st.one_of(st.none(), st.integers(0, 99)), _maybe, _maybe, st.booleans()),
             max_size=2).map(tuple),
    st.one_of(st.lists(st.builds(DeviceMapping, _texts, _maybe), max_size=2).map(tuple), st.none()),
    _tags, _tags, _tags, _maybe, _texts, st.one_of(st.booleans(), st.integers(0, 1)),
    st.lists(st.builds(VlanNic, _texts, _texts, st.integers(0, 4095)), max_size=1).map(tuple), _maybe)


@given(_spec)
@example(LaunchSpec("ami-1", system_tags=[], device_mappings=None, public_ip=False))   # type: ignore[arg-type]
@example(LaunchSpec("ami-\u00e9", instance_tags=(("k", 'q"'),), group_ids=(_Text("sg-\x01"),)))
def test_request_hash_is_json_dumps_of_the_spec_sorted(spec: LaunchSpec) -> None:
    """The hash written field by field (the names' text kept) is the one `json.dumps` of the fields
    gives, sorted, nested dataclasses as their dicts (how every stored hash was made), whatever the
    values: text to escape, str subclasses, empty and absent fields, counts as bools, dataclasses."""
    body = {f.name: getattr(spec, f.name) for f in dataclasses.fields(LaunchSpec)
            if f.name not in ("client_token", "vlan_nics", "owner")}
    if body["public_ip"] is None:
        del body["public_ip"]
    for name in ("system_tags", "device_mappings"):
        if not body[name]:
            del body[name]
    text = json.dumps(body, sort_keys=True, default=lambda v: dataclasses.asdict(v))
    assert spec.request_hash() == hashlib.sha256(text.encode()).hexdigest()[:32]
    # (the plan kept for the spec's shape and the field-by-field writer past the shapes kept: the
    # same text, or None for text to escape)
    assert launch._hash_text(spec) in (None, text) and launch._hash_fields(spec) == launch._hash_text(spec)
