"""AutoScaling's reconciler at scale, on libvirt's test driver (test:///), served through bench/served.py.

    .venv/bin/python bench/autoscaling.py [--groups 100] [--per-group 50] [--scale-out 500] [--ticks 10]
                                          [--json out.json] [--keep]

Part 1: `--groups` groups of `--per-group` instances each (one launch configuration, two zones) are
made at once and converged by the reconciler (the time until every instance runs is reported too).
Then, with every group converged, the reconciler ticks every second while a client thread keeps the
EC2 API busy (DescribeInstances pages of 100, and a DescribeAutoScalingGroups now and then): reported
are the reconciler's tick durations (p50, max; server-side, from bench/served.py) and the event loop's
longest stall over that window (the server's loop monitor; wall-clock and "own", i.e. less the
loop thread's waits for a CPU on a shared machine), beside the same instances made by RunInstances
and the same client load with no group in a second controller (the peer for the stall).
Issue 16's target: stall < 20 ms.
Part 2: a fresh controller, one group scaled from 0 to `--scale-out` by SetDesiredCapacity:
seconds until all are InService in AutoScaling and running in EC2.
Part 0 (in-process, no HTTP, nothing else on the loop): the same fleet in a `Cloud` of this
process; each tick timed alone, and the longest stretch between two turns of the loop during the
ticks (the reconciler's own share of any stall: it yields every few groups). On a busy shared
machine the served figures above count other processes' CPU time too; these do not.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402

REGION = "cloudctl-1"
ZONES = ["cloudctl-1a", "cloudctl-1b"]


def _clients(c: procs.Cloudctl, name: str) -> tuple[Any, Any]:
    user = c.admin("POST", "/v0/users", {"name": name})
    kw = {"endpoint_url": c.ec2_url, "region_name": REGION, "aws_access_key_id": user["AccessKeyId"],
          "aws_secret_access_key": user["SecretAccessKey"],
          "config": BotoConfig(retries={"max_attempts": 1}, max_pool_connections=4)}
    return boto3.client("autoscaling", **kw), boto3.client("ec2", **kw)


def _image(ec2: Any) -> str:
    return str(ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"])


def _running(ec2: Any) -> int:
    n, token = 0, None
    while True:
        kw: dict[str, Any] = {"MaxResults": 1000, "Filters": [{"Name": "instance-state-name", "Values": ["running"]}]}
        if token:
            kw["NextToken"] = token
        page = ec2.describe_instances(**kw)
        n += sum(len(r["Instances"]) for r in page["Reservations"])
        token = page.get("NextToken")
        if not token:
            return n


def _in_service(asg: Any) -> int:
    n, token = 0, None
    while True:
        kw: dict[str, Any] = {"MaxRecords": 50}
        if token:
            kw["NextToken"] = token
        page = asg.describe_auto_scaling_instances(**kw)
        n += sum(1 for i in page["AutoScalingInstances"] if i["LifecycleState"] == "InService")
        token = page.get("NextToken")
        if not token:
            return n


def _wait_all(asg: Any, ec2: Any, want: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if _running(ec2) >= want and _in_service(asg) >= want:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"not {want} running and InService after {timeout:.0f} s")


def _start(tmp: Path, tick_s: float) -> procs.Cloudctl:
    tmp.mkdir(parents=True, exist_ok=True)
    return procs.start_cloudctl(tmp, overrides=_overrides(tick_s), probed=True)


def _overrides(tick_s: float) -> dict[str, Any]:
    return {"autoscaling": {"tick_s": tick_s, "max_groups": 10_000},
            "monitor": {"interval_s": 10, "grace_s": 30, "timeout_s": 30}}


def _load(c: procs.Cloudctl, ec2: Any, asg: Any | None, seconds: float) -> tuple[int, tuple[float, float]]:
    """Keep the EC2 API busy for `seconds`; the requests made, and the longest stall meanwhile."""
    stop = threading.Event()
    done = [0]

    def client() -> None:
        while not stop.is_set():
            ec2.describe_instances(MaxResults=100)
            if asg is not None and done[0] % 10 == 0:
                asg.describe_auto_scaling_groups(MaxRecords=10)
            done[0] += 1

    c.reset_lags()
    t = threading.Thread(target=client, daemon=True)
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    return done[0], c.reset_lags()


async def _in_process(tmp: Path, groups: int, per_group: int, ticks: int) -> dict[str, Any]:
    from cloudctl.config import load_config
    from cloudctl.core.autoscaling.groups import GroupInput
    from cloudctl.core.autoscaling.launch_configs import LaunchConfigInput
    from cloudctl.core.cloud import Cloud
    from cloudctl.core.context import Caller
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = load_config(procs.write_cloudctl_config(tmp, procs.free_port(), procs.free_port(), _overrides(3600.0)))
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        caller = Caller(await cloud.users.create("bench"))
        a = cloud.autoscaling
        image = next(iter(cloud.images.table.values())).id
        await a.launch_configs.create(caller, LaunchConfigInput(name="lc", image_id=image, instance_type="t3.nano"))
        for g in range(groups):
            await a.groups.create(caller, GroupInput(name=f"g{g:03d}", launch_configuration="lc", min_size=0,
                                                     max_size=per_group, desired=per_group, zones=tuple(ZONES)))
        t0 = time.perf_counter()
        await a.reconciler.tick()
        await cloud.compute.idle()
        converge_s = time.perf_counter() - t0
        assert len(a.members.table) == groups * per_group, len(a.members.table)
        loop = asyncio.get_running_loop()
        worst, done = [0.0], asyncio.Event()

        async def turns() -> None:
            while not done.is_set():
                t = loop.time()
                await asyncio.sleep(0)
                worst[0] = max(worst[0], loop.time() - t)
        watcher = asyncio.create_task(turns())
        samples = []
        for _ in range(ticks):
            t0 = time.perf_counter()
            await a.reconciler.tick()
            samples.append((time.perf_counter() - t0) * 1000)
        done.set()
        await watcher
        return {"converge_s": round(converge_s, 1), "tick_ms_p50": round(statistics.median(samples), 2),
                "tick_ms_max": round(max(samples), 2), "longest_slice_ms": round(worst[0] * 1000, 2)}
    finally:
        await cloud.stop()


def part1(tmp: Path, groups: int, per_group: int, ticks: int) -> dict[str, Any]:
    c = _start(tmp / "fleet", 1.0)
    try:
        asg, ec2 = _clients(c, "bench")
        asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=_image(ec2), InstanceType="t3.nano")
        t0 = time.monotonic()
        for g in range(groups):
            asg.create_auto_scaling_group(AutoScalingGroupName=f"g{g:03d}", LaunchConfigurationName="lc", MinSize=0,
                                          MaxSize=per_group, DesiredCapacity=per_group, AvailabilityZones=ZONES)
        _wait_all(asg, ec2, groups * per_group, 1800)
        converge_s = time.monotonic() - t0
        c.admin("GET", "/v0/bench/samples?action=autoscaling-tick")   # (forget the ticks that launched)
        time.sleep(2.5)   # the last launches' activities settle
        c.admin("GET", "/v0/bench/samples?action=autoscaling-tick")
        requests, (stall, own) = _load(c, ec2, asg, ticks + 0.5)
        samples = [x * 1000 for x in c.admin("GET", "/v0/bench/samples?action=autoscaling-tick")]
        assert samples, "no reconciler tick was recorded"
        return {"groups": groups, "per_group": per_group, "instances": groups * per_group,
                "converge_s": round(converge_s, 1), "ticks": len(samples),
                "tick_ms_p50": round(statistics.median(samples), 2), "tick_ms_max": round(max(samples), 2),
                "stall_ms": stall, "stall_own_ms": own, "api_requests": requests}
    finally:
        c.proc.stop()


def peer(tmp: Path, groups: int, per_group: int, ticks: int) -> dict[str, Any]:
    """The same instances launched by RunInstances and the same client load on a controller with no
    group: the stall without the reconciler's work."""
    c = _start(tmp / "peer", 1.0)
    try:
        _, ec2 = _clients(c, "bench")
        image = _image(ec2)
        for g in range(groups):
            ec2.run_instances(ImageId=image, MinCount=per_group, MaxCount=per_group, InstanceType="t3.nano",
                              Placement={"AvailabilityZone": ZONES[g % 2]})
        while _running(ec2) < groups * per_group:
            time.sleep(0.5)
        time.sleep(2.5)
        requests, (stall, own) = _load(c, ec2, None, ticks + 0.5)
        return {"stall_ms": stall, "stall_own_ms": own, "api_requests": requests}
    finally:
        c.proc.stop()


def part2(tmp: Path, count: int) -> dict[str, Any]:
    c = _start(tmp / "scale-out", 10.0)
    try:
        asg, ec2 = _clients(c, "bench")
        asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=_image(ec2), InstanceType="t3.nano")
        asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc", MinSize=0,
                                      MaxSize=count, DesiredCapacity=0, AvailabilityZones=ZONES)
        c.reset_lags()
        t0 = time.monotonic()
        asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=count)
        _wait_all(asg, ec2, count, 900)
        seconds = time.monotonic() - t0
        stall, own = c.reset_lags()
        return {"count": count, "seconds": round(seconds, 2), "stall_ms": stall, "stall_own_ms": own}
    finally:
        c.proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--per-group", type=int, default=50)
    ap.add_argument("--scale-out", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-asg-"))
    try:
        out = {"in_process": asyncio.run(_in_process(tmp / "in-process", args.groups, args.per_group, args.ticks)),
               "fleet": part1(tmp, args.groups, args.per_group, args.ticks),
               "peer": peer(tmp, args.groups, args.per_group, args.ticks),
               "scale_out": part2(tmp, args.scale_out)}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    f, p, s, i = out["fleet"], out["peer"], out["scale_out"], out["in_process"]
    print(f"in-process: {args.groups} x {args.per_group} converged in {i['converge_s']} s; tick p50 "
          f"{i['tick_ms_p50']} ms, max {i['tick_ms_max']} ms; longest stretch between loop turns during the "
          f"ticks {i['longest_slice_ms']} ms")
    print(f"reconciler: {f['groups']} groups x {f['per_group']} = {f['instances']} instances, converged from "
          f"nothing in {f['converge_s']} s")
    print(f"  tick: p50 {f['tick_ms_p50']} ms, max {f['tick_ms_max']} ms over {f['ticks']} ticks")
    print(f"  longest loop stall with the EC2 API serving: {f['stall_ms']} ms (own {f['stall_own_ms']} ms; "
          f"{f['api_requests']} requests) - the same instances without groups: {p['stall_ms']} ms "
          f"(own {p['stall_own_ms']} ms; "
          f"{p['api_requests']} requests); target < 20 ms")
    print(f"scale-out 0 -> {s['count']}: {s['seconds']} s until all InService and running "
          f"(longest stall meanwhile {s['stall_ms']} ms, own {s['stall_own_ms']} ms)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
