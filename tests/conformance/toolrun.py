"""What the conformance tests share: the user's view of a served cloudctl (`Cloud`), and running
the tools on it: Terraform (found, with its provider, where the machine has them) and Ansible.

Neither Terraform nor the hashicorp/aws provider can be downloaded here (no registry but PyPI,
Debian's and npm's is reachable, and none of those ships them), so both are discovered: `terraform`
on PATH, the provider in a plugin directory laid out as Terraform's filesystem mirror
(registry.terraform.io/hashicorp/aws/VERSION/OS_ARCH/). Tests needing them are skipped, saying
which is missing, where either is."""
from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import REGION, Server

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Cloud:
    """What a user is handed: the endpoint, the region and a user's keys."""

    server: Server
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The AWS variables every tool reads (no shared config or profile files are consulted)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}

    def another_user(self, name: str) -> "Cloud":
        """The same cloud as a new user: tests sharing a server do not see each other's resources."""
        user = self.server.create_user(name)
        return Cloud(self.server, self.endpoint, user["AccessKeyId"], user["SecretAccessKey"], self.region)

    def ec2(self) -> Any:
        """A boto3 client as this user, to check what the tools made."""
        return self.server.client({"AccessKeyId": self.access_key, "SecretAccessKey": self.secret_key})


# -- Terraform ------------------------------------------------------------------------------------
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
    def __init__(self, cloud: Cloud, config: Path, where: Path) -> None:
        shutil.copytree(config, where)
        self.dir = where
        rc = where / "terraformrc"
        rc.write_text("")       # no user CLI config: plugins come from PLUGINS only, nothing from the network
        self.env: dict[str, str] = {
                    "PATH": os.environ.get("PATH", ""), "HOME": str(where), "TF_CLI_CONFIG_FILE": str(rc),
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


# -- Ansible --------------------------------------------------------------------------------------
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def play(cloud: Cloud, home: Path, playbook: Path, as_written: bool = False,
         extra_vars: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Run a playbook; its tasks as {name, changed, failed, msg} from the JSON callback. With
    `as_written`, only the keys come from the environment (as the README's quick start has it):
    the playbook names its endpoint and Python itself. `extra_vars`: `name=value` each (-e)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"),
           "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "AWS_ACCESS_KEY_ID": cloud.access_key, "AWS_SECRET_ACCESS_KEY": cloud.secret_key,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    if not as_written:
        env |= {"ANSIBLE_PYTHON_INTERPRETER": sys.executable, "AWS_URL": cloud.endpoint, **cloud.env()}
    extra = [a for v in extra_vars for a in ("-e", v)]
    run = subprocess.run([str(PLAYBOOK), "-i", "localhost,", *extra, str(playbook)], env=env, capture_output=True,
                         text=True, timeout=240, cwd=home)
    assert "{" in run.stdout, run.stdout + run.stderr
    out = json.loads(run.stdout[run.stdout.index("{"):])
    tasks = []
    for p in out["plays"]:
        for t in p["tasks"]:
            r = t["hosts"].get("localhost", {})
            tasks.append({"name": t["task"]["name"], "changed": bool(r.get("changed")),
                          "failed": bool(r.get("failed")), "msg": r.get("msg") or r.get("exception", "")[-600:]})
    return tasks
