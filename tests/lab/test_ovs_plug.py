"""The per-VLAN Linux bridge that joins guests to Open vSwitch (`cloudctl network plug`, which
the libvirt driver does itself on local hosts), proven with packets between namespaces: one on
the Linux bridge, as a guest's tap would be, and two on OVS access ports of two VLANs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudctl.drivers.hypervisor.ovs_plug import HybridPlug

from hil_lab import Ovs

pytestmark = pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="needs openvswitch-switch")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.fixture
def ovs() -> Iterator[Ovs]:
    o = Ovs(suffix="p").start()
    made: list[str] = []
    o.made = made  # type: ignore[attr-defined]
    try:
        yield o
    finally:
        for ns in made:
            ip("link", "del", f"{ns[-12:]}h", check=False)
            ip("netns", "del", ns, check=False)
        HybridPlug.of(o.bridge, 7, o.db).remove()
        o.stop()


def host(ovs: Ovs, name: str, address: str, *, vlan: int | None = None, bridge: str | None = None) -> str:
    ns = f"{ovs.bridge}{name}"
    veth = f"{ns[-12:]}h"
    ip("netns", "add", ns)
    ovs.made.append(ns)  # type: ignore[attr-defined]
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("link", "set", veth, "up")
    if bridge is not None:
        ip("link", "set", veth, "master", bridge)
    else:
        ovs.vsctl("add-port", ovs.bridge, veth, f"tag={vlan}")
    return ns


def pings(ns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.3", "-W", "1", address],
                          capture_output=True).returncode == 0


def wait_pings(ns: str, address: str, timeout: float = 15) -> bool:
    """For paths expected open: on a loaded machine OVS's userspace datapath can miss the first probes."""
    t0 = time.monotonic()
    while not pings(ns, address):
        if time.monotonic() - t0 > timeout:
            return False
    return True


def test_plug_joins_a_linux_bridge_to_one_vlan(ovs: Ovs, model_cache: Path) -> None:
    plug = HybridPlug.of(ovs.bridge, 7, ovs.db)
    for _ in range(2):   # idempotent: a second run changes nothing and does not fail
        out = subprocess.run([sys.executable, "-m", "cloudctl", "network", "plug", ovs.bridge, "--vlan", "7",
                              "--ovs-db", ovs.db], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert plug.bridge in out.stdout
    assert ovs.vsctl("get", "Port", plug.ovs_port, "tag").strip() == "7"
    assert f"master {plug.bridge}" in ip("link", "show", plug.veth).stdout

    guest = host(ovs, "g", "10.99.7.10", bridge=plug.bridge)
    same_vlan = host(ovs, "a", "10.99.7.2", vlan=7)
    other_vlan = host(ovs, "b", "10.99.7.3", vlan=8)
    assert wait_pings(same_vlan, "10.99.7.10")
    assert not pings(other_vlan, "10.99.7.10")
    assert wait_pings(guest, "10.99.7.2")


def test_plug_errors_are_one_line(model_cache: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "network", "plug", "no-such-ovs-br", "--vlan", "7",
                          "--ovs-db", "unix:/nonexistent/db.sock"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cloudctl: ") and "ovs-vsctl" in lines[0], lines
    HybridPlug.of("no-such-ovs-br", 7).remove()
