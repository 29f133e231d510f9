"""The README's quick start for Terraform and Ansible, run as written: the `hcl` and `yaml` blocks
are taken from README.md, only the endpoint of `make run` (http://127.0.0.1:4567) swapped for the
test server's, and the keys exported as the README says."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import ROOT
from toolrun import PLAYBOOK, Cloud, Workdir, needs_terraform, play

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

MAKE_RUN = "http://127.0.0.1:4567"


def snippet(lang: str) -> str:
    quick = ROOT.joinpath("README.md").read_text().partition("## Quick start")[2].partition("\n## ")[0]
    blocks = re.findall(rf"^```{lang}\n(.*?)^```$", quick, flags=re.S | re.M)
    assert len(blocks) == 1, f"the README's quick start has {len(blocks)} {lang} blocks"
    assert MAKE_RUN in blocks[0]
    return blocks[0]


@needs_terraform
def test_the_readme_terraform_snippet(cloud: Cloud, tmp_path: Path) -> None:
    cloud = cloud.another_user("tf-readme")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.tf").write_text(snippet("hcl").replace(MAKE_RUN, cloud.endpoint))
    tf = Workdir(cloud, src, tmp_path / "tf")
    tf.init()
    tf.run("apply", "-input=false", "-auto-approve")
    ip = tf.outputs()["public_ip"]
    inst = [i for r in cloud.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web"]}])["Reservations"]
            for i in r["Instances"]]
    assert len(inst) == 1 and inst[0]["State"]["Name"] == "running" and inst[0]["PublicIpAddress"] == ip
    tf.run("destroy", "-input=false", "-auto-approve")


def test_the_readme_ansible_snippet(cloud: Cloud, tmp_path: Path) -> None:
    cloud = cloud.another_user("ansible-readme")
    assert PLAYBOOK.exists(), "ansible is not installed in the venv (make install)"
    book = tmp_path / "web.yml"
    book.write_text(snippet("yaml").replace(MAKE_RUN, cloud.endpoint))
    tasks = play(cloud, tmp_path, book, as_written=True)
    assert [t for t in tasks if t["failed"]] == [] and len(tasks) == 4, tasks
    inst = [i for r in cloud.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web"]}])["Reservations"]
            for i in r["Instances"]]
    assert len(inst) == 1 and inst[0]["State"]["Name"] == "running" and inst[0]["KeyName"] == "alice-key"
    assert tasks[-1]["msg"] == inst[0]["PublicIpAddress"]
