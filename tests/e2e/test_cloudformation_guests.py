"""Issue 17's proof on real guests: the Eucalyptus CoreOS-cluster template shape (Parameters for the
image, key pair, cluster size and instance type; an AutoScaling group of ClusterSize qemu guests from
a launch configuration whose UserData is Fn::Base64 of Fn::Join; a security group and two ingress
rules) created, inspected and deleted with the AWS CLI; each guest prints the joined user data on its
console (the test guest echoes its user data and runs it). A second stack puts a classic load
balancer in front of the same two guests (no second pair of TCG boots): both turn InService and a
client on the lab network is answered by each through the load balancer's DNSName. Deleting the
stacks leaves no guest, domain, network filter, group, rule, launch configuration, group of
instances, load balancer or HAProxy behind."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cloudctl.drivers.loadbalancer.netns import Netns

from .conftest import MEASUREMENTS
from .test_autoscaling_elb import alive, requests_from
from asg_support import client
from elbsupport import elb_client
from support import REGION, aws_ok, wait_until

MARK = "CFN-USERDATA"
COREOS: dict[str, Any] = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Description": "CoreOS cluster (the Eucalyptus blog's template shape)",
    "Parameters": {
        "ImageId": {"Type": "AWS::EC2::Image::Id", "Description": "The CoreOS image"},
        "KeyName": {"Type": "AWS::EC2::KeyPair::KeyName"},
        "ClusterSize": {"Type": "Number", "Default": "2", "MinValue": "1", "MaxValue": "2"},
        "InstanceType": {"Type": "String", "Default": "t3.nano", "AllowedValues": ["t3.nano", "t3.micro"]},
    },
    "Resources": {
        "CoreOSSecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "CoreOS SecurityGroup",
            "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": "22", "ToPort": "22",
                                      "CidrIp": "0.0.0.0/0"}]}},
        "IngressHttp": {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
            "GroupName": {"Ref": "CoreOSSecurityGroup"}, "IpProtocol": "tcp", "FromPort": "80", "ToPort": "80",
            "CidrIp": "0.0.0.0/0"}},
        "Ingress4001": {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
            "GroupName": {"Ref": "CoreOSSecurityGroup"}, "IpProtocol": "tcp", "FromPort": "4001", "ToPort": "4001",
            "SourceSecurityGroupId": {"Fn::GetAtt": ["CoreOSSecurityGroup", "GroupId"]}}},
        "CoreOSServerLaunchConfig": {"Type": "AWS::AutoScaling::LaunchConfiguration", "Properties": {
            "ImageId": {"Ref": "ImageId"}, "InstanceType": {"Ref": "InstanceType"}, "KeyName": {"Ref": "KeyName"},
            "SecurityGroups": [{"Ref": "CoreOSSecurityGroup"}],
            # The guest prints its user data on the console, then runs it: the script's first line
            # says which stack and size it was joined for; then it serves its instance id on port 80.
            "UserData": {"Fn::Base64": {"Fn::Join": ["", [
                "#!/bin/sh\n",
                "echo ", MARK, " stack=", {"Ref": "AWS::StackName"}, " size=", {"Ref": "ClusterSize"},
                " region=", {"Ref": "AWS::Region"}, "\n",
                "mkdir -p /www\n",
                "grep -h -o 'instance-id\"*: *\"*i-[0-9a-f]*' /mnt/config/meta-data ",
                "/mnt/config/openstack/latest/meta_data.json 2>/dev/null | head -n1 | grep -o 'i-[0-9a-f]*$' ",
                "> /www/index.html\n",
                "httpd -p 80 -h /www\n"]]}}}},
        "CoreOSServerAutoScale": {"Type": "AWS::AutoScaling::AutoScalingGroup", "Properties": {
            "AvailabilityZones": {"Fn::GetAZs": ""},
            "LaunchConfigurationName": {"Ref": "CoreOSServerLaunchConfig"},
            "MinSize": "1", "MaxSize": "2", "DesiredCapacity": {"Ref": "ClusterSize"},
            "Tags": [{"Key": "Name", "Value": {"Ref": "AWS::StackName"}, "PropagateAtLaunch": "true"}]}},
    },
}

BALANCER: dict[str, Any] = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Description": "A classic load balancer in front of the cluster's instances",
    "Parameters": {"Instances": {"Type": "CommaDelimitedList"}, "Subnet": {"Type": "String"}},
    "Resources": {"Web": {"Type": "AWS::ElasticLoadBalancing::LoadBalancer", "Properties": {
        "Subnets": [{"Ref": "Subnet"}], "Instances": {"Ref": "Instances"},
        "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": "80", "InstanceProtocol": "HTTP",
                       "InstancePort": "80"}],
        "HealthCheck": {"Target": "HTTP:80/", "Interval": "5", "Timeout": "2", "UnhealthyThreshold": "2",
                        "HealthyThreshold": "2"}}}},
    "Outputs": {"DNSName": {"Value": {"Fn::GetAtt": ["Web", "DNSName"]}}},
}


def fast(_: Path) -> dict[str, Any]:
    return {"autoscaling": {"tick_s": 1.0, "backoff_s": 2.0, "backoff_max_s": 10.0},
            "elb": {"refresh_s": 1.0, "remove_proxies_on_stop": True},
            "monitor": {"interval_s": 2.0}}


def events(cfn: Any, name: str) -> list[tuple[str, str, str]]:
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason", ""))
            for e in cfn.describe_stack_events(StackName=name)["StackEvents"]]


def tags_of(thing: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in thing.get("Tags") or ()}


def console(ec2: Any, iid: str) -> str:
    return ec2.get_console_output(InstanceId=iid).get("Output") or ""


def running(pid: int) -> bool:
    """The process exists and has not exited (the controller that started HAProxy may not have
    reaped its master yet: a zombie has stopped)."""
    if not alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def domain_exists(conn: Any, name: str) -> bool:
    import libvirt
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def filter_exists(conn: Any, name: str) -> bool:
    import libvirt
    try:
        conn.nwfilterLookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


@pytest.mark.cloud_config.with_args(fast)
def test_coreos_cluster_stack_and_a_balancer_stack_on_guests(bridged_cloud: Any, conn: Any) -> None:
    cloud = bridged_cloud
    srv, user, ec2 = cloud.server, cloud.user, cloud.ec2
    cfn, asg, elb = client(srv, user, "cloudformation"), client(srv, user), elb_client(srv, user)
    browser = cloud.lab.add_host("client", cloud.address(200))
    ec2.create_key_pair(KeyName="core")
    body = Path(cloud.work or ".") / "coreos.json"
    body.write_text(json.dumps(COREOS))
    t0 = time.monotonic()
    try:
        # -- the CoreOS cluster, with the AWS CLI --------------------------------------------------------
        out = aws_ok(srv, user, "cloudformation", "create-stack", "--stack-name", "coreos",
                     "--template-body", f"file://{body}", "--parameters",
                     f"ParameterKey=ImageId,ParameterValue={cloud.image_id}",
                     "ParameterKey=KeyName,ParameterValue=core",
                     "ParameterKey=ClusterSize,ParameterValue=2", "ParameterKey=InstanceType,ParameterValue=t3.nano")
        sid = out["StackId"]
        try:
            aws_ok(srv, user, "cloudformation", "wait", "stack-create-complete", "--stack-name", "coreos")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{events(cfn, 'coreos')}") from None
        MEASUREMENTS["cfn: CoreOS stack (2 guests) CREATE_COMPLETE"] = f"{time.monotonic() - t0:.1f} s"
        res = {r["LogicalResourceId"]: r for r in aws_ok(srv, user, "cloudformation", "describe-stack-resources",
                                                        "--stack-name", "coreos")["StackResources"]}
        assert set(res) == set(COREOS["Resources"])
        assert all(r["ResourceStatus"] == "CREATE_COMPLETE" and r["PhysicalResourceId"] and r["StackId"] == sid
                   for r in res.values()), res
        phys = {k: r["PhysicalResourceId"] for k, r in res.items()}
        gid, lc, group = phys["CoreOSSecurityGroup"], phys["CoreOSServerLaunchConfig"], phys["CoreOSServerAutoScale"]

        # Each physical id names what the service shows.
        sg = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        assert sorted(p["FromPort"] for p in sg["IpPermissions"]) == [22, 80, 4001]
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
        rule_ids = {r["SecurityGroupRuleId"] for r in rules["SecurityGroupRules"]}
        assert {phys["IngressHttp"], phys["Ingress4001"]} <= rule_ids
        (conf,) = asg.describe_launch_configurations(LaunchConfigurationNames=[lc])["LaunchConfigurations"]
        assert conf["ImageId"] == cloud.image_id and conf["KeyName"] == "core"
        (g,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
        assert g["DesiredCapacity"] == 2 and g["LaunchConfigurationName"] == lc
        iids = sorted(i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService")
        assert len(iids) == 2, g["Instances"]
        # Every resource that can carry tags carries the stack's (which users cannot remove).
        stack_tags = {"aws:cloudformation:stack-name": "coreos", "aws:cloudformation:stack-id": sid}
        assert tags_of(sg) == {**stack_tags, "aws:cloudformation:logical-id": "CoreOSSecurityGroup"}
        assert tags_of(g) == {**stack_tags, "aws:cloudformation:logical-id": "CoreOSServerAutoScale", "Name": "coreos"}
        for r in rules["SecurityGroupRules"]:
            if r["SecurityGroupRuleId"] in (phys["IngressHttp"], phys["Ingress4001"]):
                assert tags_of(r)["aws:cloudformation:stack-name"] == "coreos"
        for inst in (i for r in ec2.describe_instances(InstanceIds=iids)["Reservations"] for i in r["Instances"]):
            assert tags_of(inst) == {**stack_tags, "aws:cloudformation:logical-id": "CoreOSServerAutoScale",
                                     "aws:autoscaling:groupName": group, "Name": "coreos"}
        for iid in iids:
            assert domain_exists(conn, iid) and conn.lookupByName(iid).isActive()
            assert filter_exists(conn, f"cloudctl-{iid}")

        # The joined user data, on each guest's console: printed verbatim, then run.
        line = f"{MARK} stack=coreos size=2 region={REGION}"
        joined = "".join(p if isinstance(p, str) else {"AWS::StackName": "coreos", "ClusterSize": "2",
                                                         "AWS::Region": REGION}[p["Ref"]]
                         for p in COREOS["Resources"]["CoreOSServerLaunchConfig"]["Properties"]["UserData"][
                             "Fn::Base64"]["Fn::Join"][1]).rstrip("\n")
        for iid in iids:
            text = wait_until(lambda iid=iid: (t := console(ec2, iid)) and "CLOUDCTL-USERDATA-EXIT" in t and t,
                              180, f"the user data run on {iid}", interval=1.0)
            lines = [ln.rstrip("\r") for ln in text.split("\n")]
            start, done = lines.index("user-data:"), lines.index("CLOUDCTL-USERDATA-DONE")
            shown = lines[start + 1:done]
            assert "\n".join(shown[:joined.count("\n") + 1]) == joined, text[-3000:]   # printed verbatim
            assert any(ln.startswith("public-key: ssh-rsa ") for ln in shown)        # (the key pair's)
            assert line in lines[done:], text[-3000:]                              # and run
        MEASUREMENTS["cfn: user data on both consoles"] = f"{time.monotonic() - t0:.1f} s"

        # -- a second stack: a load balancer in front of the same guests ---------------------------------
        cfn.create_stack(StackName="balancer", TemplateBody=json.dumps(BALANCER), Parameters=[
            {"ParameterKey": "Instances", "ParameterValue": ",".join(iids)},
            {"ParameterKey": "Subnet", "ParameterValue": cloud.subnet_id}])
        cfn.get_waiter("stack_create_complete").wait(StackName="balancer", WaiterConfig={"Delay": 1,
                                                                                         "MaxAttempts": 120})
        stack = cfn.describe_stacks(StackName="balancer")["Stacks"][0]
        dns = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["DNSName"]
        lb = cfn.describe_stack_resource(StackName="balancer", LogicalResourceId="Web")["StackResourceDetail"]
        lb_name = lb["PhysicalResourceId"]
        (desc,) = elb.describe_load_balancers(LoadBalancerNames=[lb_name])["LoadBalancerDescriptions"]
        assert desc["DNSName"] == dns and sorted(i["InstanceId"] for i in desc["Instances"]) == iids
        (lb_tags,) = elb.describe_tags(LoadBalancerNames=[lb_name])["TagDescriptions"]
        assert tags_of(lb_tags) == {"aws:cloudformation:stack-name": "balancer", "aws:cloudformation:logical-id": "Web",
                                    "aws:cloudformation:stack-id": stack["StackId"]}

        def in_service() -> bool:
            states = elb.describe_instance_health(LoadBalancerName=lb_name)["InstanceStates"]
            return sorted(s["InstanceId"] for s in states if s["State"] == "InService") == iids
        wait_until(in_service, 180, "both guests InService", interval=1.0)
        MEASUREMENTS["cfn: balancer stack, both guests InService"] = f"{time.monotonic() - t0:.1f} s"
        got = requests_from(browser, dns, 20)
        assert set(got) == set(iids), got          # each guest answers through the listener, no error
        lb_id = next(x["id"] for x in srv.admin("GET", "/v0/load-balancers")["load_balancers"] if x["name"] == lb_name)
        master = int((srv.state_dir / "elb" / lb_id / "haproxy.pid").read_text().split()[0])
        assert running(master)

        # -- delete both: nothing left ----------------------------------------------------------------
        cfn.delete_stack(StackName="balancer")
        cfn.get_waiter("stack_delete_complete").wait(StackName="balancer", WaiterConfig={"Delay": 1,
                                                                                         "MaxAttempts": 120})
        assert elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
        wait_until(lambda: not running(master), 60, "the HAProxy master gone", interval=0.2)
        # Its namespace too: removed after the master stopped (the deletion is applied after the answer, as
        # ELB's is: asserted at once, this failed when the box was loaded).
        wait_until(lambda: not Path(f"/run/netns/{Netns.of(lb_id).name}").exists(), 30, "its namespace gone",
                   interval=0.2)
        aws_ok(srv, user, "cloudformation", "delete-stack", "--stack-name", "coreos")
        try:
            aws_ok(srv, user, "cloudformation", "wait", "stack-delete-complete", "--stack-name", "coreos")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{events(cfn, sid)}") from None
        MEASUREMENTS["cfn: both stacks created, checked and deleted"] = f"{time.monotonic() - t0:.1f} s"
        assert cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"
        left = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                                "Values": ["pending", "running", "stopping", "stopped",
                                                           "shutting-down"]}])["Reservations"]
        assert left == []
        assert [x["GroupName"] for x in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
        assert not ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
            "SecurityGroupRules"]
        assert asg.describe_launch_configurations()["LaunchConfigurations"] == []
        assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
        for iid in iids:
            assert not domain_exists(conn, iid), iid
            assert not filter_exists(conn, f"cloudctl-{iid}"), iid
        assert not [f for f in os.listdir("/run/libvirt/qemu") if any(f.startswith(i) for i in iids)]
    finally:
        for name in ("balancer", "coreos"):
            try:
                cfn.delete_stack(StackName=name)
            except Exception:   # (already gone)
                pass
