"""Shared by the fuzz and access-matrix tests: a user's resources (made through boto3), and a
summary line printed at the end of the run."""
from __future__ import annotations

import contextlib

import pytest

from cloudctl.api.ec2.actions import ACTIONS

from support import Server, wait_state


def make_resources(server: Server, user: dict[str, str], tag: str) -> dict[str, list[str]]:
    """A user's key pair, instances, volumes (one attached), snapshot, private image, and a
    security group, addresses (one associated) and a launch template once those actions exist;
    ids by kind."""
    ec2 = server.client(user)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    kp = ec2.create_key_pair(KeyName=f"kp-{tag}")
    inst = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.nano",
                             KeyName=f"kp-{tag}")["Instances"]
    ids = [i["InstanceId"] for i in inst]
    wait_state(ec2, ids, "running")
    vol = ec2.create_volume(AvailabilityZone=inst[0]["Placement"]["AvailabilityZone"], Size=1)["VolumeId"]
    vol2 = ec2.create_volume(AvailabilityZone=inst[0]["Placement"]["AvailabilityZone"], Size=1)["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol, vol2], WaiterConfig={"Delay": 0.1})
    ec2.attach_volume(VolumeId=vol2, InstanceId=ids[0], Device="/dev/sdf")
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 0.1})
    ami = ec2.register_image(Name=f"private-{tag}", ImageLocation="cloudctl-blank.img")["ImageId"]
    ec2.create_tags(Resources=[ids[0], vol, snap, ami], Tags=[{"Key": "owner", "Value": tag}])
    out = {"instance": ids, "volume": [vol, vol2], "snapshot": [snap], "image": [ami], "public_image": [image],
           "keyname": [f"kp-{tag}"], "keypair": [kp["KeyPairId"]]}
    if "CreateSecurityGroup" in ACTIONS:
        g = ec2.create_security_group(GroupName=f"group-{tag}", Description=f"group of {tag}")["GroupId"]
        out |= {"group": [g], "groupname": [f"group-{tag}"]}
    if "AllocateAddress" in ACTIONS:
        a = ec2.allocate_address(Domain="vpc")
        b = ec2.allocate_address(Domain="vpc")
        assoc = ec2.associate_address(AllocationId=b["AllocationId"], InstanceId=ids[1])["AssociationId"]
        out |= {"address": [a["AllocationId"], b["AllocationId"]], "publicip": [a["PublicIp"], b["PublicIp"]],
                "association": [assoc]}
    if "CreateLaunchTemplate" in ACTIONS:
        lt = ec2.create_launch_template(LaunchTemplateName=f"lt-{tag}", LaunchTemplateData={
            "ImageId": image, "InstanceType": "t3.nano", "KeyName": f"kp-{tag}"})["LaunchTemplate"]
        out |= {"launchtemplate": [lt["LaunchTemplateId"]], "launchtemplatename": [f"lt-{tag}"]}
    if "DescribeNetworkInterfaces" in ACTIONS:
        out["interface"] = [n["NetworkInterfaceId"] for i in inst for n in i["NetworkInterfaces"]]
    ec2.create_tags(Resources=[x for k in ("group", "address", "launchtemplate") for x in out.get(k, [])] or [ids[1]],
                    Tags=[{"Key": "owner", "Value": tag}])
    return out


def summary(config: pytest.Config, title: str, line: str) -> None:
    """Print past output capture (module teardown is captured): the figures go in the log."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        reporter.write_sep("-", title)
        reporter.write_line(line)
