"""Network namespaces for the Elastic-IP NAT tests: an "outside" network, a "host" that routes
and runs scripts/eip-nft.sh, and the instances' bridge behind it.

    outside (172.31.250.2) ── veth ── host (172.31.250.1; ip_forward; nft table cloudctl_eip)
                                      └─ the zone's gateway address on the instances' bridge

The bridge is either inside the host namespace (stand-in guests are namespaces on it) or in
the machine's namespace (`root_bridge`), where libvirt plugs real guests' taps; then a veth
joins it to the host namespace, which alone holds the gateway, the routes and the NAT. The
machine's own routing, forwarding and nftables are never touched. `teardown` removes all of it.
"""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "eip-nft.sh"
SUBNET, GATEWAY = "10.250.8.0/24", "10.250.8.1"
POOL = "198.51.100.64/28"
HOST_OUT, OUTSIDE = "172.31.250.1", "172.31.250.2"
PORT = 7007

# A TCP hello server: answers every connection with its name.
HELLO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""
# A TCP client: prints what the server said, or FAIL.
ASK = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.recv(64).decode()); c.close()
except OSError as e:
    print("FAIL", e)
"""
# A TCP server that prints the source address of the first connection, then exits.
PEER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, addr = s.accept(); print(addr[0], flush=True); c.close()
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {out.returncode}: {out.stderr}")
    return out


class Net:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.host, self.outside = f"eiph{tag}", f"eipo{tag}"
        self.guests: dict[str, str] = {}          # namespace -> private address
        self.tag = tag
        self.procs: list[subprocess.Popen[str]] = []
        self.namespaces: list[str] = []
        self.root_links: list[str] = []
        self.bridge = ""

    def ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def build(self, root_bridge: bool = False) -> None:
        h, o, t = self.host, self.outside, self.tag
        self.ns(h)
        self.ns(o)
        sh("ip", "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", o)
        sh("ip", "-n", h, "addr", "add", f"{HOST_OUT}/24", "dev", "up0")
        sh("ip", "-n", h, "link", "set", "up0", "up")
        sh("ip", "-n", o, "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
        sh("ip", "-n", o, "link", "set", "eth0", "up")
        sh("ip", "-n", o, "route", "add", POOL, "via", HOST_OUT)      # the public pool, via the host only
        if root_bridge:
            self.bridge = f"eipb{t}"
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self.root_links.append(self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            sh("ip", "link", "add", f"eipv{t}", "type", "veth", "peer", "name", "lan0", "netns", h)
            self.root_links.append(f"eipv{t}")
            sh("ip", "link", "set", f"eipv{t}", "master", self.bridge)
            sh("ip", "link", "set", f"eipv{t}", "up")
            lan = "lan0"
        else:
            sh("ip", "-n", h, "link", "add", "br0", "type", "bridge")
            lan = "br0"
        sh("ip", "-n", h, "addr", "add", f"{GATEWAY}/24", "dev", lan)
        sh("ip", "-n", h, "link", "set", lan, "up")
        sh("ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        assert t

    def guest(self, name: str, ip: str) -> None:
        h = self.host
        ns = f"eipg{self.tag}{len(self.guests)}"
        self.ns(ns)
        port = f"g{len(self.guests)}"
        sh("ip", "-n", h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", h, "link", "set", port, "master", "br0")
        sh("ip", "-n", h, "link", "set", port, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", GATEWAY)
        self.guests[name] = ns
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HELLO, name, str(PORT)],
                                           text=True))

    def ask(self, ip: str) -> str:
        return sh("ip", "netns", "exec", self.outside, sys.executable, "-c", ASK, ip, str(PORT)).stdout.strip()

    def ping(self, src_ns: str, ip: str, tries: int = 1) -> bool:
        """One echo answered within 2 s, in up to `tries` attempts (a booting guest, a first ARP)."""
        for _ in range(tries):
            if sh("ip", "netns", "exec", src_ns, "ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0:
                return True
        return False

    def nft_maps(self) -> str:
        return sh("ip", "netns", "exec", self.host, "nft", "list", "table", "ip", "cloudctl_eip", check=False).stdout

    def teardown(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for link in reversed(self.root_links):
            sh("ip", "link", "del", link, check=False)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)

    def wrapper(self, path: Path) -> Path:
        """The controller's script: the shipped one, run on "the host" (in its namespace); each
        call's arguments are logged, one line per call, to `<path>.log`."""
        path.write_text(f'#!/bin/sh\necho "$*" >> "{path}.log"\nexec ip netns exec {self.host} {SCRIPT} "$@"\n')
        path.chmod(0o755)
        return path


