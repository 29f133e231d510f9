"""Terraform with the hashicorp/aws provider: init, plan, apply, plan again (no changes), destroy,
for terraform/full (key pair, security group with rules, instance with tags, user data and root
volume, a volume and its attachment, an Elastic IP; data sources aws_vpc, aws_subnets, aws_ami,
aws_availability_zones, aws_security_group) and terraform/default-settings (the provider without
its skip flags: STS and IAM at the same endpoint).

Neither Terraform nor the provider can be downloaded here (no registry but PyPI, Debian's and
npm's is reachable, and none of those ships them), so both are discovered: `terraform` on PATH,
the provider in a plugin directory laid out as Terraform's filesystem mirror
(registry.terraform.io/hashicorp/aws/VERSION/OS_ARCH/). Where either is missing the test is
skipped, saying which."""
from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Cloud

pytestmark = pytest.mark.conformance

HERE = Path(__file__).parent / "terraform"
PROVIDER = "registry.terraform.io/hashicorp/aws"
# Where a provider may already be: $CLOUDCTL_TF_PLUGIN_DIR, the plugin cache, Terraform's implied
# local mirror directories, and a mirror an admin put under /opt.
CANDIDATES = [os.environ.get("CLOUDCTL_TF_PLUGIN_DIR", ""), os.environ.get("TF_PLUGIN_CACHE_DIR", ""),
              "~/.terraform.d/plugins", "~/.local/share/terraform/plugins", "/usr/local/share/terraform/plugins",
              "/usr/share/terraform/plugins", "/opt/*"]


def _arch() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{platform.system().lower()}_{machine}"


def plugin_dir() -> Path | None:
    """A directory holding the hashicorp/aws provider for this platform, as Terraform's mirror lays it out."""
    for c in filter(None, CANDIDATES):
        for d in sorted(glob.glob(os.path.expanduser(c))):
            if glob.glob(os.path.join(d, PROVIDER, "*", _arch(), "terraform-provider-aws*")):
                return Path(d)
    return None


TERRAFORM = shutil.which("terraform")
PLUGINS = plugin_dir()
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None or PLUGINS is None,
    reason="terraform is not on PATH" if TERRAFORM is None else
    f"no hashicorp/aws provider for {_arch()} in a plugin directory (set CLOUDCTL_TF_PLUGIN_DIR to a "
    f"filesystem mirror holding {PROVIDER}); neither can be downloaded here")


class Workdir:
    def __init__(self, cloud: Cloud, config: str, where: Path) -> None:
        shutil.copytree(HERE / config, where)
        self.dir = where
        rc = where / "terraformrc"
        rc.write_text("")       # no user CLI config: plugins come from PLUGINS only, nothing from the network
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(where), "TF_CLI_CONFIG_FILE": str(rc),
                    "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_VAR_endpoint": cloud.endpoint,
                    "AWS_ACCESS_KEY_ID": cloud.access_key, "AWS_SECRET_ACCESS_KEY": cloud.secret_key,
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        assert TERRAFORM is not None
        got = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=self.dir, env=self.env, capture_output=True,
                             text=True, timeout=240)
        assert got.returncode in ok, f"terraform {args[0]} exited {got.returncode}:\n{got.stdout}\n{got.stderr}"
        return got

    def init(self) -> None:
        self.run("init", "-input=false", f"-plugin-dir={PLUGINS}")

    def plan(self) -> int:
        """0: no changes, 2: changes to make (plan -detailed-exitcode); saved for `apply`."""
        return self.run("plan", "-input=false", "-detailed-exitcode", "-out=tfplan", ok=(0, 2)).returncode

    def apply(self) -> None:
        """The plan just made, as made: Terraform does not plan again."""
        self.run("apply", "-input=false", "tfplan")

    def outputs(self) -> dict[str, object]:
        return {k: v["value"] for k, v in json.loads(self.run("output", "-json").stdout).items()}


@needs_terraform
def test_terraform_init_plan_apply_plan_destroy(cloud: Cloud, tmp_path: Path) -> None:
    tf = Workdir(cloud, "full", tmp_path / "full")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    assert out["zones"] == ["cloudctl-1a", "cloudctl-1b"] and out["vpc_cidr"] == "10.128.0.0/9"
    ec2 = cloud.server.client({"AccessKeyId": cloud.access_key, "SecretAccessKey": cloud.secret_key})
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
    tf = Workdir(cloud, "default-settings", tmp_path / "default-settings")
    tf.init()
    assert tf.plan() == 2
    tf.apply()
    out = tf.outputs()
    ec2 = cloud.server.client({"AccessKeyId": cloud.access_key, "SecretAccessKey": cloud.secret_key})
    owner = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["OwnerId"]
    assert out["account"] == owner and out["zones"] == ["cloudctl-1a", "cloudctl-1b"]
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["tf-default-key"]
    assert tf.plan() == 0
    tf.run("destroy", "-input=false", "-auto-approve")
    assert ec2.describe_key_pairs()["KeyPairs"] == []
