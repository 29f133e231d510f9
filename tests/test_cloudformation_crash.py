"""A controller SIGKILLed in the middle of a stack's create, its delete, its update and a cancelled
update's rollback, then restarted: the operation resumes from the journal and ends consistent,
nothing made twice and nothing left behind."""
from __future__ import annotations

import json
from typing import Any

from cloudctl.store.records import CfnWait
from cloudctl.store.store import Store

from asg_support import client
from elbsupport import public_image
from support import Servers, wait_until

# A slow-ish reconciler, so the group's wait is long enough to be caught in progress.
SLOW = {"tick_s": 1.0, "backoff_s": 1.0, "backoff_max_s": 4.0}


def _template(image: str) -> str:
    return json.dumps({"Resources": {
        "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "crash"}},
        "Rule": {"Type": "AWS::EC2::SecurityGroupIngress",
                 "Properties": {"GroupId": {"Ref": "Sg"}, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                "CidrIp": "10.0.0.0/8"}},
        "Lc": {"Type": "AWS::AutoScaling::LaunchConfiguration",
               "Properties": {"ImageId": image, "InstanceType": "t3.nano", "SecurityGroups": [{"Ref": "Sg"}]}},
        "Asg": {"Type": "AWS::AutoScaling::AutoScalingGroup",
                "Properties": {"AvailabilityZones": {"Fn::GetAZs": ""}, "LaunchConfigurationName": {"Ref": "Lc"},
                               "MinSize": "2", "MaxSize": "2"}},
        "Solo": {"Type": "AWS::EC2::Instance",
                 "Properties": {"ImageId": image, "InstanceType": "t3.nano", "SecurityGroupIds": [{"Ref": "Sg"}]}},
    }})


def _resources(cfn: Any, name: str) -> dict[str, dict[str, Any]]:
    return {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}


def _instances(ec2: Any) -> list[dict[str, Any]]:
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                           "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def _stack(cfn: Any, sid: str) -> dict[str, Any]:
    return dict(cfn.describe_stacks(StackName=sid)["Stacks"][0])


def test_sigkill_mid_create_and_mid_delete(new_server: Servers) -> None:
    srv = new_server(autoscaling=SLOW)
    user = srv.create_user("crash")
    cfn, ec2 = client(srv, user, "cloudformation"), srv.client(user)
    sid = cfn.create_stack(StackName="crashy", TemplateBody=_template(public_image(ec2)))["StackId"]
    # Killed once the group is being made (its instances launching), the lone instance too or done.
    wait_until(lambda: _resources(cfn, "crashy").get("Asg", {}).get("ResourceStatus") == "CREATE_IN_PROGRESS"
               or None, timeout=60)
    srv.kill()
    srv.start()
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "CREATE_IN_PROGRESS" or None, timeout=120)
    assert _stack(cfn, sid)["StackStatus"] == "CREATE_COMPLETE"
    res = _resources(cfn, "crashy")
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in res.values()), res
    insts = _instances(ec2)
    assert len(insts) == 3, insts   # two in the group, one alone: none made twice
    groups = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    assert [g["GroupId"] for g in groups] == [res["Sg"]["PhysicalResourceId"]]
    assert len(client(srv, user).describe_auto_scaling_groups()["AutoScalingGroups"]) == 1
    assert len(client(srv, user).describe_launch_configurations()["LaunchConfigurations"]) == 1

    cfn.delete_stack(StackName="crashy")
    # Killed while the group is being deleted (its instances terminating).
    wait_until(lambda: _resources(cfn, sid)["Asg"]["ResourceStatus"] == "DELETE_IN_PROGRESS" or None, timeout=60)
    srv.kill()
    srv.start()
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "DELETE_IN_PROGRESS" or None, timeout=120)
    assert _stack(cfn, sid)["StackStatus"] == "DELETE_COMPLETE"
    assert _instances(ec2) == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"] == []
    assert client(srv, user).describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert client(srv, user).describe_launch_configurations()["LaunchConfigurations"] == []


def _update_template(image: str, *, lc_type: str = "t3.nano", size: str = "2", port: int = 22,
                     extra: dict[str, Any] | None = None) -> str:
    t = json.loads(_template(image))
    t["Resources"]["Lc"]["Properties"]["InstanceType"] = lc_type
    t["Resources"]["Asg"]["Properties"].update(MinSize=size, MaxSize=size)
    t["Resources"]["Rule"]["Properties"].update(FromPort=port, ToPort=port)
    t["Resources"].update(extra or {})
    return json.dumps(t)


def _names(srv: Any, user: dict[str, str]) -> tuple[list[str], list[str]]:
    asg = client(srv, user)
    return ([c["LaunchConfigurationName"] for c in asg.describe_launch_configurations()["LaunchConfigurations"]],
            [g["AutoScalingGroupName"] for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]])


def test_sigkill_mid_update_resumes_it(new_server: Servers) -> None:
    srv = new_server(autoscaling=SLOW)
    user = srv.create_user("crash-upd")
    cfn, ec2 = client(srv, user, "cloudformation"), srv.client(user)
    image = public_image(ec2)
    sid = cfn.create_stack(StackName="upd", TemplateBody=_update_template(image))["StackId"]
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "CREATE_IN_PROGRESS" or None, timeout=120)
    before = _resources(cfn, sid)
    # The launch configuration replaced, then the group grown in place: killed while it grows.
    cfn.update_stack(StackName=sid, TemplateBody=_update_template(image, lc_type="t3.micro", size="3"))
    wait_until(lambda: _resources(cfn, sid)["Asg"]["ResourceStatus"] == "UPDATE_IN_PROGRESS" or None, timeout=60)
    srv.kill()
    srv.start()
    wait_until(lambda: not _stack(cfn, sid)["StackStatus"].endswith("_IN_PROGRESS") or None, timeout=180)
    assert _stack(cfn, sid)["StackStatus"] == "UPDATE_COMPLETE"
    after = _resources(cfn, sid)
    assert after["Lc"]["PhysicalResourceId"] != before["Lc"]["PhysicalResourceId"]
    for lg in ("Sg", "Asg", "Solo", "Rule"):
        assert after[lg]["PhysicalResourceId"] == before[lg]["PhysicalResourceId"], lg
    lcs, groups = _names(srv, user)
    assert lcs == [after["Lc"]["PhysicalResourceId"]] and groups == [after["Asg"]["PhysicalResourceId"]]
    assert len(_instances(ec2)) == 4, _instances(ec2)   # three in the group, one alone: none made twice
    cfn.delete_stack(StackName=sid)
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] == "DELETE_COMPLETE" or None, timeout=120)
    assert _instances(ec2) == [] and _names(srv, user) == ([], [])


def test_sigkill_after_cancel_update_finishes_the_rollback(new_server: Servers) -> None:
    srv = new_server(autoscaling=SLOW)
    user = srv.create_user("crash-cancel")
    cfn, ec2 = client(srv, user, "cloudformation"), srv.client(user)
    image = public_image(ec2)
    sid = cfn.create_stack(StackName="cncl", TemplateBody=_update_template(image))["StackId"]
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "CREATE_IN_PROGRESS" or None, timeout=120)
    before = _resources(cfn, sid)
    # A replaced launch configuration, a replaced rule, and a wait condition nobody signals.
    wait = {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"},
            "Wait": {"Type": "AWS::CloudFormation::WaitCondition", "DependsOn": ["Lc", "Rule"],
                     "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": "3600"}}}
    cfn.update_stack(StackName=sid, TemplateBody=_update_template(image, lc_type="t3.micro", port=2222, extra=wait))
    wait_until(lambda: _resources(cfn, sid).get("Wait", {}).get("ResourceStatus") == "CREATE_IN_PROGRESS" or None,
               timeout=60)
    cfn.cancel_update_stack(StackName=sid)
    srv.kill()     # the rollback was acknowledged (journaled) but barely begun
    srv.start()
    wait_until(lambda: not _stack(cfn, sid)["StackStatus"].endswith("_IN_PROGRESS") or None, timeout=180)
    assert _stack(cfn, sid)["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    after = _resources(cfn, sid)
    assert set(after) == set(before)
    for lg in before:
        assert after[lg]["PhysicalResourceId"] == before[lg]["PhysicalResourceId"], lg
    lcs, _ = _names(srv, user)
    assert lcs == [before["Lc"]["PhysicalResourceId"]]   # the replacement made by the update deleted
    sg = ec2.describe_security_groups(GroupIds=[before["Sg"]["PhysicalResourceId"]])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [22]
    assert len(_instances(ec2)) == 3
    cfn.delete_stack(StackName=sid)
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] == "DELETE_COMPLETE" or None, timeout=120)
    assert _instances(ec2) == [] and _names(srv, user) == ([], [])


def test_sigkill_mid_replacement_adopts_what_it_made(new_server: Servers) -> None:
    srv = new_server(autoscaling=SLOW)
    user = srv.create_user("crash-repl")
    cfn, ec2 = client(srv, user, "cloudformation"), srv.client(user)
    image = public_image(ec2)
    sid = cfn.create_stack(StackName="repl", TemplateBody=_update_template(image))["StackId"]
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "CREATE_IN_PROGRESS" or None, timeout=120)
    before = _resources(cfn, sid)
    # A group's Tags replace it here: the new group (its name and token from the update's number) is
    # being made — its instances launching — when the controller dies.
    t = json.loads(_update_template(image))
    t["Resources"]["Asg"]["Properties"]["Tags"] = [{"Key": "Tier", "Value": "web", "PropagateAtLaunch": True}]
    cfn.update_stack(StackName=sid, TemplateBody=json.dumps(t))
    wait_until(lambda: _resources(cfn, sid)["Asg"]["ResourceStatus"] == "UPDATE_IN_PROGRESS"
               and len(_names(srv, user)[1]) == 2 or None, timeout=60)
    srv.kill()
    srv.start()
    wait_until(lambda: not _stack(cfn, sid)["StackStatus"].endswith("_IN_PROGRESS") or None, timeout=180)
    assert _stack(cfn, sid)["StackStatus"] == "UPDATE_COMPLETE"
    after = _resources(cfn, sid)
    new = after["Asg"]["PhysicalResourceId"]
    assert new != before["Asg"]["PhysicalResourceId"]
    assert _names(srv, user)[1] == [new]      # the one made before the kill adopted, the old one deleted
    insts = _instances(ec2)
    assert len(insts) == 3, insts              # two in the new group, one alone
    tagged = [i for i in insts if {"Key": "Tier", "Value": "web"} in i.get("Tags", [])]
    assert len(tagged) == 2
    cfn.delete_stack(StackName=sid)
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] == "DELETE_COMPLETE" or None, timeout=120)
    assert _instances(ec2) == [] and _names(srv, user) == ([], [])


def _wait_deadlines(srv: Any) -> dict[str, float]:
    """The WaitCondition deadlines journaled in the server's state (read as a restart would; again
    if the read met a checkpoint being written)."""
    def read() -> tuple[dict[str, float]] | None:
        store = Store(srv.state_dir)
        try:
            store._load()
        except Exception:
            return None
        return ({r.id: r.deadline for r in store.table(CfnWait).values()},)
    return dict(wait_until(read, timeout=30)[0])


def test_wait_condition_deadline_survives_a_restart(new_server: Servers) -> None:
    """The Timeout counts from when the wait first started, not from the last start of the controller."""
    srv = new_server()
    user = srv.create_user("patient")
    cfn = client(srv, user, "cloudformation")
    body = json.dumps({"Resources": {
        "Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"},
        "Wait": {"Type": "AWS::CloudFormation::WaitCondition",
                 "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": "20"}}}})
    sid = cfn.create_stack(StackName="patient", TemplateBody=body, OnFailure="DO_NOTHING")["StackId"]
    first = wait_until(lambda: _wait_deadlines(srv) or None, timeout=60)
    assert list(first) == [f"{sid}|Wait"]
    srv.kill()
    after_kill = _wait_deadlines(srv)
    srv.start()
    assert after_kill == first
    assert _stack(cfn, sid)["StackStatus"] == "CREATE_IN_PROGRESS"   # (resumed, still waiting)
    assert _wait_deadlines(srv) == first                             # the same deadline, not a new one
    wait_until(lambda: _stack(cfn, sid)["StackStatus"] != "CREATE_IN_PROGRESS" or None, timeout=120)
    assert _stack(cfn, sid)["StackStatus"] == "CREATE_FAILED"
    (failed,) = [e for e in cfn.describe_stack_events(StackName=sid)["StackEvents"]
                 if e["LogicalResourceId"] == "Wait" and e["ResourceStatus"] == "CREATE_FAILED"]
    assert failed["ResourceStatusReason"] == "WaitCondition timed out. Received 0 conditions when expecting 1"
    deadline = first[f"{sid}|Wait"]
    assert deadline <= failed["Timestamp"].timestamp() <= deadline + 15   # at the first deadline (+ slack)
    assert _wait_deadlines(srv) == {}                                     # the wait's row is gone with it
