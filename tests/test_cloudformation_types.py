"""Every resource type the engine serves, in one stack on `test:///` (with HAProxy for the load
balancer): created with the AWS CLI waiter, each one visible through its own service's API with
the values the template gave, GetAtt values in the outputs, then deleted leaving nothing."""
from __future__ import annotations

import json
from typing import Any

import pytest

from asg_support import FAST, aws, client
from elbsupport import elb_client, elb_config, public_image
from support import Server


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    return server_with(autoscaling=FAST, **elb_config())


def _template(image: str, zone: str) -> dict[str, Any]:
    return {"Resources": {
        "Key": {"Type": "AWS::EC2::KeyPair", "Properties": {"KeyName": "stack-key"}},
        "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "web"}},
        "Out": {"Type": "AWS::EC2::SecurityGroupEgress",
                "Properties": {"GroupId": {"Fn::GetAtt": ["Sg", "GroupId"]}, "IpProtocol": "tcp",
                               "FromPort": 443, "ToPort": 443, "CidrIp": "192.0.2.0/24"}},
        "Web": {"Type": "AWS::EC2::Instance",
                "Properties": {"ImageId": image, "InstanceType": "t3.nano", "KeyName": {"Ref": "Key"},
                               "AvailabilityZone": zone, "SecurityGroupIds": [{"Ref": "Sg"}],
                               "Tags": [{"Key": "Name", "Value": "web"}]}},
        "Disk": {"Type": "AWS::EC2::Volume", "Properties": {"AvailabilityZone": zone, "Size": 1}},
        "Attach": {"Type": "AWS::EC2::VolumeAttachment",
                   "Properties": {"VolumeId": {"Ref": "Disk"}, "InstanceId": {"Ref": "Web"}, "Device": "/dev/sdf"}},
        "Ip": {"Type": "AWS::EC2::EIP", "Properties": {"Domain": "vpc"}},
        "IpAssoc": {"Type": "AWS::EC2::EIPAssociation",
                    "Properties": {"AllocationId": {"Fn::GetAtt": ["Ip", "AllocationId"]},
                                   "InstanceId": {"Ref": "Web"}}},
        "Lt": {"Type": "AWS::EC2::LaunchTemplate",
               "Properties": {"LaunchTemplateData": {"ImageId": image, "InstanceType": "t3.nano"}}},
        "Lb": {"Type": "AWS::ElasticLoadBalancing::LoadBalancer",
               "Properties": {"AvailabilityZones": [zone], "Listeners": [
                   {"Protocol": "HTTP", "LoadBalancerPort": "8000", "InstancePort": "8080"}]}},
        "Group": {"Type": "AWS::AutoScaling::AutoScalingGroup",
                  "Properties": {"AvailabilityZones": [zone], "MinSize": "1", "MaxSize": "2",
                                 "LaunchTemplate": {"LaunchTemplateId": {"Ref": "Lt"},
                                                    "Version": {"Fn::GetAtt": ["Lt", "LatestVersionNumber"]}},
                                 "LoadBalancerNames": [{"Ref": "Lb"}]}},
        "Up": {"Type": "AWS::AutoScaling::ScalingPolicy",
               "Properties": {"AutoScalingGroupName": {"Ref": "Group"}, "AdjustmentType": "ChangeInCapacity",
                              "ScalingAdjustment": "1"}},
    }, "Outputs": {
        "Dns": {"Value": {"Fn::GetAtt": ["Lb", "DNSName"]}},
        "PrivateIp": {"Value": {"Fn::GetAtt": ["Web", "PrivateIp"]}},
        "Zone": {"Value": {"Fn::GetAtt": ["Web", "AvailabilityZone"]}},
        "Public": {"Value": {"Ref": "Ip"}},
        "Policy": {"Value": {"Ref": "Up"}},
    }}


def test_every_type_in_one_stack(srv: Server, tmp_path: Any) -> None:
    user = srv.create_user("types")
    ec2, cfn = srv.client(user), client(srv, user, "cloudformation")
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    body = tmp_path / "all.json"
    body.write_text(json.dumps(_template(public_image(ec2), zone)))
    rc, out, err = aws(srv, user, "cloudformation", "create-stack", "--stack-name", "all",
                       "--template-body", f"file://{body}")
    assert rc == 0, err
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-create-complete", "--stack-name", "all")
    if rc:
        events = cfn.describe_stack_events(StackName="all")["StackEvents"]
        pytest.fail(str([(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason"))
                         for e in events if "FAILED" in e["ResourceStatus"]]))
    res = {r["LogicalResourceId"]: r["PhysicalResourceId"]
           for r in cfn.list_stack_resources(StackName="all")["StackResourceSummaries"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName="all")["Stacks"][0]["Outputs"]}
    web = ec2.describe_instances(InstanceIds=[res["Web"]])["Reservations"][0]["Instances"][0]
    assert web["KeyName"] == "stack-key" and web["Placement"]["AvailabilityZone"] == zone == outputs["Zone"]
    assert web["PrivateIpAddress"] == outputs["PrivateIp"]
    tags = {t["Key"]: t["Value"] for t in web["Tags"]}
    assert tags["Name"] == "web" and tags["aws:cloudformation:logical-id"] == "Web"
    assert web["PublicIpAddress"] == outputs["Public"] == res["Ip"]
    vol = ec2.describe_volumes(VolumeIds=[res["Disk"]])["Volumes"][0]
    assert [(a["InstanceId"], a["Device"]) for a in vol["Attachments"]] == [(res["Web"], "/dev/sdf")]
    sg = ec2.describe_security_groups(GroupIds=[res["Sg"]])["SecurityGroups"][0]
    assert any(p.get("FromPort") == 443 for p in sg["IpPermissionsEgress"])
    lb = elb_client(srv, user).describe_load_balancers(LoadBalancerNames=[res["Lb"]])["LoadBalancerDescriptions"][0]
    assert lb["DNSName"] == outputs["Dns"]
    asg = client(srv, user)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[res["Group"]])["AutoScalingGroups"][0]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == res["Lt"] and group["LoadBalancerNames"] == [res["Lb"]]
    assert [p["PolicyARN"] for p in asg.describe_policies()["ScalingPolicies"]] == [outputs["Policy"]]

    rc, _, err = aws(srv, user, "cloudformation", "delete-stack", "--stack-name", "all")
    assert rc == 0, err
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-delete-complete", "--stack-name", "all")
    assert rc == 0, err
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert live["Reservations"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    assert elb_client(srv, user).describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
