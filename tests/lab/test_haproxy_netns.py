"""A load balancer in a network namespace of its own, plugged into a host bridge as a guest is:
two backend namespaces serve HTTP on the bridge, a client namespace on the same bridge reaches the
balancer's address and gets answers from both; removal takes the namespace and veth away. Its
security groups' ingress is enforced in its namespace: real connections from an allowed and a
disallowed client, before and after the rules change.

Linux bridge always; Open vSwitch with a VLAN (the per-VLAN Linux bridge guests join) when
openvswitch is installed."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudctl.drivers.hypervisor.ovs_plug import HybridPlug
from cloudctl.drivers.loadbalancer.base import Backend, BalancerSpec, HealthCheck, IngressRule, Listener, Placement
from cloudctl.drivers.loadbalancer.haproxy import HaproxyDriver
from cloudctl.drivers.loadbalancer.netns import Netns

from hil_lab import Ovs
from support.http_backends import HelloServer

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package)")

TAG = f"hx{os.getpid() % 100000}"
PORT = 8080

# Asks the balancer n times from inside a namespace (fresh connection each time), prints the answers.
ASK = """
import sys, urllib.request
for _ in range(int(sys.argv[2])):
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())
    except OSError as e:
        print("FAIL", e)
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Net:
    """A bridge with namespaces on it; everything made is recorded and deleted at the end."""

    subnet: str = field(default_factory=lambda: f"10.{random.randint(200, 250)}.{random.randint(0, 255)}")
    namespaces: list[str] = field(default_factory=list)
    servers: list[HelloServer] = field(default_factory=list)

    def host(self, bridge: str, name: str, last: int) -> tuple[str, str]:
        ns, veth = f"{TAG}{name}", f"{TAG}{name}h"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "addr", "add", f"{self.subnet}.{last}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "set", veth, "master", bridge)
        ip("link", "set", veth, "up")
        return ns, f"{self.subnet}.{last}"

    def serve(self, bridge: str, name: str, last: int) -> Backend:
        ns, addr = self.host(bridge, name, last)
        self.servers.append(HelloServer(name, "0.0.0.0", PORT, netns=ns).start())
        return Backend(name, addr)

    def ask(self, ns: str, url: str, n: int) -> Counter[str]:
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", ASK, url, str(n)],
                             capture_output=True, text=True, timeout=120)
        return Counter(out.stdout.split("\n")[:-1])

    def teardown(self) -> None:
        for s in self.servers:
            s.stop()
        for ns in self.namespaces:
            ip("link", "del", f"{ns}h", check=False)
            ip("netns", "del", ns, check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.teardown()


async def serve_both(net: Net, driver: HaproxyDriver, bridge: str, placement: Placement) -> None:
    backends = (net.serve(bridge, "i-a", 11), net.serve(bridge, "i-b", 12))
    client, _ = net.host(bridge, "cl", 2)
    sp = BalancerSpec(name=f"{TAG}lb", placement=placement, listeners=(Listener(80, "HTTP", PORT, "HTTP"),),
                      backends=backends, health_check=HealthCheck(f"HTTP:{PORT}/", 1, 1, 2, 2))
    ns = Netns.of(sp.name)
    try:
        await driver.apply(sp)
        assert os.path.exists(f"/run/netns/{ns.name}")
        for _ in range(300):     # both backends checked and up: the proxy reaches the bridge
            st = await driver.stats(sp.name)
            if st.healthy == 2:
                break
            await asyncio.sleep(0.1)
        assert st.healthy == 2, st
        got = await asyncio.to_thread(net.ask, client, f"http://{placement.address}/", 20)
        assert set(got) == {"i-a", "i-b"}, got
        # The proxy is not in the controller's namespace: nothing answers there on that address.
        assert subprocess.run(["ip", "-o", "addr", "show", "to", placement.address],
                              capture_output=True, text=True).stdout == ""
    finally:
        await driver.remove(sp.name)
    assert not os.path.exists(f"/run/netns/{ns.name}")
    assert not os.path.exists(f"/sys/class/net/{ns.veth}")
    assert await driver.running() == set()


async def test_proxy_in_its_own_namespace_on_a_linux_bridge(net: Net, tmp_path: Path) -> None:
    bridge = f"{TAG}br"
    ip("link", "add", bridge, "type", "bridge")
    try:
        ip("link", "set", bridge, "up")
        placement = Placement(f"{net.subnet}.10", 24, bridge=bridge, gateway=f"{net.subnet}.1")
        await serve_both(net, HaproxyDriver(tmp_path / "run"), bridge, placement)
    finally:
        net.teardown()
        ip("link", "del", bridge, check=False)


@pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="needs openvswitch-switch")
async def test_proxy_on_an_ovs_vlan_joins_the_guests_linux_bridge(net: Net, tmp_path: Path) -> None:
    ovs = Ovs(suffix="x").start()
    plug = HybridPlug.of(ovs.bridge, 7, ovs.db)
    try:
        await asyncio.to_thread(plug.ensure)      # as the libvirt driver does for the VLAN's guests
        placement = Placement(f"{net.subnet}.10", 24, bridge=ovs.bridge, vlan=7, gateway=f"{net.subnet}.1")
        await serve_both(net, HaproxyDriver(tmp_path / "run", ovs_db=ovs.db), plug.bridge, placement)
    finally:
        net.teardown()
        await asyncio.to_thread(plug.remove)
        ovs.stop()


async def test_ingress_filter_in_the_namespace(net: Net, tmp_path: Path) -> None:
    """Only clients the spec's ingress admits reach the listener; a new spec re-filters live; the
    proxy's own health checks (egress) are never blocked."""
    bridge = f"{TAG}br"
    ip("link", "add", bridge, "type", "bridge")
    driver = HaproxyDriver(tmp_path / "run")
    try:
        ip("link", "set", bridge, "up")
        backend = net.serve(bridge, "i-a", 11)
        allowed, _ = net.host(bridge, "ok", 2)       # in 10.x.y.0/28
        refused, _ = net.host(bridge, "no", 100)     # in 10.x.y.96/28 only
        placement = Placement(f"{net.subnet}.10", 24, bridge=bridge, gateway=f"{net.subnet}.1")
        url = f"http://{placement.address}/"
        only_low = (IngressRule("tcp", 80, 80, (f"{net.subnet}.0/28",)),)
        sp = BalancerSpec(name=f"{TAG}lb", placement=placement, listeners=(Listener(80, "HTTP", PORT, "HTTP"),),
                          backends=(backend,), health_check=HealthCheck(f"TCP:{PORT}", 1, 1, 2, 2),
                          ingress=only_low)
        await driver.apply(sp)
        for _ in range(300):     # checks go out and their answers come back through the filter
            st = await driver.stats(sp.name)
            if st.healthy == 1:
                break
            await asyncio.sleep(0.1)
        assert st.healthy == 1, st
        assert await asyncio.to_thread(net.ask, allowed, url, 3) == Counter({"i-a": 3})
        got = await asyncio.to_thread(net.ask, refused, url, 1)
        assert list(got) != ["i-a"] and all(k.startswith("FAIL") for k in got), got

        # the rule widens (a new spec, as after AuthorizeSecurityGroupIngress): the other gets in
        both = (IngressRule("tcp", 80, 80, (f"{net.subnet}.0/28", f"{net.subnet}.96/28")),)
        await driver.apply(dataclasses.replace(sp, ingress=both))
        assert await asyncio.to_thread(net.ask, refused, url, 3) == Counter({"i-a": 3})
        assert await asyncio.to_thread(net.ask, allowed, url, 3) == Counter({"i-a": 3})

        # a port the listener does not use, only: nobody gets in; no filtering at all: everybody
        await driver.apply(dataclasses.replace(sp, ingress=(IngressRule("tcp", 81, 81, ("0.0.0.0/0",)),)))
        assert all(k.startswith("FAIL") for k in await asyncio.to_thread(net.ask, allowed, url, 1))
        await driver.apply(dataclasses.replace(sp, ingress=None))
        assert await asyncio.to_thread(net.ask, refused, url, 2) == Counter({"i-a": 2})
    finally:
        await driver.remove(f"{TAG}lb")
        net.teardown()
        ip("link", "del", bridge, check=False)
