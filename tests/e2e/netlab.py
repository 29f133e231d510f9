"""A small network lab for end-to-end tests: a Linux bridge the guests' NICs join, the host
as its gateway, and test hosts in network namespaces cabled to it by veth pairs.

Names carry the test process id so parallel runs never collide; `close()` removes everything
(veths before namespaces: deleting a namespace is asynchronous).
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import time


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class NetLab:
    def __init__(self, tag: str, cidr: str) -> None:
        sfx = f"{tag}{os.getpid() % 100000}"
        self.bridge = f"cc{sfx}br"[:15]
        self.net = ipaddress.IPv4Network(cidr)
        self.gateway = str(self.net.network_address + 1)
        self.sfx = sfx
        self.namespaces: dict[str, str] = {}   # name -> address
        self._veths: list[str] = []
        ip("link", "del", self.bridge, check=False)
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, name: str, address: str) -> str:
        """A test host in its own namespace, on the bridge, routed through the gateway."""
        ns = f"cc{self.sfx}-{name}"
        veth = f"cc{self.sfx}{name}"[:15]
        ip("link", "del", veth, check=False)
        ip("netns", "del", ns, check=False)
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._veths.append(veth)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/{self.net.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "route", "add", "default", "via", self.gateway)
        self.namespaces[ns] = address
        return ns

    def close(self) -> None:
        for veth in self._veths:
            ip("link", "del", veth, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)


def ping(target: str, ns: str | None = None, count: int = 1, wait_s: float = 1.0) -> bool:
    """One ping round from the host (or a namespace); True if any reply came back."""
    cmd = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait_s), target]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def wait_ping(target: str, ns: str | None = None, timeout: float = 60.0) -> float:
    """Seconds until `target` answered; raises if it never did within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ping(target, ns):
            return time.monotonic() - t0
        time.sleep(0.3)
    raise AssertionError(f"{target} did not answer ping{' from ' + ns if ns else ''} within {timeout:.0f} s")
