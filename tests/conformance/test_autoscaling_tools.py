"""Terraform and Ansible driving AutoScaling and classic Elastic Load Balancing on cloudctl, as
their users do (issue 16's "Done when"):

- Terraform (hashicorp/aws): terraform/autoscaling — aws_launch_template, aws_elb (in the default
  subnets, with a listener, health check, attributes, tags) and aws_autoscaling_group (the template, the load balancer,
  sizes, subnets in both zones, tags propagated or not): apply, a second plan with no changes,
  destroy.
- Ansible (amazon.aws, community.aws): ansible/autoscaling.yml — ec2_launch_template,
  elb_classic_lb and autoscaling_group (from the template, behind the load balancer), and
  autoscaling_launch_config with a group from it: made, run again with nothing changed;
  autoscaling_teardown.yml removes them.

After each step the state is checked through boto3 as the user: the group's instances exist,
run, carry the propagated tags and are the load balancer's registered instances, whose proxy
checks them; after the teardown nothing is left, the proxy included."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from toolrun import PLAYBOOK, Cloud, Workdir, needs_terraform, play

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

HERE = Path(__file__).parent


def client(cloud: Cloud, service: str) -> Any:
    return boto3.client(service, endpoint_url=cloud.endpoint, region_name=cloud.region,
                        aws_access_key_id=cloud.access_key, aws_secret_access_key=cloud.secret_key,
                        config=BotoConfig(retries={"max_attempts": 1}))


def eventually(what: str, probe: Callable[[], Any], checks: int = 240) -> Any:
    """`probe()` once it is truthy, polled every 0.5 s (the reconciler and the proxies' supervision
    work in the background); a failure names what never happened."""
    for _ in range(checks):
        got = probe()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"never happened: {what}")


def tags_of(inst: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def check_group_behind_balancer(cloud: Cloud, group: str, balancer: str, template: str,
                                propagated: dict[str, str], kept: str) -> list[str]:
    """The group has its desired 2 instances, running from the template with the propagated tags
    (not `kept`), registered with the load balancer, whose proxy has taken them up and checks
    them. Returns the instance ids."""
    asg, elb, ec2 = client(cloud, "autoscaling"), client(cloud, "elb"), cloud.ec2()
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    assert (g["MinSize"], g["MaxSize"], g["DesiredCapacity"]) == (1, 4, 2)
    assert g["LoadBalancerNames"] == [balancer]
    assert g["LaunchTemplate"]["LaunchTemplateName"] == template and g["LaunchTemplate"]["LaunchTemplateId"]
    members = {m["InstanceId"]: m for m in g["Instances"]}
    assert len(members) == 2 and {m["LifecycleState"] for m in members.values()} == {"InService"}
    assert sorted(m["AvailabilityZone"] for m in members.values()) == ["cloudctl-1a", "cloudctl-1b"]  # balanced
    found = [i for r in ec2.describe_instances(InstanceIds=list(members))["Reservations"] for i in r["Instances"]]
    assert {i["State"]["Name"] for i in found} == {"running"}
    for i in found:
        tags = tags_of(i)
        assert {k: tags.get(k) for k in propagated} == propagated and kept not in tags, tags
        assert tags["aws:autoscaling:groupName"] == group
        assert tags["aws:ec2launchtemplate:id"] == g["LaunchTemplate"]["LaunchTemplateId"]
    lb = elb.describe_load_balancers(LoadBalancerNames=[balancer])["LoadBalancerDescriptions"][0]
    assert sorted(i["InstanceId"] for i in lb["Instances"]) == sorted(members)
    assert lb["HealthCheck"]["Target"] == "HTTP:8080/"
    assert [(x["Listener"]["Protocol"], x["Listener"]["LoadBalancerPort"], x["Listener"]["InstancePort"])
            for x in lb["ListenerDescriptions"]] == [("HTTP", 80, 8080)]
    # The proxy checks both (test:/// guests serve nothing: they fail the health check, as ELB says).
    failed = "Instance has failed at least the UnhealthyThreshold number of health checks consecutively."
    eventually("the proxy checked both instances and found them down", lambda: sorted(
        (h["InstanceId"], h["State"], h["Description"])
        for h in elb.describe_instance_health(LoadBalancerName=balancer)["InstanceStates"]) == sorted(
        (i, "OutOfService", failed) for i in members))
    return sorted(members)


def check_all_gone(cloud: Cloud, instances: list[str]) -> None:
    asg, elb, ec2 = client(cloud, "autoscaling"), client(cloud, "elb"), cloud.ec2()
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    states = {i["InstanceId"]: i["State"]["Name"]
              for r in ec2.describe_instances(InstanceIds=instances)["Reservations"] for i in r["Instances"]}
    assert states == {i: "terminated" for i in instances}
    eventually("the load balancer's proxy removed", lambda: [
        lb for lb in cloud.server.admin("GET", "/v0/load-balancers")["load_balancers"]
        if lb["owner"] == owner_of(cloud)] == [])


def owner_of(cloud: Cloud) -> str:
    return cloud.ec2().describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["OwnerId"]


@needs_terraform
def test_terraform_autoscaling_group_from_a_template_behind_an_elb(cloud: Cloud, tmp_path: Path) -> None:
    me = cloud.another_user("tf-asg")
    tf = Workdir(me, HERE / "terraform" / "autoscaling", tmp_path / "autoscaling")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    assert out["group"] == "tf-web" and out["elb"] == "tf-web"
    lt = me.ec2().describe_launch_templates(LaunchTemplateIds=[str(out["template_id"])])["LaunchTemplates"][0]
    instances = check_group_behind_balancer(me, "tf-web", "tf-web", lt["LaunchTemplateName"],
                                            {"Name": "tf-web"}, kept="team")
    lb = client(me, "elb").describe_load_balancers(LoadBalancerNames=["tf-web"])["LoadBalancerDescriptions"][0]
    assert lb["DNSName"] == out["elb_dns"] and sorted(lb["Subnets"]) == sorted(out["subnets"])  # type: ignore[arg-type]
    attrs = client(me, "elb").describe_load_balancer_attributes(LoadBalancerName="tf-web")["LoadBalancerAttributes"]
    assert attrs["ConnectionSettings"]["IdleTimeout"] == 120
    assert attrs["ConnectionDraining"] == {"Enabled": True, "Timeout": 30}
    assert tf.plan() == 0, "a second plan must find nothing to change"
    tf.run("destroy", "-input=false", "-auto-approve")
    check_all_gone(me, instances)


def test_ansible_elb_classic_lb_and_autoscaling_group(cloud: Cloud, tmp_path: Path) -> None:
    assert PLAYBOOK.exists(), "ansible is not installed in the venv (make install)"
    me = cloud.another_user("ansible-asg")
    first = play(me, tmp_path, HERE / "ansible" / "autoscaling.yml")
    assert [t for t in first if t["failed"]] == [], first
    assert first[-1]["name"] == "What was asked for is what is there"     # every task ran
    assert [t["name"] for t in first if t["changed"]] == [
        "Launch template", "Load balancer", "AutoScaling group", "Launch configuration",
        "AutoScaling group from the launch configuration"]
    instances = check_group_behind_balancer(me, "ans-web", "ans-web", "ans-web", {"Name": "ans-web"}, kept="team")
    asg = client(me, "autoscaling")
    lc_group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["ans-lc"])["AutoScalingGroups"][0]
    assert lc_group["LaunchConfigurationName"] == "ans-lc" and "LaunchTemplate" not in lc_group
    assert [(m["AvailabilityZone"], m["LifecycleState"], m["LaunchConfigurationName"])
            for m in lc_group["Instances"]] == [("cloudctl-1a", "InService", "ans-lc")]
    instances += [m["InstanceId"] for m in lc_group["Instances"]]
    second = play(me, tmp_path, HERE / "ansible" / "autoscaling.yml")
    assert [t for t in second if t["failed"]] == [], second
    assert [t["name"] for t in second if t["changed"]] == [], "a second run must change nothing"
    assert len(second) == len(first)
    groups = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert sorted(m["InstanceId"] for g in groups for m in g["Instances"]) == sorted(instances)   # none replaced
    down = play(me, tmp_path, HERE / "ansible" / "autoscaling_teardown.yml")
    assert [t for t in down if t["failed"]] == [], down
    assert [t["name"] for t in down if not t["changed"]] == []
    assert asg.describe_launch_configurations()["LaunchConfigurations"] == []
    check_all_gone(me, instances)
