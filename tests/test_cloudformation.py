"""CloudFormation on `test:///`, driven with boto3 and the AWS CLI: the Eucalyptus CoreOS-cluster
template shape created, inspected and deleted; a failing third resource rolled back (or left, with
DO_NOTHING); bad input refused in CloudFormation's shape with the state untouched; stacks per user."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import FAST, aws, client, digest, settled
from elbsupport import public_image
from support import Server, wait_until

COREOS = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Description": "CoreOS cluster",
    "Parameters": {
        "ImageId": {"Type": "String"},
        "KeyName": {"Type": "AWS::EC2::KeyPair::KeyName"},
        "ClusterSize": {"Type": "Number", "Default": "2", "MinValue": "1", "MaxValue": "5"},
        "InstanceType": {"Type": "String", "Default": "t3.nano"},
    },
    "Resources": {
        "CoreOSSecurityGroup": {"Type": "AWS::EC2::SecurityGroup",
                                "Properties": {"GroupDescription": "CoreOS SecurityGroup",
                                               "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": "22",
                                                                         "ToPort": "22", "CidrIp": "0.0.0.0/0"}]}},
        "Ingress4001": {"Type": "AWS::EC2::SecurityGroupIngress",
                        "Properties": {"GroupName": {"Ref": "CoreOSSecurityGroup"}, "IpProtocol": "tcp",
                                       "FromPort": "4001", "ToPort": "4001",
                                       "SourceSecurityGroupId": {"Fn::GetAtt": ["CoreOSSecurityGroup", "GroupId"]}}},
        "Ingress7001": {"Type": "AWS::EC2::SecurityGroupIngress",
                        "Properties": {"GroupName": {"Ref": "CoreOSSecurityGroup"}, "IpProtocol": "tcp",
                                       "FromPort": "7001", "ToPort": "7001",
                                       "SourceSecurityGroupId": {"Fn::GetAtt": ["CoreOSSecurityGroup", "GroupId"]}}},
        "CoreOSServerLaunchConfig": {
            "Type": "AWS::AutoScaling::LaunchConfiguration",
            "Properties": {"ImageId": {"Ref": "ImageId"}, "InstanceType": {"Ref": "InstanceType"},
                           "KeyName": {"Ref": "KeyName"}, "SecurityGroups": [{"Ref": "CoreOSSecurityGroup"}],
                           "UserData": {"Fn::Base64": {"Fn::Join": ["", [
                               "#cloud-config\n\n", "coreos:\n", "  etcd:\n",
                               "    discovery: https://discovery.etcd.io/", {"Ref": "AWS::StackName"}, "\n"]]}}}},
        "CoreOSServerAutoScale": {
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            "Properties": {"AvailabilityZones": {"Fn::GetAZs": ""},
                           "LaunchConfigurationName": {"Ref": "CoreOSServerLaunchConfig"},
                           "MinSize": "1", "MaxSize": "5", "DesiredCapacity": {"Ref": "ClusterSize"},
                           "Tags": [{"Key": "Name", "Value": {"Ref": "AWS::StackName"},
                                     "PropagateAtLaunch": True}]}},
    },
    "Outputs": {"Group": {"Value": {"Ref": "CoreOSSecurityGroup"}}},
}


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    return server_with(autoscaling=FAST)


@pytest.fixture(scope="module")
def user(srv: Server) -> dict[str, str]:
    return srv.create_user("core")


@pytest.fixture(scope="module")
def cfn(srv: Server, user: dict[str, str]) -> Any:
    return client(srv, user, "cloudformation")


@pytest.fixture(scope="module")
def ec2(srv: Server, user: dict[str, str]) -> Any:
    return srv.client(user)


@pytest.fixture(scope="module")
def key(ec2: Any) -> str:
    ec2.create_key_pair(KeyName="core-key")
    return "core-key"


def status(cfn: Any, name: str) -> str:
    return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])


def settle(cfn: Any, name: str, rolls_back: bool = False) -> str:
    """The stack's status once no operation is under way. `rolls_back`: a failed create whose
    rollback follows, so its CREATE_FAILED (shown between the failure and the rollback) is passing."""
    def done() -> str | None:
        s = status(cfn, name)
        return None if s.endswith("_IN_PROGRESS") or (rolls_back and s == "CREATE_FAILED") else s
    return str(wait_until(done, timeout=120))


def live_instances(ec2: Any) -> list[dict[str, Any]]:
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running",
                                                                                      "shutting-down"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def groups(ec2: Any) -> list[str]:
    found = ec2.describe_security_groups()["SecurityGroups"]
    return sorted(g["GroupName"] for g in found if g["GroupName"] != "default")


def test_coreos_cluster_with_the_cli(srv: Server, user: dict[str, str], cfn: Any, ec2: Any, key: str,
                                     tmp_path: Any) -> None:
    image = public_image(ec2)
    body = tmp_path / "coreos.json"
    body.write_text(json.dumps(COREOS))
    rc, out, err = aws(srv, user, "cloudformation", "create-stack", "--stack-name", "coreos",
                       "--template-body", f"file://{body}", "--parameters",
                       f"ParameterKey=ImageId,ParameterValue={image}", f"ParameterKey=KeyName,ParameterValue={key}",
                       "ParameterKey=ClusterSize,ParameterValue=2")
    assert rc == 0, err
    assert out["StackId"].startswith("arn:aws:cloudformation:")
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-create-complete", "--stack-name", "coreos")
    if rc:
        print([(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason"))
               for e in cfn.describe_stack_events(StackName="coreos")["StackEvents"]])
    assert rc == 0, err
    rc, out, err = aws(srv, user, "cloudformation", "describe-stack-resources", "--stack-name", "coreos")
    assert rc == 0, err
    res = {r["LogicalResourceId"]: r for r in out["StackResources"]}
    assert set(res) == set(COREOS["Resources"])
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" and r["PhysicalResourceId"] for r in res.values()), res
    gid = res["CoreOSSecurityGroup"]["PhysicalResourceId"]
    sg = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    tags = {t["Key"]: t["Value"] for t in sg["Tags"]}
    assert tags["aws:cloudformation:stack-name"] == "coreos"
    assert tags["aws:cloudformation:logical-id"] == "CoreOSSecurityGroup"
    ports = sorted(p["FromPort"] for p in sg["IpPermissions"])
    assert ports == [22, 4001, 7001]
    stack = cfn.describe_stacks(StackName="coreos")["Stacks"][0]
    assert stack["Outputs"] == [{"OutputKey": "Group", "OutputValue": gid}]
    insts = live_instances(ec2)
    assert len(insts) == 2 and all(i["State"]["Name"] == "running" for i in insts)
    for i in insts:
        ud = ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")["UserData"]["Value"]
        assert base64.b64decode(ud).decode() == ("#cloud-config\n\ncoreos:\n  etcd:\n"
                                                 "    discovery: https://discovery.etcd.io/coreos\n")
        assert i["KeyName"] == key and [g["GroupId"] for g in i["SecurityGroups"]] == [gid]
    events = cfn.describe_stack_events(StackName="coreos")["StackEvents"]
    assert events[0]["LogicalResourceId"] == "coreos" and events[0]["ResourceStatus"] == "CREATE_COMPLETE"

    rc, _, err = aws(srv, user, "cloudformation", "delete-stack", "--stack-name", "coreos")
    assert rc == 0, err
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-delete-complete", "--stack-name", "coreos")
    assert rc == 0, err
    assert live_instances(ec2) == []
    assert groups(ec2) == []
    assert client(srv, user).describe_launch_configurations()["LaunchConfigurations"] == []
    assert client(srv, user).describe_auto_scaling_groups()["AutoScalingGroups"] == []
    gone = cfn.describe_stacks(StackName=stack["StackId"])["Stacks"][0]
    assert gone["StackStatus"] == "DELETE_COMPLETE"
    with pytest.raises(ClientError) as e:
        cfn.describe_stacks(StackName="coreos")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert e.value.response["Error"]["Message"] == "Stack with id coreos does not exist"


def _failing(third: dict[str, Any]) -> str:
    """Two security groups, then a resource that must fail (it depends on both: it comes third)."""
    return json.dumps({"Resources": {
        "First": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "one"}},
        "Second": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "two"}},
        "Third": {"Type": "AWS::EC2::Instance", "DependsOn": ["First", "Second"], "Properties": third}}})


def test_a_failing_third_resource_rolls_back_the_first_two(cfn: Any, ec2: Any) -> None:
    cfn.create_stack(StackName="broken", TemplateBody=_failing({"ImageId": "ami-00000000dead"}))
    assert settle(cfn, "broken", rolls_back=True) == "ROLLBACK_COMPLETE"
    res = {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName="broken")["StackResources"]}
    # (as in AWS, the failed resource goes through the rollback's delete too)
    assert {k: r["ResourceStatus"] for k, r in res.items()} == {
        "First": "DELETE_COMPLETE", "Second": "DELETE_COMPLETE", "Third": "DELETE_COMPLETE"}
    events = cfn.describe_stack_events(StackName="broken")["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED" and e["LogicalResourceId"] == "Third"]
    assert "ami-00000000dead" in failed[0]["ResourceStatusReason"]
    order = [(e["LogicalResourceId"], e["ResourceStatus"]) for e in reversed(events)]
    assert order.index(("broken", "ROLLBACK_IN_PROGRESS")) < order.index(("First", "DELETE_COMPLETE"))
    assert order[-1] == ("broken", "ROLLBACK_COMPLETE")
    stack = cfn.describe_stacks(StackName="broken")["Stacks"][0]
    rolling = [e for e in events if e["ResourceStatus"] == "ROLLBACK_IN_PROGRESS"]
    assert rolling[0]["ResourceStatusReason"] == "The following resource(s) failed to create: [Third]. "
    assert groups(ec2) == []
    cfn.delete_stack(StackName="broken")
    assert settle_deleted(cfn, stack["StackId"])


def settle_deleted(cfn: Any, sid: str) -> bool:
    return bool(wait_until(lambda: cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"]
                           == "DELETE_COMPLETE" or None, timeout=60))


def test_do_nothing_leaves_what_was_made(cfn: Any, ec2: Any) -> None:
    # (the id from the create: a deleted stack is no longer found by its name, and the deletion may
    # already be complete when the next call comes)
    sid = cfn.create_stack(StackName="kept", TemplateBody=_failing({"ImageId": "ami-00000000dead"}),
                           OnFailure="DO_NOTHING")["StackId"]
    assert settle(cfn, "kept") == "CREATE_FAILED"
    res = {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName="kept")["StackResources"]}
    assert res["First"]["ResourceStatus"] == res["Second"]["ResourceStatus"] == "CREATE_COMPLETE"
    assert len(groups(ec2)) == 2
    cfn.delete_stack(StackName="kept")
    assert settle_deleted(cfn, sid)
    assert groups(ec2) == []


def test_retain_keeps_the_resource(cfn: Any, ec2: Any) -> None:
    body = json.dumps({"Resources": {"Kept": {"Type": "AWS::EC2::SecurityGroup", "DeletionPolicy": "Retain",
                                              "Properties": {"GroupDescription": "kept", "GroupName": "retained"}}}})
    sid = cfn.create_stack(StackName="retain", TemplateBody=body)["StackId"]
    assert settle(cfn, "retain") == "CREATE_COMPLETE"
    cfn.delete_stack(StackName="retain")
    assert settle_deleted(cfn, sid)
    statuses = {r["LogicalResourceId"]: r["ResourceStatus"]
                for r in cfn.describe_stack_resources(StackName=sid)["StackResources"]}
    assert statuses == {"Kept": "DELETE_SKIPPED"}
    assert groups(ec2) == ["retained"]
    ec2.delete_security_group(GroupName="retained")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("CreateStack", {"StackName": "1bad", "TemplateBody": json.dumps({"Resources": {}})}, "ValidationError"),
    ("CreateStack", {"StackName": "x", "TemplateBody": "{not json"}, "ValidationError"),
    ("CreateStack", {"StackName": "x", "TemplateBody": json.dumps(
        {"Resources": {"A": {"Type": "AWS::Nope::Thing"}}})}, "ValidationError"),
    ("CreateStack", {"StackName": "x", "TemplateBody": json.dumps(
        {"Resources": {"A": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"X": {"Ref": "Missing"}}}}})},
     "ValidationError"),
    ("CreateStack", {"StackName": "x", "TemplateBody": json.dumps(COREOS)}, "ValidationError"),   # no parameters
    ("CreateStack", {"StackName": "x", "TemplateURL": "http://127.0.0.1:1/t.json"}, "ValidationError"),
    ("CreateStack", {"StackName": "x", "TemplateBody": json.dumps(COREOS), "OnFailure": "ROLLBACK",
                     "DisableRollback": True}, "ValidationError"),
    ("DescribeStacks", {"StackName": "ghost"}, "ValidationError"),
    ("DescribeStackResources", {"StackName": "ghost"}, "ValidationError"),
    ("DescribeStackResource", {"StackName": "ghost", "LogicalResourceId": "A"}, "ValidationError"),
    ("ListStackResources", {"StackName": "ghost"}, "ValidationError"),
    ("DescribeStackEvents", {"StackName": "ghost"}, "ValidationError"),
    ("GetTemplate", {"StackName": "ghost"}, "ValidationError"),
    ("GetTemplateSummary", {"StackName": "ghost"}, "ValidationError"),
    ("ValidateTemplate", {"TemplateBody": json.dumps({"Resources": {"A": {"Type": "AWS::EC2::SecurityGroup",
                                                                           "DependsOn": "A"}}})}, "ValidationError"),
    ("ListStacks", {"NextToken": "zz"}, "ValidationError"),
    ("ListStacks", {"NextToken": "\u00b2"}, "ValidationError"),   # a digit to str.isdigit, not to int()
]


@pytest.mark.parametrize("action, params, code", BAD, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_input_is_refused_and_changes_nothing(srv: Server, cfn: Any, action: str, params: dict[str, Any],
                                                  code: str) -> None:
    before = settled(srv)
    with pytest.raises(ClientError) as e:
        getattr(cfn, _snake(action))(**params)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert digest(srv) == before


def _snake(action: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")


def test_a_second_stack_of_the_same_name_is_refused(srv: Server, cfn: Any) -> None:
    body = json.dumps({"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                                           "Properties": {"GroupDescription": "once"}}}})
    sid = cfn.create_stack(StackName="once", TemplateBody=body)["StackId"]
    before = settled(srv)
    with pytest.raises(ClientError) as e:
        cfn.create_stack(StackName="once", TemplateBody=body)
    assert e.value.response["Error"]["Code"] == "AlreadyExistsException"
    assert digest(srv) == before
    cfn.delete_stack(StackName="once")
    assert settle_deleted(cfn, sid)


def test_another_user_cannot_see_the_stack(srv: Server, cfn: Any) -> None:
    body = json.dumps({"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                                           "Properties": {"GroupDescription": "mine"}}}})
    sid = cfn.create_stack(StackName="private", TemplateBody=body)["StackId"]
    assert settle(cfn, "private") == "CREATE_COMPLETE"
    other = client(srv, srv.create_user("other"), "cloudformation")
    for name in ("private", sid):
        with pytest.raises(ClientError) as e:
            other.describe_stacks(StackName=name)
        assert e.value.response["Error"]["Code"] == "ValidationError"
        with pytest.raises(ClientError):
            other.describe_stack_events(StackName=name)
    assert other.describe_stacks()["Stacks"] == []
    assert other.list_stacks()["StackSummaries"] == []
    other.delete_stack(StackName="private")      # (a stack it cannot see: nothing happens)
    assert status(cfn, "private") == "CREATE_COMPLETE"
    cfn.delete_stack(StackName="private")
    assert settle_deleted(cfn, sid)


def test_validate_and_summary(cfn: Any) -> None:
    body = json.dumps(COREOS)
    v = cfn.validate_template(TemplateBody=body)
    assert [p["ParameterKey"] for p in v["Parameters"]] == ["ImageId", "KeyName", "ClusterSize", "InstanceType"]
    assert v["Description"] == "CoreOS cluster"
    s = cfn.get_template_summary(TemplateBody=body)
    assert s["ResourceTypes"] == sorted({r["Type"] for r in COREOS["Resources"].values()})


def test_on_failure_delete_deletes_the_stack(cfn: Any, ec2: Any) -> None:
    sid = cfn.create_stack(StackName="gone", TemplateBody=_failing({"ImageId": "ami-00000000dead"}),
                           OnFailure="DELETE")["StackId"]
    assert settle_deleted(cfn, sid)
    statuses = [e["ResourceStatus"] for e in reversed(cfn.describe_stack_events(StackName=sid)["StackEvents"])
                if e["LogicalResourceId"] == "gone"]
    assert statuses == ["CREATE_IN_PROGRESS", "CREATE_FAILED", "DELETE_IN_PROGRESS", "DELETE_COMPLETE"]
    assert groups(ec2) == []
    assert "gone" not in [s["StackName"] for s in cfn.describe_stacks()["Stacks"]]
    assert [s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"] if s["StackId"] == sid] == ["DELETE_COMPLETE"]


def test_no_echo_parameters_are_masked_but_used(cfn: Any, ec2: Any) -> None:
    body = json.dumps({
        "Parameters": {"Secret": {"Type": "String", "NoEcho": "true"}, "Plain": {"Type": "String"}},
        "Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                            "Properties": {"GroupDescription": {"Ref": "Secret"}, "GroupName": {"Ref": "Plain"}}}}})
    sid = cfn.create_stack(StackName="noecho", TemplateBody=body, Parameters=[
        {"ParameterKey": "Secret", "ParameterValue": "hunter2"},
        {"ParameterKey": "Plain", "ParameterValue": "noecho-group"}])["StackId"]
    assert settle(cfn, "noecho") == "CREATE_COMPLETE"
    stack = cfn.describe_stacks(StackName="noecho")["Stacks"][0]
    shown = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert shown == {"Secret": "****", "Plain": "noecho-group"}
    made = ec2.describe_security_groups(GroupNames=["noecho-group"])["SecurityGroups"][0]
    assert made["Description"] == "hunter2"     # the real value was used
    cfn.delete_stack(StackName="noecho")
    assert settle_deleted(cfn, sid)
