"""UpdateStack on `test:///` with boto3 and the AWS CLI: each property's change in place or by
replacement (table-driven against AWS's documented "Update requires"), the cleanup deleting what
was replaced, a failing update rolled back to the old resources, CancelUpdateStack, the refusals
AWS gives (nothing to update, a stack that cannot be updated) and another user's stack unseen."""
from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudctl.core.cloudformation import replacement
from cloudctl.core.cloudformation.resources import load_all
from cloudctl.core.cloudformation.resources.updaters import UPDATERS, check

from asg_support import FAST, aws, client
from elbsupport import public_image
from support import Server, wait_until

# (type, old properties, new properties, replaced?, interruption) — AWS's documented behaviour
# where cloudctl's services can do it in place; a replacement otherwise.
TABLE: list[tuple[str, dict[str, Any], dict[str, Any], bool | None, str]] = [
    ("AWS::EC2::Instance", {"InstanceType": "t3.nano"}, {"InstanceType": "t3.micro"}, False, "SomeInterruption"),
    ("AWS::EC2::Instance", {"UserData": "YQ=="}, {"UserData": "Yg=="}, False, "SomeInterruption"),
    ("AWS::EC2::Instance", {"SecurityGroupIds": ["sg-1"]}, {"SecurityGroupIds": ["sg-2"]}, False, "NoInterruption"),
    ("AWS::EC2::Instance", {"ImageId": "ami-1"}, {"ImageId": "ami-2"}, True, "Replacement"),
    ("AWS::EC2::Instance", {"AvailabilityZone": "a"}, {"AvailabilityZone": "b"}, True, "Replacement"),
    ("AWS::EC2::Instance", {"KeyName": "a"}, {"KeyName": "b"}, True, "Replacement"),
    ("AWS::EC2::Instance", {"InstanceType": "t3.nano", "KeyName": "a"}, {"InstanceType": "t3.micro", "KeyName": "b"},
     True, "Replacement"),
    ("AWS::EC2::Instance", {"InstanceType": "t3.nano"}, {"InstanceType": "t3.nano"}, None, ""),
    ("AWS::EC2::SecurityGroup", {"GroupDescription": "a"}, {"GroupDescription": "b"}, True, "Replacement"),
    ("AWS::EC2::SecurityGroup", {"SecurityGroupIngress": []},
     {"SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}]}, False, "NoInterruption"),
    ("AWS::EC2::SecurityGroupIngress", {"FromPort": 22}, {"FromPort": 23}, True, "Replacement"),
    ("AWS::AutoScaling::AutoScalingGroup", {"MinSize": "1", "MaxSize": "2"}, {"MinSize": "2", "MaxSize": "3"},
     False, "NoInterruption"),
    ("AWS::AutoScaling::AutoScalingGroup", {"DesiredCapacity": 1}, {"DesiredCapacity": "2"}, False, "NoInterruption"),
    ("AWS::AutoScaling::AutoScalingGroup", {"LaunchConfigurationName": "a"}, {"LaunchConfigurationName": "b"},
     False, "NoInterruption"),
    ("AWS::AutoScaling::AutoScalingGroup", {"AutoScalingGroupName": "a"}, {"AutoScalingGroupName": "b"},
     True, "Replacement"),
    ("AWS::AutoScaling::LaunchConfiguration", {"InstanceType": "a"}, {"InstanceType": "b"}, True, "Replacement"),
    ("AWS::AutoScaling::LaunchConfiguration", {"UserData": "a"}, {"UserData": "b"}, True, "Replacement"),
    ("AWS::AutoScaling::ScalingPolicy", {"ScalingAdjustment": 1}, {"ScalingAdjustment": 2}, False, "NoInterruption"),
    ("AWS::EC2::EIP", {"InstanceId": "i-1"}, {"InstanceId": "i-2"}, False, "NoInterruption"),
    ("AWS::EC2::EIP", {"Domain": "standard"}, {"Domain": "vpc"}, True, "Replacement"),
    ("AWS::EC2::Volume", {"Size": 1}, {"Size": 2}, True, "Replacement"),
    ("AWS::EC2::KeyPair", {"KeyName": "a"}, {"KeyName": "b"}, True, "Replacement"),
    ("AWS::ElasticLoadBalancing::LoadBalancer", {"Instances": ["i-1"]}, {"Instances": ["i-2"]}, False,
     "NoInterruption"),
    ("AWS::ElasticLoadBalancing::LoadBalancer", {"Scheme": "internal"}, {"Scheme": "internet-facing"}, True,
     "Replacement"),
]


@pytest.mark.parametrize("rtype, old, new, replaced, interruption", TABLE,
                         ids=[f"{t.split('::')[-1]}-{i}" for i, (t, *_) in enumerate(TABLE)])
def test_replace_or_update_per_property(rtype: str, old: dict[str, Any], new: dict[str, Any],
                                        replaced: bool | None, interruption: str) -> None:
    d = replacement.diff(rtype, old, new)
    if replaced is None:
        assert d is None
        return
    assert d is not None
    assert d.replace is replaced and d.interruption == interruption
    assert d.replacement == ("True" if replaced else "False")


def test_a_reference_to_a_replaced_resource_is_conditional() -> None:
    d = replacement.diff("AWS::EC2::SecurityGroupIngress", {"GroupId": "sg-1"},
                         {"GroupId": replacement.PENDING + "Sg}}"})
    assert d is not None and d.replacement == "Conditional" and d.dynamic == ("GroupId",)


def test_every_in_place_type_has_an_updater() -> None:
    load_all()
    check()
    assert set(replacement.IN_PLACE) <= set(UPDATERS)


# -- on a served controller --------------------------------------------------------------------------

HUGE = {"vcpus": 1024, "memory_mib": 8388608, "disk_gib": 8}   # (more than any host has)


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    import yaml

    from support.server import DEFAULT_CONFIG
    types = yaml.safe_load(DEFAULT_CONFIG.read_text())["instance_types"]
    return server_with(autoscaling=FAST, instance_types={**types, "x9.huge": HUGE})


@pytest.fixture(scope="module")
def user(srv: Server) -> dict[str, str]:
    return srv.create_user("updater")


@pytest.fixture(scope="module")
def cfn(srv: Server, user: dict[str, str]) -> Any:
    return client(srv, user, "cloudformation")


@pytest.fixture(scope="module")
def ec2(srv: Server, user: dict[str, str]) -> Any:
    return srv.client(user)


@pytest.fixture(scope="module")
def image(ec2: Any) -> str:
    return public_image(ec2)


def template(image: str, *, rule_port: int = 22, itype: str = "t3.nano", lc_type: str = "t3.nano",
             desired: str = "1", description: str = "web", extra: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "Parameters": {"Size": {"Type": "Number", "Default": desired}},
        "Resources": {
            "Sg": {"Type": "AWS::EC2::SecurityGroup",
                   "Properties": {"GroupDescription": description,
                                  "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": rule_port,
                                                            "ToPort": rule_port, "CidrIp": "10.0.0.0/8"}]}},
            "Solo": {"Type": "AWS::EC2::Instance",
                     "Properties": {"ImageId": image, "InstanceType": itype, "SecurityGroupIds": [{"Ref": "Sg"}]}},
            "Lc": {"Type": "AWS::AutoScaling::LaunchConfiguration",
                   "Properties": {"ImageId": image, "InstanceType": lc_type, "SecurityGroups": [{"Ref": "Sg"}]}},
            "Asg": {"Type": "AWS::AutoScaling::AutoScalingGroup",
                    "Properties": {"AvailabilityZones": {"Fn::GetAZs": ""}, "LaunchConfigurationName": {"Ref": "Lc"},
                                   "MinSize": "0", "MaxSize": "3", "DesiredCapacity": {"Ref": "Size"}}},
            **(extra or {})},
        "Outputs": {"Group": {"Value": {"Ref": "Sg"}}}})


def status(cfn: Any, name: str) -> str:
    return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])


def settle(cfn: Any, name: str, rolls_back: bool = False) -> str:
    """The stack's status once no operation is under way. `rolls_back`: a failed create whose
    rollback follows, so its CREATE_FAILED (shown between the failure and the rollback) is passing."""
    def done() -> str | None:
        s = status(cfn, name)
        return None if s.endswith("_IN_PROGRESS") or (rolls_back and s == "CREATE_FAILED") else s
    return str(wait_until(done, timeout=180))


def resources(cfn: Any, name: str) -> dict[str, dict[str, Any]]:
    return {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}


def events(cfn: Any, name: str) -> list[tuple[str, str, str, str]]:
    """Oldest first: (logical id, status, physical id, reason)."""
    evs = []
    token = None
    while True:
        page = cfn.describe_stack_events(StackName=name, **({"NextToken": token} if token else {}))
        evs += page["StackEvents"]
        token = page.get("NextToken")
        if not token:
            break
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("PhysicalResourceId") or "",
             e.get("ResourceStatusReason") or "") for e in reversed(evs)]


def instance(ec2: Any, iid: str) -> dict[str, Any]:
    return dict(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0])


def group_ids(ec2: Any) -> set[str]:
    return {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}


def code(e: Any) -> tuple[str, str]:
    err = e.value.response["Error"]
    return err["Code"], err["Message"]


def delete(cfn: Any, name: str) -> None:
    sid = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName=name)
    wait_until(lambda: cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE" or None,
               timeout=120)


def test_update_in_place_and_by_replacement(srv: Server, user: dict[str, str], cfn: Any, ec2: Any,
                                            image: str) -> None:
    cfn.create_stack(StackName="web", TemplateBody=template(image))
    assert settle(cfn, "web") == "CREATE_COMPLETE"
    before = resources(cfn, "web")
    asg = client(srv, user)
    lc_old = before["Lc"]["PhysicalResourceId"]
    # In place: the group's rule, the instance's type, the group's size; replaced: the launch configuration.
    rc, out, err = aws(srv, user, "cloudformation", "update-stack", "--stack-name", "web", "--template-body",
                       template(image, rule_port=443, itype="t3.micro", lc_type="t3.micro"),
                       "--parameters", "ParameterKey=Size,ParameterValue=2")
    assert rc == 0, err
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-update-complete", "--stack-name", "web")
    assert rc == 0, (err, events(cfn, "web")[-12:])
    after = resources(cfn, "web")
    for lg in ("Sg", "Solo", "Asg"):
        assert after[lg]["PhysicalResourceId"] == before[lg]["PhysicalResourceId"], lg
        assert after[lg]["ResourceStatus"] == "UPDATE_COMPLETE", lg
    lc_new = after["Lc"]["PhysicalResourceId"]
    assert lc_new != lc_old and after["Lc"]["ResourceStatus"] == "UPDATE_COMPLETE"
    sg = ec2.describe_security_groups(GroupIds=[after["Sg"]["PhysicalResourceId"]])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [443]
    solo = instance(ec2, after["Solo"]["PhysicalResourceId"])
    assert solo["InstanceType"] == "t3.micro" and solo["State"]["Name"] == "running"
    lcs = {c["LaunchConfigurationName"]: c for c in asg.describe_launch_configurations()["LaunchConfigurations"]}
    assert set(lcs) == {lc_new} and lcs[lc_new]["InstanceType"] == "t3.micro"   # the old one deleted at cleanup
    g = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]
    assert g["LaunchConfigurationName"] == lc_new and g["DesiredCapacity"] == 2
    evs = events(cfn, "web")
    start = evs.index(("web", "UPDATE_IN_PROGRESS", cfn.describe_stacks(StackName="web")["Stacks"][0]["StackId"],
                       "User Initiated"))
    mine = evs[start:]
    stack_states = [s for lg, s, _, _ in mine if lg == "web"]
    assert stack_states == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"]
    lc_events = [(s, p) for lg, s, p, _ in mine if lg == "Lc"]
    assert lc_events == [("UPDATE_IN_PROGRESS", ""), ("UPDATE_COMPLETE", lc_new), ("DELETE_IN_PROGRESS", lc_old),
                         ("DELETE_COMPLETE", lc_old)]
    # The old launch configuration goes only after the update of everything (the cleanup phase).
    assert mine.index(("web", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", mine[0][2], "")) < \
        [i for i, ev in enumerate(mine) if ev[:2] == ("Lc", "DELETE_IN_PROGRESS")][0]

    # The same template and parameters again: AWS's refusal, nothing changed.
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName="web", UsePreviousTemplate=True,
                         Parameters=[{"ParameterKey": "Size", "UsePreviousValue": True}])
    assert code(e) == ("ValidationError", "No updates are to be performed.")
    assert status(cfn, "web") == "UPDATE_COMPLETE"
    # UsePreviousTemplate with a new value: only the group's size changes.
    cfn.update_stack(StackName="web", UsePreviousTemplate=True, Parameters=[{"ParameterKey": "Size",
                                                                             "ParameterValue": "1"}])
    assert settle(cfn, "web") == "UPDATE_COMPLETE"
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["DesiredCapacity"] == 1
    assert resources(cfn, "web")["Lc"]["PhysicalResourceId"] == lc_new
    delete(cfn, "web")
    assert asg.describe_launch_configurations()["LaunchConfigurations"] == []


def test_a_failing_update_rolls_back_to_the_old_resources(srv: Server, user: dict[str, str], cfn: Any, ec2: Any,
                                                          image: str) -> None:
    cfn.create_stack(StackName="back", TemplateBody=template(image, desired="0"))
    assert settle(cfn, "back") == "CREATE_COMPLETE"
    before = resources(cfn, "back")
    groups_before = group_ids(ec2)
    extra = {"Added": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "added"}}}
    # The group is replaced (its description), a group added, the instance's groups follow the new one,
    # then its type has no capacity anywhere: the start after the type change fails.
    cfn.update_stack(StackName="back", TemplateBody=template(image, desired="0", itype="x9.huge",
                                                              description="web v2", extra=extra))
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-update-complete", "--stack-name", "back")
    assert rc != 0 and "UPDATE_ROLLBACK_COMPLETE" in err, err
    assert status(cfn, "back") == "UPDATE_ROLLBACK_COMPLETE"
    after = resources(cfn, "back")
    assert set(after) == set(before)      # the added group is gone again
    for lg in before:
        assert after[lg]["PhysicalResourceId"] == before[lg]["PhysicalResourceId"], lg
    assert group_ids(ec2) == groups_before   # the replacement group deleted at the rollback's cleanup
    solo = instance(ec2, before["Solo"]["PhysicalResourceId"])
    assert solo["InstanceType"] == "t3.nano" and solo["State"]["Name"] == "running"
    assert [g["GroupId"] for g in solo["SecurityGroups"]] == [before["Sg"]["PhysicalResourceId"]]
    evs = events(cfn, "back")
    failed = [r for lg, s, _, r in evs if lg == "Solo" and s == "UPDATE_FAILED"]
    assert failed and "InsufficientInstanceCapacity" in failed[0], failed
    states = [s for lg, s, _, _ in evs if lg == "back"]
    assert states[-4:] == ["UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS",
                           "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE"]
    why = [r for lg, s, _, r in evs if lg == "back" and s == "UPDATE_ROLLBACK_IN_PROGRESS"][0]
    assert why == "The following resource(s) failed to update: [Solo]. "
    # (boto3 hands a JSON template back parsed)
    assert cfn.get_template(StackName="back")["TemplateBody"]["Resources"]["Sg"]["Properties"][
        "GroupDescription"] == "web"
    outputs = cfn.describe_stacks(StackName="back")["Stacks"][0]["Outputs"]
    assert outputs == [{"OutputKey": "Group", "OutputValue": before["Sg"]["PhysicalResourceId"]}]
    # A rolled-back stack can be updated again.
    cfn.update_stack(StackName="back", TemplateBody=template(image, desired="0", rule_port=80))
    assert settle(cfn, "back") == "UPDATE_COMPLETE"
    delete(cfn, "back")


def test_cancel_update_rolls_back(srv: Server, cfn: Any, ec2: Any, image: str) -> None:
    cfn.create_stack(StackName="cancel", TemplateBody=template(image, desired="0"))
    assert settle(cfn, "cancel") == "CREATE_COMPLETE"
    before = resources(cfn, "cancel")
    with pytest.raises(ClientError) as e:
        cfn.cancel_update_stack(StackName="cancel")
    assert code(e) == ("ValidationError", "CancelUpdateStack cannot be called from current stack status.")
    # An added wait condition no one signals keeps the update in progress until it is cancelled.
    extra = {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"},
             "Wait": {"Type": "AWS::CloudFormation::WaitCondition",
                      "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": "3600"}}}
    cfn.update_stack(StackName="cancel", TemplateBody=template(image, desired="0", rule_port=8080, extra=extra))
    wait_until(lambda: resources(cfn, "cancel").get("Wait", {}).get("ResourceStatus") == "CREATE_IN_PROGRESS"
               or None, timeout=60)
    sid = cfn.describe_stacks(StackName="cancel")["Stacks"][0]["StackId"]
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName="cancel", TemplateBody=template(image))
    assert code(e) == ("ValidationError", f"Stack:{sid} is in UPDATE_IN_PROGRESS state and can not be updated.")
    cfn.cancel_update_stack(StackName="cancel")
    assert settle(cfn, "cancel") == "UPDATE_ROLLBACK_COMPLETE"
    after = resources(cfn, "cancel")
    assert set(after) == set(before)
    sg = ec2.describe_security_groups(GroupIds=[before["Sg"]["PhysicalResourceId"]])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [22]
    delete(cfn, "cancel")


def test_a_stack_that_cannot_be_updated(cfn: Any) -> None:
    body = json.dumps({"Resources": {"I": {"Type": "AWS::EC2::Instance", "Properties": {"ImageId": "ami-0000dead"}}}})
    sid = cfn.create_stack(StackName="failed", TemplateBody=body)["StackId"]
    assert settle(cfn, "failed", rolls_back=True) == "ROLLBACK_COMPLETE"
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName="failed", TemplateBody=body)
    assert code(e) == ("ValidationError", f"Stack:{sid} is in ROLLBACK_COMPLETE state and can not be updated.")
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName="ghost", TemplateBody=body)
    assert code(e) == ("ValidationError", "Stack with id ghost does not exist")
    delete(cfn, "failed")


def test_a_custom_named_resource_cannot_be_replaced(cfn: Any, ec2: Any) -> None:
    def body(desc: str) -> str:
        return json.dumps({"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupName": "named-group", "GroupDescription": desc}}}})
    cfn.create_stack(StackName="named", TemplateBody=body("one"))
    assert settle(cfn, "named") == "CREATE_COMPLETE"
    gid = resources(cfn, "named")["G"]["PhysicalResourceId"]
    cfn.update_stack(StackName="named", TemplateBody=body("two"))
    assert settle(cfn, "named") == "UPDATE_ROLLBACK_COMPLETE"
    reasons = [r for lg, s, _, r in events(cfn, "named") if lg == "G" and s == "UPDATE_FAILED"]
    assert reasons == ["CloudFormation cannot update a stack when a custom-named resource requires replacing. "
                       "Rename named-group and update the stack again."]
    assert ec2.describe_security_groups(GroupNames=["named-group"])["SecurityGroups"][0]["GroupId"] == gid
    delete(cfn, "named")


def test_another_user_cannot_update_or_cancel(srv: Server, cfn: Any, image: str) -> None:
    body = json.dumps({"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                                           "Properties": {"GroupDescription": "mine"}}}})
    sid = cfn.create_stack(StackName="private-upd", TemplateBody=body)["StackId"]
    assert settle(cfn, "private-upd") == "CREATE_COMPLETE"
    other = client(srv, srv.create_user("intruder"), "cloudformation")
    new = body.replace("mine", "theirs")
    for name in ("private-upd", sid):
        with pytest.raises(ClientError) as e:
            other.update_stack(StackName=name, TemplateBody=new)
        assert code(e) == ("ValidationError", f"Stack with id {name} does not exist")
        with pytest.raises(ClientError) as e:
            other.cancel_update_stack(StackName=name)
        assert code(e)[0] == "ValidationError"
    assert status(cfn, "private-upd") == "CREATE_COMPLETE"
    assert cfn.get_template(StackName=sid)["TemplateBody"] == json.loads(body)
    delete(cfn, "private-upd")
