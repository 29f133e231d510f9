"""The AWS SDK for JavaScript v3 (@aws-sdk/client-ec2, pinned in js/package.json, installed by
`make install`): js/workflow.mjs drives the everyday EC2 calls and the SDK's own waiters and
paginator; each step must succeed and show what the user asked for."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from toolrun import Cloud

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

JS = Path(__file__).parent / "js"


def test_the_javascript_sdk_workflow(cloud: Cloud) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (make install installs Debian's nodejs)"
    assert (JS / "node_modules" / "@aws-sdk" / "client-ec2").is_dir(), "run make install (make js)"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(JS), **cloud.env()}
    run = subprocess.run([node, str(JS / "workflow.mjs")], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    steps: dict[str, Any] = {s["step"]: s for s in report["steps"]}
    failed = [s for s in report["steps"] if not s["ok"]]
    assert not failed, failed
    assert len(steps) == 36 and report["steps"][-1]["step"] == "DeleteKeyPair", list(steps)
    d = {name: s["detail"] for name, s in steps.items()}
    assert d["DescribeRegions"] == ["cloudctl-1"]
    assert d["DescribeAvailabilityZones"] == ["cloudctl-1a", "cloudctl-1b"]
    assert all(s["mapPublic"] for s in d["DescribeSubnets"])
    assert d["CreateKeyPair"] == {"name": "js-key", "pem": True}
    assert d["DescribeSecurityGroups"] == ["tcp/22-22/192.0.2.0/24"]
    iid = report["iid"]
    assert d["RunInstances"]["state"] == "pending"
    got = d["DescribeInstances"]
    assert got["state"] == "running" and got["key"] == "js-key" and got["tags"] == {"Name": "js-vm"}
    assert got["publicIp"], "the default subnets map a public address on launch"
    assert d["CreateTags"] == [iid] and iid in d["paginateDescribeInstances"]
    assert d["AttachVolume"] == "attaching" and d["DetachVolume"] == "detaching"
    assert d["DescribeAddresses"] == [{"ip": d["AllocateAddress"]["ip"], "instance": iid}]
    assert d["StopInstances"] == {"current": "stopping", "previous": "running"}
    assert d["TerminateInstances"] == {"current": "shutting-down", "previous": "running"}
    for waiter in ("waitUntilInstanceRunning", "waitUntilInstanceStopped", "waitUntilInstanceTerminated"):
        assert d[waiter] == "SUCCESS"
    ec2 = cloud.ec2()
    assert ec2.describe_key_pairs()["KeyPairs"] == [] and ec2.describe_addresses()["Addresses"] == []
