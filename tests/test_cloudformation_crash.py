"""A controller SIGKILLed in the middle of a stack's create and of its delete, then restarted: the
operation resumes from the journal and ends consistent, nothing made twice and nothing left behind."""
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
