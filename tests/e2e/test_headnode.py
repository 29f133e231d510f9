"""A headnode (a project's VM) on its project's bare-metal network, proven with packets.

The switch is Open vSwitch behind a real sshd (tests/hil_lab.py), nodes are namespaces on its
ports, and the controller drives both the switch (node ports, over SSH) and the headnode's NIC
(an access port of the network's VLAN on the same OVS bridge, configured as the headnode
bridge). The headnode of project A answers project A's node, not project B's node, which has an
address of the same subnet on B's network.
"""
from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.drivers.hypervisor.ovs_plug import HybridPlug

from .netlab import ping, wait_ping
from hil_client import Hil
from hil_lab import Nodes, Ovs, Sshd

pytestmark = pytest.mark.skipif(shutil.which("ovs-vswitchd") is None or not Path("/usr/sbin/sshd").exists(),
                                reason="needs openvswitch-switch and openssh-server")

HEADNODE_IP = "10.251.0.50"
USER_DATA = f"""#!/bin/sh
# the first NIC is on the cloud's network; the headnode's hnic is the second
ip link set eth1 up && ip addr add {HEADNODE_IP}/24 dev eth1 && echo HNIC-UP
"""
_lab: dict[str, Any] = {}


@pytest.fixture
def switch_lab() -> Iterator[tuple[Ovs, Sshd, Nodes]]:
    ovs, sshd = Ovs(suffix="h"), Sshd()
    nodes = Nodes(ovs)
    _lab["ovs"] = ovs
    vlans: list[int] = []
    _lab["vlans"] = vlans
    try:
        ovs.start()
        sshd.start()
        for i in (1, 2):
            nodes.add(i)
        yield ovs, sshd, nodes
    finally:   # after the cloud (a later fixture) is gone
        for v in vlans:
            HybridPlug.of(ovs.bridge, v, ovs.db).remove()
        nodes.remove_all()
        sshd.stop()
        ovs.stop()


def headnode_bridge(_work: Path) -> dict[str, Any]:
    ovs = _lab["ovs"]
    return {"baremetal": {"vlans": "1300-1309", "audit_on_start": "off", "headnode_bridge": ovs.bridge,
                          "headnode_ovs_db": ovs.db}}


@pytest.mark.cloud_config.with_args(headnode_bridge)
def test_headnode_reaches_its_projects_node_only(switch_lab: tuple[Ovs, Sshd, Nodes], bridged_cloud: Any) -> None:
    ovs, sshd, nodes = switch_lab
    srv = bridged_cloud.server
    h = Hil(srv.admin_url, token=srv.token)
    h.ok("PUT", "/switch/ovs1", {"type": "ovs", "hostname": "127.0.0.1", "ssh_port": sshd.port, "username": "root",
                                 "host_key": sshd.host_key, "client_key": str(sshd.client_key),
                                 "bridge": ovs.bridge, "ovsdb": ovs.db})
    for p, i in (("A", 1), ("B", 2)):
        h.ok("PUT", f"/project/{p}")
        h.ok("PUT", f"/network/{p}-net", {"owner": p, "access": [p], "net_id": ""})
        _lab["vlans"].append(h.vlan(f"{p}-net"))
        h.ok("PUT", f"/node/n{i}", {})
        h.ok("PUT", f"/node/n{i}/nic/eth0", {"macaddr": f"52:54:00:00:02:0{i}"})
        h.ok("PUT", f"/switch/ovs1/port/{nodes.port(i)}")
        h.ok("POST", f"/switch/ovs1/port/{nodes.port(i)}/connect_nic", {"node": f"n{i}", "nic": "eth0"})
        h.ok("POST", f"/project/{p}/connect_node", {"node": f"n{i}"})
        assert h.connect(f"n{i}", "eth0", f"{p}-net")["status"] == "done"

    # the admin makes project A's EC2 user first and so holds its keys: the headnode is its instance
    ec2 = srv.client(srv.create_user("hil-A"))
    images = h.ok("GET", "/headnode_images/")
    assert "guest-machine" in images
    h.ok("PUT", "/headnode/hn-a", {"project": "A", "base_img": "guest-machine", "user_data": USER_DATA,
                                   "instance_type": "t3.nano"})
    h.ok("PUT", "/headnode/hn-a/hnic/eth1")
    h.ok("POST", "/headnode/hn-a/hnic/eth1/connect_network", {"network": "A-net"})
    h.ok("POST", "/headnode/hn-a/start")
    shown = h.ok("GET", "/headnode/hn-a")
    iid = shown["instance_id"]
    try:
        assert shown["owner"] == "hil-A"
        assert [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]] == [iid]
        _console(srv, iid, "HNIC-UP")

        # the hnic is an access port of A's VLAN on the switch's bridge
        vlan_a = h.vlan("A-net")
        plug = HybridPlug.of(ovs.bridge, vlan_a, ovs.db)
        assert ovs.vsctl("get", "Port", plug.ovs_port, "tag").strip() == str(vlan_a)

        wait_ping(HEADNODE_IP, ns=nodes.ns(1), timeout=60)
        assert not ping(HEADNODE_IP, nodes.ns(2), count=3), "project B's node reached project A's headnode"

        # the node leaves A's network: the headnode loses it; back on it, they meet again
        assert h.detach("n1", "eth0", "A-net")["status"] == "done"
        assert not ping(HEADNODE_IP, nodes.ns(1), count=3), "a node off the headnode's network still reached it"
        assert h.connect("n1", "eth0", "A-net")["status"] == "done"
        wait_ping(HEADNODE_IP, ns=nodes.ns(1), timeout=30)
    finally:
        h.call("DELETE", "/headnode/hn-a")
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def _console(srv: Any, iid: str, needle: str, timeout: float = 240) -> str:
    """The instance's console (admin endpoint) once `needle` shows on it."""
    t0 = time.monotonic()
    text = ""
    while time.monotonic() - t0 < timeout:
        req = urllib.request.Request(f"{srv.admin_url}/v0/console/{iid}",
                                     headers={"Authorization": f"Bearer {srv.token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode(errors="replace")
        if needle in text:
            return text
        time.sleep(2)
    raise AssertionError(f"{needle!r} not on {iid}'s console within {timeout:.0f} s:\n{text[-2000:]}")
