"""Issue 4's acceptance, with the AWS CLI alone: a security group opening port 22 to one CIDR,
two guests with distinct private addresses, the firewall holding (packets from a namespace on
the bridge), and an Elastic IP moved from one guest to the other (the admin's scripts called
with each guest's address)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import MEASUREMENTS

RECORDER = "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/eip-calls.log\"\n"


def eip_config(d: Path) -> dict[str, Any]:
    script = d / "eip-record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    return {"elastic_ips": {"pool": ["198.51.100.16/28"], "associate_script": str(script),
                            "disassociate_script": str(script)}}


def aws(cloud: Any, *args: str) -> Any:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": cloud.user["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": cloud.user["SecretAccessKey"], "AWS_DEFAULT_REGION": "cloudctl-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    out = subprocess.run([str(Path(sys.executable).parent / "aws"), "--endpoint-url", cloud.server.endpoint,
                          "--output", "json", "ec2", *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def http_get(ns: str, ip: str, timeout: float = 3.0) -> str | None:
    """What the guest's port 22 answers, from a namespace; None if nothing got through."""
    code = (f"import urllib.request\ntry:\n print(urllib.request.urlopen('http://{ip}:22/', timeout={timeout})"
            f".read().decode().strip())\nexcept Exception:\n print('')")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout + 30)
    return out.stdout.strip() or None


def wait_get(ns: str, ip: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = http_get(ns, ip)
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"{ip}:22 never answered from {ns}")


@pytest.mark.cloud_config.with_args(eip_config)
def test_aws_cli_security_group_two_guests_and_a_moving_elastic_ip(bridged_cloud: Any, tmp_path: Path) -> None:
    cloud = bridged_cloud
    inside = cloud.lab.add_host("in", cloud.address(200))
    outside = cloud.lab.add_host("out", cloud.address(201))
    t0 = time.monotonic()
    gid = aws(cloud, "create-security-group", "--group-name", "web", "--description", "port 22 for one CIDR")[
        "GroupId"]
    aws(cloud, "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp", "--port", "22",
        "--cidr", f"{cloud.address(200)}/32")
    user_data = tmp_path / "web.sh"
    user_data.write_text("#!/bin/sh\nmkdir -p /www\nhostname > /www/index.html\nhttpd -p 22 -h /www\n"
                         "echo WEB-UP\n")
    res = aws(cloud, "run-instances", "--image-id", cloud.image_id, "--instance-type", "t3.nano", "--count", "2",
              "--subnet-id", cloud.subnet_id, "--security-group-ids", gid, "--user-data", f"file://{user_data}")
    ids = [i["InstanceId"] for i in res["Instances"]]
    aws(cloud, "wait", "instance-running", "--instance-ids", *ids)
    insts = {i["InstanceId"]: i for r in aws(cloud, "describe-instances", "--instance-ids", *ids)["Reservations"]
             for i in r["Instances"]}
    ips = [insts[i]["PrivateIpAddress"] for i in ids]
    assert len(set(ips)) == 2 and all(ip.startswith(str(cloud.lab.net.network_address)[:-1]) for ip in ips)
    assert all(g["GroupId"] == gid for i in insts.values() for g in i["SecurityGroups"])

    # The firewall holds: the allowed CIDR reaches port 22 on both guests, another address does not.
    for iid, ip in zip(ids, ips):
        assert wait_get(inside, ip) == insts[iid]["PrivateDnsName"]     # each guest its own page
        got = http_get(outside, ip)
        if got is not None:   # (diagnostics while developing)
            rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
            xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", iid],
                                 capture_output=True, text=True).stdout
            flt = subprocess.run(["virsh", "-c", "qemu:///system", "nwfilter-dumpxml", "cloudctl-" + iid],
                                 capture_output=True, text=True).stdout
            raise AssertionError(f"{ip} reachable from outside\n{rules}\n{xml[xml.find('<interface'):][:800]}\n{flt}")
    MEASUREMENTS["AWS CLI: group + 2 guests serving port 22 to the allowed CIDR"] = f"{time.monotonic() - t0:.1f} s"

    # An Elastic IP moved from one guest to the other; the admin's script follows each move.
    alloc = aws(cloud, "allocate-address", "--domain", "vpc")
    eip = alloc["PublicIp"]
    aws(cloud, "associate-address", "--allocation-id", alloc["AllocationId"], "--instance-id", ids[0])
    seen = aws(cloud, "describe-addresses", "--public-ips", eip)["Addresses"][0]
    assert (seen["InstanceId"], seen["PrivateIpAddress"]) == (ids[0], ips[0])
    aws(cloud, "associate-address", "--allocation-id", alloc["AllocationId"], "--instance-id", ids[1],
        "--allow-reassociation")
    seen = aws(cloud, "describe-addresses", "--public-ips", eip)["Addresses"][0]
    assert (seen["InstanceId"], seen["PrivateIpAddress"]) == (ids[1], ips[1])
    desc = aws(cloud, "describe-instances", "--instance-ids", ids[1])["Reservations"][0]["Instances"][0]
    assert desc["PublicIpAddress"] == eip
    calls = [line.split()[:2] for line in (cloud.work / "eip-calls.log").read_text().splitlines()]
    assert [eip, ips[0]] in calls and [eip, ips[1]] in calls
    assert calls.index([eip, ips[0]]) < calls.index([eip, ips[1]])
    aws(cloud, "disassociate-address", "--public-ip", eip)
    aws(cloud, "release-address", "--allocation-id", alloc["AllocationId"])
