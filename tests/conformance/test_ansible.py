"""Ansible with its amazon.aws collection (the `ansible` package, installed by `make install`):
ansible/site.yml makes a key pair, a security group, an instance, a volume, an Elastic IP and tags,
and reads them back with the *_info modules. Run twice: every task ok the first time, nothing
changed the second (the modules find what is there and leave it); ansible/teardown.yml then
removes it all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Cloud

pytestmark = pytest.mark.conformance

HERE = Path(__file__).parent / "ansible"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# Tasks that make something the first time (changed), and find it in place the second (ok).
MAKERS = ["Key pair", "Security group", "Instance", "Data volume, attached", "Elastic IP", "Tags"]


def play(cloud: Cloud, home: Path, name: str) -> list[dict[str, Any]]:
    """Run a playbook; its tasks as (name, changed, failed, msg) from the JSON callback."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"),
           "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "AWS_URL": cloud.endpoint, **cloud.env()}
    run = subprocess.run([str(PLAYBOOK), "-i", "localhost,", str(HERE / name)], env=env, capture_output=True,
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


def test_the_ansible_playbook_is_ok_then_idempotent(cloud: Cloud, tmp_path: Path) -> None:
    assert PLAYBOOK.exists(), "ansible is not installed in the venv (make install)"
    first = play(cloud, tmp_path, "site.yml")
    assert [t for t in first if t["failed"]] == [], first
    assert [t["name"] for t in first][-1] == "What was asked for is what is there"    # every task ran
    assert [t["name"] for t in first if t["changed"]] == MAKERS
    second = play(cloud, tmp_path, "site.yml")
    assert [t for t in second if t["failed"]] == [], second
    assert [t["name"] for t in second if t["changed"]] == []
    assert len(second) == len(first)
    down = play(cloud, tmp_path, "teardown.yml")
    assert [t for t in down if t["failed"]] == [], down
    assert [t["name"] for t in down if not t["changed"]] == ["The instance"]
    ec2 = cloud.server.client({"AccessKeyId": cloud.access_key, "SecretAccessKey": cloud.secret_key})
    assert ec2.describe_key_pairs()["KeyPairs"] == [] and ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states == {"terminated"}
