"""Every resource type the engine serves, in one stack on `test:///` (with HAProxy for the load
balancer): created with the AWS CLI waiter, each one visible through its own service's API with
the values the template gave, GetAtt values in the outputs, then deleted leaving nothing."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import FAST, aws, client
from elbsupport import elb_client, elb_config, public_image
from support import Server, wait_until


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


def _wait_template(timeout: int) -> str:
    return json.dumps({"Resources": {
        "Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"},
        "Wait": {"Type": "AWS::CloudFormation::WaitCondition",
                 "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": str(timeout), "Count": "2"}}},
        "Outputs": {"Data": {"Value": {"Fn::GetAtt": ["Wait", "Data"]}}}})


def _put(url: str, doc: Any) -> int:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="PUT",
                                 headers={"Content-Type": ""})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _handle_url(cfn: Any, name: str) -> str:
    def made() -> str | None:
        for r in cfn.describe_stack_resources(StackName=name)["StackResources"]:
            if r["LogicalResourceId"] == "Handle" and r["ResourceStatus"] == "CREATE_COMPLETE":
                return str(r["PhysicalResourceId"])
        return None
    return str(wait_until(made, timeout=30))


def test_wait_condition_signals_as_cfn_signal_sends_them(srv: Server) -> None:
    user = srv.create_user("waiter")
    cfn = client(srv, user, "cloudformation")
    cfn.create_stack(StackName="waits", TemplateBody=_wait_template(600))
    url = _handle_url(cfn, "waits")
    assert url.startswith(srv.endpoint + "/cfn-signal/")
    assert _put(url.split("?")[0] + "?Signature=forged", {"Status": "SUCCESS", "UniqueId": "x", "Data": ""}) == 403
    assert _put(url, {"Status": "maybe"}) == 400
    for n in ("a", "b"):
        assert _put(url, {"Status": "SUCCESS", "Reason": "up", "UniqueId": n, "Data": f"node {n}"}) == 200
    rc, _, err = aws(srv, user, "cloudformation", "wait", "stack-create-complete", "--stack-name", "waits")
    assert rc == 0, err
    out = cfn.describe_stacks(StackName="waits")["Stacks"][0]["Outputs"][0]["OutputValue"]
    assert json.loads(out) == {"a": "node a", "b": "node b"}


def test_wait_condition_failure_and_timeout_fail_the_stack(srv: Server) -> None:
    user = srv.create_user("failer")
    cfn = client(srv, user, "cloudformation")
    cfn.create_stack(StackName="fails", TemplateBody=_wait_template(600))
    url = _handle_url(cfn, "fails")
    assert _put(url, {"Status": "FAILURE", "Reason": "disk full", "UniqueId": "n1", "Data": ""}) == 200
    rc, _, _ = aws(srv, user, "cloudformation", "wait", "stack-create-complete", "--stack-name", "fails")
    assert rc != 0
    reasons = [e.get("ResourceStatusReason", "") for e in cfn.describe_stack_events(StackName="fails")["StackEvents"]
               if e["LogicalResourceId"] == "Wait" and e["ResourceStatus"] == "CREATE_FAILED"]
    assert "disk full" in reasons[0]
    cfn.create_stack(StackName="late", TemplateBody=_wait_template(1), OnFailure="DO_NOTHING")
    wait_until(lambda: cfn.describe_stacks(StackName="late")["Stacks"][0]["StackStatus"] == "CREATE_FAILED" or None,
               timeout=60)
    reasons = [e.get("ResourceStatusReason", "") for e in cfn.describe_stack_events(StackName="late")["StackEvents"]
               if e["LogicalResourceId"] == "Wait" and e["ResourceStatus"] == "CREATE_FAILED"]
    assert reasons == ["WaitCondition timed out. Received 0 conditions when expecting 2"]


def _refused(call: Any, code: str, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(**kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response
    return str(e.value.response["Error"]["Message"])


def test_stack_tags_on_every_taggable_resource_and_users_cannot_touch_them(srv: Server) -> None:
    """aws:cloudformation:* tags on what a stack makes (instances, groups, launch templates, scaling
    groups and their instances, load balancers, volumes, addresses); users can neither add nor remove
    `aws:` keys on any of them, and deleting "all" of a resource's tags leaves the stack's."""
    user = srv.create_user("tagged")
    ec2, cfn, asg, elb = srv.client(user), client(srv, user, "cloudformation"), client(srv, user), \
        elb_client(srv, user)
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    tpl = _template(public_image(ec2), zone)
    tpl["Resources"] = {k: v for k, v in tpl["Resources"].items() if k not in ("Attach", "IpAssoc", "Up", "Out")}
    tpl["Outputs"] = {"Dns": tpl["Outputs"]["Dns"]}
    sid = cfn.create_stack(StackName="tagged", TemplateBody=json.dumps(tpl))["StackId"]
    cfn.get_waiter("stack_create_complete").wait(StackName="tagged", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    res = {r["LogicalResourceId"]: r["PhysicalResourceId"]
           for r in cfn.list_stack_resources(StackName="tagged")["StackResourceSummaries"]}

    def stack_tags(logical: str) -> dict[str, str]:
        return {"aws:cloudformation:stack-name": "tagged", "aws:cloudformation:logical-id": logical,
                "aws:cloudformation:stack-id": sid}

    def ec2_tags(rid: str) -> dict[str, str]:
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [rid]}])["Tags"]
        return {t["Key"]: t["Value"] for t in found if t["Key"].startswith("aws:cloudformation:")}

    for logical in ("Web", "Sg", "Lt", "Disk"):
        assert ec2_tags(res[logical]) == stack_tags(logical), logical
    alloc = ec2.describe_addresses(PublicIps=[res["Ip"]])["Addresses"][0]["AllocationId"]
    assert ec2_tags(alloc) == stack_tags("Ip")
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[res["Group"]])["AutoScalingGroups"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]} == stack_tags("Group")
    assert all(t["PropagateAtLaunch"] for t in group["Tags"])
    for m in group["Instances"]:    # (propagated to the group's instances, beside the group's own tag)
        assert ec2_tags(m["InstanceId"]) == stack_tags("Group")
    (lb,) = elb.describe_tags(LoadBalancerNames=[res["Lb"]])["TagDescriptions"]
    assert {t["Key"]: t["Value"] for t in lb["Tags"]} == stack_tags("Lb")

    # Users cannot write or delete `aws:` keys, on any of them.
    key = "aws:cloudformation:stack-name"
    for rid in (res["Web"], res["Sg"], res["Lt"], res["Disk"], alloc):
        _refused(ec2.create_tags, "InvalidParameterValue", Resources=[rid], Tags=[{"Key": key, "Value": "x"}])
        _refused(ec2.delete_tags, "InvalidParameterValue", Resources=[rid], Tags=[{"Key": key}])
        ec2.create_tags(Resources=[rid], Tags=[{"Key": "mine", "Value": "1"}])
        ec2.delete_tags(Resources=[rid])               # every tag of the user's; the stack's stay
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [rid]}])["Tags"]
        assert found and all(t["Key"].startswith("aws:") for t in found), found
    tag = {"ResourceId": res["Group"], "ResourceType": "auto-scaling-group", "Key": key, "Value": "x",
           "PropagateAtLaunch": False}
    assert "reserved" in _refused(asg.create_or_update_tags, "ValidationError", Tags=[tag])
    assert "reserved" in _refused(asg.delete_tags, "ValidationError", Tags=[tag])
    _refused(elb.add_tags, "ValidationError", LoadBalancerNames=[res["Lb"]], Tags=[{"Key": key, "Value": "x"}])
    assert "reserved" in _refused(elb.remove_tags, "ValidationError", LoadBalancerNames=[res["Lb"]],
                                  Tags=[{"Key": key}])
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[res["Group"]])["AutoScalingGroups"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]} == stack_tags("Group")
    (lb,) = elb.describe_tags(LoadBalancerNames=[res["Lb"]])["TagDescriptions"]
    assert {t["Key"]: t["Value"] for t in lb["Tags"]} == stack_tags("Lb")
    assert ec2_tags(res["Web"]) == stack_tags("Web")
    cfn.delete_stack(StackName="tagged")
    cfn.get_waiter("stack_delete_complete").wait(StackName="tagged", WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def test_instance_attributes_are_what_describe_instances_shows(srv: Server) -> None:
    """Fn::GetAtt of an AWS::EC2::Instance: its public address (and name), private ones, zone."""
    user = srv.create_user("attrs")
    ec2, cfn = srv.client(user), client(srv, user, "cloudformation")
    names = ("PublicIp", "PublicDnsName", "PrivateIp", "PrivateDnsName", "AvailabilityZone")
    cfn.create_stack(StackName="attrs", TemplateBody=json.dumps({
        "Resources": {"Vm": {"Type": "AWS::EC2::Instance",
                             "Properties": {"ImageId": public_image(ec2), "InstanceType": "t3.nano",
                                            "NetworkInterfaces": [{"DeviceIndex": "0",
                                                                   "AssociatePublicIpAddress": "true"}]}}},
        "Outputs": {n: {"Value": {"Fn::GetAtt": ["Vm", n]}} for n in names}}))
    cfn.get_waiter("stack_create_complete").wait(StackName="attrs", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    stack = cfn.describe_stacks(StackName="attrs")["Stacks"][0]
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iid = cfn.describe_stack_resource(StackName="attrs", LogicalResourceId="Vm")["StackResourceDetail"][
        "PhysicalResourceId"]
    vm = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert vm.get("PublicIpAddress"), vm          # (asked for at launch: the subnet does not map them)
    assert out == {"PublicIp": vm["PublicIpAddress"], "PublicDnsName": vm["PublicDnsName"],
                   "PrivateIp": vm["PrivateIpAddress"], "PrivateDnsName": vm["PrivateDnsName"],
                   "AvailabilityZone": vm["Placement"]["AvailabilityZone"]}
    assert out["PrivateDnsName"].endswith(".compute.internal") and out["PublicDnsName"]
    cfn.delete_stack(StackName="attrs")
    cfn.get_waiter("stack_delete_complete").wait(StackName="attrs", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
