"""Terraform with the hashicorp/aws provider: init, plan, apply, plan again (no changes), destroy,
for terraform/full (key pair, security group with rules, instance with tags, user data and root
volume, a volume and its attachment, an Elastic IP; data sources aws_vpc, aws_subnets, aws_ami,
aws_availability_zones, aws_security_group) and terraform/default-settings (the provider without
its skip flags: STS and IAM at the same endpoint).

Terraform and the provider are found where the machine has them (`toolrun`); where either is
missing the tests are skipped, saying which."""
from __future__ import annotations

from pathlib import Path

import pytest

from toolrun import Cloud, Workdir, needs_terraform

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

HERE = Path(__file__).parent / "terraform"


@needs_terraform
def test_terraform_init_plan_apply_plan_destroy(cloud: Cloud, tmp_path: Path) -> None:
    tf = Workdir(cloud, HERE / "full", tmp_path / "full")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    assert out["zones"] == ["cloudctl-1a", "cloudctl-1b"] and out["vpc_cidr"] == "10.128.0.0/9"
    ec2 = cloud.ec2()
    inst = ec2.describe_instances(InstanceIds=[str(out["instance_id"])])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running" and inst["KeyName"] == "tf-key"
    assert {t["Key"]: t["Value"] for t in inst["Tags"]} == {"Name": "tf-vm", "role": "conformance"}
    assert inst["PublicIpAddress"] == out["public_ip"]
    assert inst["SubnetId"] in out["subnets"]  # type: ignore[operator]
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}
    assert set(devices) == {inst["RootDeviceName"], "/dev/sdf"}
    root = ec2.describe_volumes(VolumeIds=[devices[inst["RootDeviceName"]]])["Volumes"][0]
    assert root["Size"] == 2 and {t["Key"]: t["Value"] for t in root.get("Tags", [])} == {"Name": "tf-root"}
    web = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["tf-web"]}])["SecurityGroups"][0]
    assert sorted(p["FromPort"] for p in web["IpPermissions"]) == [22, 80]
    assert tf.plan() == 0, "a second plan must find nothing to change"
    tf.run("destroy", "-input=false", "-auto-approve")
    assert ec2.describe_key_pairs()["KeyPairs"] == [] and ec2.describe_addresses()["Addresses"] == []
    assert [v for v in ec2.describe_volumes()["Volumes"] if v["State"] != "deleting"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


@needs_terraform
def test_terraform_with_the_providers_default_settings(cloud: Cloud, tmp_path: Path) -> None:
    tf = Workdir(cloud, HERE / "default-settings", tmp_path / "default-settings")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    ec2 = cloud.ec2()
    owner = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["OwnerId"]
    assert out["account"] == owner and out["zones"] == ["cloudctl-1a", "cloudctl-1b"]
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["tf-default-key"]
    assert tf.plan() == 0
    tf.run("destroy", "-input=false", "-auto-approve")
    assert ec2.describe_key_pairs()["KeyPairs"] == []


@needs_terraform
def test_terraform_launch_template_and_an_instance_from_it(cloud: Cloud, tmp_path: Path) -> None:
    """aws_launch_template: create, read back without a diff, an aws_instance launched from it,
    destroy (the instance, then the template)."""
    me = cloud.another_user("tf-launch-template")
    tf = Workdir(me, HERE / "launch-template", tmp_path / "launch-template")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    ec2 = me.ec2()
    tid = str(out["template_id"])
    lt = ec2.describe_launch_templates(LaunchTemplateIds=[tid])["LaunchTemplates"][0]
    assert lt["LaunchTemplateName"] == "tf-web" and {t["Key"]: t["Value"] for t in lt["Tags"]} == {
        "team": "conformance"}
    data = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"][0][
        "LaunchTemplateData"]
    assert data["InstanceType"] == "t3.nano" and data["InstanceInitiatedShutdownBehavior"] == "terminate"
    inst = ec2.describe_instances(InstanceIds=[str(out["instance_id"])])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "t3.nano" and inst["State"]["Name"] in ("pending", "running")
    assert {t["Key"]: t["Value"] for t in inst["Tags"]} == {
        "Name": "tf-from-template", "aws:ec2launchtemplate:id": tid,
        "aws:ec2launchtemplate:version": str(out["latest_version"])}
    assert "/dev/sdf" in {m["DeviceName"] for m in inst["BlockDeviceMappings"]}
    again = tf.run("plan", "-input=false", "-detailed-exitcode", ok=(0, 2))
    assert again.returncode == 0, f"a second plan must find nothing to change:\n{again.stdout}"
    tf.run("destroy", "-input=false", "-auto-approve")
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"}
