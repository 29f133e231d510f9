"""The live endpoint at the HTTP level: signatures, error documents, unknown actions, the AWS CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.auth import SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from botocore.session import get_session

from support import REGION, aws_ok, wait_state

MODEL = get_session().get_service_model("ec2")


def send(server: Any, user: dict[str, str], body: str, *, secret: str | None = None, tamper: bytes | None = None,
         sigv2: bool = False, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST a form body signed by botocore's own signer (optionally with a wrong secret or tampered)."""
    host = server.endpoint.removeprefix("http://")
    req = AWSRequest(method="POST", url=server.endpoint + "/", data=body.encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host,
                              **(headers or {})})
    creds = Credentials(user["AccessKeyId"], secret or user["SecretAccessKey"])
    if sigv2:
        params = dict(p.split("=", 1) for p in body.split("&"))
        req = AWSRequest(method="POST", url=server.endpoint + "/", data=params,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV2Auth(creds).add_auth(req)
    else:
        SigV4Auth(creds, "ec2", REGION).add_auth(req)
    prepared = req.prepare()
    data = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    if tamper is not None:   # same length, different bytes: the signature no longer matches
        data = data[:-len(tamper)] + tamper
    r = urllib.request.Request(prepared.url, data=data, method="POST", headers=dict(prepared.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse_error(body: bytes, status: int) -> dict[str, Any]:
    op = MODEL.operation_model("DescribeRegions")
    return create_parser("ec2").parse({"body": body, "status_code": status, "headers": {}}, op.output_shape)


def test_signed_request_ok(server: Any, alice: dict[str, str]) -> None:
    status, body = send(server, alice, "Action=DescribeRegions&Version=2016-11-15")
    assert status == 200
    parsed = parse_error(body, status)
    assert parsed["Regions"][0]["RegionName"] == REGION
    assert parsed["ResponseMetadata"]["RequestId"]


@pytest.mark.parametrize("case", ["wrong-secret", "tampered-body", "unknown-key"])
def test_bad_signatures_are_auth_failure(server: Any, alice: dict[str, str], case: str) -> None:
    user = dict(alice)
    kw: dict[str, Any] = {}
    if case == "wrong-secret":
        kw["secret"] = "x" * 40
    elif case == "tampered-body":
        kw["tamper"] = b"6"
    else:
        user["AccessKeyId"] = "AKCCNOSUCHKEY0000000"
    status, body = send(server, user, "Action=DescribeRegions&Version=2016-11-15", **kw)
    err = parse_error(body, status)
    assert status == 401
    assert err["Error"]["Code"] == "AuthFailure"


def test_expired_request(server: Any, alice: dict[str, str]) -> None:
    import datetime
    import unittest.mock as mock
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old.replace(tzinfo=None)):
        status, body = send(server, alice, "Action=DescribeRegions&Version=2016-11-15")
    assert status == 400
    assert parse_error(body, status)["Error"]["Code"] == "RequestExpired"


def test_sigv2_request(server: Any, alice: dict[str, str]) -> None:
    status, body = send(server, alice, "Action=DescribeAvailabilityZones&Version=2016-11-15", sigv2=True)
    assert status == 200, body
    status, body = send(server, alice, "Action=DescribeAvailabilityZones&Version=2016-11-15", sigv2=True,
                        secret="y" * 40)
    assert status == 401


def test_missing_signature(server: Any) -> None:
    r = urllib.request.Request(server.endpoint + "/?Action=DescribeRegions&Version=2016-11-15")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r, timeout=10)
    assert e.value.code == 401
    assert parse_error(e.value.read(), 401)["Error"]["Code"] == "MissingAuthenticationToken"


@pytest.mark.parametrize("body,code", [
    ("Action=LaunchRockets&Version=2016-11-15", "InvalidAction"),
    ("Version=2016-11-15", "MissingAction"),
    ("Action=DescribeInstances&Version=2016-11-15&Bogus=1", "UnknownParameter"),
    ("Action=DescribeInstances&Version=2016-11-15&MaxResults=many", "InvalidParameterValue"),
    ("Action=TerminateInstances&Version=2016-11-15", "MissingParameter"),
])
def test_malformed_requests(server: Any, alice: dict[str, str], body: str, code: str) -> None:
    status, data = send(server, alice, body)
    assert status == 400
    assert parse_error(data, status)["Error"]["Code"] == code


def test_every_action_round_trips_through_botocore(server: Any, ec2: Any, image_id: str) -> None:
    """boto3 parses each response with botocore's EC2 parser; a malformed document would raise."""
    from cloudctl.api.ec2.actions import ACTIONS
    iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    calls = {
        "RunInstances": None, "DescribeInstances": lambda: ec2.describe_instances(InstanceIds=[iid]),
        "DescribeInstanceStatus": lambda: ec2.describe_instance_status(IncludeAllInstances=True),
        "DescribeInstanceAttribute": lambda: ec2.describe_instance_attribute(InstanceId=iid, Attribute="groupSet"),
        "ModifyInstanceAttribute": lambda: ec2.modify_instance_attribute(
            InstanceId=iid, DisableApiTermination={"Value": False}),
        "GetConsoleOutput": lambda: ec2.get_console_output(InstanceId=iid),
        "DescribeInstanceTypes": ec2.describe_instance_types,
        "DescribeInstanceCreditSpecifications": lambda: ec2.describe_instance_credit_specifications(
            InstanceIds=[iid]),
        "DescribeAvailabilityZones": ec2.describe_availability_zones,
        "DescribeRegions": ec2.describe_regions, "DescribeAccountAttributes": ec2.describe_account_attributes,
        "CreateKeyPair": lambda: ec2.create_key_pair(KeyName="rt"),
        "DescribeKeyPairs": ec2.describe_key_pairs,
        "ImportKeyPair": None, "DeleteKeyPair": lambda: ec2.delete_key_pair(KeyName="rt"),
        "CreateTags": lambda: ec2.create_tags(Resources=[iid], Tags=[{"Key": "rt", "Value": "1"}]),
        "DescribeTags": ec2.describe_tags, "DeleteTags": lambda: ec2.delete_tags(Resources=[iid]),
        "DescribeImages": ec2.describe_images, "RegisterImage": None, "DeregisterImage": None, "CreateImage": None,
        "RebootInstances": lambda: ec2.reboot_instances(InstanceIds=[iid]),
        "StopInstances": lambda: (ec2.stop_instances(InstanceIds=[iid]), wait_state(ec2, [iid], "stopped"))[0],
        "StartInstances": lambda: ec2.start_instances(InstanceIds=[iid]),
        "TerminateInstances": lambda: ec2.terminate_instances(InstanceIds=[iid]),
        **dict.fromkeys(("CreateVolume", "DescribeVolumes", "DeleteVolume", "AttachVolume", "DetachVolume",
                         "CreateSnapshot", "DescribeSnapshots", "DeleteSnapshot"), None),  # test_ec2_volumes
        "DescribeVpcs": ec2.describe_vpcs, "DescribeSubnets": ec2.describe_subnets,
        **dict.fromkeys(("CreateSecurityGroup", "DeleteSecurityGroup", "DescribeSecurityGroups",
                         "DescribeSecurityGroupRules", "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress",
                         "RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress"), None),  # test_ec2_security_groups
        "DescribeImportImageTasks": ec2.describe_import_image_tasks,
        **dict.fromkeys(("ImportImage", "CancelImportTask"), None),  # test_ec2_imports
        **dict.fromkeys(("AllocateAddress", "AssociateAddress", "DisassociateAddress", "ReleaseAddress"),
                        None),   # test_ec2_addresses
        "DescribeAddresses": ec2.describe_addresses,
        "DescribeAddressesAttribute": lambda: ec2.describe_addresses_attribute(Attribute="domain-name"),
        "DescribeNetworkInterfaces": ec2.describe_network_interfaces,
        "DescribeRouteTables": ec2.describe_route_tables, "DescribeInternetGateways": ec2.describe_internet_gateways,
        "DescribeDhcpOptions": ec2.describe_dhcp_options,
        "DescribeVpcAttribute": lambda: ec2.describe_vpc_attribute(
            VpcId=ec2.describe_vpcs()["Vpcs"][0]["VpcId"], Attribute="enableDnsSupport"),
        "GetInstanceUefiData": lambda: ec2.get_instance_uefi_data(InstanceId=iid),   # more in test_ec2_vpc_reads
        **dict.fromkeys(("CreateLaunchTemplate", "DescribeLaunchTemplates", "ModifyLaunchTemplate",
                         "DeleteLaunchTemplate", "CreateLaunchTemplateVersion", "DescribeLaunchTemplateVersions",
                         "DeleteLaunchTemplateVersions", "GetLaunchTemplateData"), None),  # test_launch_templates
    }
    assert set(calls) == set(ACTIONS), "every implemented action is exercised here"
    for name, call in calls.items():
        if call is not None:   # the others are covered with real inputs in test_ec2_resources
            assert call()["ResponseMetadata"]["HTTPStatusCode"] == 200, name


def aws(server: Any, user: dict[str, str], *args: str) -> Any:
    return aws_ok(server, user, "ec2", *args)


@pytest.mark.slow
def test_aws_cli_lifecycle(server: Any, alice: dict[str, str], image_id: str) -> None:
    res = aws(server, alice, "run-instances", "--image-id", image_id, "--instance-type", "t3.micro",
              "--count", "2", "--tag-specifications",
              "ResourceType=instance,Tags=[{Key=Name,Value=from-cli}]")
    ids = [i["InstanceId"] for i in res["Instances"]]
    aws(server, alice, "wait", "instance-running", "--instance-ids", *ids)
    desc = aws(server, alice, "describe-instances", "--filters", "Name=tag:Name,Values=from-cli")
    assert sorted(i["InstanceId"] for r in desc["Reservations"] for i in r["Instances"]) == sorted(ids)
    out = aws(server, alice, "get-console-output", "--instance-id", ids[0])
    assert out["InstanceId"] == ids[0]
    aws(server, alice, "terminate-instances", "--instance-ids", *ids)
    aws(server, alice, "wait", "instance-terminated", "--instance-ids", *ids)
    states = aws(server, alice, "describe-instances", "--instance-ids", *ids,
                 "--query", "Reservations[].Instances[].State.Name")
    assert states == ["terminated", "terminated"]
    with pytest.raises(AssertionError, match="DryRunOperation"):
        aws(server, alice, "run-instances", "--image-id", image_id, "--dry-run")


def test_cli_user_create_json(server: Any) -> None:
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), "user", "create",
                          "carol", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    creds = json.loads(out.stdout)
    assert set(creds) == {"AccessKeyId", "SecretAccessKey"}
    ec2 = server.client(creds)
    assert ec2.describe_instances()["Reservations"] == []
    listed = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), "user", "list"],
                            capture_output=True, text=True, timeout=60)
    assert "carol" in listed.stdout
    with pytest.raises(ClientError):
        server.client({**creds, "SecretAccessKey": "wrong" * 8}).describe_instances()
