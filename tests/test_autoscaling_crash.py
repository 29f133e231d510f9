"""SIGKILL in the middle of a scale-out: after the restart the group holds exactly its desired
count. Launch activities are journaled before their launch and launch with a ClientToken derived
from the activity, so an activity the crash left InProgress is finished by the same launch."""
from __future__ import annotations

from typing import Any

import pytest

from asg_support import FAST, client, converged, image
from support import Server, wait_until

ZONES = ["cloudctl-1a", "cloudctl-1b"]

# Hosts polled often (a restarted controller knows them at once), but a slow poll on a loaded
# machine must not turn a host `error`: its instances would be replaced, rightly, and the count of
# launches these tests check would include the replacements.
CALM_MONITOR = {"interval_s": 0.5, "grace_s": 120, "timeout_s": 60}


def _instances(ec2: Any) -> list[dict[str, Any]]:
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize("kill_after", [1, 40, 120])
def test_sigkill_mid_scale_out_leaves_no_extra_instances(new_server: Any, kill_after: int) -> None:
    srv: Server = new_server(autoscaling=FAST, monitor=CALM_MONITOR)
    user = srv.create_user("crash")
    asg, ec2 = client(srv, user), srv.client(user)
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image(srv, user), InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc", MinSize=0,
                                  MaxSize=300, DesiredCapacity=200, AvailabilityZones=ZONES,
                                  Tags=[{"Key": "tier", "Value": "web", "PropagateAtLaunch": True}])
    # Kill once the scale-out is under way: at least `kill_after` instances made, not all of them.
    seen = wait_until(lambda: (n := len(_instances(ec2))) >= kill_after and (n,), 60, "the scale-out under way")
    srv.kill()
    assert seen[0] < 200 or kill_after > 1   # (usually mid-way; the check below holds either way)
    srv.start()
    asg, ec2 = client(srv, user), srv.client(user)
    members = converged(asg, ec2, "web", 200, timeout=120)
    insts = _instances(ec2)
    assert len(insts) == 200, f"{len(insts)} instances for a desired capacity of 200"
    assert {i["InstanceId"] for i in insts} == {m["InstanceId"] for m in members}
    for i in insts:
        tags = {t["Key"]: t["Value"] for t in i["Tags"]}
        assert tags.get("aws:autoscaling:groupName") == "web" and tags.get("tier") == "web", i["InstanceId"]
    acts = asg.describe_scaling_activities(AutoScalingGroupName="web", MaxRecords=100)["Activities"]
    assert not [a for a in acts if a["StatusCode"] == "InProgress"]
    launched = [i for a in acts if a["StatusCode"] == "Successful" and a["Description"].startswith("Launching")
                for i in a["Description"].split(": ", 1)[1].split(", ")]
    assert sorted(launched) == sorted(i["InstanceId"] for i in insts)   # each launched by exactly one activity


def test_sigkill_mid_force_delete_finishes_after_restart(new_server: Any) -> None:
    srv: Server = new_server(autoscaling=FAST, monitor=CALM_MONITOR)
    user = srv.create_user("crash")
    asg, ec2 = client(srv, user), srv.client(user)
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image(srv, user), InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc", MinSize=0,
                                  MaxSize=100, DesiredCapacity=100, AvailabilityZones=ZONES)
    converged(asg, ec2, "web", 100, timeout=120)
    asg.delete_auto_scaling_group(AutoScalingGroupName="web", ForceDelete=True)
    wait_until(lambda: len(_instances(ec2)) < 100, 60, "the terminations under way")
    srv.kill()
    srv.start()
    asg, ec2 = client(srv, user), srv.client(user)
    wait_until(lambda: asg.describe_auto_scaling_groups()["AutoScalingGroups"] == [], 120, "the group gone")
    assert _instances(ec2) == []
    assert asg.describe_scaling_activities()["Activities"] == []   # (they go with their group)
