"""Guests on Open vSwitch through a Linux bridge per (OVS bridge, VLAN): the "hybrid plug".

libvirt's nwfilter (security groups) and the fail-closed FORWARD rule act through
br_netfilter, which sees Linux bridge ports only; a tap plugged straight into OVS would go
unfiltered. So a guest's tap joins a Linux bridge whose uplink is a veth pair, the far end an
OVS port carrying the VLAN as an access tag (nova's OVS hybrid plug did the same, for the same
reason). One such bridge serves every guest of that VLAN on the host, and libvirt never has to
reach the OVS database itself.

Names are derived from the OVS bridge and VLAN, so every host (and an admin preparing a remote
host by hand, see docs/networks.md) arrives at the same ones: `cb…` the Linux bridge, `cv…` its veth
end, `co…` the OVS port. None starts with the instance tap prefix `ci`.
"""
from __future__ import annotations

import hashlib
import subprocess

from ...slim import dataclass


@dataclass(frozen=True, slots=True)
class HybridPlug:
    bridge: str      # the Linux bridge guests join
    veth: str        # its uplink
    ovs_port: str    # the uplink's far end, an OVS access port
    ovs_bridge: str
    vlan: int | None
    ovs_db: str | None

    @classmethod
    def of(cls, ovs_bridge: str, vlan: int | None, ovs_db: str | None = None) -> "HybridPlug":
        h = hashlib.sha256(ovs_bridge.encode()).hexdigest()[:6]
        sfx = f"{h}v{vlan if vlan is not None else 0}"    # 2 + 6 + 1 + 4 <= 15 characters
        return cls(f"cb{sfx}", f"cv{sfx}", f"co{sfx}", ovs_bridge, vlan, ovs_db)

    def vsctl(self, *args: str) -> list[str]:
        db = [f"--db={self.ovs_db}"] if self.ovs_db else []
        return ["ovs-vsctl", *db, "--timeout=10", *args]

    def ensure(self) -> None:
        """Make the bridge, the veth pair and the OVS port if missing (idempotent, blocking:
        callers run it in a thread)."""
        if not _exists(self.bridge):
            _run("ip", "link", "add", self.bridge, "type", "bridge", ok_if="File exists")
        if not _exists(self.veth):
            _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.ovs_port, ok_if="File exists")
        _run("ip", "link", "set", self.veth, "master", self.bridge)
        for dev in (self.bridge, self.veth, self.ovs_port):
            _run("ip", "link", "set", dev, "up")
        tag = [f"tag={self.vlan}"] if self.vlan is not None else []
        _run(*self.vsctl("--may-exist", "add-port", self.ovs_bridge, self.ovs_port, *tag))
        if self.vlan is not None:   # an existing port keeps its tag unless told again
            _run(*self.vsctl("set", "Port", self.ovs_port, f"tag={self.vlan}"))

    def remove(self) -> None:
        """Take the plug apart (the OVS port first, then the veth pair and the bridge)."""
        subprocess.run(self.vsctl("--if-exists", "del-port", self.ovs_bridge, self.ovs_port),
                       capture_output=True)
        for dev in (self.veth, self.bridge):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)


class PlugError(Exception):
    pass


def _exists(dev: str) -> bool:
    return subprocess.run(["ip", "link", "show", dev], capture_output=True).returncode == 0


def _run(*argv: str, ok_if: str | None = None) -> None:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PlugError(f"{argv[0]}: {e}") from None
    if p.returncode != 0 and not (ok_if and ok_if in p.stderr):
        raise PlugError(f"{' '.join(argv)}: {p.stderr.strip() or f'exit {p.returncode}'}")
