"""Shared by the AutoScaling tests: clients for a served cloudctl, the state digest, waits on groups."""
from __future__ import annotations

import time
from typing import Any

from support import Server, aws_cli, boto_client, wait_until

# A fast reconciler for tests: ticks, backoff and its cap short, so convergence is quick to see.
FAST = {"tick_s": 0.3, "backoff_s": 1.0, "backoff_max_s": 4.0}


def client(server: Server, user: dict[str, str], service: str = "autoscaling") -> Any:
    return boto_client(server, user, service)


def aws(server: Server, user: dict[str, str], *args: str) -> tuple[int, Any, str]:
    """The AWS CLI against the server: (exit code, parsed JSON output or None, stderr)."""
    return aws_cli(server, user, *args, timeout=60, retries=False)


def digest(server: Server) -> str:
    return str(server.admin("GET", "/v0/state/digest")["digest"])


def settled(server: Server, quiet: float = 0.7, timeout: float = 60) -> str:
    """The state digest once nothing has moved for `quiet` s (longer than a reconciler tick) and
    no background work is pending: the reconciler has nothing left to do."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        d = server.admin("GET", "/v0/state/digest")
        now = (d["digest"], d["commits"], d["pending_work"])
        if now != last or d["pending_work"]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return str(d["digest"])
        if time.monotonic() > deadline:
            raise AssertionError(f"state did not settle in {timeout} s: {d}")
        time.sleep(0.05)


def group(asg: Any, name: str) -> dict[str, Any]:
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    assert len(found) == 1, found
    return found[0]


def live(ec2: Any, name: str) -> list[dict[str, Any]]:
    """The group's instances as EC2 lists them (by its tag), not terminated or shutting down."""
    res = ec2.describe_instances(Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def converged(asg: Any, ec2: Any, name: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until the group holds exactly `n` InService instances, all running in EC2."""
    def check() -> tuple[list[dict[str, Any]]] | None:
        g = group(asg, name)
        members = [i for i in g["Instances"] if i["LifecycleState"] == "InService"]
        if len(members) != n or len(g["Instances"]) != n:
            return None
        running = {i["InstanceId"] for i in live(ec2, name) if i["State"]["Name"] == "running"}
        ok = all(m["InstanceId"] in running for m in members) and len(live(ec2, name)) == n
        return (members,) if ok else None
    return wait_until(check, timeout, f"group {name} at {n} running instances")[0]


def image(server: Server, user: dict[str, str]) -> str:
    ec2 = server.client(user)
    found = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
    return str(found[0]["ImageId"])
