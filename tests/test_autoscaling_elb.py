"""AutoScaling wired to the cloud's launch templates and classic load balancers, on `test:///`
behind real HAProxy proxies in loopback placement (elbsupport.py: the instances' private
addresses are loopback addresses, where the test serves HTTP for the instances it wants healthy).
Driven with boto3 and the AWS CLI only."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import FAST, client, converged, group, live
from asg_support import aws as asg_aws
from elbsupport import Backend, answers, aws, elb_client, elb_config, public_image, wait_health
from support import Server, wait_until

ZONES = ["cloudctl-1a", "cloudctl-1b"]
LISTENER = {"Protocol": "HTTP", "LoadBalancerPort": 8000, "InstanceProtocol": "HTTP", "InstancePort": 8080}
FAST_CHECK = {"Target": "HTTP:8080/", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2}


class Web:
    """HTTP servers on instances' addresses answering their ids, as the guests' web servers would."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2
        self.up: dict[str, Backend] = {}

    def serve(self, ids: list[str]) -> None:
        for iid in ids:
            if iid not in self.up:
                inst = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
                self.up[iid] = Backend(inst["PrivateIpAddress"], 8080, iid)

    def close(self) -> None:
        for b in self.up.values():
            b.close()
        self.up.clear()


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    return server_with(autoscaling=FAST, **elb_config())


@pytest.fixture(scope="module")
def user(srv: Server) -> dict[str, str]:
    return srv.create_user("web")


@pytest.fixture(scope="module")
def asg(srv: Server, user: dict[str, str]) -> Any:
    return client(srv, user)


@pytest.fixture(scope="module")
def elb(srv: Server, user: dict[str, str]) -> Any:
    return elb_client(srv, user)


@pytest.fixture(scope="module")
def ec2(srv: Server, user: dict[str, str]) -> Any:
    return srv.client(user)


@pytest.fixture(scope="module")
def lc(asg: Any, ec2: Any) -> str:
    asg.create_launch_configuration(LaunchConfigurationName="web-lc", ImageId=public_image(ec2),
                                    InstanceType="t3.nano")
    return "web-lc"


@pytest.fixture
def web(ec2: Any) -> Iterator[Web]:
    w = Web(ec2)
    yield w
    w.close()


def balancer(elb: Any, name: str) -> str:
    """A load balancer with a fast HTTP check; its DNSName."""
    dns = elb.create_load_balancer(LoadBalancerName=name, Listeners=[LISTENER],
                                   AvailabilityZones=["cloudctl-1a"])["DNSName"]
    elb.configure_health_check(LoadBalancerName=name, HealthCheck=FAST_CHECK)
    return str(dns)


def registered(elb: Any, name: str) -> set[str]:
    lb = elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]
    return {i["InstanceId"] for i in lb["Instances"]}


def ids_of(members: list[dict[str, Any]]) -> set[str]:
    return {m["InstanceId"] for m in members}


def test_groups_launch_from_a_launch_template_latest_and_default(srv: Server, user: dict[str, str], asg: Any,
                                                                 ec2: Any) -> None:
    image = public_image(ec2)
    t = ec2.create_launch_template(LaunchTemplateName="tmpl", LaunchTemplateData={
        "ImageId": image, "InstanceType": "t3.nano",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "from", "Value": "v1"}]}]})
    tid = t["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=tid, SourceVersion="1", LaunchTemplateData={
        "InstanceType": "t3.micro",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "from", "Value": "v2"}]}]})
    # by name and $Latest with the AWS CLI, by id and $Default with boto3
    made = aws(srv, user, "autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", "latest",
               "--launch-template", "LaunchTemplateName=tmpl,Version=$Latest", "--min-size", "2", "--max-size", "2",
               "--availability-zones", *ZONES)
    assert made == {}
    asg.create_auto_scaling_group(AutoScalingGroupName="default", MinSize=1, MaxSize=1, AvailabilityZones=ZONES,
                                  LaunchTemplate={"LaunchTemplateId": tid, "Version": "$Default"})
    converged(asg, ec2, "latest", 2)
    converged(asg, ec2, "default", 1)
    for name, itype, version in (("latest", "t3.micro", "2"), ("default", "t3.nano", "1")):
        for inst in live(ec2, name):
            tags = {x["Key"]: x["Value"] for x in inst["Tags"]}
            assert inst["InstanceType"] == itype, name
            assert tags["from"] == f"v{version}" and tags["aws:ec2launchtemplate:version"] == version, name
            assert tags["aws:ec2launchtemplate:id"] == tid and tags["aws:autoscaling:groupName"] == name
    # shown by id and name whichever named it, as AWS does (Terraform reads the id, Ansible the name)
    g = group(asg, "latest")
    assert g["LaunchTemplate"] == {"LaunchTemplateId": tid, "LaunchTemplateName": "tmpl", "Version": "$Latest"}
    assert [i["LaunchTemplate"] for i in g["Instances"]] == [g["LaunchTemplate"]] * 2
    assert group(asg, "default")["LaunchTemplate"] == {"LaunchTemplateId": tid, "LaunchTemplateName": "tmpl",
                                                       "Version": "$Default"}
    # $Default moves: the next launch of "default" takes version 2
    ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion="2")
    asg.update_auto_scaling_group(AutoScalingGroupName="default", MaxSize=2, DesiredCapacity=2)
    converged(asg, ec2, "default", 2)
    assert sorted(i["InstanceType"] for i in live(ec2, "default")) == ["t3.micro", "t3.nano"]
    # a template the account lacks: AutoScaling's ValidationError
    with pytest.raises(ClientError) as e:
        asg.create_auto_scaling_group(AutoScalingGroupName="none", MinSize=0, MaxSize=1, AvailabilityZones=ZONES,
                                      LaunchTemplate={"LaunchTemplateName": "nope"})
    assert e.value.response["Error"]["Code"] == "ValidationError"
    for name in ("latest", "default"):
        asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    wait_until(lambda: not live(ec2, "latest") and not live(ec2, "default"), 60, "the groups' instances gone")


def test_group_members_are_registered_and_deregistered_before_termination(asg: Any, elb: Any, ec2: Any, lc: str,
                                                                         web: Web) -> None:
    dns = balancer(elb, "front")
    asg.create_auto_scaling_group(AutoScalingGroupName="behind", LaunchConfigurationName=lc, MinSize=0, MaxSize=4,
                                  DesiredCapacity=3, AvailabilityZones=ZONES, LoadBalancerNames=["front"])
    members = ids_of(converged(asg, ec2, "behind", 3))
    assert registered(elb, "front") == members
    assert group(asg, "behind")["LoadBalancerNames"] == ["front"]
    web.serve(sorted(members))
    wait_health(elb, "front", {i: "InService" for i in members})
    assert set(answers(dns, 8000, 30)) == members        # every member gets traffic through the proxy

    # Scale in: a member leaves the load balancer before EC2 terminates it. Watch both all along.
    asg.set_desired_capacity(AutoScalingGroupName="behind", DesiredCapacity=1)
    stale: list[str] = []

    def scaled_in() -> bool:
        # EC2 first: an instance seen terminating must be out of the load balancer by the next look.
        states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=sorted(members))
                  ["Reservations"] for i in r["Instances"]}
        regs = registered(elb, "front")
        stale.extend(i for i in regs if states.get(i) != "running")
        return len(regs) == 1 and sum(s == "terminated" for s in states.values()) == 2
    wait_until(scaled_in, 60, "the scale-in")
    assert stale == [], f"terminating instances still registered: {stale}"
    (left,) = registered(elb, "front")
    assert ids_of(converged(asg, ec2, "behind", 1)) == {left}
    # (the proxy follows the registrations once they are journaled, not before the answer)
    wait_until(lambda: set(answers(dns, 8000, 10)) == {left}, 30, "traffic to the one left only")
    asg.delete_auto_scaling_group(AutoScalingGroupName="behind", ForceDelete=True)
    wait_until(lambda: not live(ec2, "behind"), 60, "the group's instances gone")
    elb.delete_load_balancer(LoadBalancerName="front")


def test_attach_and_detach_load_balancers(srv: Server, user: dict[str, str], asg: Any, elb: Any, ec2: Any,
                                          lc: str) -> None:
    balancer(elb, "one")
    balancer(elb, "two")
    asg.create_auto_scaling_group(AutoScalingGroupName="moving", LaunchConfigurationName=lc, MinSize=2, MaxSize=2,
                                  AvailabilityZones=ZONES)
    members = ids_of(converged(asg, ec2, "moving", 2))
    assert registered(elb, "one") == registered(elb, "two") == set()
    asg.attach_load_balancers(AutoScalingGroupName="moving", LoadBalancerNames=["one"])
    code, _, err = _cli(srv, user, "attach-load-balancers", "--auto-scaling-group-name", "moving",
                        "--load-balancer-names", "two")
    assert code == 0, err
    assert registered(elb, "one") == registered(elb, "two") == members
    got = asg.describe_load_balancers(AutoScalingGroupName="moving")["LoadBalancers"]
    assert sorted(x["LoadBalancerName"] for x in got) == ["one", "two"]
    # a replacement joins both
    victim = sorted(members)[0]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)
    wait_until(lambda: victim not in ids_of(converged(asg, ec2, "moving", 2)), 60, "a replacement")
    now = ids_of(converged(asg, ec2, "moving", 2))
    assert registered(elb, "one") == registered(elb, "two") == now
    asg.detach_load_balancers(AutoScalingGroupName="moving", LoadBalancerNames=["one"])
    assert registered(elb, "one") == set() and registered(elb, "two") == now
    assert group(asg, "moving")["LoadBalancerNames"] == ["two"]
    # a load balancer the account lacks: refused, nothing changes
    with pytest.raises(ClientError) as e:
        asg.attach_load_balancers(AutoScalingGroupName="moving", LoadBalancerNames=["nope"])
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert group(asg, "moving")["LoadBalancerNames"] == ["two"]
    # ForceDelete: the instances terminated and out of the load balancer
    asg.delete_auto_scaling_group(AutoScalingGroupName="moving", ForceDelete=True)
    wait_until(lambda: not asg.describe_auto_scaling_groups(AutoScalingGroupNames=["moving"])["AutoScalingGroups"],
               60, "the group gone")
    assert live(ec2, "moving") == [] and registered(elb, "two") == set()
    for name in ("one", "two"):
        elb.delete_load_balancer(LoadBalancerName=name)


def _cli(srv: Server, user: dict[str, str], *args: str) -> tuple[int, Any, str]:
    return asg_aws(srv, user, "autoscaling", *args)


def test_elb_health_check_replaces_an_out_of_service_instance_after_the_grace_period(
        asg: Any, elb: Any, ec2: Any, lc: str, web: Web) -> None:
    grace = 20
    balancer(elb, "judge")
    asg.create_auto_scaling_group(AutoScalingGroupName="judged", LaunchConfigurationName=lc, MinSize=2, MaxSize=2,
                                  AvailabilityZones=["cloudctl-1a"], LoadBalancerNames=["judge"],
                                  HealthCheckType="ELB", HealthCheckGracePeriod=grace)
    members = sorted(ids_of(converged(asg, ec2, "judged", 2)))
    dark, lit = members
    web.serve([lit])            # nothing answers on the dark one: it fails the load balancer's checks
    wait_health(elb, "judge", {lit: "InService", dark: "OutOfService"})

    def replaced() -> tuple[set[str]] | None:
        now = {i["InstanceId"] for i in group(asg, "judged")["Instances"]}
        web.serve(sorted(now - {dark}))     # the replacement serves as soon as it is there
        return (now,) if dark not in now and len(now) == 2 else None
    (now,) = wait_until(replaced, 120, "the OutOfService instance replaced")
    assert lit in now
    new = (now - {lit}).pop()
    wait_health(elb, "judge", {lit: "InService", new: "InService"})
    assert registered(elb, "judge") == {lit, new}      # the replaced one deregistered, the new one registered
    acts = asg.describe_scaling_activities(AutoScalingGroupName="judged")["Activities"]
    (term,) = [a for a in acts if dark in a["Description"] and a["Description"].startswith("Terminating")]
    assert "ELB system health check failure" in term["Cause"]
    launched = next(i for r in ec2.describe_instances(InstanceIds=[dark])["Reservations"] for i in r["Instances"])
    # judged only once the grace period was over (the activity's own start, not the test's clock)
    assert (term["StartTime"] - launched["LaunchTime"]).total_seconds() >= grace
    assert group(asg, "judged")["Instances"] and all(i["HealthStatus"] == "Healthy"
                                                      for i in group(asg, "judged")["Instances"])
    asg.delete_auto_scaling_group(AutoScalingGroupName="judged", ForceDelete=True)
    wait_until(lambda: not live(ec2, "judged"), 60, "the group's instances gone")
    assert registered(elb, "judge") == set()
    elb.delete_load_balancer(LoadBalancerName="judge")


def test_a_deleted_load_balancer_does_not_stop_the_group(asg: Any, elb: Any, ec2: Any, lc: str) -> None:
    balancer(elb, "brief")
    asg.create_auto_scaling_group(AutoScalingGroupName="outlives", LaunchConfigurationName=lc, MinSize=1,
                                  MaxSize=3, AvailabilityZones=ZONES, LoadBalancerNames=["brief"],
                                  HealthCheckType="ELB")
    converged(asg, ec2, "outlives", 1)
    elb.delete_load_balancer(LoadBalancerName="brief")
    asg.set_desired_capacity(AutoScalingGroupName="outlives", DesiredCapacity=3)
    converged(asg, ec2, "outlives", 3)
    asg.delete_auto_scaling_group(AutoScalingGroupName="outlives", ForceDelete=True)
    wait_until(lambda: not live(ec2, "outlives"), 60, "the group's instances gone")


@pytest.mark.parametrize("kill_after", [2, 20])
def test_sigkill_mid_scale_out_behind_a_load_balancer(new_server: Any, kill_after: int) -> None:
    """After the restart: exactly the desired count, every one of them registered, no one else."""
    srv: Server = new_server(autoscaling=FAST, **elb_config())
    user = srv.create_user("crash")
    asg, elb, ec2 = client(srv, user), elb_client(srv, user), srv.client(user)
    balancer(elb, "crash-lb")
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=public_image(ec2), InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc", MinSize=0, MaxSize=60,
                                  DesiredCapacity=40, AvailabilityZones=ZONES, LoadBalancerNames=["crash-lb"])
    wait_until(lambda: len(live(ec2, "web")) >= kill_after, 60, "the scale-out under way")
    srv.kill()
    srv.start()
    asg, elb, ec2 = client(srv, user), elb_client(srv, user), srv.client(user)
    members = ids_of(converged(asg, ec2, "web", 40, timeout=120))
    insts = {i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"] for i in r["Instances"]}
    assert insts == members and len(members) == 40
    assert registered(elb, "crash-lb") == members
    acts = asg.describe_scaling_activities(AutoScalingGroupName="web", MaxRecords=100)["Activities"]
    assert not [a for a in acts if a["StatusCode"] == "InProgress"]
