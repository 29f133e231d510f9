"""Issue 16's proof on real guests: an AutoScaling group of qemu guests, launched from a launch
template whose user data serves the instance's id over HTTP (busybox httpd on port 80), behind a
classic load balancer whose HAProxy runs in a namespace plugged into the lab bridge. A client on
the lab network reaches both through the load balancer's DNSName; a guest whose qemu is killed
turns OutOfService and is replaced; the group scales to 3 through a controller SIGKILL; ForceDelete
and DeleteLoadBalancer leave no guest and no proxy behind. boto3 is the only client."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cloudctl.drivers.loadbalancer.netns import Netns

from .conftest import MEASUREMENTS
from asg_support import client
from elbsupport import elb_client
from support import wait_until

INTERVAL, UNHEALTHY = 5, 2
CHECK = {"Target": "HTTP:80/", "Interval": INTERVAL, "Timeout": 2, "UnhealthyThreshold": UNHEALTHY,
         "HealthyThreshold": 2}
GRACE = 60        # s: a TCG guest boots and serves in ~20 s here (two at once), 60 s on a slow host
# The guest's answer: its instance id, read from the config drive's metadata.
USER_DATA = """#!/bin/sh
mkdir -p /www
grep -h -o 'instance-id"*: *"*i-[0-9a-f]*' /mnt/config/meta-data /mnt/config/openstack/latest/meta_data.json \\
    2>/dev/null | head -n1 | grep -o 'i-[0-9a-f]*$' > /www/index.html
httpd -p 80 -h /www
"""


def fast(_: Path) -> dict[str, Any]:
    return {"autoscaling": {"tick_s": 1.0, "backoff_s": 2.0, "backoff_max_s": 10.0},
            "elb": {"refresh_s": 1.0, "remove_proxies_on_stop": True},
            "monitor": {"interval_s": 2.0}}


def requests_from(ns: str, address: str, n: int) -> list[str]:
    """`n` GETs of http://address/ from the lab namespace `ns`: the bodies (ERR for a failure)."""
    code = ("import json, urllib.request\nout = []\n"
            f"for _ in range({n}):\n"
            "    try:\n"
            f"        out.append(urllib.request.urlopen('http://{address}/', timeout=3).read().decode().strip())\n"
            "    except Exception as e:\n"
            "        out.append('ERR ' + type(e).__name__)\n"
            "print(json.dumps(out))\n")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=n * 4 + 30)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def health(elb: Any) -> dict[str, str]:
    return {s["InstanceId"]: s["State"] for s in elb.describe_instance_health(LoadBalancerName="web")["InstanceStates"]}


def members(asg: Any) -> set[str]:
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"]
    return {i["InstanceId"] for g in groups for i in g["Instances"] if i["LifecycleState"] == "InService"}


def live(ec2: Any) -> set[str]:
    res = ec2.describe_instances(Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": ["web"]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return {i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]}


def serving(asg: Any, elb: Any, ec2: Any, n: int, timeout: float) -> set[str]:
    """Wait until the group holds exactly `n` instances, all running and InService at the load balancer."""
    def check() -> tuple[set[str]] | None:
        m = members(asg)
        h = health(elb)
        ok = len(m) == n and live(ec2) == m and set(h) == m and all(s == "InService" for s in h.values())
        return (m,) if ok else None
    return wait_until(check, timeout, f"{n} guests in service", interval=1.0)[0]


def qemu_pid(iid: str) -> int:
    """The qemu process libvirt started for this instance (its pid file)."""
    return int(Path(f"/run/libvirt/qemu/{iid}.pid").read_text().strip())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.cloud_config.with_args(fast)
def test_autoscaling_group_of_guests_behind_haproxy(bridged_cloud: Any) -> None:
    cloud = bridged_cloud
    srv, user, ec2 = cloud.server, cloud.user, cloud.ec2
    asg, elb = client(srv, user), elb_client(srv, user)
    browser = cloud.lab.add_host("client", cloud.address(200))
    t_start = time.monotonic()

    gid = ec2.create_security_group(GroupName="web", Description="HTTP from the lab")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": str(cloud.lab.net)}]}])
    ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
        "ImageId": cloud.image_id, "InstanceType": "t3.nano", "SecurityGroupIds": [gid],
        "UserData": base64.b64encode(USER_DATA.encode()).decode()})
    dns = elb.create_load_balancer(LoadBalancerName="web", Subnets=[cloud.subnet_id], Listeners=[
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 80}])["DNSName"]
    elb.configure_health_check(LoadBalancerName="web", HealthCheck=CHECK)
    lb_id = srv.admin("GET", "/v0/load-balancers")["load_balancers"][0]["id"]
    try:
        asg.create_auto_scaling_group(
            AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateName": "web", "Version": "$Latest"},
            MinSize=0, MaxSize=3, DesiredCapacity=2, VPCZoneIdentifier=cloud.subnet_id, LoadBalancerNames=["web"],
            HealthCheckType="ELB", HealthCheckGracePeriod=GRACE)
        first = serving(asg, elb, ec2, 2, 300)
        MEASUREMENTS["asg: 2 guests InService behind HAProxy"] = f"{time.monotonic() - t_start:.1f} s after create"
        got = requests_from(browser, dns, 50)
        assert Counter(got).keys() == first, Counter(got)          # 50 requests, both guests answer, no error

        # One guest's qemu dies.
        victim, other = sorted(first)
        pid = qemu_pid(victim)
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        wait_until(lambda: health(elb).get(victim) == "OutOfService", INTERVAL * UNHEALTHY + 20,
                   "the killed guest OutOfService", interval=0.2)
        out_after = time.monotonic() - t_kill
        MEASUREMENTS["asg: qemu SIGKILL -> OutOfService"] = \
            f"{out_after:.1f} s (interval {INTERVAL} s x unhealthy threshold {UNHEALTHY})"
        # The proxy's own checks and the instance's state (stopped: no longer a backend) both take it
        # out; the first may lag the report by a check, so wait for a clean run, then count.
        wait_until(lambda: requests_from(browser, dns, 10) == [other] * 10, INTERVAL * UNHEALTHY + 30,
                   "traffic to the other guest only", interval=0.2)
        MEASUREMENTS["asg: qemu SIGKILL -> traffic to the other guest only"] = f"{time.monotonic() - t_kill:.1f} s"
        got = requests_from(browser, dns, 50)
        assert got == [other] * 50, Counter(got)                    # only the other one gets traffic
        # Replaced: a new guest, InService, getting traffic.
        second = serving(asg, elb, ec2, 2, 300)
        assert victim not in second and other in second
        MEASUREMENTS["asg: qemu SIGKILL -> replacement InService"] = f"{time.monotonic() - t_kill:.1f} s " \
                                                                     f"(grace period {GRACE} s from launch)"
        acts = asg.describe_scaling_activities(AutoScalingGroupName="web")["Activities"]
        (ended,) = [a for a in acts if victim in a["Description"] and a["Description"].startswith("Terminating")]
        MEASUREMENTS["asg: the killed guest's termination cause"] = ended["Cause"]
        got = requests_from(browser, dns, 50)
        assert Counter(got).keys() == second, Counter(got)

        # SetDesiredCapacity 3, and the controller SIGKILLed while the third guest is being made.
        asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=3)
        wait_until(lambda: live(ec2) - second, 60, "the scale-out under way", interval=0.05)
        srv.kill()
        srv.start()
        asg, elb, ec2 = client(srv, user), elb_client(srv, user), srv.client(user)
        third = serving(asg, elb, ec2, 3, 300)
        assert second < third and len(live(ec2)) == 3                # exactly the desired count
        assert not [a for a in asg.describe_scaling_activities(AutoScalingGroupName="web")["Activities"]
                    if a["StatusCode"] == "InProgress"]
        got = requests_from(browser, dns, 60)
        assert Counter(got).keys() == third, Counter(got)           # three distinct answers
        MEASUREMENTS["asg: answers over 60 requests at 3 guests"] = str(sorted(Counter(got).values()))

        # ForceDelete: the group and its guests go, the load balancer has nobody left.
        master = int((srv.state_dir / "elb" / lb_id / "haproxy.pid").read_text().split()[0])
        assert alive(master)
        asg.delete_auto_scaling_group(AutoScalingGroupName="web", ForceDelete=True)
        wait_until(lambda: not asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"],
                   120, "the group gone", interval=0.5)
        assert live(ec2) == set()
        terminated = ec2.describe_instances(InstanceIds=sorted(first | third))["Reservations"]
        assert {i["State"]["Name"] for r in terminated for i in r["Instances"]} <= {"terminated", "shutting-down"}
        assert health(elb) == {}
        elb.delete_load_balancer(LoadBalancerName="web")
        wait_until(lambda: not alive(master), 60, "the HAProxy master gone", interval=0.2)
        assert not Path(f"/run/netns/{Netns.of(lb_id).name}").exists()       # its namespace too
        MEASUREMENTS["asg: whole proof"] = f"{time.monotonic() - t_start:.1f} s"
    finally:
        try:
            client(srv, user).delete_auto_scaling_group(AutoScalingGroupName="web", ForceDelete=True)
        except Exception:   # (already gone)
            pass
        try:
            elb_client(srv, user).delete_load_balancer(LoadBalancerName="web")
        except Exception:
            pass
