"""A guest on an Open vSwitch network with a VLAN tag, its security group enforced.

The network is an OVS bridge (userspace datapath, its own run directory) with VLAN 100; test
hosts are namespaces on OVS access ports. The guest reaches the VLAN through the controller's
per-VLAN Linux bridge (drivers/hypervisor/ovs_plug.py), where libvirt's nwfilter applies, so
the proof is in packets: a host on VLAN 100 allowed by the group pings the guest; a host with
an address of the same subnet on VLAN 200 does not (the tag isolates); a host on VLAN 100 the
group does not allow does not, until a rule lets it in.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.drivers.hypervisor.ovs_plug import HybridPlug

from .netlab import ping, wait_ping
from .test_guest_network import wait_console
from .test_security_groups import icmp_from, no_ping
from hil_lab import Ovs

NET = f"10.{200 + os.getpid() % 40}.{os.getpid() % 250}"
_lab: dict[str, Any] = {}


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class OvsHosts:
    """Namespaces on OVS access ports: `add(name, address, vlan)`."""

    def __init__(self, ovs: Ovs) -> None:
        self.ovs = ovs
        self.made: list[tuple[str, str]] = []

    def add(self, name: str, address: str, vlan: int) -> str:
        ns, port = f"{self.ovs.bridge}-{name}", f"{self.ovs.bridge}{name}"[:15]
        ip("netns", "add", ns)
        self.made.append((ns, port))
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("link", "set", port, "up")
        self.ovs.vsctl("add-port", self.ovs.bridge, port, f"tag={vlan}")
        return ns

    def close(self) -> None:
        for ns, port in self.made:
            ip("link", "del", port, check=False)
            ip("netns", "del", ns, check=False)


@pytest.fixture
def ovs_lab() -> Iterator[tuple[Ovs, OvsHosts]]:
    ovs = Ovs(suffix="g").start()
    hosts = OvsHosts(ovs)
    _lab["ovs"] = ovs
    try:
        yield ovs, hosts
    finally:   # after the cloud (a later fixture) is gone
        hosts.close()
        HybridPlug.of(ovs.bridge, 100, ovs.db).remove()
        ovs.stop()


def ovs_network(_work: Path) -> dict[str, Any]:
    ovs = _lab["ovs"]
    return {"networks": [{"name": "ovs100", "zone": "cloudctl-1a", "cidr": f"{NET}.0/24", "bridge": ovs.bridge,
                          "bridge_type": "openvswitch", "vlan": 100, "ovs_db": ovs.db}]}


@pytest.mark.cloud_config.with_args(ovs_network)
def test_guest_on_ovs_vlan_with_security_group(ovs_lab: tuple[Ovs, OvsHosts], bridged_cloud: Any) -> None:
    ovs, hosts = ovs_lab
    cloud, ec2 = bridged_cloud, bridged_cloud.ec2
    allowed = hosts.add("a", f"{NET}.2", 100)
    other_vlan = hosts.add("b", f"{NET}.3", 200)
    not_allowed = hosts.add("c", f"{NET}.5", 100)
    sg = ec2.create_security_group(GroupName="ovs", Description="ping from one host")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=icmp_from(cidr=f"{NET}.2/32"))
    guest_ip = f"{NET}.10"
    inst = cloud.run("#!/bin/sh\necho OVS-GUEST-UP\n", ip=guest_ip, SecurityGroupIds=[sg])
    iid = inst["InstanceId"]
    assert inst["PrivateIpAddress"] == guest_ip
    wait_console(ec2, iid, "OVS-GUEST-UP", timeout=240)

    # the guest's VLAN uplink is an OVS access port with the network's tag
    plug = HybridPlug.of(ovs.bridge, 100, ovs.db)
    assert ovs.vsctl("get", "Port", plug.ovs_port, "tag").strip() == "100"

    wait_ping(guest_ip, ns=allowed, timeout=120)
    assert no_ping(guest_ip, other_vlan), "a host on VLAN 200 reached a guest on VLAN 100"
    assert no_ping(guest_ip, not_allowed), "the security group let an address it does not allow in"

    # the group is updated live on the OVS network too
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=icmp_from(cidr=f"{NET}.5/32"))
    wait_ping(guest_ip, ns=not_allowed, timeout=120)
    assert no_ping(guest_ip, other_vlan)
    assert ping(guest_ip, allowed, count=2)
