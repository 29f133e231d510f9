"""CloudFormation on `test:///`, driven with boto3 and the AWS CLI: the Eucalyptus CoreOS-cluster
template shape created, inspected and deleted; a failing third resource rolled back (or left, with
DO_NOTHING); bad input refused in CloudFormation's shape with the state untouched; stacks per user."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import FAST, aws, client
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


def settle(cfn: Any, name: str) -> str:
    def done() -> str | None:
        s = status(cfn, name)
        return None if s.endswith("_IN_PROGRESS") else s
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
