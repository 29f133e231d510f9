"""Instances through boto3: lifecycle, filters, pagination, idempotency, DryRun, errors."""
from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import wait_state


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def run(ec2: Any, image_id: str, n: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return ec2.run_instances(ImageId=image_id, MinCount=n, MaxCount=n, **kw)["Instances"]


def test_lifecycle(ec2: Any, image_id: str) -> None:
    insts = run(ec2, image_id, InstanceType="t3.micro", UserData="#!/bin/sh\necho hi\n",
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "life"}]}])
    iid = insts[0]["InstanceId"]
    assert insts[0]["State"] == {"Code": 0, "Name": "pending"}
    assert insts[0]["InstanceType"] == "t3.micro"
    assert insts[0]["PrivateIpAddress"].startswith("10.")
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    inst = wait_state(ec2, [iid], "running")[0]
    assert inst["State"]["Code"] == 16
    assert {"Key": "Name", "Value": "life"} in inst["Tags"]
    ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud) == b"#!/bin/sh\necho hi\n"

    stopped = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert stopped["PreviousState"]["Name"] == "running"
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t3.small"})
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")["InstanceType"]["Value"] \
        == "t3.small"
    ec2.start_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    inst = wait_state(ec2, [iid], "running")[0]
    assert inst["PrivateIpAddress"] == insts[0]["PrivateIpAddress"]   # stable across stop/start
    ec2.reboot_instances(InstanceIds=[iid])

    term = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert term["CurrentState"]["Name"] in ("shutting-down", "terminated")
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    inst = wait_state(ec2, [iid], "terminated")[0]   # still visible after termination
    assert inst["State"]["Code"] == 48
    assert inst["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


def test_min_max_count_and_zone(ec2: Any, image_id: str) -> None:
    insts = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=4, InstanceType="t3.nano",
                              Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"]
    assert len(insts) == 4
    assert {i["Placement"]["AvailabilityZone"] for i in insts} == {"cloudctl-1b"}
    assert sorted(i["AmiLaunchIndex"] for i in insts) == [0, 1, 2, 3]
    assert len({i["PrivateIpAddress"] for i in insts}) == 4
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in insts])


def test_insufficient_capacity_changes_nothing(server: Any, ec2: Any, image_id: str) -> None:
    before = ids_of(ec2.describe_instances())
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image_id, MinCount=1000, MaxCount=1000, InstanceType="m5.xlarge",
                          Placement={"AvailabilityZone": "cloudctl-1a"})
    assert code_of(e) == "InsufficientInstanceCapacity"
    assert "1000 requested" in e.value.response["Error"]["Message"]
    assert ids_of(ec2.describe_instances()) == before
    assert ec2.describe_instances(Filters=[{"Name": "instance-type", "Values": ["m5.xlarge"]}])["Reservations"] == []


def test_client_token_replays_first_reservation(ec2: Any, image_id: str) -> None:
    token = uuid.uuid4().hex
    first = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2, ClientToken=token)
    again = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2, ClientToken=token)
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    found = ec2.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])
    assert sum(len(r["Instances"]) for r in found["Reservations"]) == 2
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image_id, MinCount=3, MaxCount=3, ClientToken=token)
    assert code_of(e) == "IdempotentParameterMismatch"


def test_dry_run_changes_nothing(ec2: Any, image_id: str) -> None:
    before = ec2.describe_instances()
    count = sum(len(r["Instances"]) for r in before["Reservations"])
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, DryRun=True)
    assert code_of(e) == "DryRunOperation"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    after = ec2.describe_instances()
    assert sum(len(r["Instances"]) for r in after["Reservations"]) == count
    iid = run(ec2, image_id)[0]["InstanceId"]
    with pytest.raises(ClientError) as e:
        ec2.terminate_instances(InstanceIds=[iid], DryRun=True)
    assert code_of(e) == "DryRunOperation"
    assert wait_state(ec2, [iid], "running")[0]["State"]["Name"] == "running"
    # DryRun still validates first: a bad request says what is wrong, not DryRunOperation.
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId="ami-00000000000000000", MinCount=1, MaxCount=1, DryRun=True)
    assert code_of(e) == "InvalidAMIID.NotFound"
    ec2.terminate_instances(InstanceIds=[iid])


@pytest.fixture(scope="module")
def fleet(ec2: Any, image_id: str) -> dict[str, Any]:
    """Twelve instances in two zones with varied tags, for the filter tests."""
    a = ec2.run_instances(ImageId=image_id, MinCount=7, MaxCount=7, InstanceType="t3.nano",
                          Placement={"AvailabilityZone": "cloudctl-1a"},
                          TagSpecifications=[{"ResourceType": "instance",
                                              "Tags": [{"Key": "role", "Value": "web"},
                                                       {"Key": "fleet", "Value": "f1"}]}])
    b = ec2.run_instances(ImageId=image_id, MinCount=5, MaxCount=5, InstanceType="t3.micro",
                          Placement={"AvailabilityZone": "cloudctl-1b"},
                          TagSpecifications=[{"ResourceType": "instance",
                                              "Tags": [{"Key": "role", "Value": "db-primary"},
                                                       {"Key": "fleet", "Value": "f1"}]}])
    ids = [i["InstanceId"] for i in a["Instances"] + b["Instances"]]
    wait_state(ec2, ids, "running")
    return {"a": a, "b": b, "ids": ids}


def ids_of(resp: dict[str, Any]) -> set[str]:
    return {i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]}


FLEET = {"Name": "tag:fleet", "Values": ["f1"]}


@pytest.mark.parametrize("flt,expect", [
    ({"Name": "tag:role", "Values": ["web"]}, "a"),
    ({"Name": "tag:role", "Values": ["db-*"]}, "b"),
    ({"Name": "tag:role", "Values": ["w?b"]}, "a"),
    ({"Name": "tag-key", "Values": ["role"]}, "ab"),
    ({"Name": "tag-value", "Values": ["db-primary"]}, "b"),
    ({"Name": "availability-zone", "Values": ["cloudctl-1a"]}, "a"),
    ({"Name": "instance-type", "Values": ["t3.micro"]}, "b"),
    ({"Name": "instance-state-name", "Values": ["running"]}, "ab"),
    ({"Name": "instance-state-code", "Values": ["16"]}, "ab"),
    ({"Name": "instance-state-name", "Values": ["stopped"]}, ""),
    ({"Name": "image-id", "Values": ["ami-*"]}, "ab"),
])
def test_filters(ec2: Any, fleet: dict[str, Any], flt: dict[str, Any], expect: str) -> None:
    want: set[str] = set()
    for part in expect:
        want |= {i["InstanceId"] for i in fleet[part]["Instances"]}
    assert ids_of(ec2.describe_instances(Filters=[FLEET, flt])) == want


def test_filters_by_reservation_ip_and_id(ec2: Any, fleet: dict[str, Any]) -> None:
    first = fleet["a"]["Instances"][0]
    for flt in ({"Name": "instance-id", "Values": [first["InstanceId"]]},
                {"Name": "private-ip-address", "Values": [first["PrivateIpAddress"]]}):
        assert ids_of(ec2.describe_instances(Filters=[flt])) == {first["InstanceId"]}
    res = ec2.describe_instances(Filters=[{"Name": "reservation-id", "Values": [fleet["b"]["ReservationId"]]}])
    assert [r["ReservationId"] for r in res["Reservations"]] == [fleet["b"]["ReservationId"]]
    assert ids_of(res) == {i["InstanceId"] for i in fleet["b"]["Instances"]}


def test_unknown_filter_is_an_error(ec2: Any) -> None:
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert code_of(e) == "InvalidParameterValue"
    assert "no-such-filter" in e.value.response["Error"]["Message"]


def test_pagination(ec2: Any, fleet: dict[str, Any]) -> None:
    pages = list(ec2.get_paginator("describe_instances").paginate(Filters=[FLEET],
                                                                 PaginationConfig={"PageSize": 5}))
    sizes = [sum(len(r["Instances"]) for r in p["Reservations"]) for p in pages]
    assert sizes == [5, 5, 2]
    seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert sorted(seen) == sorted(fleet["ids"])
    assert "NextToken" not in pages[-1]
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(MaxResults=5, NextToken="bm90LWEtdG9rZW4")
    assert code_of(e) == "InvalidPaginationToken"
    token = ec2.describe_instances(Filters=[FLEET], MaxResults=5)["NextToken"]
    with pytest.raises(ClientError) as e:      # a token is bound to the query that made it
        ec2.describe_instances(Filters=[{"Name": "tag:fleet", "Values": ["other"]}], MaxResults=5, NextToken=token)
    assert code_of(e) == "InvalidPaginationToken"
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(InstanceIds=fleet["ids"][:1], MaxResults=5)
    assert code_of(e) == "InvalidParameterCombination"
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(MaxResults=2)
    assert code_of(e) == "InvalidParameterValue"


def test_instance_status(ec2: Any, fleet: dict[str, Any], image_id: str) -> None:
    iid = run(ec2, image_id)[0]["InstanceId"]
    wait_state(ec2, [iid], "running")
    ec2.stop_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "stopped")
    running = ec2.describe_instance_status(InstanceIds=fleet["ids"][:2])["InstanceStatuses"]
    assert [s["InstanceStatus"]["Status"] for s in running] == ["ok", "ok"]
    assert ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"] == []
    all_ = ec2.describe_instance_status(InstanceIds=[iid], IncludeAllInstances=True)["InstanceStatuses"]
    assert all_[0]["InstanceState"]["Name"] == "stopped"
    assert all_[0]["InstanceStatus"]["Status"] == "not-applicable"
    ec2.get_waiter("instance_status_ok").wait(InstanceIds=fleet["ids"][:1], WaiterConfig={"Delay": 1})
    with pytest.raises(ClientError) as e:  # tag filters are not valid on this action (as in AWS)
        ec2.describe_instance_status(Filters=[{"Name": "tag:role", "Values": ["web"]}])
    assert code_of(e) == "InvalidParameterValue"
    ec2.terminate_instances(InstanceIds=[iid])


@pytest.mark.parametrize("kwargs,code", [
    ({"ImageId": "ami-00000000000000000"}, "InvalidAMIID.NotFound"),
    ({"ImageId": "not-an-ami"}, "InvalidAMIID.Malformed"),
    ({"InstanceType": "x9.huge"}, "InvalidParameterValue"),
    ({"KeyName": "nope"}, "InvalidKeyPair.NotFound"),
    ({"Placement": {"AvailabilityZone": "mars-1a"}}, "InvalidParameterValue"),
    ({"MinCount": 3, "MaxCount": 2}, "InvalidParameterValue"),
    ({"TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "aws:x", "Value": "y"}]}]},
     "InvalidParameterValue"),
])
def test_run_instances_errors(ec2: Any, image_id: str, kwargs: dict[str, Any], code: str) -> None:
    args = {"ImageId": image_id, "MinCount": 1, "MaxCount": 1, **kwargs}
    before = ids_of(ec2.describe_instances())
    with pytest.raises(ClientError) as e:
        ec2.run_instances(**args)
    assert code_of(e) == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ids_of(ec2.describe_instances()) == before


def test_state_errors(ec2: Any, image_id: str) -> None:
    with pytest.raises(ClientError) as e:
        ec2.terminate_instances(InstanceIds=["i-00000000000000000"])
    assert code_of(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.describe_instances(InstanceIds=["i-zz"])
    assert code_of(e) == "InvalidInstanceID.Malformed"
    iid = run(ec2, image_id, DisableApiTermination=True)[0]["InstanceId"]
    wait_state(ec2, [iid], "running")
    with pytest.raises(ClientError) as e:
        ec2.terminate_instances(InstanceIds=[iid])
    assert code_of(e) == "OperationNotPermitted"
    with pytest.raises(ClientError) as e:      # type changes need a stopped instance
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t3.small"})
    assert code_of(e) == "IncorrectInstanceState"
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
    ec2.modify_instance_attribute(InstanceId=iid, InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    ec2.terminate_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "terminated")
    with pytest.raises(ClientError) as e:
        ec2.start_instances(InstanceIds=[iid])
    assert code_of(e) == "IncorrectInstanceState"


def test_modify_attribute_refusals_change_nothing(ec2: Any, image_id: str) -> None:
    """What this cloud cannot change, and values that are not what they claim, are refused
    before anything changes; the older Attribute=name&Value=v form reaches the same attributes."""
    iid = run(ec2, image_id, DisableApiTermination=True)[0]["InstanceId"]
    wait_state(ec2, [iid], "running")

    def refused(code: str, **kw: Any) -> None:
        with pytest.raises(ClientError) as e:
            ec2.modify_instance_attribute(InstanceId=iid, **kw)
        assert code_of(e) == code, kw

    def protected() -> bool:
        got = ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")
        return bool(got["DisableApiTermination"]["Value"])

    refused("InvalidParameterValue", Kernel={"Value": "aki-0123456789abcdef0"})     # not supported here
    refused("InvalidParameterValue", Attribute="disableApiTermination", Value="maybe")
    refused("InvalidParameterValue", Attribute="userData", Value="not base64!")
    refused("MissingParameter", Attribute="disableApiTermination")
    refused("MissingParameter")
    refused("MissingParameter", BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {}}])
    refused("InvalidParameterValue", DisableApiTermination={"Value": False},          # one refusal: none applied
            InstanceInitiatedShutdownBehavior={"Value": "hibernate"})
    assert protected()
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    ec2.modify_instance_attribute(InstanceId=iid, Attribute="disableApiTermination", Value="false")
    assert not protected()
    ec2.stop_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "stopped")
    ec2.modify_instance_attribute(InstanceId=iid, Attribute="userData",
                                  Value=base64.b64encode(b"#!/bin/sh\n").decode())
    ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud) == b"#!/bin/sh\n"
    ec2.terminate_instances(InstanceIds=[iid])


def test_console_output_is_base64_on_the_wire(ec2: Any, image_id: str) -> None:
    iid = run(ec2, image_id)[0]["InstanceId"]
    out = ec2.get_console_output(InstanceId=iid)
    assert out["InstanceId"] == iid
    assert "Timestamp" in out
    ec2.terminate_instances(InstanceIds=[iid])


def test_terraform_read_calls(ec2: Any, fleet: dict[str, Any]) -> None:
    """What Terraform's aws_instance reads on every refresh."""
    iid = fleet["ids"][0]
    types = ec2.describe_instance_types(InstanceTypes=["t3.nano"])["InstanceTypes"]
    assert types[0]["VCpuInfo"]["DefaultVCpus"] == 1
    assert types[0]["MemoryInfo"]["SizeInMiB"] == 512
    assert types[0]["BurstablePerformanceSupported"] is False
    for attr in ("instanceInitiatedShutdownBehavior", "disableApiStop", "disableApiTermination", "userData"):
        ec2.describe_instance_attribute(InstanceId=iid, Attribute=attr)
    creds = ec2.describe_instance_credit_specifications(InstanceIds=[iid])["InstanceCreditSpecifications"]
    assert creds == [{"InstanceId": iid, "CpuCredits": "standard"}]
    with pytest.raises(ClientError) as e:
        ec2.describe_instance_types(InstanceTypes=["p9.mega"])
    assert code_of(e) == "InvalidInstanceType"


def test_create_image_needs_a_real_disk_and_a_stopped_instance(ec2: Any, image_id: str) -> None:
    iid = run(ec2, image_id)[0]["InstanceId"]
    wait_state(ec2, [iid], "running")
    with pytest.raises(ClientError) as e:
        ec2.create_image(InstanceId=iid, Name="from-running")
    assert code_of(e) == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "stopped")
    with pytest.raises(ClientError) as e:     # simulated hosts keep no disk to copy
        ec2.create_image(InstanceId=iid, Name="from-simulated")
    assert code_of(e) == "InvalidParameterValue"
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": ["from-running", "from-simulated"]}])["Images"] == []
    ec2.terminate_instances(InstanceIds=[iid])


def test_a_described_instance_shows_each_change_made_after_it(ec2: Any, image_id: str) -> None:
    """A by-id describe reuses the instance's rendered text while its rows are the same
    (protocol.Cached): each kind of change in between must show in the next answer."""
    iid = run(ec2, image_id)[0]["InstanceId"]
    wait_state(ec2, [iid], "running")

    def one() -> dict[str, Any]:
        return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    assert one() == one()
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "1"}])
    assert {"Key": "k", "Value": "1"} in one()["Tags"]
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "2"}])
    assert {"Key": "k", "Value": "2"} in one()["Tags"]
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "k"}])
    assert "k" not in {t["Key"] for t in one().get("Tags", [])}
    alloc = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=iid, AllocationId=alloc["AllocationId"])
    assert one()["PublicIpAddress"] == alloc["PublicIp"]
    ec2.stop_instances(InstanceIds=[iid])
    assert one()["State"]["Name"] in ("stopping", "stopped")
