"""SIGKILL in the middle of a scale-out: after the restart the group holds exactly its desired
count. Launch activities are journaled before their launch and launch with a ClientToken derived
from the activity, so an activity the crash left InProgress is finished by the same launch."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from asg_support import FAST, client, converged, image
from support import Server, wait_until

ZONES = ["cloudctl-1a", "cloudctl-1b"]

# Hosts polled often (a restarted controller knows them at once), but a slow poll on a loaded
# machine must not turn a host `error`: its instances would be replaced, rightly, and the count of
# launches these tests check would include the replacements.
CALM_MONITOR = {"interval_s": 0.5, "grace_s": 120, "timeout_s": 60}


class JournalWatch:
    """What the controller has made durable, read from its journal files as they grow: the crash
    point is chosen from the disk (a poll of the API is too slow to land mid-way now that a batch
    of 50 launches takes a few milliseconds)."""

    INSTANCE = re.compile(rb'\["p","instances","(i-[0-9a-f]+)"')
    LAUNCH = re.compile(rb'\["p","asg_activities","[^"]+",\{[^\n]*?"kind":"launch"')

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.offsets: dict[Path, int] = {}
        self.instances: set[bytes] = set()
        self.launches = 0

    def poll(self) -> None:
        for path in sorted(self.state_dir.glob("journal.*")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1          # (whole lines only: a write may be under way)
            self.offsets[path] = self.offsets.get(path, 0) + end
            self.instances.update(self.INSTANCE.findall(data, 0, end))
            self.launches += len(self.LAUNCH.findall(data, 0, end))

    def until(self, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "the scale-out never reached the crash point"
            time.sleep(0.001)
            self.poll()


def _instances(ec2: Any) -> list[dict[str, Any]]:
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize("kill_after", [0, 1, 120])
def test_sigkill_mid_scale_out_leaves_no_extra_instances(new_server: Any, kill_after: int) -> None:
    """Killed once the journal holds `kill_after` instances of the group (0: once its first launch
    activity is journaled, before that launch's instances are)."""
    srv: Server = new_server(autoscaling=FAST, monitor=CALM_MONITOR)
    user = srv.create_user("crash")
    asg, ec2 = client(srv, user), srv.client(user)
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image(srv, user), InstanceType="t3.nano")
    journal = JournalWatch(srv.state_dir)
    journal.poll()
    before = len(journal.instances)
    asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc", MinSize=0,
                                  MaxSize=300, DesiredCapacity=200, AvailabilityZones=ZONES,
                                  Tags=[{"Key": "tier", "Value": "web", "PropagateAtLaunch": True}])
    if kill_after:
        journal.until(lambda: len(journal.instances) - before >= kill_after, 60)
    else:
        journal.until(lambda: journal.launches > 0, 60)
    srv.kill()
    journal.poll()
    assert len(journal.instances) - before < 200, "the kill came after the whole scale-out"
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
