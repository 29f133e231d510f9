"""AutoScaling on the Query endpoint, driven by boto3 and the AWS CLI against a served cloudctl on
test:///: launch configurations, groups and their instances, the reconciler's decisions, policies,
tags, processes, the reads Terraform and Ansible make, and refusals in AutoScaling's shape with
the state untouched."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from cloudctl.api.autoscaling import SPEC

from asg_support import FAST, aws, client, converged, digest, group, image, live, settled
from rawquery import SignedQuery
from support import Server, wait_until

ZONES = ["cloudctl-1a", "cloudctl-1b"]


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    s: Server = server_with(autoscaling=FAST)
    return s


@pytest.fixture(scope="module")
def alice(srv: Server) -> dict[str, str]:
    return srv.create_user("asg-alice")


@pytest.fixture(scope="module")
def bob(srv: Server) -> dict[str, str]:
    return srv.create_user("asg-bob")


@pytest.fixture(scope="module")
def asg(srv: Server, alice: dict[str, str]) -> Any:
    return client(srv, alice)


@pytest.fixture(scope="module")
def ec2(srv: Server, alice: dict[str, str]) -> Any:
    return srv.client(alice)


@pytest.fixture(scope="module")
def lc(srv: Server, alice: dict[str, str], asg: Any) -> str:
    asg.create_launch_configuration(LaunchConfigurationName="web-v1", ImageId=image(srv, alice),
                                    InstanceType="t3.nano")
    return "web-v1"


_n = iter(range(1 << 20))


@pytest.fixture
def name(asg: Any) -> Iterator[str]:
    """A fresh group name; the group (if made) is force-deleted after the test."""
    n = f"g{next(_n)}"
    yield n
    try:
        asg.delete_auto_scaling_group(AutoScalingGroupName=n, ForceDelete=True)
    except ClientError:
        pass


def refused(srv: Server, call: Any, code: str, **kw: Any) -> str:
    """`call(**kw)` is refused with `code` (HTTP 400) and the state digest does not move."""
    before = settled(srv)
    with pytest.raises(ClientError) as e:
        call(**kw)
    err = e.value.response
    assert err["Error"]["Code"] == code, err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert digest(srv) == before, f"{code}: the state changed"
    return str(err["Error"]["Message"])


# -- launch configurations ----------------------------------------------------------------------

def test_launch_configuration_lifecycle(srv: Server, alice: dict[str, str], asg: Any, ec2: Any) -> None:
    ami = image(srv, alice)
    ec2.create_key_pair(KeyName="asg-key")
    sg = ec2.create_security_group(GroupName="asg-web", Description="web")["GroupId"]
    asg.create_launch_configuration(LaunchConfigurationName="full", ImageId=ami, InstanceType="t3.micro",
                                    KeyName="asg-key", SecurityGroups=[sg, "default"], UserData="ZWNobyBoaQ==",
                                    InstanceMonitoring={"Enabled": False},
                                    BlockDeviceMappings=[{"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 2}}])
    got = asg.describe_launch_configurations(LaunchConfigurationNames=["full"])["LaunchConfigurations"]
    assert len(got) == 1
    c = got[0]
    assert (c["ImageId"], c["InstanceType"], c["KeyName"], c["SecurityGroups"]) == \
        (ami, "t3.micro", "asg-key", [sg, "default"])
    assert c["LaunchConfigurationARN"].startswith("arn:aws:autoscaling:cloudctl-1:")
    assert c["LaunchConfigurationARN"].endswith(":launchConfigurationName/full")
    assert c["InstanceMonitoring"] == {"Enabled": False}
    assert c["BlockDeviceMappings"] == [{"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 2,
                                                                         "DeleteOnTermination": True}}]
    msg = refused(srv, asg.create_launch_configuration, "AlreadyExists", LaunchConfigurationName="full",
                  ImageId=ami, InstanceType="t3.nano")
    assert "already exists" in msg
    asg.delete_launch_configuration(LaunchConfigurationName="full")
    assert asg.describe_launch_configurations(LaunchConfigurationNames=["full"])["LaunchConfigurations"] == []
    refused(srv, asg.delete_launch_configuration, "ValidationError", LaunchConfigurationName="full")


@pytest.mark.parametrize(("change", "words"), [
    ({"ImageId": "ami-00000000"}, "does not exist"),
    ({"ImageId": "not-an-image"}, "Invalid id"),
    ({"InstanceType": "z9.huge"}, "z9.huge"),
    ({"KeyName": "no-such-key"}, "no-such-key"),
    ({"SecurityGroups": ["sg-00000000"]}, "sg-00000000"),
    ({"SecurityGroups": ["no-such-group"]}, "no-such-group"),
    ({"LaunchConfigurationName": "a:b"}, "':'"),
    ({"SpotPrice": "0.1"}, "SpotPrice"),
])
def test_launch_configuration_refusals(srv: Server, alice: dict[str, str], asg: Any, change: dict[str, Any],
                                       words: str) -> None:
    req = {"LaunchConfigurationName": "bad", "ImageId": image(srv, alice), "InstanceType": "t3.nano", **change}
    assert words in refused(srv, asg.create_launch_configuration, "ValidationError", **req)


# -- groups ---------------------------------------------------------------------------------------

def test_group_launches_balanced_tagged_instances(srv: Server, asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=1, MaxSize=6,
                                  DesiredCapacity=4, AvailabilityZones=ZONES,
                                  Tags=[{"Key": "role", "Value": "web", "PropagateAtLaunch": True},
                                        {"Key": "private", "Value": "x", "PropagateAtLaunch": False}])
    members = converged(asg, ec2, name, 4)
    assert Counter(m["AvailabilityZone"] for m in members) == {"cloudctl-1a": 2, "cloudctl-1b": 2}
    assert {m["LaunchConfigurationName"] for m in members} == {lc}
    assert {m["HealthStatus"] for m in members} == {"Healthy"}
    for inst in live(ec2, name):
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["aws:autoscaling:groupName"] == name and tags["role"] == "web" and "private" not in tags
        assert inst["InstanceType"] == "t3.nano"
    g = group(asg, name)
    assert (g["MinSize"], g["MaxSize"], g["DesiredCapacity"], g["DefaultCooldown"]) == (1, 6, 4, 300)
    assert (g["HealthCheckType"], g["TerminationPolicies"]) == ("EC2", ["Default"])
    assert g["AutoScalingGroupARN"].endswith(f":autoScalingGroupName/{name}")
    acts = asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]
    launched = [a for a in acts if a["Description"].startswith("Launching")]
    assert launched and {a["StatusCode"] for a in launched} == {"Successful"}
    assert sum(len(a["Description"].split(": ")[1].split(", ")) for a in launched) == 4
    assert all("difference between desired and actual capacity" in a["Cause"] for a in launched)
    # DescribeAutoScalingInstances names the group
    ids = [m["InstanceId"] for m in members]
    got = asg.describe_auto_scaling_instances(InstanceIds=ids)["AutoScalingInstances"]
    assert {(i["InstanceId"], i["AutoScalingGroupName"]) for i in got} == {(i, name) for i in ids}


def test_scale_in_picks_the_fuller_zone_and_the_old_launch_configuration(
        srv: Server, alice: dict[str, str], asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=6,
                                  DesiredCapacity=2, AvailabilityZones=ZONES)
    old = {m["InstanceId"] for m in converged(asg, ec2, name, 2)}
    asg.create_launch_configuration(LaunchConfigurationName=f"{name}-v2", ImageId=image(srv, alice),
                                    InstanceType="t3.micro")
    asg.update_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=f"{name}-v2",
                                  DesiredCapacity=4)
    members = converged(asg, ec2, name, 4)
    new = {m["InstanceId"] for m in members} - old
    assert {m["LaunchConfigurationName"] for m in members if m["InstanceId"] in new} == {f"{name}-v2"}
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=2)
    left = converged(asg, ec2, name, 2)
    # Default policy: zones stay balanced, and the instances of the old configuration go first.
    assert Counter(m["AvailabilityZone"] for m in left) == {"cloudctl-1a": 1, "cloudctl-1b": 1}
    assert {m["InstanceId"] for m in left} == new
    assert refused(srv, asg.delete_launch_configuration, "ResourceInUse", LaunchConfigurationName=f"{name}-v2")


def test_newest_instance_policy_and_protected_instances(asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=4,
                                  DesiredCapacity=1, AvailabilityZones=["cloudctl-1a"],
                                  TerminationPolicies=["NewestInstance"])
    first = converged(asg, ec2, name, 1)[0]["InstanceId"]
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=3)
    converged(asg, ec2, name, 3)
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)
    assert [m["InstanceId"] for m in converged(asg, ec2, name, 1)] == [first]


def test_terminate_instance_with_and_without_decrement(srv: Server, asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=1, MaxSize=4,
                                  DesiredCapacity=3, AvailabilityZones=ZONES)
    ids = [m["InstanceId"] for m in converged(asg, ec2, name, 3)]
    act = asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    assert act["Activity"]["Description"] == f"Terminating EC2 instance: {ids[0]}"
    assert "shrinking the capacity from 3 to 2" in act["Activity"]["Cause"]
    assert group(asg, name)["DesiredCapacity"] == 2
    left = {m["InstanceId"] for m in converged(asg, ec2, name, 2)}
    assert left == set(ids[1:])
    asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[1], ShouldDecrementDesiredCapacity=False)
    again = {m["InstanceId"] for m in converged(asg, ec2, name, 2)}
    assert ids[2] in again and ids[1] not in again and len(again - set(ids)) == 1   # replaced
    assert group(asg, name)["DesiredCapacity"] == 2
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=2)
    msg = refused(srv, asg.terminate_instance_in_auto_scaling_group, "ValidationError", InstanceId=ids[2],
                  ShouldDecrementDesiredCapacity=True)
    assert "min size" in msg
    refused(srv, asg.terminate_instance_in_auto_scaling_group, "ValidationError", InstanceId="i-00000000",
            ShouldDecrementDesiredCapacity=False)


def test_instance_terminated_outside_is_replaced(asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=2, MaxSize=2,
                                  AvailabilityZones=ZONES)
    ids = [m["InstanceId"] for m in converged(asg, ec2, name, 2)]
    ec2.terminate_instances(InstanceIds=[ids[0]])
    wait_until(lambda: ids[0] not in {m["InstanceId"] for m in converged(asg, ec2, name, 2)}, 30, "a replacement")
    acts = asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]
    gone = [a for a in acts if a["Description"] == f"Terminating EC2 instance: {ids[0]}"]
    assert gone and "terminated or stopped" in gone[0]["Cause"]


def test_stopped_instance_is_replaced_after_the_grace_period_only(asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=1, MaxSize=1,
                                  AvailabilityZones=ZONES, HealthCheckGracePeriod=3600)
    iid = converged(asg, ec2, name, 1)[0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[iid])
    wait_until(lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
               == "stopped", 20, "stopped")
    # Within the grace period it stays the group's, not replaced: another group's replacement (which
    # takes a tick after the stop) proves the reconciler looked meanwhile.
    witness = f"{name}-witness"
    asg.create_auto_scaling_group(AutoScalingGroupName=witness, LaunchConfigurationName=lc, MinSize=1, MaxSize=1,
                                  AvailabilityZones=ZONES)
    try:
        first = converged(asg, ec2, witness, 1)[0]["InstanceId"]
        ec2.terminate_instances(InstanceIds=[first])
        wait_until(lambda: converged(asg, ec2, witness, 1)[0]["InstanceId"] != first, 30, "the witness replaced")
        assert [i["InstanceId"] for i in group(asg, name)["Instances"]] == [iid]
    finally:
        asg.delete_auto_scaling_group(AutoScalingGroupName=witness, ForceDelete=True)
    asg.update_auto_scaling_group(AutoScalingGroupName=name, HealthCheckGracePeriod=0)
    wait_until(lambda: [i["InstanceId"] for i in group(asg, name)["Instances"]] not in ([iid], []), 30,
               "the stopped instance replaced")
    new = converged(asg, ec2, name, 1)[0]["InstanceId"]
    assert new != iid
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")


def test_suspended_launch_and_terminate(srv: Server, asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=4,
                                  DesiredCapacity=1, AvailabilityZones=ZONES)
    converged(asg, ec2, name, 1)
    asg.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["Launch", "Terminate"])
    g = group(asg, name)
    assert {p["ProcessName"] for p in g["SuspendedProcesses"]} == {"Launch", "Terminate"}
    assert all(p["SuspensionReason"].startswith("User suspended at ") for p in g["SuspendedProcesses"])
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=3)
    # Ticks pass (a scale-in of another group proves the reconciler ran), this group stays at one.
    other = f"{name}-witness"
    asg.create_auto_scaling_group(AutoScalingGroupName=other, LaunchConfigurationName=lc, MinSize=1, MaxSize=1,
                                  AvailabilityZones=ZONES)
    try:
        converged(asg, ec2, other, 1)
        assert len(group(asg, name)["Instances"]) == 1
        asg.resume_processes(AutoScalingGroupName=name, ScalingProcesses=["Launch"])
        converged(asg, ec2, name, 3)
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=0)
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=converged(asg, ec2, other, 1)[0]["InstanceId"], ShouldDecrementDesiredCapacity=False)
        converged(asg, ec2, other, 1)   # (replaced: the reconciler ran again)
        assert len(group(asg, name)["Instances"]) == 3
        asg.resume_processes(AutoScalingGroupName=name)
        converged(asg, ec2, name, 0)
        assert group(asg, name)["SuspendedProcesses"] == []
    finally:
        asg.delete_auto_scaling_group(AutoScalingGroupName=other, ForceDelete=True)
    refused(srv, asg.suspend_processes, "ValidationError", AutoScalingGroupName=name, ScalingProcesses=["Nap"])


def test_attach_and_detach_instances(srv: Server, alice: dict[str, str], asg: Any, ec2: Any, lc: str,
                                     name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=3,
                                  DesiredCapacity=0, AvailabilityZones=["cloudctl-1a"])
    iid = ec2.run_instances(ImageId=image(srv, alice), MinCount=1, MaxCount=1, InstanceType="t3.nano",
                            Placement={"AvailabilityZone": "cloudctl-1a"})["Instances"][0]["InstanceId"]
    asg.attach_instances(AutoScalingGroupName=name, InstanceIds=[iid])
    g = group(asg, name)
    assert g["DesiredCapacity"] == 1 and [i["InstanceId"] for i in g["Instances"]] == [iid]
    tags = {t["Key"]: t["Value"] for t in ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
    assert tags["aws:autoscaling:groupName"] == name
    refused(srv, asg.attach_instances, "ValidationError", AutoScalingGroupName=name, InstanceIds=[iid])
    acts = asg.detach_instances(AutoScalingGroupName=name, InstanceIds=[iid], ShouldDecrementDesiredCapacity=True)
    assert acts["Activities"][0]["Description"] == f"Detaching EC2 instance: {iid}"
    g = group(asg, name)
    assert g["DesiredCapacity"] == 0 and g["Instances"] == []
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "pending", "running")   # detached, not terminated
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert "aws:autoscaling:groupName" not in {t["Key"] for t in tags}
    refused(srv, asg.detach_instances, "ValidationError", AutoScalingGroupName=name, InstanceIds=[iid],
            ShouldDecrementDesiredCapacity=False)
    other = ec2.run_instances(ImageId=image(srv, alice), MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"][0]["InstanceId"]
    refused(srv, asg.attach_instances, "ValidationError", AutoScalingGroupName=name, InstanceIds=[other])
    ec2.terminate_instances(InstanceIds=[iid, other])


def test_tags_create_describe_delete(srv: Server, asg: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=1,
                                  AvailabilityZones=ZONES)
    tag = {"ResourceId": name, "ResourceType": "auto-scaling-group"}
    asg.create_or_update_tags(Tags=[{**tag, "Key": "a", "Value": "1", "PropagateAtLaunch": True},
                                    {**tag, "Key": "b", "Value": "2", "PropagateAtLaunch": False}])
    asg.create_or_update_tags(Tags=[{**tag, "Key": "a", "Value": "one"}])
    got = asg.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [name]}])["Tags"]
    assert [(t["Key"], t["Value"], t["PropagateAtLaunch"]) for t in got] == [("a", "one", True), ("b", "2", False)]
    only = asg.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [name]},
                                      {"Name": "propagate-at-launch", "Values": ["false"]}])["Tags"]
    assert [t["Key"] for t in only] == ["b"]
    by_tag = asg.describe_auto_scaling_groups(Filters=[{"Name": "tag:a", "Values": ["one"]}])["AutoScalingGroups"]
    assert [g["AutoScalingGroupName"] for g in by_tag] == [name]
    asg.delete_tags(Tags=[{**tag, "Key": "a"}])
    assert [t["Key"] for t in group(asg, name)["Tags"]] == ["b"]
    refused(srv, asg.create_or_update_tags, "ValidationError", Tags=[{**tag, "Key": "aws:x", "Value": "1"}])
    refused(srv, asg.create_or_update_tags, "ValidationError",
            Tags=[{"ResourceId": "no-such-group", "ResourceType": "auto-scaling-group", "Key": "k", "Value": "v"}])
    refused(srv, asg.create_or_update_tags, "LimitExceeded",
            Tags=[{**tag, "Key": f"k{i}", "Value": "v"} for i in range(51)])


def test_force_delete_terminates_the_instances(srv: Server, asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=2, MaxSize=2,
                                  AvailabilityZones=ZONES)
    ids = [m["InstanceId"] for m in converged(asg, ec2, name, 2)]
    assert "instances" in refused(srv, asg.delete_auto_scaling_group, "ResourceInUse", AutoScalingGroupName=name)
    asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    wait_until(lambda: asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"] == [],
               30, "the group gone")
    states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"}


def test_capacity_failure_is_a_failed_activity_retried_with_backoff(server_with: Any) -> None:
    s: Server = server_with(autoscaling=FAST, limits={"instances": 2})
    user = s.create_user("capped")
    asg, ec2 = client(s, user), s.client(user)
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image(s, user), InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="big", LaunchConfigurationName="lc", MinSize=0, MaxSize=5,
                                  DesiredCapacity=4, AvailabilityZones=ZONES)

    def failed() -> list[dict[str, Any]]:
        acts = asg.describe_scaling_activities(AutoScalingGroupName="big")["Activities"]
        return [a for a in acts if a["StatusCode"] == "Failed"]
    fails = wait_until(lambda: (f := failed()) and len(f) >= 3 and f, 60, "three failed launches")
    assert len(live(ec2, "big")) == 2
    for a in fails:
        assert "InstanceLimitExceeded" in a["StatusMessage"]
        assert "Launching EC2 instance failed" in a["Description"]
    # backoff: each retry waits at least twice as long as the one before (1 s, 2 s, 4 s ... capped)
    starts = sorted(a["StartTime"] for a in fails)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    assert all(g >= 0.9 for g in gaps), gaps
    assert gaps[-1] >= 1.8, gaps
    assert len(fails) <= 8   # never a hot loop (the reconciler ticks every 0.3 s)


# -- policies --------------------------------------------------------------------------------------

def test_simple_scaling_policies(srv: Server, asg: Any, ec2: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=1, MaxSize=10,
                                  DesiredCapacity=2, AvailabilityZones=ZONES, DefaultCooldown=3600)
    up = asg.put_scaling_policy(AutoScalingGroupName=name, PolicyName="up", AdjustmentType="ChangeInCapacity",
                                ScalingAdjustment=2)["PolicyARN"]
    assert up.endswith(f":autoScalingGroupName/{name}:policyName/up")
    asg.put_scaling_policy(AutoScalingGroupName=name, PolicyName="pct", AdjustmentType="PercentChangeInCapacity",
                           ScalingAdjustment=10, MinAdjustmentMagnitude=2, Cooldown=0)
    asg.put_scaling_policy(AutoScalingGroupName=name, PolicyName="exact", AdjustmentType="ExactCapacity",
                           ScalingAdjustment=1)
    pols = asg.describe_policies(AutoScalingGroupName=name)["ScalingPolicies"]
    assert {p["PolicyName"]: p["AdjustmentType"] for p in pols} == {
        "up": "ChangeInCapacity", "pct": "PercentChangeInCapacity", "exact": "ExactCapacity"}
    asg.execute_policy(AutoScalingGroupName=name, PolicyName="up")
    assert group(asg, name)["DesiredCapacity"] == 4
    # in the group's cooldown now: honoured by default, not when HonorCooldown is false
    refused(srv, asg.execute_policy, "ScalingActivityInProgress", AutoScalingGroupName=name, PolicyName="up")
    asg.execute_policy(AutoScalingGroupName=name, PolicyName=up, HonorCooldown=False)
    assert group(asg, name)["DesiredCapacity"] == 6
    asg.execute_policy(AutoScalingGroupName=name, PolicyName="pct")   # its own cooldown, 0: 10% of 6 -> +2
    assert group(asg, name)["DesiredCapacity"] == 8
    converged(asg, ec2, name, 8)
    asg.execute_policy(AutoScalingGroupName=name, PolicyName="exact", HonorCooldown=False)
    converged(asg, ec2, name, 1)
    asg.delete_policy(AutoScalingGroupName=name, PolicyName="pct")
    assert {p["PolicyName"] for p in asg.describe_policies(AutoScalingGroupName=name)["ScalingPolicies"]} == \
        {"up", "exact"}
    refused(srv, asg.put_scaling_policy, "ValidationError", AutoScalingGroupName=name, PolicyName="x",
            AdjustmentType="Bogus", ScalingAdjustment=1)
    refused(srv, asg.put_scaling_policy, "ValidationError", AutoScalingGroupName=name, PolicyName="x",
            PolicyType="TargetTrackingScaling",
            TargetTrackingConfiguration={"TargetValue": 50.0, "PredefinedMetricSpecification": {
                "PredefinedMetricType": "ASGAverageCPUUtilization"}})
    refused(srv, asg.execute_policy, "ValidationError", AutoScalingGroupName=name, PolicyName="nope")


# -- the reads tools make --------------------------------------------------------------------------

def test_describe_calls_of_terraform_and_ansible(asg: Any, lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=1,
                                  AvailabilityZones=ZONES)
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"] == []
    assert asg.describe_warm_pool(AutoScalingGroupName=name)["Instances"] == []
    assert asg.describe_load_balancers(AutoScalingGroupName=name)["LoadBalancers"] == []
    assert asg.describe_load_balancer_target_groups(AutoScalingGroupName=name)["LoadBalancerTargetGroups"] == []
    assert asg.describe_notification_configurations(AutoScalingGroupNames=[name])["NotificationConfigurations"] == []
    assert asg.describe_traffic_sources(AutoScalingGroupName=name)["TrafficSources"] == []
    assert asg.describe_scheduled_actions(AutoScalingGroupName=name)["ScheduledUpdateGroupActions"] == []
    assert asg.describe_instance_refreshes(AutoScalingGroupName=name)["InstanceRefreshes"] == []
    limits = asg.describe_account_limits()
    assert limits["MaxNumberOfAutoScalingGroups"] == 200 and limits["NumberOfAutoScalingGroups"] >= 1
    assert limits["NumberOfLaunchConfigurations"] >= 1
    assert {t["AdjustmentType"] for t in asg.describe_adjustment_types()["AdjustmentTypes"]} == {
        "ChangeInCapacity", "ExactCapacity", "PercentChangeInCapacity"}
    assert "Default" in asg.describe_termination_policy_types()["TerminationPolicyTypes"]
    assert {p["ProcessName"] for p in asg.describe_scaling_process_types()["Processes"]} >= {
        "Launch", "Terminate", "HealthCheck", "ReplaceUnhealthy", "AZRebalance", "AddToLoadBalancer"}
    with pytest.raises(ClientError) as e:
        asg.describe_lifecycle_hooks(AutoScalingGroupName="no-such-group")
    assert e.value.response["Error"]["Code"] == "ValidationError"


def test_disable_metrics_collection_as_ansible_sends_it(srv: Server, asg: Any, lc: str, name: str) -> None:
    """Ansible's autoscaling_group disables metrics collection on every update (its default list):
    nothing is collected here, so it succeeds and changes nothing; unknown names are refused."""
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=1,
                                  AvailabilityZones=ZONES)
    before = settled(srv)
    asg.disable_metrics_collection(AutoScalingGroupName=name, Metrics=[
        "GroupMinSize", "GroupMaxSize", "GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances",
        "GroupStandbyInstances", "GroupTerminatingInstances", "GroupTotalInstances"])
    asg.disable_metrics_collection(AutoScalingGroupName=name)
    assert digest(srv) == before
    assert group(asg, name)["EnabledMetrics"] == []
    assert "GroupSize" in refused(srv, asg.disable_metrics_collection, "ValidationError", AutoScalingGroupName=name,
                                  Metrics=["GroupSize"])
    refused(srv, asg.enable_metrics_collection, "InvalidAction", AutoScalingGroupName=name, Granularity="1Minute")


# -- refusals --------------------------------------------------------------------------------------

def test_group_refusals_leave_the_state_alone(srv: Server, asg: Any, lc: str, name: str) -> None:
    base = {"AutoScalingGroupName": name, "LaunchConfigurationName": lc, "MinSize": 1, "MaxSize": 2,
            "AvailabilityZones": ZONES}
    for change, words in [({"MinSize": 3}, "Max bound, 2, must be greater than or equal to min bound, 3"),
                          ({"DesiredCapacity": 5}, "Desired capacity:5 must be between"),
                          ({"LaunchConfigurationName": "nope"}, "nope"),
                          ({"AvailabilityZones": ["mars-1a"]}, "mars-1a"),
                          ({"AvailabilityZones": [], "VPCZoneIdentifier": "subnet-00000000"}, "subnet-00000000"),
                          ({"HealthCheckType": "PING"}, "HealthCheckType"),
                          ({"TerminationPolicies": ["Whim"]}, "Whim"),
                          ({"LoadBalancerNames": ["lb"]}, "LoadBalancer: lb could not be found"),
                          ({"LaunchTemplate": {"LaunchTemplateName": "tmpl"}, "LaunchConfigurationName": None},
                           "tmpl"),
                          ({"InstanceId": "i-00000000", "LaunchConfigurationName": None}, "InstanceId"),
                          ({"TargetGroupARNs": ["arn:aws:elasticloadbalancing:x"]}, "TargetGroupARNs"),
                          ({"Tags": [{"Key": "aws:x", "Value": "v"}]}, "reserved")]:
        req = {k: v for k, v in {**base, **change}.items() if v is not None}
        assert words in refused(srv, asg.create_auto_scaling_group, "ValidationError", **req), change
    asg.create_auto_scaling_group(**{**base, "MinSize": 0, "DesiredCapacity": 0})
    assert "already exists" in refused(srv, asg.create_auto_scaling_group, "AlreadyExists", **base)
    for call, kw in [(asg.update_auto_scaling_group, {"AutoScalingGroupName": name, "MinSize": 5}),
                     (asg.update_auto_scaling_group, {"AutoScalingGroupName": "nope", "MinSize": 0}),
                     (asg.set_desired_capacity, {"AutoScalingGroupName": name, "DesiredCapacity": 3}),
                     (asg.set_desired_capacity, {"AutoScalingGroupName": "nope", "DesiredCapacity": 0}),
                     (asg.delete_auto_scaling_group, {"AutoScalingGroupName": "nope"}),
                     (asg.attach_instances, {"AutoScalingGroupName": name, "InstanceIds": ["i-00000000"]}),
                     (asg.attach_load_balancers, {"AutoScalingGroupName": name, "LoadBalancerNames": ["lb"]}),
                     (asg.describe_auto_scaling_groups, {"MaxRecords": 101}),
                     (asg.describe_auto_scaling_groups, {"NextToken": "bogus"}),
                     (asg.describe_tags, {"Filters": [{"Name": "colour", "Values": ["x"]}]})]:
        code = "InvalidNextToken" if "NextToken" in kw else "ValidationError"
        refused(srv, call, code, **kw)


def test_limit_on_groups(server_with: Any) -> None:
    s: Server = server_with(autoscaling={**FAST, "max_groups": 1, "max_launch_configurations": 1})
    user = s.create_user("limited")
    asg = client(s, user)
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image(s, user), InstanceType="t3.nano")
    refused(s, asg.create_launch_configuration, "LimitExceeded", LaunchConfigurationName="lc2",
            ImageId=image(s, user), InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="one", LaunchConfigurationName="lc", MinSize=0, MaxSize=0,
                                  AvailabilityZones=ZONES)
    refused(s, asg.create_auto_scaling_group, "LimitExceeded", AutoScalingGroupName="two",
            LaunchConfigurationName="lc", MinSize=0, MaxSize=0, AvailabilityZones=ZONES)


def test_another_users_groups_are_invisible(srv: Server, asg: Any, bob: dict[str, str], lc: str, name: str) -> None:
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchConfigurationName=lc, MinSize=0, MaxSize=1,
                                  AvailabilityZones=ZONES)
    theirs = client(srv, bob)
    assert theirs.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert theirs.describe_launch_configurations()["LaunchConfigurations"] == []
    assert theirs.describe_tags()["Tags"] == []
    assert theirs.describe_scaling_activities()["Activities"] == []
    refused(srv, theirs.set_desired_capacity, "ValidationError", AutoScalingGroupName=name, DesiredCapacity=1)
    refused(srv, theirs.delete_auto_scaling_group, "ValidationError", AutoScalingGroupName=name, ForceDelete=True)
    refused(srv, theirs.delete_launch_configuration, "ValidationError", LaunchConfigurationName=lc)
    # bob may use the same names: they are his account's own
    theirs.create_launch_configuration(LaunchConfigurationName=lc, ImageId=image(srv, bob), InstanceType="t3.nano")
    theirs.delete_launch_configuration(LaunchConfigurationName=lc)


# -- the AWS CLI -------------------------------------------------------------------------------------

def test_aws_cli_workflow(srv: Server, alice: dict[str, str], ec2: Any, lc: str, name: str) -> None:
    rc, _, err = aws(srv, alice, "autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", name,
                     "--launch-configuration-name", lc, "--min-size", "1", "--max-size", "3",
                     "--availability-zones", *ZONES)
    assert rc == 0, err
    rc, _, err = aws(srv, alice, "autoscaling", "set-desired-capacity", "--auto-scaling-group-name", name,
                     "--desired-capacity", "2")
    assert rc == 0, err
    converged(client(srv, alice), ec2, name, 2)
    rc, out, err = aws(srv, alice, "autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", name)
    assert rc == 0, err
    g = out["AutoScalingGroups"][0]
    assert g["DesiredCapacity"] == 2 and len(g["Instances"]) == 2
    rc, out, err = aws(srv, alice, "autoscaling", "describe-scaling-activities", "--auto-scaling-group-name", name)
    assert rc == 0 and out["Activities"], err
    rc, _, err = aws(srv, alice, "autoscaling", "set-desired-capacity", "--auto-scaling-group-name", name,
                     "--desired-capacity", "9")
    assert rc != 0 and "ValidationError" in err and "above max value 3" in err
    rc, out, err = aws(srv, alice, "autoscaling", "put-scaling-policy", "--auto-scaling-group-name", name,
                       "--policy-name", "up", "--adjustment-type", "ChangeInCapacity", "--scaling-adjustment", "1")
    assert rc == 0 and out["PolicyARN"].endswith(":policyName/up"), err
    rc, _, err = aws(srv, alice, "autoscaling", "execute-policy", "--auto-scaling-group-name", name,
                     "--policy-name", "up", "--no-honor-cooldown")
    assert rc == 0, err
    members = converged(client(srv, alice), ec2, name, 3)
    rc, out, err = aws(srv, alice, "autoscaling", "describe-policies", "--auto-scaling-group-name", name)
    assert rc == 0 and [p["PolicyName"] for p in out["ScalingPolicies"]] == ["up"], err
    rc, _, err = aws(srv, alice, "autoscaling", "create-or-update-tags", "--tags",
                     f"ResourceId={name},ResourceType=auto-scaling-group,Key=team,Value=web,PropagateAtLaunch=true")
    assert rc == 0, err
    rc, out, err = aws(srv, alice, "autoscaling", "describe-tags", "--filters",
                       f"Name=auto-scaling-group,Values={name}")
    assert rc == 0 and [(t["Key"], t["Value"]) for t in out["Tags"]] == [("team", "web")], err
    rc, _, err = aws(srv, alice, "autoscaling", "suspend-processes", "--auto-scaling-group-name", name,
                     "--scaling-processes", "AZRebalance")
    assert rc == 0, err
    rc, out, err = aws(srv, alice, "autoscaling", "terminate-instance-in-auto-scaling-group", "--instance-id",
                       members[0]["InstanceId"], "--should-decrement-desired-capacity")
    assert rc == 0 and out["Activity"]["Description"].endswith(members[0]["InstanceId"]), err
    rc, out, err = aws(srv, alice, "autoscaling", "describe-auto-scaling-instances")
    assert rc == 0 and members[0]["InstanceId"] not in {i["InstanceId"] for i in out["AutoScalingInstances"]}, err
    rc, _, err = aws(srv, alice, "autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name", name,
                     "--force-delete")
    assert rc == 0, err
    rc, out, err = aws(srv, alice, "autoscaling", "describe-launch-configurations")
    assert rc == 0 and lc in {c["LaunchConfigurationName"] for c in out["LaunchConfigurations"]}, err


# -- bad input on every action ---------------------------------------------------------------------

_G = [("AutoScalingGroupName", "no-such-group")]
BAD: dict[str, tuple[list[tuple[str, str]], str]] = {
    "CreateLaunchConfiguration": ([("LaunchConfigurationName", "x"), ("ImageId", "ami-0000000000000dead"),
                                   ("InstanceType", "t3.nano")], "ValidationError"),
    "DescribeLaunchConfigurations": ([("MaxRecords", "0")], "ValidationError"),
    "DeleteLaunchConfiguration": ([("LaunchConfigurationName", "nope")], "ValidationError"),
    "CreateAutoScalingGroup": ([("AutoScalingGroupName", "x"), ("LaunchConfigurationName", "nope"), ("MinSize", "0"),
                                ("MaxSize", "1"), ("AvailabilityZones.member.1", "cloudctl-1a")], "ValidationError"),
    "UpdateAutoScalingGroup": (_G, "ValidationError"),
    "DeleteAutoScalingGroup": (_G, "ValidationError"),
    "DescribeAutoScalingGroups": ([("NextToken", "bogus")], "InvalidNextToken"),
    "DescribeAutoScalingInstances": ([("MaxRecords", "51")], "ValidationError"),
    "SetDesiredCapacity": (_G + [("DesiredCapacity", "1")], "ValidationError"),
    "TerminateInstanceInAutoScalingGroup": ([("InstanceId", "i-0000000000000dead"),
                                             ("ShouldDecrementDesiredCapacity", "false")], "ValidationError"),
    "AttachInstances": (_G + [("InstanceIds.member.1", "i-0000000000000dead")], "ValidationError"),
    "DetachInstances": (_G + [("InstanceIds.member.1", "i-0000000000000dead"),
                              ("ShouldDecrementDesiredCapacity", "false")], "ValidationError"),
    "SuspendProcesses": (_G, "ValidationError"),
    "ResumeProcesses": (_G, "ValidationError"),
    "DescribeScalingActivities": ([("MaxRecords", "101")], "ValidationError"),
    "CreateOrUpdateTags": ([("Tags.member.1.ResourceId", "no-such-group"), ("Tags.member.1.Key", "k"),
                            ("Tags.member.1.ResourceType", "auto-scaling-group")], "ValidationError"),
    "DeleteTags": ([("Tags.member.1.ResourceId", "no-such-group"), ("Tags.member.1.Key", "k"),
                    ("Tags.member.1.ResourceType", "auto-scaling-group")], "ValidationError"),
    "DescribeTags": ([("Filters.member.1.Name", "colour"), ("Filters.member.1.Values.member.1", "x")],
                     "ValidationError"),
    "AttachLoadBalancers": (_G + [("LoadBalancerNames.member.1", "lb")], "ValidationError"),
    "DetachLoadBalancers": (_G + [("LoadBalancerNames.member.1", "lb")], "ValidationError"),
    "DescribeLoadBalancers": (_G, "ValidationError"),
    "DescribeLoadBalancerTargetGroups": (_G, "ValidationError"),
    "DescribeTrafficSources": (_G, "ValidationError"),
    "DescribeLifecycleHooks": (_G, "ValidationError"),
    "DescribeWarmPool": (_G, "ValidationError"),
    "DisableMetricsCollection": (_G, "ValidationError"),
    "DescribeInstanceRefreshes": (_G, "ValidationError"),
    "DescribeScheduledActions": (_G, "ValidationError"),
    "DescribeNotificationConfigurations": ([("AutoScalingGroupNames.member.1", "no-such-group")], "ValidationError"),
    "PutScalingPolicy": (_G + [("PolicyName", "p"), ("AdjustmentType", "ChangeInCapacity"),
                               ("ScalingAdjustment", "1")], "ValidationError"),
    "DescribePolicies": ([("MaxRecords", "51")], "ValidationError"),
    "DeletePolicy": (_G + [("PolicyName", "nope")], "ValidationError"),
    "ExecutePolicy": (_G + [("PolicyName", "nope")], "ValidationError"),
    **{a: ([("Bogus", "1")], "ValidationError") for a in (
        "DescribeAccountLimits", "DescribeAdjustmentTypes", "DescribeTerminationPolicyTypes",
        "DescribeScalingProcessTypes", "DescribeLifecycleHookTypes", "DescribeMetricCollectionTypes")},
}


def test_every_action_has_a_bad_input_row() -> None:
    assert set(BAD) == set(SPEC.registry.actions)


@pytest.mark.parametrize("action", sorted(BAD))
def test_bad_input_is_refused_in_autoscaling_shape(srv: Server, alice: dict[str, str], action: str) -> None:
    pairs, code = BAD[action]
    before = settled(srv)
    q = SignedQuery(srv.endpoint, alice, "cloudctl-1", "autoscaling", "2011-01-01")
    try:
        status, body = q.send(action, pairs)
    finally:
        q.close()
    assert status == 400, body[:300]
    root = ElementTree.fromstring(body)
    ns = "{http://autoscaling.amazonaws.com/doc/2011-01-01/}"
    assert root.tag == f"{ns}ErrorResponse", body[:300]
    assert root.findtext(f"{ns}Error/{ns}Type") == "Sender"
    assert root.findtext(f"{ns}Error/{ns}Code") == code, body[:300]
    assert root.findtext(f"{ns}Error/{ns}Message") and root.findtext(f"{ns}RequestId")
    assert digest(srv) == before
