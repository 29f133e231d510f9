"""The EC2 wire protocol against botocore itself.

Requests are serialized by botocore's own EC2 serializer and parsed back by
``Protocol.parse``; responses rendered by ``Protocol.serialize`` are parsed by
botocore's EC2 response parser.  Round trips, not hard-coded expectations,
prove that both sides agree with the model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import botocore.model
import botocore.parsers
import botocore.serialize
import botocore.session
import botocore.validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2 import model as model_mod
from cloudctl.api.ec2.model import OPERATIONS, Ec2Model, ModelError, cache_path, load_model
from cloudctl.api.ec2.protocol import ParamError, Protocol, SerializationError

UTC = timezone.utc
REQUEST_ID = "59dbff89-35bd-4eac-99ed-be587EXAMPLE"
T0 = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)

# ---------------------------------------------------------------------------
# Fixtures and botocore helpers


@pytest.fixture(scope="module")
def ec2_model(tmp_path_factory: pytest.TempPathFactory) -> Ec2Model:
    return load_model(OPERATIONS, tmp_path_factory.mktemp("ec2-model"))


@pytest.fixture(scope="module")
def proto(ec2_model: Ec2Model) -> Protocol:
    return Protocol(ec2_model)


@pytest.fixture(scope="module")
def service() -> botocore.model.ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


def wire_params(service: botocore.model.ServiceModel, op: str, params: Mapping[str, Any]) -> dict[str, str]:
    """The form fields a botocore client would send, decoded the way the server sees them.

    Validation is left to the caller: generated values ignore min/max.
    """
    operation = service.operation_model(op)
    serializer = botocore.serialize.create_serializer("ec2", include_validation=False)
    request = serializer.serialize_to_request(params, operation)
    # AWSRequest url-encodes the body dict exactly like this.
    pairs = parse_qsl(urlencode(request["body"], doseq=True), keep_blank_values=True)
    fields = dict(pairs)
    assert len(fields) == len(pairs)
    assert fields.pop("Action") == op
    assert fields.pop("Version") == service.api_version
    return fields


def expected_input(value: Any, shape: botocore.model.Shape) -> Any:
    """What parse should return for ``value``, after botocore's client-side rules.

    EC2 serialization drops empty lists (and so structures left empty),
    blobs given as str travel as UTF-8 bytes, naive timestamps mean UTC.
    """
    if shape.type_name == "structure":
        out = {}
        for key, item in value.items():
            normal = expected_input(item, shape.members[key])
            if normal not in ([], {}):
                out[key] = normal
        return out
    if shape.type_name == "list":
        return [expected_input(item, shape.member) for item in value]
    if shape.type_name == "blob":
        return value.encode() if isinstance(value, str) else value
    if shape.type_name == "timestamp" and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if shape.type_name == "double" or shape.type_name == "float":
        return float(value)
    return value


def request_round_trip(
    proto: Protocol, service: botocore.model.ServiceModel, op: str, params: dict[str, Any], validate: bool = True
) -> dict[str, Any]:
    shape = service.operation_model(op).input_shape
    if validate:
        botocore.validate.validate_parameters(params, shape)
    parsed = proto.parse(op, wire_params(service, op, params))
    assert parsed == expected_input(params, shape)
    return parsed


def botocore_parse(service: botocore.model.ServiceModel, op: str, body: bytes, status: int = 200) -> dict[str, Any]:
    shape = service.operation_model(op).output_shape
    parser = botocore.parsers.create_parser("ec2")
    return parser.parse({"body": body, "status_code": status, "headers": {}}, shape)


def strip_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value if v is not None]
    return value


def response_round_trip(
    proto: Protocol, service: botocore.model.ServiceModel, op: str, result: dict[str, Any]
) -> dict[str, Any]:
    body = proto.serialize(op, result, REQUEST_ID)
    parsed = botocore_parse(service, op, body)
    meta = parsed.pop("ResponseMetadata")
    assert meta["RequestId"] == REQUEST_ID
    assert meta["HTTPStatusCode"] == 200
    assert parsed == strip_none(result)
    return parsed


# ---------------------------------------------------------------------------
# Exhaustive generated values: every member of every shape an operation uses


class _Values:
    """Deterministic, type-correct values that exercise every member once."""

    def __init__(self) -> None:
        self.n = 0

    def make(self, shape: botocore.model.Shape, name: str, depth: int = 0) -> Any:
        self.n += 1
        kind = shape.type_name
        if kind == "structure":
            return {m: self.make(s, m, depth + 1) for m, s in shape.members.items()}
        if kind == "list":
            # Two elements show ordering; deep lists stay short to bound size.
            count = 2 if depth < 6 else 1
            return [self.make(shape.member, name, depth + 1) for _ in range(count)]
        if kind == "string":
            return f"{name}-{self.n} é&<>\"'"
        if kind in ("integer", "long"):
            return self.n * (1 if kind == "integer" else 10**10)
        if kind == "boolean":
            return self.n % 2 == 0
        if kind in ("double", "float"):
            return self.n + 0.25
        if kind == "timestamp":
            return T0 + timedelta(days=self.n, milliseconds=self.n)
        if kind == "blob":
            return bytes([0, 255, self.n % 256]) + b"blob"
        raise AssertionError(f"unexpected type {kind}")


@pytest.mark.parametrize("op", OPERATIONS)
def test_request_round_trip_every_member(proto: Protocol, service: botocore.model.ServiceModel, op: str) -> None:
    params = _Values().make(service.operation_model(op).input_shape, op)
    parsed = request_round_trip(proto, service, op, params, validate=False)
    assert parsed  # non-trivial


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op not in ("RebootInstances", "ModifyInstanceAttribute", "CreateTags", "DeleteTags",
                                                              "DeleteVolume", "DeleteSnapshot", "DisassociateAddress",
                                                              "ReleaseAddress")])
def test_response_round_trip_every_member(proto: Protocol, service: botocore.model.ServiceModel, op: str) -> None:
    shape = service.operation_model(op).output_shape
    assert shape is not None
    response_round_trip(proto, service, op, _Values().make(shape, op))


# ---------------------------------------------------------------------------
# Representative requests for every operation, validated by botocore

TAGS = [{"Key": "Name", "Value": "web-1"}, {"Key": "env", "Value": "prod"}]
FILTERS = [
    {"Name": "instance-state-name", "Values": ["running", "pending"]},
    {"Name": "tag:Name", "Values": [f"web-{i}" for i in range(1, 13)]},  # > 10 values: .10 after .9
    {"Name": "availability-zone", "Values": ["az1"]},
]

_TEMPLATE_DATA: dict[str, Any] = {
    "ImageId": "ami-1", "InstanceType": "t3.nano", "KeyName": "k", "UserData": "aGk=", "RamDiskId": "ari-1",
    "Placement": {"AvailabilityZone": "cloudctl-1a"}, "DisableApiTermination": True,
    "InstanceInitiatedShutdownBehavior": "terminate",
    "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "subnet-1", "Groups": ["sg-1", "sg-2"],
                           "AssociatePublicIpAddress": True}],
    "BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2, "DeleteOnTermination": True}}],
    "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "n"}]}],
}
REQUESTS: dict[str, dict[str, Any]] = {
    "RunInstances": {
        "ImageId": "ami-0123456789abcdef0",
        "InstanceType": "site.custom-large",  # site-defined: enums are not validated
        "MinCount": 1,
        "MaxCount": 3,
        "KeyName": "default",
        "UserData": "IyEvYmluL3NoCmVjaG8gaGk=",  # the boto3 client base64-encodes this string member
        "Placement": {"AvailabilityZone": "az1", "Tenancy": "default"},
        "Monitoring": {"Enabled": False},
        "SecurityGroupIds": ["sg-1", "sg-2"],
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/vda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3", "DeleteOnTermination": True}},
            {"DeviceName": "/dev/vdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/vdc", "NoDevice": ""},
        ],
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": "subnet-1",
                "Groups": ["sg-1", "sg-2"],
                "AssociatePublicIpAddress": True,
                "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.5", "Primary": True}],
                "Ipv6Addresses": [{"Ipv6Address": "fd00::5"}],
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": TAGS},
            {"ResourceType": "volume", "Tags": [{"Key": "backup", "Value": ""}]},
        ],
        "ClientToken": "token-1",
        "DisableApiTermination": False,
        "InstanceInitiatedShutdownBehavior": "terminate",
        "CpuOptions": {"CoreCount": 2, "ThreadsPerCore": 1},
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
        "DryRun": False,
    },
    "DescribeInstances": {"InstanceIds": ["i-1", "i-2"], "Filters": FILTERS, "MaxResults": 5, "NextToken": "t", "DryRun": True},
    "TerminateInstances": {"InstanceIds": ["i-1"], "DryRun": False},
    "StartInstances": {"InstanceIds": ["i-1", "i-2"], "AdditionalInfo": "x"},
    "StopInstances": {"InstanceIds": ["i-1"], "Force": True, "Hibernate": False},
    "RebootInstances": {"InstanceIds": [f"i-{n}" for n in range(11)]},
    "DescribeInstanceStatus": {"InstanceIds": ["i-1"], "IncludeAllInstances": True, "Filters": FILTERS[:1], "MaxResults": 10},
    "DescribeInstanceAttribute": {"InstanceId": "i-1", "Attribute": "userData"},
    "ModifyInstanceAttribute": {
        "InstanceId": "i-1",
        "InstanceType": {"Value": "m5.large"},
        "DisableApiTermination": {"Value": True},
        "UserData": {"Value": b"#!/bin/sh\necho \x00\xff"},
        "Groups": ["sg-1", "sg-2"],
        "BlockDeviceMappings": [{"DeviceName": "/dev/vda", "Ebs": {"DeleteOnTermination": False, "VolumeId": "vol-1"}}],
    },
    "GetConsoleOutput": {"InstanceId": "i-1", "Latest": True},
    "DescribeInstanceTypes": {"InstanceTypes": ["m5.large", "t3.micro"], "Filters": [{"Name": "vcpu-info.default-vcpus", "Values": ["2"]}], "MaxResults": 100},
    "DescribeInstanceCreditSpecifications": {"InstanceIds": ["i-1"], "MaxResults": 5},
    "DescribeAvailabilityZones": {"ZoneNames": ["az1"], "AllAvailabilityZones": True},
    "DescribeRegions": {"RegionNames": ["site-1"], "AllRegions": False, "Filters": [{"Name": "endpoint", "Values": ["*"]}]},
    "DescribeAccountAttributes": {"AttributeNames": ["supported-platforms", "default-vpc"]},
    "CreateKeyPair": {"KeyName": "k1", "KeyType": "ed25519", "KeyFormat": "pem", "TagSpecifications": [{"ResourceType": "key-pair", "Tags": TAGS}]},
    "ImportKeyPair": {"KeyName": "k2", "PublicKeyMaterial": b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG test@host"},
    "DeleteKeyPair": {"KeyName": "k1", "KeyPairId": "key-1"},
    "DescribeKeyPairs": {"KeyNames": ["k1", "k2"], "IncludePublicKey": True, "Filters": [{"Name": "key-name", "Values": ["k*"]}]},
    "CreateTags": {"Resources": ["i-1", "ami-1"], "Tags": TAGS + [{"Key": "empty", "Value": ""}]},
    "DeleteTags": {"Resources": ["i-1"], "Tags": [{"Key": "Name"}, {"Key": "env", "Value": "prod"}]},
    "DescribeTags": {"Filters": [{"Name": "resource-id", "Values": ["i-1"]}, {"Name": "key", "Values": ["Name"]}], "MaxResults": 50},
    "CreateImage": {"InstanceId": "i-1", "Name": "snap", "Description": "d", "NoReboot": True,
                    "TagSpecifications": [{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}]},
    "RegisterImage": {
        "Name": "img",
        "ImageLocation": "bucket/img.manifest.xml",
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/vda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8}}],
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "BootMode": "uefi",
        "TagSpecifications": [{"ResourceType": "image", "Tags": TAGS}],
    },
    "DescribeImages": {"ImageIds": ["ami-1"], "Owners": ["self", "123456789012"], "ExecutableUsers": ["all"], "IncludeDeprecated": True, "Filters": FILTERS[:2]},
    "DeregisterImage": {"ImageId": "ami-1", "DeleteAssociatedSnapshots": True},
    "CreateVolume": {"AvailabilityZone": "az1", "Size": 8, "VolumeType": "gp3", "Iops": 3000, "Throughput": 125,
                     "SnapshotId": "snap-1", "ClientToken": "t-1",
                     "TagSpecifications": [{"ResourceType": "volume", "Tags": TAGS}]},
    "DescribeVolumes": {"Filters": [{"Name": "attachment.instance-id", "Values": ["i-1"]}, FILTERS[1]],
                        "MaxResults": 1000, "NextToken": "tok"},
    "DeleteVolume": {"VolumeId": "vol-1"},
    "AttachVolume": {"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/sdf"},
    "DetachVolume": {"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/sdf", "Force": True},
    "CreateSnapshot": {"VolumeId": "vol-1", "Description": "nightly",
                       "TagSpecifications": [{"ResourceType": "snapshot", "Tags": TAGS}]},
    "DescribeSnapshots": {"SnapshotIds": ["snap-1", "snap-2"], "OwnerIds": ["self"], "RestorableByUserIds": ["self"],
                          "Filters": [{"Name": "volume-id", "Values": ["vol-1"]}]},
    "DeleteSnapshot": {"SnapshotId": "snap-1"},
    "DescribeVpcs": {"VpcIds": ["vpc-1"], "Filters": [{"Name": "is-default", "Values": ["true"]}]},
    "DescribeSubnets": {"SubnetIds": ["subnet-1"], "MaxResults": 5,
                        "Filters": [{"Name": "default-for-az", "Values": ["true"]}]},
    "CreateSecurityGroup": {"GroupName": "web", "Description": "web tier", "VpcId": "vpc-1",
                            "TagSpecifications": [{"ResourceType": "security-group", "Tags": TAGS}]},
    "DeleteSecurityGroup": {"GroupId": "sg-1"},
    "DescribeSecurityGroups": {"GroupIds": ["sg-1"], "GroupNames": ["web"], "MaxResults": 5, "NextToken": "tok",
                               "Filters": [{"Name": "ip-permission.from-port", "Values": ["22"]}]},
    "DescribeSecurityGroupRules": {"SecurityGroupRuleIds": ["sgr-1"], "Filters": [FILTERS[1]]},
    "AuthorizeSecurityGroupIngress": {"GroupId": "sg-1", "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                     "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}],
                     "UserIdGroupPairs": [{"GroupId": "sg-2", "UserId": "123456789012"}]}]},
    "AuthorizeSecurityGroupEgress": {"GroupId": "sg-1", "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                                     "CidrIp": "0.0.0.0/0"},
    "RevokeSecurityGroupIngress": {"GroupName": "web", "SourceSecurityGroupName": "lb"},
    "RevokeSecurityGroupEgress": {"GroupId": "sg-1", "SecurityGroupRuleIds": ["sgr-1", "sgr-2"]},
    "ImportImage": {"Description": "web", "ClientToken": "t-1", "Architecture": "x86_64", "Platform": "Linux",
                    "DiskContainers": [{"Url": "https://example.org/disk.qcow2", "Format": "qcow2",
                                        "Description": "root"}],
                    "TagSpecifications": [{"ResourceType": "import-image-task", "Tags": TAGS}]},
    "DescribeImportImageTasks": {"ImportTaskIds": ["import-ami-1"],
                                 "Filters": [{"Name": "task-state", "Values": ["active"]}]},
    "CancelImportTask": {"ImportTaskId": "import-ami-1", "CancelReason": "no longer needed"},
    "AllocateAddress": {"Domain": "vpc", "Address": "198.51.100.7", "PublicIpv4Pool": "amazon",
                        "NetworkBorderGroup": "r1", "TagSpecifications": [
                            {"ResourceType": "elastic-ip", "Tags": [{"Key": "k", "Value": "v"}]}]},
    "AssociateAddress": {"AllocationId": "eipalloc-1", "InstanceId": "i-1", "PublicIp": "198.51.100.7",
                         "NetworkInterfaceId": "eni-1", "PrivateIpAddress": "10.0.0.4", "AllowReassociation": True},
    "DisassociateAddress": {"AssociationId": "eipassoc-1", "PublicIp": "198.51.100.7"},
    "ReleaseAddress": {"AllocationId": "eipalloc-1", "PublicIp": "198.51.100.7", "NetworkBorderGroup": "r1"},
    "DescribeAddresses": {"PublicIps": ["198.51.100.7", "198.51.100.8"], "AllocationIds": ["eipalloc-1"],
                          "Filters": [{"Name": "domain", "Values": ["vpc"]}]},
    "DescribeVpcAttribute": {"VpcId": "vpc-1", "Attribute": "enableDnsSupport", "DryRun": True},
    "DescribeNetworkInterfaces": {"NetworkInterfaceIds": ["eni-1", "eni-2"], "MaxResults": 5, "NextToken": "t",
                                  "Filters": [{"Name": "group-id", "Values": ["sg-1"]}]},
    "DescribeRouteTables": {"RouteTableIds": ["rtb-1"], "Filters": FILTERS, "MaxResults": 5},
    "DescribeInternetGateways": {"InternetGatewayIds": ["igw-1"], "Filters": FILTERS, "NextToken": "t"},
    "DescribeDhcpOptions": {"DhcpOptionsIds": ["dopt-1"], "Filters": FILTERS, "MaxResults": 5},
    "DescribeAddressesAttribute": {"AllocationIds": ["eipalloc-1"], "Attribute": "domain-name", "MaxResults": 5},
    "GetInstanceUefiData": {"InstanceId": "i-1", "DryRun": False},
    "CreateLaunchTemplate": {"LaunchTemplateName": "web", "VersionDescription": "v1", "ClientToken": "t",
                             "LaunchTemplateData": _TEMPLATE_DATA, "TagSpecifications": [
                                 {"ResourceType": "launch-template", "Tags": [{"Key": "k", "Value": "v"}]}]},
    "DescribeLaunchTemplates": {"LaunchTemplateNames": ["web"], "Filters": [{"Name": "tag:k", "Values": ["v"]}],
                                "MaxResults": 5},
    "ModifyLaunchTemplate": {"LaunchTemplateId": "lt-1", "DefaultVersion": "2"},
    "DeleteLaunchTemplate": {"LaunchTemplateName": "web"},
    "CreateLaunchTemplateVersion": {"LaunchTemplateId": "lt-1", "SourceVersion": "$Latest",
                                    "LaunchTemplateData": {"InstanceType": "t3.micro"}},
    "DescribeLaunchTemplateVersions": {"LaunchTemplateId": "lt-1", "Versions": ["$Latest", "1"], "MinVersion": "1",
                                       "MaxVersion": "3", "MaxResults": 10, "NextToken": "tok"},
    "DeleteLaunchTemplateVersions": {"LaunchTemplateId": "lt-1", "Versions": ["2", "3"]},
    "GetLaunchTemplateData": {"InstanceId": "i-1"},
}


def test_requests_cover_every_operation() -> None:
    assert sorted(REQUESTS) == sorted(OPERATIONS)


@pytest.mark.parametrize("op", sorted(REQUESTS))
def test_request_round_trip(proto: Protocol, service: botocore.model.ServiceModel, op: str) -> None:
    request_round_trip(proto, service, op, REQUESTS[op])


def test_request_shapes_are_botocore_shaped(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    """Spot-check the wire names and Python types the handlers will rely on."""
    fields = wire_params(service, "ModifyInstanceAttribute", REQUESTS["ModifyInstanceAttribute"])
    assert fields["InstanceType.Value"] == "m5.large"
    assert fields["DisableApiTermination.Value"] == "true"
    assert "GroupId.2" in fields
    parsed = proto.parse("ModifyInstanceAttribute", fields)
    assert parsed["UserData"] == {"Value": b"#!/bin/sh\necho \x00\xff"}
    assert parsed["DisableApiTermination"] == {"Value": True}

    run = wire_params(service, "RunInstances", REQUESTS["RunInstances"])
    assert run["TagSpecification.1.Tag.2.Key"] == "env"
    assert run["NetworkInterface.1.SecurityGroupId.2"] == "sg-2"
    assert run["NetworkInterface.1.PrivateIpAddresses.1.PrivateIpAddress"] == "10.0.0.5"  # queryName
    assert run["BlockDeviceMapping.1.Ebs.VolumeSize"] == "20"
    parsed = proto.parse("RunInstances", run)
    assert parsed["MinCount"] == 1 and parsed["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is True

    described = proto.parse("DescribeInstances", wire_params(service, "DescribeInstances", REQUESTS["DescribeInstances"]))
    assert described["Filters"][1]["Values"][9:] == ["web-10", "web-11", "web-12"]


def test_timestamp_and_float_inputs(proto: Protocol) -> None:
    # No implemented operation takes these types as input, so use a synthetic
    # model (the same JSON layout the builder writes).
    shapes = {
        "Req": {
            "type": "structure",
            "members": {
                "When": {"shape": "Ts", "locationName": "when"},
                "Ratio": {"shape": "Dbl"},
                "Big": {"shape": "Lng"},
                "Raw": {"shape": "Blb"},
            },
        },
        "Ts": {"type": "timestamp"},
        "Dbl": {"type": "double"},
        "Lng": {"type": "long"},
        "Blb": {"type": "blob"},
    }
    model = Ec2Model("2016-11-15", "http://ec2.amazonaws.com/doc/2016-11-15", "test",
                     {"Op": model_mod.Operation("Op", "Req", None)}, shapes)
    p = Protocol(model)
    parsed = p.parse("Op", {"When": "2024-05-01T12:30:15.123Z", "Ratio": "2.5", "Big": "-12345678901", "Raw": "AP8="})
    assert parsed == {"When": T0, "Ratio": 2.5, "Big": -12345678901, "Raw": b"\x00\xff"}
    assert parsed["When"].tzinfo is not None
    assert p.parse("Op", {"When": "2024-05-01T12:30:15.123"})["When"] == T0  # naive means UTC
    assert p.parse("Op", {"When": "2024-05-01T14:30:15.123+02:00"})["When"] == T0
    for field, bad in (("When", "yesterday"), ("Ratio", "1_0"), ("Ratio", "x"), ("Big", "1.5"), ("Raw", "!!!")):
        with pytest.raises(ParamError) as info:
            p.parse("Op", {field: bad})
        assert info.value.code == "InvalidParameterValue"


def test_list_indices_sort_as_integers_and_allow_gaps(proto: Protocol) -> None:
    params = {f"InstanceId.{n}": f"i-{n}" for n in (12, 3, 10, 1, 2, 11)}
    assert proto.parse("DescribeInstances", params)["InstanceIds"] == ["i-1", "i-2", "i-3", "i-10", "i-11", "i-12"]
    parsed = proto.parse("DescribeInstances", {"Filter.7.Name": "b", "Filter.7.Value.5": "y", "Filter.2.Name": "a", "Filter.7.Value.2": "x"})
    assert parsed["Filters"] == [{"Name": "a"}, {"Name": "b", "Values": ["x", "y"]}]


def test_an_unindexed_list_of_scalars_is_its_first_element(proto: Protocol) -> None:
    """libcloud's DescribeKeyPairs sends `KeyName=x`; EC2 reads it as `KeyName.1=x`."""
    assert proto.parse("DescribeKeyPairs", {"KeyName": "k"}) == {"KeyNames": ["k"]}
    assert proto.parse("DescribeInstances", {"InstanceId": "i-9", "InstanceId.1": "i-1", "InstanceId.0": "i-0"}
                       )["InstanceIds"] == ["i-9", "i-0", "i-1"]
    parsed = proto.parse("DescribeInstances", {"Filter.1.Name": "a", "Filter.1.Value": "x"})
    assert parsed["Filters"] == [{"Name": "a", "Values": ["x"]}]
    assert proto.parse("TerminateInstances", {"InstanceId": "i-1"}) == {"InstanceIds": ["i-1"]}


def test_booleans_are_case_insensitive(proto: Protocol) -> None:
    assert proto.parse("DescribeInstances", {"DryRun": "TRUE"}) == {"DryRun": True}
    assert proto.parse("DescribeInstances", {"DryRun": "False"}) == {"DryRun": False}


def test_empty_request(proto: Protocol) -> None:
    assert proto.parse("DescribeInstances", {}) == {}


# ---------------------------------------------------------------------------
# Request errors


@pytest.mark.parametrize(
    ("op", "params", "code", "needle"),
    [
        ("DescribeInstances", {"Foo": "1"}, "UnknownParameter", "The parameter Foo is not recognized"),
        ("DescribeInstances", {"dryRun": "true"}, "UnknownParameter", "dryRun"),  # wire names are capitalised
        ("DescribeInstances", {"InstanceIds.1": "i-1"}, "UnknownParameter", "InstanceIds.1"),  # member name is not the wire name
        ("DescribeInstances", {"Filter.1.Bogus": "x"}, "UnknownParameter", "Filter.1.Bogus"),
        ("DescribeInstances", {"Filter.Name": "x"}, "UnknownParameter", "Filter.Name"),  # structures need an index
        ("DescribeInstances", {"Filter": "x"}, "UnknownParameter", "Filter"),
        ("DescribeInstances", {"InstanceId.x": "i-1"}, "UnknownParameter", "InstanceId.x"),
        ("DescribeInstances", {"InstanceId.-1": "i-1"}, "UnknownParameter", "InstanceId.-1"),
        ("DescribeInstances", {"MaxResults.1": "5"}, "UnknownParameter", "MaxResults.1"),
        ("DescribeInstances", {"Filter.1": "x"}, "UnknownParameter", "Filter.1"),  # structure without member
        ("RunInstances", {"MinCount": "1", "MaxCount": "1", "Placement": "az1"}, "UnknownParameter", "Placement"),
        ("DescribeInstances", {"MaxResults": "five"}, "InvalidParameterValue", "five"),
        ("DescribeInstances", {"MaxResults": "5_0"}, "InvalidParameterValue", "MaxResults"),
        ("DescribeInstances", {"MaxResults": " 5"}, "InvalidParameterValue", "MaxResults"),
        ("DescribeInstances", {"DryRun": "yes"}, "InvalidParameterValue", "Value (yes) for parameter DryRun"),
        ("RunInstances", {"MinCount": "1", "MaxCount": "1", "BlockDeviceMapping.1.Ebs.VolumeSize": "big"}, "InvalidParameterValue", "BlockDeviceMapping.1.Ebs.VolumeSize"),
        ("ImportKeyPair", {"KeyName": "k", "PublicKeyMaterial": "not base64!"}, "InvalidParameterValue", "PublicKeyMaterial"),
        ("ImportKeyPair", {"KeyName": "k", "PublicKeyMaterial": "abc"}, "InvalidParameterValue", "PublicKeyMaterial"),
        ("TerminateInstances", {}, "MissingParameter", "The request must contain the parameter InstanceId"),
        ("TerminateInstances", {"DryRun": "true"}, "MissingParameter", "InstanceId"),
        ("RunInstances", {"MinCount": "1"}, "MissingParameter", "MaxCount"),
        ("CreateTags", {"ResourceId.1": "i-1"}, "MissingParameter", "Tag"),
        ("ImportKeyPair", {"KeyName": "k"}, "MissingParameter", "PublicKeyMaterial"),
        ("RunInstances", {"MinCount": "1", "MaxCount": "1", "ElasticInferenceAccelerator.1.Count": "1"},
         "MissingParameter", "ElasticInferenceAccelerator.1.Type"),
        ("NoSuchAction", {}, "InvalidAction", "NoSuchAction"),
    ],
)
def test_param_errors(proto: Protocol, op: str, params: dict[str, str], code: str, needle: str) -> None:
    with pytest.raises(ParamError) as info:
        proto.parse(op, params)
    assert info.value.code == code
    assert needle in info.value.message


def test_invalid_value_message_is_bounded(proto: Protocol) -> None:
    with pytest.raises(ParamError) as info:
        proto.parse("DescribeInstances", {"MaxResults": "9" * 10000 + "x"})
    assert len(info.value.message) < 400


def test_error_document_parses_in_botocore(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    body = proto.error("InvalidInstanceID.NotFound", "The instance ID 'i-1<&>' does not exist", REQUEST_ID)
    assert b"<RequestID>" in body
    parsed = botocore_parse(service, "DescribeInstances", body, status=400)
    assert parsed["Error"] == {"Code": "InvalidInstanceID.NotFound", "Message": "The instance ID 'i-1<&>' does not exist"}
    assert parsed["ResponseMetadata"]["RequestId"] == REQUEST_ID


def test_param_error_renders_as_error_document(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    with pytest.raises(ParamError) as info:
        proto.parse("DescribeInstances", {"Bogus": "1"})
    body = proto.error(info.value.code, info.value.message, REQUEST_ID)
    parsed = botocore_parse(service, "DescribeInstances", body, status=400)
    assert parsed["Error"]["Code"] == "UnknownParameter"


# ---------------------------------------------------------------------------
# Representative responses


def instance(n: int, tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "InstanceId": f"i-{n:017x}",
        "ImageId": "ami-0123456789abcdef0",
        "State": {"Code": 16, "Name": "running"},
        "PrivateDnsName": f"ip-10-0-0-{n}.site.internal",
        "PublicDnsName": "",
        "StateTransitionReason": "",
        "KeyName": "default",
        "AmiLaunchIndex": 0,
        "ProductCodes": [],
        "InstanceType": "site.custom-large",
        "LaunchTime": T0,
        "Placement": {"AvailabilityZone": "az1", "GroupName": "", "Tenancy": "default"},
        "Monitoring": {"State": "disabled"},
        "PrivateIpAddress": f"10.0.0.{n}",
        "PublicIpAddress": None,  # None means "leave out"
        "StateReason": {"Code": "Client.UserInitiatedShutdown", "Message": "Client.UserInitiatedShutdown: User initiated shutdown"},
        "Architecture": "x86_64",
        "RootDeviceType": "ebs",
        "RootDeviceName": "/dev/vda",
        "BlockDeviceMappings": [],
        "VirtualizationType": "hvm",
        "ClientToken": "",
        "Tags": tags if tags is not None else [{"Key": "Name", "Value": f"web-{n}"}, {"Key": "env", "Value": "prod"}],
        "SecurityGroups": [{"GroupId": "sg-1", "GroupName": "default"}],
        "Hypervisor": "xen",
        "EbsOptimized": False,
        "EnaSupport": True,
        "SourceDestCheck": True,
        "CpuOptions": {"CoreCount": 2, "ThreadsPerCore": 2},
        "MetadataOptions": {"State": "applied", "HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled"},
    }


def state_change(n: int) -> dict[str, Any]:
    return {"InstanceId": f"i-{n}", "CurrentState": {"Code": 32, "Name": "shutting-down"}, "PreviousState": {"Code": 16, "Name": "running"}}


RESPONSES: dict[str, dict[str, Any]] = {
    "RunInstances": {
        "ReservationId": "r-1",
        "OwnerId": "123456789012",
        "Groups": [],
        "Instances": [instance(1), instance(2, tags=[])],
    },
    "DescribeInstances": {
        "Reservations": [
            {"ReservationId": "r-1", "OwnerId": "123456789012", "Groups": [], "Instances": [instance(1), instance(2)]},
            {"ReservationId": "r-2", "OwnerId": "123456789012", "Groups": [], "Instances": [instance(3)]},
        ],
        "NextToken": None,
    },
    "TerminateInstances": {"TerminatingInstances": [state_change(1), state_change(2)]},
    "StartInstances": {"StartingInstances": [state_change(1)]},
    "StopInstances": {"StoppingInstances": [state_change(1)]},
    "DescribeInstanceStatus": {
        "InstanceStatuses": [
            {
                "InstanceId": "i-1",
                "AvailabilityZone": "az1",
                "InstanceState": {"Code": 16, "Name": "running"},
                "InstanceStatus": {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]},
                "SystemStatus": {"Status": "impaired", "Details": [{"Name": "reachability", "Status": "failed", "ImpairedSince": T0}]},
                "Events": [],
            }
        ],
        "NextToken": "next",
    },
    "DescribeInstanceAttribute": {
        "InstanceId": "i-1",
        "InstanceType": {"Value": "m5.large"},
        "DisableApiTermination": {"Value": False},
        "UserData": {"Value": "IyEvYmluL3No"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/vda", "Ebs": {"VolumeId": "vol-1", "Status": "attached", "AttachTime": T0, "DeleteOnTermination": True}}],
        "Groups": [{"GroupId": "sg-1", "GroupName": "default"}],
    },
    "GetConsoleOutput": {"InstanceId": "i-1", "Timestamp": T0, "Output": "Ym9vdGluZy4uLgo="},
    "DescribeInstanceTypes": {
        "InstanceTypes": [
            {
                "InstanceType": "site.custom-large",
                "CurrentGeneration": True,
                "FreeTierEligible": False,
                "SupportedUsageClasses": ["on-demand"],
                "SupportedRootDeviceTypes": ["ebs"],
                "SupportedVirtualizationTypes": ["hvm"],
                "BareMetal": False,
                "Hypervisor": "xen",
                "ProcessorInfo": {"SupportedArchitectures": ["x86_64"], "SustainedClockSpeedInGhz": 3.1, "Manufacturer": "Intel"},
                "VCpuInfo": {"DefaultVCpus": 4, "DefaultCores": 2, "DefaultThreadsPerCore": 2, "ValidCores": [1, 2], "ValidThreadsPerCore": [1, 2]},
                "MemoryInfo": {"SizeInMiB": 16384},
                "InstanceStorageSupported": False,
                "EbsInfo": {"EbsOptimizedSupport": "default", "EncryptionSupport": "supported", "NvmeSupport": "required"},
                "NetworkInfo": {"NetworkPerformance": "Up to 10 Gigabit", "MaximumNetworkInterfaces": 3, "Ipv6Supported": True, "EnaSupport": "required"},
                "PlacementGroupInfo": {"SupportedStrategies": ["cluster", "partition", "spread"]},
                "HibernationSupported": False,
                "BurstablePerformanceSupported": False,
                "DedicatedHostsSupported": False,
                "AutoRecoverySupported": True,
                "SupportedBootModes": ["legacy-bios", "uefi"],
            }
        ],
        "NextToken": None,
    },
    "DescribeInstanceCreditSpecifications": {"InstanceCreditSpecifications": [{"InstanceId": "i-1", "CpuCredits": "standard"}]},
    "DescribeAvailabilityZones": {
        "AvailabilityZones": [
            {"ZoneName": "az1", "ZoneId": "site1-az1", "State": "available", "RegionName": "site-1", "Messages": [],
             "OptInStatus": "opt-in-not-required", "ZoneType": "availability-zone", "GroupName": "site-1", "NetworkBorderGroup": "site-1"}
        ]
    },
    "DescribeRegions": {"Regions": [{"RegionName": "site-1", "Endpoint": "ec2.site-1.cloud.internal", "OptInStatus": "opt-in-not-required"}]},
    "DescribeAccountAttributes": {
        "AccountAttributes": [
            {"AttributeName": "supported-platforms", "AttributeValues": [{"AttributeValue": "VPC"}]},
            {"AttributeName": "max-instances", "AttributeValues": [{"AttributeValue": "5000"}]},
        ]
    },
    "CreateKeyPair": {
        "KeyName": "k1",
        "KeyFingerprint": "1f:51:ae:28:bf:89:e9:d8:1f:25:5d:37:2d:7d:b8:ca:9f:f5:f1:6f",
        "KeyMaterial": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----",
        "KeyPairId": "key-1",
        "Tags": [],
    },
    "ImportKeyPair": {"KeyName": "k2", "KeyFingerprint": "SHA256:abc", "KeyPairId": "key-2", "Tags": [{"Key": "a", "Value": "b"}]},
    "DeleteKeyPair": {"Return": True, "KeyPairId": "key-1"},
    "DescribeKeyPairs": {
        "KeyPairs": [
            {"KeyPairId": "key-1", "KeyName": "k1", "KeyType": "ed25519", "KeyFingerprint": "SHA256:x", "CreateTime": T0,
             "PublicKey": "ssh-ed25519 AAAA test", "Tags": []},
            {"KeyPairId": "key-2", "KeyName": "k2", "KeyType": "rsa", "KeyFingerprint": "ab:cd", "CreateTime": T0, "Tags": TAGS},
        ]
    },
    "DescribeTags": {
        "Tags": [
            {"ResourceId": "i-1", "ResourceType": "instance", "Key": "Name", "Value": "web-1"},
            {"ResourceId": "ami-1", "ResourceType": "image", "Key": "empty", "Value": ""},
        ],
        "NextToken": None,
    },
    "RegisterImage": {"ImageId": "ami-1"},
    "CreateImage": {"ImageId": "ami-2"},
    "DescribeImages": {
        "Images": [
            {
                "ImageId": "ami-1",
                "ImageLocation": "site/img",
                "State": "available",
                "OwnerId": "123456789012",
                "CreationDate": "2024-05-01T12:30:15.000Z",  # a string in the model, not a timestamp
                "Public": False,
                "ProductCodes": [],
                "Architecture": "x86_64",
                "ImageType": "machine",
                "Name": "img",
                "Description": "base image",
                "RootDeviceType": "ebs",
                "RootDeviceName": "/dev/vda",
                "BlockDeviceMappings": [{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8, "DeleteOnTermination": True,
                                                                          "VolumeType": "gp3", "Encrypted": False}}],
                "VirtualizationType": "hvm",
                "Hypervisor": "xen",
                "EnaSupport": True,
                "BootMode": "uefi",
                "Tags": TAGS,
            }
        ]
    },
    "DeregisterImage": {"Return": True, "DeleteSnapshotResults": [{"SnapshotId": "snap-1", "ReturnCode": "success"}]},
    **{op: {"VolumeId": "vol-1", "Size": 8, "SnapshotId": "", "AvailabilityZone": "az1", "State": state,
            "CreateTime": T0, "Attachments": attachments, "Encrypted": False, "VolumeType": "gp3", "Iops": 3000,
            "Throughput": 125, "MultiAttachEnabled": False, "Tags": TAGS}
       for op, state, attachments in (
           ("CreateVolume", "creating", []),
           ("DescribeVolumes", "in-use", [{"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/sdf",
                                           "State": "attached", "AttachTime": T0, "DeleteOnTermination": False}]))},
    "AttachVolume": {"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/sdf", "State": "attaching",
                     "AttachTime": T0, "DeleteOnTermination": False},
    "DetachVolume": {"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/sdf", "State": "detaching",
                     "AttachTime": T0, "DeleteOnTermination": False},
    **{op: {"SnapshotId": "snap-1", "VolumeId": "vol-1", "State": state, "StartTime": T0, "Progress": progress,
            "OwnerId": "123456789012", "Description": "nightly", "VolumeSize": 8, "Encrypted": False,
            "StorageTier": "standard", "Tags": TAGS}
       for op, state, progress in (("CreateSnapshot", "pending", "0%"), ("DescribeSnapshots", "completed", "100%"))},
}
_IMPORT_TASK = {"ImportTaskId": "import-ami-1", "Architecture": "x86_64", "Description": "web", "Platform": "Linux",
                "Status": "completed", "ImageId": "ami-1", "Encrypted": False, "Hypervisor": "xen",
                "SnapshotDetails": [{"DeviceName": "/dev/vda", "Url": "https://example.org/disk.qcow2",
                                     "Format": "QCOW2", "Status": "completed", "DiskImageSize": 393216.0}],
                "Tags": TAGS}
RESPONSES["ImportImage"] = {**_IMPORT_TASK, "Status": "active", "Progress": "0", "ImageId": None}
RESPONSES["DescribeImportImageTasks"] = {"ImportImageTasks": [{**_IMPORT_TASK, "BootMode": "legacy-bios"}]}
RESPONSES["CancelImportTask"] = {"ImportTaskId": "import-ami-1", "PreviousState": "active", "State": "deleting"}
RESPONSES["DescribeVolumes"] = {"Volumes": [RESPONSES["DescribeVolumes"]], "NextToken": "tok"}
RESPONSES["DescribeSnapshots"] = {"Snapshots": [RESPONSES["DescribeSnapshots"]]}
RESPONSES["DescribeVpcs"] = {"Vpcs": [{
    "VpcId": "vpc-1", "State": "available", "CidrBlock": "10.0.0.0/8", "IsDefault": True, "OwnerId": "1",
    "CidrBlockAssociationSet": [{"AssociationId": "a-1", "CidrBlock": "10.0.0.0/8",
                                 "CidrBlockState": {"State": "associated"}}]}]}
RESPONSES["DescribeSubnets"] = {"Subnets": [{
    "SubnetId": "subnet-1", "VpcId": "vpc-1", "CidrBlock": "10.0.0.0/24", "AvailableIpAddressCount": 250,
    "AvailabilityZone": "az1", "DefaultForAz": True, "MapPublicIpOnLaunch": False, "State": "available",
    "Tags": TAGS}], "NextToken": "tok"}
_RULE = {"SecurityGroupRuleId": "sgr-1", "GroupId": "sg-1", "GroupOwnerId": "123456789012", "IsEgress": False,
         "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "10.0.0.0/8", "Description": "ssh", "Tags": TAGS}
RESPONSES.update({
    "CreateSecurityGroup": {"GroupId": "sg-1", "Tags": TAGS},
    "DeleteSecurityGroup": {"Return": True, "GroupId": "sg-1"},
    "DescribeSecurityGroups": {"SecurityGroups": [{
        "GroupId": "sg-1", "GroupName": "web", "Description": "web tier", "OwnerId": "123456789012", "VpcId": "vpc-1",
        "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                     "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}],
                     "UserIdGroupPairs": [{"GroupId": "sg-2", "UserId": "123456789012"}]}],
        "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}], "Tags": TAGS}],
        "NextToken": "tok"},
    "DescribeSecurityGroupRules": {"SecurityGroupRules": [_RULE, {**_RULE, "CidrIpv4": None,
                                   "ReferencedGroupInfo": {"GroupId": "sg-2", "UserId": "123456789012"}}]},
    "AuthorizeSecurityGroupIngress": {"Return": True, "SecurityGroupRules": [_RULE]},
    "AuthorizeSecurityGroupEgress": {"Return": True, "SecurityGroupRules": [{**_RULE, "IsEgress": True}]},
    "RevokeSecurityGroupIngress": {"Return": True, "RevokedSecurityGroupRules": [
        {"SecurityGroupRuleId": "sgr-1", "GroupId": "sg-1", "IsEgress": False, "IpProtocol": "tcp", "FromPort": 22,
         "ToPort": 22, "ReferencedGroupId": "sg-2"}]},
    "RevokeSecurityGroupEgress": {"Return": True, "RevokedSecurityGroupRules": []},
})

RESPONSES["AllocateAddress"] = {"PublicIp": "198.51.100.7", "AllocationId": "eipalloc-1", "Domain": "vpc",
                               "PublicIpv4Pool": "amazon", "NetworkBorderGroup": "r1"}
RESPONSES["AssociateAddress"] = {"AssociationId": "eipassoc-1"}
RESPONSES["DescribeAddresses"] = {"Addresses": [{
    "PublicIp": "198.51.100.7", "AllocationId": "eipalloc-1", "Domain": "vpc", "AssociationId": "eipassoc-1",
    "InstanceId": "i-1", "PrivateIpAddress": "10.0.0.4", "NetworkInterfaceId": "eni-1",
    "NetworkInterfaceOwnerId": "123456789012", "PublicIpv4Pool": "amazon", "NetworkBorderGroup": "r1",
    "Tags": TAGS}]}

RESPONSES["DescribeVpcAttribute"] = {"VpcId": "vpc-1", "EnableDnsSupport": {"Value": True}}
RESPONSES["DescribeNetworkInterfaces"] = {"NetworkInterfaces": [{
    "NetworkInterfaceId": "eni-1", "SubnetId": "subnet-1", "VpcId": "vpc-1", "AvailabilityZone": "az1",
    "Description": "", "OwnerId": "123456789012", "RequesterManaged": False, "Status": "in-use",
    "MacAddress": "02:00:00:00:00:01", "PrivateIpAddress": "10.0.0.4", "PrivateDnsName": "ip-10-0-0-4.internal",
    "SourceDestCheck": True, "Groups": [{"GroupId": "sg-1", "GroupName": "web"}],
    "Attachment": {"AttachmentId": "eni-attach-1", "InstanceId": "i-1", "InstanceOwnerId": "123456789012",
                   "DeviceIndex": 0, "Status": "attached", "AttachTime": T0, "DeleteOnTermination": True,
                   "NetworkCardIndex": 0},
    "Association": {"PublicIp": "198.51.100.7", "PublicDnsName": "ec2-198-51-100-7.example", "IpOwnerId": "1",
                    "AllocationId": "eipalloc-1", "AssociationId": "eipassoc-1"},
    "TagSet": [], "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.4", "Primary": True}],
    "Ipv6Addresses": [], "InterfaceType": "interface"}], "NextToken": "tok"}
RESPONSES["DescribeRouteTables"] = {"RouteTables": [{
    "RouteTableId": "rtb-1", "VpcId": "vpc-1", "OwnerId": "000000000000",
    "Routes": [{"DestinationCidrBlock": "10.0.0.0/8", "GatewayId": "local", "State": "active",
                "Origin": "CreateRouteTable"}],
    "Associations": [{"RouteTableAssociationId": "rtbassoc-1", "RouteTableId": "rtb-1", "Main": True,
                      "AssociationState": {"State": "associated"}}], "PropagatingVgws": [], "Tags": []}]}
RESPONSES["DescribeInternetGateways"] = {"InternetGateways": []}
RESPONSES["DescribeDhcpOptions"] = {"DhcpOptions": []}
RESPONSES["DescribeAddressesAttribute"] = {"Addresses": [{"PublicIp": "198.51.100.7", "AllocationId": "eipalloc-1"}],
                                           "NextToken": "tok"}
RESPONSES["GetInstanceUefiData"] = {"InstanceId": "i-1"}
_TEMPLATE = {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "CreateTime": datetime(2026, 1, 2, tzinfo=UTC),
             "CreatedBy": "arn:aws:iam::123456789012:user/alice", "DefaultVersionNumber": 1,
             "LatestVersionNumber": 2, "Tags": [{"Key": "k", "Value": "v"}]}
_TEMPLATE_VERSION = {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "VersionNumber": 2,
                     "VersionDescription": "v2", "CreateTime": datetime(2026, 1, 2, tzinfo=UTC),
                     "CreatedBy": "arn:aws:iam::123456789012:user/alice", "DefaultVersion": False,
                     "LaunchTemplateData": _TEMPLATE_DATA}
RESPONSES.update({
    "CreateLaunchTemplate": {"LaunchTemplate": _TEMPLATE},
    "DescribeLaunchTemplates": {"LaunchTemplates": [_TEMPLATE], "NextToken": "tok"},
    "ModifyLaunchTemplate": {"LaunchTemplate": _TEMPLATE},
    "DeleteLaunchTemplate": {"LaunchTemplate": {**_TEMPLATE, "Tags": []}},
    "CreateLaunchTemplateVersion": {"LaunchTemplateVersion": _TEMPLATE_VERSION},
    "DescribeLaunchTemplateVersions": {"LaunchTemplateVersions": [_TEMPLATE_VERSION], "NextToken": "tok"},
    "DeleteLaunchTemplateVersions": {
        "SuccessfullyDeletedLaunchTemplateVersions": [
            {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "VersionNumber": 3}],
        "UnsuccessfullyDeletedLaunchTemplateVersions": [
            {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "web", "VersionNumber": 1,
             "ResponseError": {"Code": "unexpectedError", "Message": "the default version"}}]},
    "GetLaunchTemplateData": {"LaunchTemplateData": _TEMPLATE_DATA},
})

NO_OUTPUT = ("RebootInstances", "ModifyInstanceAttribute", "CreateTags", "DeleteTags", "DeleteVolume", "DeleteSnapshot",
             "DisassociateAddress", "ReleaseAddress")


def test_responses_cover_every_operation_with_output(service: botocore.model.ServiceModel) -> None:
    with_output = {op for op in OPERATIONS if service.operation_model(op).output_shape is not None}
    assert with_output == set(RESPONSES)
    assert set(OPERATIONS) - with_output == set(NO_OUTPUT)


@pytest.mark.parametrize("op", sorted(RESPONSES))
def test_response_round_trip(proto: Protocol, service: botocore.model.ServiceModel, op: str) -> None:
    response_round_trip(proto, service, op, RESPONSES[op])


@pytest.mark.parametrize("op", NO_OUTPUT)
def test_operations_without_output_return_true(proto: Protocol, service: botocore.model.ServiceModel, op: str) -> None:
    body = proto.serialize(op, {}, REQUEST_ID)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<' + op.encode() + b'Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">')
    assert b"<return>true</return>" in body
    assert botocore_parse(service, op, body)["ResponseMetadata"]["RequestId"] == REQUEST_ID


def test_response_envelope(proto: Protocol) -> None:
    body = proto.serialize("RegisterImage", {"ImageId": "ami-1"}, REQUEST_ID).decode()
    assert body == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<RegisterImageResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>{REQUEST_ID}</requestId><imageId>ami-1</imageId></RegisterImageResponse>"
    )


def test_list_element_names(proto: Protocol) -> None:
    body = proto.serialize("DescribeInstances", RESPONSES["DescribeInstances"], REQUEST_ID).decode()
    assert "<reservationSet><item><reservationId>r-1</reservationId>" in body
    assert "<tagSet><item><key>Name</key>" in body
    assert "<blockDeviceMapping/>" in body  # empty lists are emitted empty, parsed back as []
    assert "<launchTime>2024-05-01T12:30:15.123Z</launchTime>" in body
    assert "ipAddress" not in body  # None is left out


def test_timestamp_forms(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    cases = [
        T0,
        T0.replace(tzinfo=None),  # naive means UTC
        T0.astimezone(timezone(timedelta(hours=-5))),
        "2024-05-01T12:30:15.123Z",
        "2024-05-01T14:30:15.123+02:00",
        T0.timestamp(),
    ]
    for value in cases:
        body = proto.serialize("GetConsoleOutput", {"InstanceId": "i-1", "Timestamp": value}, REQUEST_ID)
        assert b"<timestamp>2024-05-01T12:30:15.123Z</timestamp>" in body
        assert botocore_parse(service, "GetConsoleOutput", body)["Timestamp"] == T0
    body = proto.serialize("GetConsoleOutput", {"InstanceId": "i-1", "Timestamp": ""}, REQUEST_ID)
    assert b"timestamp" not in body  # never an empty timestamp


def test_unknown_result_key_raises(proto: Protocol) -> None:
    with pytest.raises(SerializationError, match="Bogus"):
        proto.serialize("DescribeInstances", {"Reservations": [{"Instances": [{"Bogus": 1}]}]}, REQUEST_ID)
    with pytest.raises(SerializationError):
        proto.serialize("DescribeInstances", {"reservationSet": []}, REQUEST_ID)  # wire name, not member name
    with pytest.raises(SerializationError):
        proto.serialize("GetConsoleOutput", {"Timestamp": "not a time"}, REQUEST_ID)


# ---------------------------------------------------------------------------
# Escaping

NASTY = "a<&>\"' é ☃ 𝄞 ]]> \t\n\r\n end"


def test_escaping_round_trips_through_botocore(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    tags = [{"Key": "k<&>", "Value": NASTY}]
    parsed = request_round_trip(proto, service, "CreateTags", {"Resources": ["i-1"], "Tags": tags})
    assert parsed["Tags"] == tags
    result = {"Tags": [{"ResourceId": "i-1", "ResourceType": "instance", **t} for t in parsed["Tags"]]}
    response_round_trip(proto, service, "DescribeTags", result)
    response_round_trip(proto, service, "DescribeTags", {"Tags": [{"Key": NASTY, "Value": "x"}]})


def test_characters_invalid_in_xml_do_not_break_the_document(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    output = "boot\x00 log \x1b[0m \x08 \ud800 \ufffe ok"
    body = proto.serialize("GetConsoleOutput", {"InstanceId": "i-1", "Output": output}, "req\x01")
    parsed = botocore_parse(service, "GetConsoleOutput", body)
    assert parsed["Output"] == "boot\ufffd log \ufffd[0m \ufffd \ufffd \ufffd ok"
    error = proto.error("Code", "bad\x00message", "r")
    assert botocore_parse(service, "GetConsoleOutput", error, status=400)["Error"]["Message"] == "bad\ufffdmessage"


# ---------------------------------------------------------------------------
# The trimmed model and its cache


def test_model_contents(ec2_model: Ec2Model, service: botocore.model.ServiceModel) -> None:
    assert set(ec2_model.operations) == set(OPERATIONS)
    assert ec2_model.api_version == service.api_version
    assert ec2_model.xml_namespace == service.metadata["xmlNamespace"]
    for op in OPERATIONS:
        operation = service.operation_model(op)
        assert ec2_model.operation(op).input == operation.input_shape.name
        output = operation.output_shape
        assert ec2_model.operation(op).output == (output.name if output is not None else None)
    assert "documentation" not in ec2_model.shape("Filter")["members"]["Name"]
    assert ec2_model.shape("Filter")["members"]["Values"] == {"shape": "ValueStringList", "locationName": "Value"}
    assert len(ec2_model.shapes) < len(service.shape_names) / 4


def test_cache_is_reused_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cache_path(OPERATIONS, tmp_path)
    assert botocore.__version__ in path.name  # type: ignore[attr-defined]
    assert cache_path(list(reversed(OPERATIONS)), tmp_path) == path  # order does not matter
    assert cache_path(OPERATIONS[:3], tmp_path) != path

    first = load_model(OPERATIONS, tmp_path)
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cache was not used")

    monkeypatch.setattr(model_mod.subprocess, "run", no_build)
    assert load_model(OPERATIONS, tmp_path) == first


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    path = cache_path(["DescribeRegions"], tmp_path)
    path.write_text('{"format": 1, "trunc')
    model = load_model(["DescribeRegions"], tmp_path)
    assert set(model.operations) == {"DescribeRegions"}
    assert json.loads(path.read_text())["operations"]["DescribeRegions"]["output"] == "DescribeRegionsResult"


def test_unknown_operation_fails_to_build(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="NoSuchOperation"):
        load_model(["DescribeRegions", "NoSuchOperation"], tmp_path)


_SERVER_LIKE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    def rss_kib():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    from cloudctl.api.ec2.model import OPERATIONS, load_model
    from cloudctl.api.ec2.protocol import Protocol
    before = rss_kib()
    model = load_model(OPERATIONS, Path(sys.argv[1]))
    proto = Protocol(model)
    proto.compile_all()
    proto.parse("DescribeInstances", {"Filter.1.Name": "tag:Name", "Filter.1.Value.1": "a"})
    proto.serialize("DescribeRegions", {"Regions": [{"RegionName": "r"}]}, "req")
    after = rss_kib()
    print(json.dumps({"botocore": sorted(m for m in sys.modules if m.split(".")[0] == "botocore"),
                      "rss_added_kib": after - before, "rss_total_kib": after}))
    """
)


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_server_process_never_imports_botocore(tmp_path: Path, cache: str) -> None:
    if cache == "warm":
        load_model(OPERATIONS, tmp_path)
    proc = subprocess.run([sys.executable, "-c", _SERVER_LIKE, str(tmp_path)], capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    assert report["botocore"] == []
    size = cache_path(OPERATIONS, tmp_path).stat().st_size
    print(f"\n[{cache} cache] trimmed model: {size} bytes on disk; RSS added by load + compile: "
          f"{report['rss_added_kib']} KiB (process total {report['rss_total_kib']} KiB)")
    assert report["rss_added_kib"] < 16 * 1024


# ---------------------------------------------------------------------------
# Larger responses stay correct (speed is benchmarked separately, not timed here)


def test_many_instances_round_trip(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    result = {"Reservations": [{"ReservationId": f"r-{n}", "OwnerId": "1", "Groups": [], "Instances": [instance(n)]} for n in range(200)]}
    response_round_trip(proto, service, "DescribeInstances", result)


# ---------------------------------------------------------------------------
# The generated serializer against the original table-walking one, byte for byte
#
# The response side is rendered by Python functions generated per shape and key
# order (see protocol._Renderers).  Below is a frozen copy of the straightforward
# walker they replaced, run over the same compiled tables: every body, and every
# piece boundary of serialize_iter, must be identical.

from cloudctl.api.ec2 import protocol as protocol_mod  # noqa: E402
from cloudctl.api.ec2.protocol import LazyList  # noqa: E402
from cloudctl.api.ec2.wire_order import AWS_ORDER  # noqa: E402

_K = protocol_mod


def _ref_items(table: Any, value: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The members in wire order: those wire_order ranks first, by rank, then the rest as given."""
    order = table.order
    ranked = sorted((kv for kv in value.items() if kv[0] in order), key=lambda kv: order[kv[0]])
    return ranked + [kv for kv in value.items() if kv[0] not in order]


def _ref_write_struct(table: Any, value: Mapping[str, Any], out: Any) -> None:
    for key, item in _ref_items(table, value):
        if item is None:
            continue
        try:
            kind, open_tag, close_tag, payload = table[key]
        except KeyError:
            raise SerializationError(f"{key!r} is not a member of {table.shape_name}") from None
        if kind == _K._STR:
            out(open_tag + _K._esc(item) + close_tag)
        elif kind == _K._STRUCT:
            out(open_tag)
            _ref_write_struct(payload, item, out)
            out(close_tag)
        elif kind == _K._LIST:
            if item:
                out(open_tag)
                _ref_write_list(payload, item, out)
                out(close_tag)
            else:
                out(payload[4])
        elif kind == _K._BOOL:
            out(open_tag + ("true" if item else "false") + close_tag)
        else:
            text = payload(item)
            if text is not None:
                out(open_tag + text + close_tag)


def _ref_write_list(spec: Any, value: Any, out: Any) -> None:
    kind, open_tag, close_tag, payload, _ = spec
    for element in value:
        if element is None:
            continue
        if kind == _K._STRUCT:
            out(open_tag)
            _ref_write_struct(payload, element, out)
            out(close_tag)
        elif kind == _K._LIST:
            out(open_tag)
            _ref_write_list(payload, element, out)
            out(close_tag)
        else:
            text = payload(element)
            if text is not None:
                out(open_tag + text + close_tag)


def _ref_iter_struct(table: Any, value: Mapping[str, Any], parts: list[str], done: list[int], slice_items: int) -> Any:
    for key, item in _ref_items(table, value):
        if type(item) is not LazyList:
            _ref_write_struct(table, {key: item}, parts.append)
            continue
        _kind, open_tag, close_tag, spec = table[key]
        if not len(item):
            parts.append(spec[4])
            continue
        item_kind, item_open, item_close, item_payload, _ = spec
        parts.append(open_tag)
        for element in item:
            if item_kind == _K._STRUCT and any(type(v) is LazyList for v in element.values()):
                parts.append(item_open)
                yield from _ref_iter_struct(item_payload, element, parts, done, slice_items)
                parts.append(item_close)
            else:
                _ref_write_list(spec, (element,), parts.append)
            done[0] += 1
            if done[0] >= slice_items:
                done[0] = 0
                yield
        parts.append(close_tag)


def _ref_head(proto: Protocol, op: str) -> tuple[str, Any, str]:
    head, table, tail = proto._serializer(op)
    return head + _K._esc(REQUEST_ID) + "</requestId>", table, tail


def ref_serialize(proto: Protocol, op: str, result: Mapping[str, Any]) -> bytes:
    head, table, tail = _ref_head(proto, op)
    parts = [head]
    if table is None:
        parts.append("<return>true</return>")
    else:
        _ref_write_struct(table, result, parts.append)
    return ("".join(parts) + tail).encode()


def ref_serialize_iter(proto: Protocol, op: str, result: Mapping[str, Any], slice_items: int = 100) -> list[bytes]:
    head, table, tail = _ref_head(proto, op)
    parts, pieces = [head], []
    for _ in _ref_iter_struct(table, result, parts, [0], slice_items):
        pieces.append("".join(parts).encode())
        parts.clear()
    parts.append(tail)
    pieces.append("".join(parts).encode())
    return pieces


def lazify(value: Any) -> Any:
    """``value`` with every list of dicts (at any depth) turned into a one-shot LazyList."""
    if isinstance(value, dict):
        return {k: lazify(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = [lazify(v) for v in value]
        return LazyList(iter(items), len(items))
    return value


def _holds_lazy(value: Any) -> bool:
    if type(value) is LazyList:
        return True
    if isinstance(value, dict):
        return any(_holds_lazy(v) for v in value.values())
    return isinstance(value, list) and any(_holds_lazy(v) for v in value)


def assert_same_bytes(proto: Protocol, op: str, make: Any, slice_items: int = 100) -> None:
    """``make()`` builds the result afresh (LazyLists are one-shot)."""
    expected = ref_serialize(proto, op, make())
    assert proto.serialize(op, make(), REQUEST_ID) == expected
    for _ in range(2):  # the second call runs the cached (memoized) paths
        assert proto.serialize(op, make(), REQUEST_ID) == expected
        pieces = list(proto.serialize_iter(op, make(), REQUEST_ID, slice_items=slice_items))
        assert pieces == ref_serialize_iter(proto, op, make(), slice_items)
        assert b"".join(pieces) == expected
        # In one piece (the endpoint's answer not streamed): the same bytes, or None where a
        # member is rendered in slices (never without a LazyList in the result).
        whole = proto.serialize_whole(op, make(), REQUEST_ID)
        assert whole == expected or (whole is None and _holds_lazy(make()))


@pytest.mark.parametrize("op", sorted(RESPONSES))
def test_generated_serializer_matches_reference(proto: Protocol, op: str) -> None:
    assert_same_bytes(proto, op, lambda: RESPONSES[op])
    assert_same_bytes(proto, op, lambda: lazify(RESPONSES[op]), slice_items=1)


@pytest.mark.parametrize("op", sorted(RESPONSES))
def test_generated_serializer_matches_reference_every_member(proto: Protocol, service: botocore.model.ServiceModel,
                                                             op: str) -> None:
    result = _Values().make(service.operation_model(op).output_shape, op)
    assert_same_bytes(proto, op, lambda: result)
    assert_same_bytes(proto, op, lambda: lazify(result), slice_items=2)


def test_generated_serializer_edge_values(proto: Protocol) -> None:
    nasty = [NASTY, "", "x\x00y", "\ud800", "&", "a>b", "plain"]
    for n, text in enumerate(nasty):
        inst = instance(n, tags=[{"Key": text, "Value": nasty[n - 1]}, {"Key": "k", "Value": None}])
        inst["KeyName"] = text
        inst["State"] = {"Name": text, "Code": n}  # another key order
        inst["CpuOptions"] = {"CoreCount": n, "ThreadsPerCore": None}
        inst["EbsOptimized"] = n  # truthy ints render as booleans
        inst["Monitoring"] = {}
        assert_same_bytes(proto, "DescribeInstances", lambda: {"Reservations": [{"Instances": [inst]}]})
    # Values equal across types must not share a memoized rendering: 1 == True.
    assert_same_bytes(proto, "DescribeInstances",
                      lambda: {"Reservations": [{"Instances": [{"State": {"Code": 1, "Name": "a"}}]}]})
    with pytest.raises(SerializationError):
        proto.serialize("DescribeInstances", {"Reservations": [{"Instances": [{"State": {"Code": True, "Name": "a"}}]}]},
                        REQUEST_ID)
    # An unknown key is skipped when None, an error otherwise, in any key order.
    assert_same_bytes(proto, "DescribeInstances", lambda: {"Bogus": None, "NextToken": "t"})
    with pytest.raises(SerializationError, match="Bogus"):
        proto.serialize("DescribeInstances", {"NextToken": "t", "Bogus": 1}, REQUEST_ID)
    with pytest.raises(SerializationError, match="Bogus"):
        list(proto.serialize_iter("DescribeInstances", {"Reservations": LazyList(iter([{"Bogus": 1}]), 1)}, REQUEST_ID))


def test_wire_order_names_real_members(service: botocore.model.ServiceModel) -> None:
    for shape, order in AWS_ORDER.items():
        members = service.shape_for(shape).members
        assert [m for m in order if m not in members] == [], shape
        assert len(set(order)) == len(order), shape


def test_state_changes_are_written_current_state_first(proto: Protocol, service: botocore.model.ServiceModel) -> None:
    """Whatever the handler's dict order: EC2 writes instanceId, currentState, previousState."""
    change = {"PreviousState": {"Name": "running", "Code": 16}, "InstanceId": "i-1",
              "CurrentState": {"Name": "shutting-down", "Code": 32}}
    for op, member in (("TerminateInstances", "TerminatingInstances"), ("StopInstances", "StoppingInstances")):
        for result in ({member: [change]}, {member: lazify([change])}):
            body = b"".join(proto.serialize_iter(op, result, REQUEST_ID))
            assert re.search(rb"<item><instanceId>i-1</instanceId><currentState><code>32</code>"
                             rb"<name>shutting-down</name></currentState><previousState><code>16</code>", body)
        parsed = botocore_parse(service, op, proto.serialize(op, {member: [change]}, REQUEST_ID))
        assert parsed[member][0]["CurrentState"]["Name"] == "shutting-down"


def test_many_key_orders_fall_back_to_the_generic_renderer(proto: Protocol) -> None:
    base = instance(7)
    keys = list(base)
    for shift in range(2 * protocol_mod._MAX_KEY_ORDERS):
        order = keys[shift % len(keys):] + keys[:shift % len(keys)]
        if shift >= len(keys):
            order = list(reversed(order))
        inst = {k: base[k] for k in order}
        assert_same_bytes(proto, "DescribeInstances", lambda: {"Reservations": [{"Instances": [inst]}]})


def test_large_lazy_answer_is_sliced(proto: Protocol) -> None:
    def make() -> dict[str, Any]:
        def reservation(r: int) -> dict[str, Any]:
            insts = [instance(r * 100 + k) for k in range(100)]
            return {"ReservationId": f"r-{r}", "OwnerId": "1", "Groups": [], "Instances": LazyList(iter(insts), len(insts))}
        return {"Reservations": LazyList((reservation(r) for r in range(30)), 30), "NextToken": "t"}

    pieces = list(proto.serialize_iter("DescribeInstances", make(), REQUEST_ID))
    assert len(pieces) == 31  # 3030 elements in slices of 100, plus the tail
    assert all(len(p) < 200_000 for p in pieces)
    assert pieces == ref_serialize_iter(proto, "DescribeInstances", make())


# ---------------------------------------------------------------------------
# Cached list elements: an element's text kept while the objects it was made from are the same

from cloudctl.api.ec2.protocol import Cached  # noqa: E402


class _Row:
    """Stands for an immutable store row: compared by identity in a Cached key."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


def _cached_answer(views: dict[int, Any], keys: dict[int, tuple[Any, ...]], made: list[int]) -> dict[str, Any]:
    def element(n: int) -> Cached:
        def view() -> dict[str, Any]:
            made.append(n)
            return views[n]
        return Cached(f"i-{n}", keys[n], view)
    insts = [element(n) for n in sorted(views)]
    return {"Reservations": LazyList(iter([{"ReservationId": "r-1", "OwnerId": "1", "Groups": [],
                                             "Instances": LazyList(iter(insts), len(insts))}]), 1)}


def test_a_cached_element_is_the_bytes_of_its_view_and_reused_while_its_rows_are_the_same(proto: Protocol) -> None:
    rows = {n: _Row("a") for n in range(3)}
    views = {n: instance(n, [{"Key": "Name", "Value": "a"}]) for n in range(3)}
    keys = {n: (rows[n],) for n in range(3)}
    plain = {"Reservations": [{"ReservationId": "r-1", "OwnerId": "1", "Groups": [],
                               "Instances": [views[n] for n in range(3)]}]}
    expected = ref_serialize(proto, "DescribeInstances", plain)
    made: list[int] = []
    for _ in range(2):
        assert b"".join(proto.serialize_iter("DescribeInstances", _cached_answer(views, keys, made),
                                             REQUEST_ID)) == expected
    assert made == [0, 1, 2]   # rendered once; the second answer reused the three texts
    # A row replaced (another object, even an equal one), or a key of another length: rendered afresh.
    views[1] = instance(1, [{"Key": "Name", "Value": "b"}])
    keys[1] = (_Row("a"),)
    keys[2] = (rows[2], rows[0])
    made.clear()
    out = b"".join(proto.serialize_iter("DescribeInstances", _cached_answer(views, keys, made), REQUEST_ID))
    assert made == [1, 2]
    assert b"<value>b</value>" in out
    # Rendered whole (no slices: a small describe), a Cached element is its kept text while its
    # rows are the same, and its view rendered afresh (and kept) once one is replaced.
    def whole(n: int) -> bytes:
        def view() -> dict[str, Any]:
            made.append(n)
            return views[n]
        return proto.serialize("DescribeInstances", {"Reservations": [
            {"ReservationId": "r-1", "OwnerId": "1", "Groups": [],
             "Instances": [Cached(f"i-{n}", keys[n], view)]}]}, REQUEST_ID)

    def ref(n: int) -> bytes:
        return ref_serialize(proto, "DescribeInstances", {"Reservations": [
            {"ReservationId": "r-1", "OwnerId": "1", "Groups": [], "Instances": [views[n]]}]})
    made.clear()
    assert whole(0) == ref(0) and made == []
    views[0] = instance(0, [{"Key": "Name", "Value": "c"}])
    keys[0] = (_Row("a"),)
    assert whole(0) == ref(0) and made == [0]
    assert b"<value>c</value>" in whole(0) and made == [0]


def test_cached_texts_are_bounded(proto: Protocol, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol_mod, "_FRAGMENT_CHARS", 5_000)
    views = {n: instance(n) for n in range(20)}
    keys = {n: (n,) for n in range(20)}
    list(proto.serialize_iter("DescribeInstances", _cached_answer(views, keys, []), REQUEST_ID))
    kept = proto._renderers._fragments
    assert 0 < len(kept) < 20
    assert sum(len(text) for _, text in kept.values()) == proto._renderers._fragment_chars <= 5_000
    assert ("Instance", "i-19") in kept   # the newest kept, the oldest dropped first


def test_an_element_built_in_one_string_or_by_concatenation() -> None:
    """The generated renderers write `<tag>value</tag>` as one f-string; a tag or expression an
    f-string cannot hold falls back to concatenation: the same text, for str and int values."""
    quick = protocol_mod._tagged("<a>", "v", "</a>")
    slow = protocol_mod._tagged("<a'>", "v", "</a'>")
    assert quick.startswith("f'") and "+" in slow
    for value in ("x&y", "", 12):
        assert eval(quick, {"v": value}) == f"<a>{value}</a>"
        assert eval(slow, {"v": value}) == f"<a'>{value}</a'>"


def test_shapes_are_parsed_when_an_operation_first_needs_them(tmp_path: Path) -> None:
    """A loaded model holds its shapes as text (issue 14: base RSS): an operation's first request
    parses the shapes it reaches, and only those; the mapping still answers for every shape."""
    model = load_model(OPERATIONS, tmp_path)
    def parsed(shapes: Any) -> int:   # the shapes parsed so far (len() is the whole model's)
        return len(shapes.parsed)

    assert parsed(model.shapes) == 0
    assert len(model.shapes) == len(list(model.shapes)) > 100 and "Filter" in model.shapes
    assert model.shapes.get("NoSuchShape") is None and "NoSuchShape" not in model.shapes
    proto = Protocol(model)
    assert proto.parse("DescribeRegions", {"RegionName.1": "r"}) == {"RegionNames": ["r"]}
    first = parsed(model.shapes)
    assert 0 < first < len(model.shapes) / 4
    assert proto.parse("DescribeInstances", {"Filter.1.Name": "tag:Name", "Filter.1.Value.1": "a"}) \
        == {"Filters": [{"Name": "tag:Name", "Values": ["a"]}]}
    assert first < parsed(model.shapes) < len(model.shapes)
    assert model.shape("Filter")["members"]["Values"] == {"shape": "ValueStringList", "locationName": "Value"}
    assert dict(model.shapes.items()) == {name: model.shapes[name] for name in model.shapes}


def test_xml_plain_is_what_esc_leaves_as_it_is() -> None:
    """`xml_plain` (the launch answer's check of its joined leaves) is true exactly when `_esc`
    returns the text unchanged without its regex: every character below U+0190 (controls, DEL,
    the three escaped, non-ASCII) alone, inside short text and inside long ASCII or non-ASCII text."""
    from cloudctl.api.ec2.protocol import xml_plain
    for c in map(chr, range(0x190)):
        for text in (c, f"ab{c}cd", "x" * 90 + c, c + "y" * 100, "\u00e9" * 85 + c, ""):
            assert xml_plain(text) == (text.isprintable() and not {"&", "<", ">"} & set(text)), repr(text)


def test_a_cached_answer_is_its_views_bytes_kept_while_its_rows_are_the_same(proto: Protocol) -> None:
    """A `Cached` result (`describe_by_id`'s): `serialize_whole` gives the bytes of its view's
    answer, the request id put in each time, the rest kept while the key's objects are the same."""
    row, made = _Row("a"), []
    views = {0: instance(0, [{"Key": "Name", "Value": "a"}])}

    def answer(key: tuple[Any, ...]) -> Cached:
        def view() -> dict[str, Any]:
            made.append(1)
            return {"Reservations": [{"ReservationId": "r-1", "OwnerId": "1", "Groups": [], "Instances": [views[0]]}],
                    "NextToken": None}
        return Cached("i-0", key, view)

    def ref(request_id: str) -> bytes:
        plain = {"Reservations": [{"ReservationId": "r-1", "OwnerId": "1", "Groups": [], "Instances": [views[0]]}]}
        return ref_serialize(proto, "DescribeInstances", plain).replace(REQUEST_ID.encode(), request_id.encode())

    assert not protocol_mod.is_streamed(answer((row,)))
    for rid in (REQUEST_ID, "another-id", "a<b&c"):   # (the request id escaped as serialize_iter does)
        assert proto.serialize_whole("DescribeInstances", answer((row,)), rid) == ref(protocol_mod._esc(rid))
        assert list(proto.serialize_iter("DescribeInstances", answer((row,)), rid)) == [ref(protocol_mod._esc(rid))]
    assert made == [1]   # rendered once, then kept
    views[0] = instance(0, [{"Key": "Name", "Value": "b"}])
    for key in ((_Row("a"),), (row, row)):   # a row replaced by an equal one, a key of another length
        made.clear()
        out = proto.serialize_whole("DescribeInstances", answer(key), REQUEST_ID)
        assert out == ref(REQUEST_ID) and b"<value>b</value>" in out and made == [1]
    # A view rendered in slices is not an answer of one piece.
    with pytest.raises(SerializationError):
        proto.serialize_whole("DescribeInstances", Cached("i-1", (row,), lambda: lazify(
            {"Reservations": [{"ReservationId": "r-1", "OwnerId": "1", "Groups": [], "Instances": [views[0]]}]})),
            REQUEST_ID)


def test_cached_answers_are_bounded(proto: Protocol, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol_mod, "_ANSWER_BYTES", 5_000)
    for n in range(10):
        view = {"Reservations": [{"ReservationId": f"r-{n}", "OwnerId": "1", "Groups": [], "Instances": [instance(n)]}]}
        out = proto.serialize_whole("DescribeInstances", Cached(f"i-{n}", (n,), lambda v=view: v), REQUEST_ID)
        assert out == ref_serialize(proto, "DescribeInstances", view)
    kept = proto._renderers._answers
    assert 0 < len(kept) < 10
    assert sum(len(rest) for _, _, rest in kept.values()) == proto._renderers._answer_bytes <= 5_000
    assert list(kept)[-1] == ("DescribeInstances", "i-9")   # the newest kept, the oldest dropped first


def _by_datetime(value: float) -> str:
    return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


@given(st.one_of(st.floats(min_value=0.0, max_value=protocol_mod._EPOCH_MAX),
                 st.builds(lambda s, f: s + f, st.integers(0, 4 * 10**9),
                           st.sampled_from([0.0, 0.0005, 0.0004999, 0.9995, 0.9994999, 0.9999995, 0.99999949, 0.5000005,
                                            0.0000005, 0.0000015, 0.1234565, 0.999]))))
@settings(max_examples=2000)
def test_seconds_since_the_epoch_are_written_as_datetime_writes_them(value: float) -> None:
    """`_fmt_epoch` (a float timestamp without the datetime) against datetime's rounding and text."""
    assert protocol_mod._fmt_timestamp(value) == _by_datetime(value)


def test_seconds_since_the_epoch_out_of_the_fast_range() -> None:
    for value in (-0.5, -1.0000005, protocol_mod._EPOCH_MAX + 0.9):   # (datetime's way: its text, or its refusal)
        try:
            want: Any = _by_datetime(value)
        except (ValueError, OverflowError) as e:
            want = type(e)
        try:
            got: Any = protocol_mod._fmt_timestamp(value)
        except (ValueError, OverflowError) as e:
            got = type(e)
        assert got == want
    for bad in (float("nan"), float("inf")):
        with pytest.raises((ValueError, OverflowError)):
            protocol_mod._fmt_timestamp(bad)
