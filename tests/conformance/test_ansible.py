"""Ansible with its amazon.aws collection (the `ansible` package, installed by `make install`):
ansible/site.yml makes a key pair, a security group, an instance, a volume, an Elastic IP and tags,
and reads them back with the *_info modules. Run twice: every task ok the first time, nothing
changed the second (the modules find what is there and leave it); ansible/teardown.yml then
removes it all."""
from __future__ import annotations

from pathlib import Path

import pytest

from toolrun import PLAYBOOK, Cloud, play

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

HERE = Path(__file__).parent / "ansible"
# Tasks that make something the first time (changed), and find it in place the second (ok).
MAKERS = ["Key pair", "Security group", "Instance", "Data volume, attached", "Elastic IP", "Tags"]


def test_the_ansible_playbook_is_ok_then_idempotent(cloud: Cloud, tmp_path: Path) -> None:
    assert PLAYBOOK.exists(), "ansible is not installed in the venv (make install)"
    first = play(cloud, tmp_path, HERE / "site.yml")
    assert [t for t in first if t["failed"]] == [], first
    assert [t["name"] for t in first][-1] == "What was asked for is what is there"    # every task ran
    assert [t["name"] for t in first if t["changed"]] == MAKERS
    second = play(cloud, tmp_path, HERE / "site.yml")
    assert [t for t in second if t["failed"]] == [], second
    assert [t["name"] for t in second if t["changed"]] == []
    assert len(second) == len(first)
    down = play(cloud, tmp_path, HERE / "teardown.yml")
    assert [t for t in down if t["failed"]] == [], down
    assert [t["name"] for t in down if not t["changed"]] == ["The instance"]
    ec2 = cloud.ec2()
    assert ec2.describe_key_pairs()["KeyPairs"] == [] and ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    states = {i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert states == {"terminated"}


def test_ec2_launch_template_made_kept_versioned_removed(cloud: Cloud, tmp_path: Path) -> None:
    """amazon.aws.ec2_launch_template: made (changed), run again (unchanged), a new setting (a new
    version, the default), removed (state=absent)."""
    me = cloud.another_user("ansible-lt")
    book = HERE / "launch_template.yml"

    def changed(*extra: str) -> list[str]:
        tasks = play(me, tmp_path, book, extra_vars=extra)
        assert [t for t in tasks if t["failed"]] == [], tasks
        assert tasks[-1]["name"] == "What was asked for is what is there"
        return [t["name"] for t in tasks if t["changed"]]

    assert changed() == ["Launch template"]
    assert changed() == []
    assert changed("size=t3.micro") == ["Launch template"]
    lt = me.ec2().describe_launch_templates(LaunchTemplateNames=["ans-lt"])["LaunchTemplates"][0]
    assert (lt["LatestVersionNumber"], lt["DefaultVersionNumber"]) == (2, 2)
    assert changed("size=t3.micro", "gone=true") == ["Launch template"]
    assert me.ec2().describe_launch_templates()["LaunchTemplates"] == []
