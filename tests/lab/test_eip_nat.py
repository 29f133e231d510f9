"""Elastic IPs with packets: the shipped scripts/eip-nft.sh as the controller's associate and
disassociate scripts, and traffic from an "outside" network namespace to the elastic address
(topology in tests/eipnet.py; the machine's own network is not touched).

The guests stand in for instances launched on test:/// hosts: each namespace holds the private
address the controller gave its instance and answers ping and a TCP hello naming itself. The
"outside" namespace has a route to the elastic pool via the host and none to the private
subnet, so a reply only comes back through the NAT.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from eipnet import GATEWAY, OUTSIDE, PEER, POOL, SUBNET, Net, sh
from support import Server, wait_state, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
                                reason="needs root, nft (nftables) and ip (iproute2)")


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.build()
        yield n
    finally:
        n.teardown()
    assert not {n.host, n.outside} & set(sh("ip", "netns", "list").stdout.split())


def test_traffic_to_the_elastic_ip_reaches_the_instance_it_is_associated_with(
        net: Net, tmp_path: Path, model_cache: Path) -> None:
    # The controller runs the shipped script on "the host": here, inside the host namespace.
    wrapper = net.wrapper(tmp_path / "eip-in-host-ns.sh")
    d = tmp_path / "srv"
    d.mkdir()
    srv = Server(write_config(d, model_cache, networks=[
        {"name": "eip-lab", "zone": "cloudctl-1a", "cidr": SUBNET},
        {"name": "other", "zone": "cloudctl-1b", "cidr": "10.129.0.0/16"}], elastic_ips={
        "pool": [POOL], "associate_script": str(wrapper), "disassociate_script": str(wrapper)})).start()
    try:
        user = srv.create_user("nat")
        ec2: Any = boto3.client("ec2", endpoint_url=srv.endpoint, region_name="cloudctl-1",
                                aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                                config=BotoConfig(retries={"total_max_attempts": 1}))
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
        ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2,
                                                          Placement={"AvailabilityZone": "cloudctl-1a"})["Instances"]]
        insts = {i["InstanceId"]: i for i in wait_state(ec2, ids, "running")}
        g1, g2 = (insts[i]["PrivateIpAddress"] for i in ids)
        net.guest("g1", g1)
        net.guest("g2", g2)
        assert net.ping(net.guests["g1"], GATEWAY) and net.ping(net.guests["g2"], GATEWAY)
        eip = ec2.allocate_address()["PublicIp"]
        # Not associated: the address leads nowhere.
        assert not net.ping(net.outside, eip)
        assert net.ask(eip).startswith("FAIL")

        assoc = ec2.associate_address(PublicIp=eip, InstanceId=ids[0])["AssociationId"]
        assert net.ping(net.outside, eip)
        assert net.ask(eip) == "g1"
        # Traffic the instance sends out leaves from the elastic address (SNAT): the outside
        # side sees the elastic IP as the peer (it has no route to the private subnet at all).
        peer = subprocess.Popen(["ip", "netns", "exec", net.outside, sys.executable, "-c", PEER, "7008"],
                                stdout=subprocess.PIPE, text=True)
        net.procs.append(peer)
        connect = ("import socket,time\nfor _ in range(50):\n try:\n"
                   f"  socket.create_connection(('{OUTSIDE}', 7008), 2).close(); break\n"
                   " except OSError: time.sleep(0.1)")
        sh("ip", "netns", "exec", net.guests["g1"], sys.executable, "-c", connect)
        assert peer.stdout is not None and peer.stdout.readline().strip() == eip
        assert net.ping(net.guests["g1"], OUTSIDE)
        assert not net.ping(net.guests["g2"], OUTSIDE)     # g2 has no elastic IP: no way out

        # Moved to the other instance: the same address now reaches g2.
        ec2.associate_address(PublicIp=eip, InstanceId=ids[1], AllowReassociation=True)
        assert net.ask(eip) == "g2"
        assert net.ping(net.guests["g2"], OUTSIDE) and not net.ping(net.guests["g1"], OUTSIDE)

        # A restart re-applies the NAT from the state: flush the host's table behind the
        # controller's back, restart, and the address works again.
        sh("ip", "netns", "exec", net.host, "nft", "delete", "table", "ip", "cloudctl_eip")
        assert net.ask(eip).startswith("FAIL")
        srv.stop()
        srv.start()
        deadline = time.time() + 30      # re-association runs in the background after start
        while f"{eip} : {g2}" not in net.nft_maps() and time.time() < deadline:
            time.sleep(0.1)
        assert f"{eip} : {g2}" in net.nft_maps()
        assert net.ask(eip) == "g2"

        # Disassociated: nothing reaches either instance through it any more.
        ec2.disassociate_address(PublicIp=eip)
        assert not net.ping(net.outside, eip)
        assert net.ask(eip).startswith("FAIL")
        assert not net.ping(net.guests["g2"], OUTSIDE)
        assert eip not in net.nft_maps()
        assert ec2.describe_addresses(Filters=[{"Name": "association-id", "Values": [assoc]}])["Addresses"] == []
        ec2.release_address(PublicIp=eip)
        ec2.terminate_instances(InstanceIds=ids)
    finally:
        srv.stop()
