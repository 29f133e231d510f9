"""RunInstances' usual form read at once (`launch.flat_spec`, past `Protocol.parse`): whatever it
reads, it reads as the general path does (`Protocol.parse`, then `launch_spec`: the same spec and
DryRun), and whatever the general path refuses, it leaves to it (None), so that every refusal is
still the general path's. Through a served endpoint: a launch by boto3 that takes the quick read
answers as before (tests/test_ec2_instances.py has the launches and refusals of every kind)."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2 import launch
from cloudctl.api.ec2.launch import flat_spec, launch_spec, read_flat
from cloudctl.api.ec2.model import OPERATIONS, load_model
from cloudctl.api.ec2.protocol import ParamError, Protocol
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec

# What boto3 sends for the scale bench's launch (bench/scale_load.py run_params), less Action/Version.
USUAL = {"ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.nano", "MinCount": "1", "MaxCount": "1",
         "ClientToken": "4f1c", "Placement.AvailabilityZone": "zone-a", "SecurityGroupId.1": "sg-1",
         "TagSpecification.1.ResourceType": "instance", "TagSpecification.1.Tag.1.Key": "Name",
         "TagSpecification.1.Tag.1.Value": "web-1", "TagSpecification.1.Tag.2.Key": "env",
         "TagSpecification.1.Tag.2.Value": "prod"}


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Protocol:
    return Protocol(load_model(OPERATIONS, tmp_path_factory.mktemp("ec2-model")))


def general(protocol: Protocol, params: dict[str, str]) -> tuple[LaunchSpec, bool] | None:
    """What `Ec2Api.handle` and `run_instances` make of the form (None: they refuse it)."""
    try:
        req = protocol.parse("RunInstances", params)
        dry_run = bool(req.pop("DryRun", False))
        if req.get("LaunchTemplate") is not None:
            return None   # (a launch from a template: never read at once, compared by the caller)
        return launch_spec(req), dry_run
    except (ParamError, CloudError):
        return None


def test_the_usual_launch_is_read_at_once(protocol: Protocol) -> None:
    got = flat_spec(dict(USUAL))
    assert got is not None and got == general(protocol, USUAL)
    spec, dry_run = got
    assert not dry_run and spec.instance_tags == (("Name", "web-1"), ("env", "prod"))
    assert spec.group_ids == ("sg-1",) and spec.zone == "zone-a" and spec.min_count == spec.max_count == 1


# Field names: the ones read at once, indexed the usual way and not, and ones only the general
# path reads (so the form goes there); values: plain, empty, numbers in and out of range, flags.
_READ = st.sampled_from([
    "ImageId", "InstanceType", "KernelId", "RamdiskId", "Placement.AvailabilityZone", "SubnetId",
    "PrivateIpAddress", "KeyName", "UserData", "ClientToken", "InstanceInitiatedShutdownBehavior", "MinCount",
    "MaxCount", "DryRun", "DisableApiTermination", "SecurityGroupId.1", "SecurityGroupId.2", "SecurityGroupId.10",
    "SecurityGroupId.01", "SecurityGroup.1", "SecurityGroup.3", "TagSpecification.1.ResourceType",
    "TagSpecification.2.ResourceType", "TagSpecification.01.ResourceType", "TagSpecification.1.Tag.1.Key",
    "TagSpecification.1.Tag.1.Value", "TagSpecification.1.Tag.2.Key", "TagSpecification.1.Tag.02.Value",
    "TagSpecification.2.Tag.1.Key", "TagSpecification.2.Tag.1.Value", "TagSpecification.1.Tag.3.Value",
])
_OTHER = st.sampled_from([   # (the general path's alone, or no field at all)
    "Placement.Tenancy", "EbsOptimized", "Monitoring.Enabled", "SecurityGroupId", "SecurityGroupId.x",
    "SecurityGroupId.1.a", "SecurityGroup.\u00b2", "TagSpecification.1.Tag.1", "TagSpecification.1.Tag.x.Key",
    "TagSpecification.1.Tags.1.Key", "TagSpecification.1", "TagSpecification.x.ResourceType",
    "TagSpecification.1.Tag.1.Key.z", "NetworkInterface.1.SubnetId", "NetworkInterface.1.DeviceIndex",
    "BlockDeviceMapping.1.DeviceName", "LaunchTemplate.LaunchTemplateId", "InstanceMarketOptions.MarketType",
    "Unknown",
])


def _good(key: str) -> list[str]:
    """Values the field is usually given (most of them read at once)."""
    if key in ("MinCount", "MaxCount"):
        return ["1", "2", "3", "01"]
    if key in ("DryRun", "DisableApiTermination"):
        return ["true", "false", "TRUE", "False"]
    if key.endswith("ResourceType"):
        return ["instance", "volume", "network-interface"]
    if key.endswith(".Key"):
        return ["Name", "env", "k"]
    return ["v", "", "sg-1", "zone-a", "ami-0123456789abcdef0", "stop", "terminate", "10.0.0.9", "aGk="]


_ODD = st.sampled_from([   # numbers in and out of range, flags, types and tags refused, text to check
    "", "0", "01", "+1", "-1", " 1", "1000", "1001", "999999999", "2147483647", "2147483648", "\u0663", "TRUE",
    "False", "yes", "x", "image", "aws:name", "a" * 129, "v" * 257, "a\x01b", "\u00e9",
])
_GOOD = _READ.flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(_good(k))))
_FIELDS = st.lists(st.one_of(_GOOD, _GOOD, _GOOD, _GOOD, st.tuples(_READ, _ODD), st.tuples(_OTHER, _ODD)),
                   max_size=6).map(dict)


@settings(max_examples=600, deadline=None)
@given(_FIELDS, st.sampled_from([True, True, True, False]))
@example({}, True)
@example({"SecurityGroupId.10": "sg-b", "SecurityGroupId.2": "sg-a", "SecurityGroup.3": "b", "SecurityGroup.1": "a",
          "TagSpecification.2.ResourceType": "volume", "TagSpecification.2.Tag.2.Key": "k2",
          "TagSpecification.2.Tag.1.Key": "k1"}, True)   # (indices out of order: the lists sorted)
@example({"ImageId": "ami-1", "MinCount": "1", "MaxCount": "2", "TagSpecification.2.ResourceType": "instance",
          "TagSpecification.2.Tag.1.Key": "b", "TagSpecification.1.Tag.1.Key": "a",
          "TagSpecification.1.ResourceType": "instance"}, False)
@example({"SecurityGroupId.1": "sg-2", "SecurityGroupId.01": "sg-3", "TagSpecification.1.Tag.1.Key": "k",
          "TagSpecification.1.ResourceType": "volume"}, True)
@example({"TagSpecification.1.Tag.1.Value": "v", "TagSpecification.1.ResourceType": "instance"}, True)
@example({"TagSpecification.2.ResourceType": "network-interface", "TagSpecification.2.Tag.1.Key": "aws:x"}, True)
@example({"InstanceInitiatedShutdownBehavior": "", "PrivateIpAddress": "", "ClientToken": "", "KeyName": ""}, True)
@example({"MaxCount": "2147483648"}, True)
@example({"DryRun": "TRUE", "DisableApiTermination": "False"}, True)
def test_read_at_once_as_the_general_path_reads(protocol: Protocol, extra: dict[str, str], usual: bool) -> None:
    """On the usual form with fields changed or added, or on the fields alone: what the quick read
    gives is the general path's spec and DryRun; where the general path refuses, it gives None."""
    params = {**USUAL, **extra} if usual else dict(extra)
    got = flat_spec(dict(params))
    if got is None:
        return   # (the general path reads it, as before: nothing to compare)
    assert got == general(protocol, params)


@settings(max_examples=600, deadline=None)
@given(_FIELDS, st.sampled_from([True, True, True, False]), st.lists(_ODD, min_size=1, max_size=4))
@example({"TagSpecification.1.Tag.1.Key": "", "TagSpecification.1.ResourceType": "instance"}, True, [""])
@example({"TagSpecification.2.Tag.1.Key": "k", "TagSpecification.1.ResourceType": "instance"}, True, ["x"])
@example({"TagSpecification.2.ResourceType": "volume", "InstanceInitiatedShutdownBehavior": ""}, True, ["a"])
def test_the_shapes_plan_reads_as_the_field_by_field_read(extra: dict[str, str], usual: bool, odd: list[str]) -> None:
    """`flat_spec`'s function generated per shape (the form's names in order) answers as
    `read_flat`, None included; and so does it, once made, for the same names given other values."""
    params = {**USUAL, **extra} if usual else dict(extra)
    assert flat_spec(dict(params)) == read_flat(dict(params))
    for n, key in enumerate(params):   # (the same shape, one value changed at a time)
        other = {**params, key: odd[n % len(odd)]}
        assert flat_spec(dict(other)) == read_flat(dict(other)), (key, other[key])


def test_the_shapes_plans_are_bounded() -> None:
    for n in range(3 * launch._MAX_PLANS):   # noqa: SLF001
        tags = {f"TagSpecification.1.Tag.{m}.Key": "k" for m in range(1, n % 16 + 2)}
        groups = {f"SecurityGroupId.{m}": "sg-1" for m in range(1, n // 16 + 2)}
        params = {**USUAL, **tags, **groups}
        assert flat_spec(dict(params)) == read_flat(dict(params))
        assert len(launch._plans) <= launch._MAX_PLANS   # noqa: SLF001


def test_fields_it_does_not_read_go_the_general_way(protocol: Protocol) -> None:
    for key, value in [("EbsOptimized", "false"), ("SecurityGroupId", "sg-1"), ("MinCount", "+1"),
                       ("BlockDeviceMapping.1.DeviceName", "/dev/vda"), ("LaunchTemplate.LaunchTemplateId", "lt-1"),
                       ("TagSpecification.1.ResourceType", "image"), ("ImageId", ""), ("DryRun", "yes")]:
        assert flat_spec({**USUAL, key: value}) is None, key
    assert flat_spec({k: v for k, v in USUAL.items() if k != "MaxCount"}) is None


async def test_a_usual_launch_through_boto3(server: Any, ec2: Any, image_id: str) -> None:
    """boto3's launch with a zone, a group and tags (read at once): the answer carries them, as the
    instance's describe does; its DryRun is refused as a dry run."""
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    group = ec2.create_security_group(GroupName="form-web", Description="d")["GroupId"]
    tags = [{"Key": "Name", "Value": "a<b"}, {"Key": "env", "Value": ""}]
    kw: dict[str, Any] = dict(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                              Placement={"AvailabilityZone": zone}, SecurityGroupIds=[group],
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    with pytest.raises(ClientError) as e:
        ec2.run_instances(DryRun=True, **kw)
    assert e.value.response["Error"]["Code"] == "DryRunOperation"
    launched = ec2.run_instances(**kw)["Instances"][0]
    assert launched["Placement"]["AvailabilityZone"] == zone and launched["InstanceType"] == "t3.nano"
    assert [g["GroupId"] for g in launched["SecurityGroups"]] == [group]
    assert sorted((t["Key"], t["Value"]) for t in launched["Tags"]) == [("Name", "a<b"), ("env", "")]
    described = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]["Instances"][0]
    skip = {"State", "PublicDnsName", "PublicIpAddress", "NetworkInterfaces", "StateTransitionReason",
            "StateReason", "BlockDeviceMappings"}   # (these follow the instance's state, which moves on)
    assert set(launched) - {"StateReason"} == set(described) - {"StateReason"}
    assert {k: v for k, v in launched.items() if k not in skip} == {k: v for k, v in described.items() if k not in skip}
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
