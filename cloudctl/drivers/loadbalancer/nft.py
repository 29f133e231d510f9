"""A load balancer's security groups inside its own network namespace, as an nftables table.

The table `inet cloudctl_lb` has one input chain with policy drop: replies to the proxy's own
connections (health checks, backends: egress, which is allowed) and loopback pass, then one
accept per ingress rule. The whole table is replaced in one `nft -f` transaction, so a change
never leaves the namespace open or half filtered; no rules (`None`) deletes the table.
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cloudctl.drivers.loadbalancer.base import IngressRule
from cloudctl.drivers.loadbalancer.netns import Netns, run

TABLE = "cloudctl_lb"
_NAMED = {"tcp", "udp", "icmp"}


def render(rules: Iterable[IngressRule]) -> str:
    """The nft script replacing the table with one admitting exactly `rules`."""
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
             "  chain input {",
             "    type filter hook input priority filter; policy drop;",
             "    ct state established,related accept",
             '    iifname "lo" accept']
    for r in rules:
        line = _rule(r)
        if line is not None:
            lines.append("    " + line)
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def _rule(r: IngressRule) -> str | None:
    nets = list(ipaddress.collapse_addresses(
        n for c in r.cidrs if (n := _v4(c)) is not None))
    if not nets:
        return None     # only sources this filter cannot name (IPv6): nothing admitted
    src = "" if nets == [ipaddress.IPv4Network("0.0.0.0/0")] else \
        "ip saddr { " + ", ".join(str(n) if n.prefixlen < 32 else str(n.network_address) for n in nets) + " } "
    proto = r.protocol.lower()
    if proto in ("all", "-1"):
        return src + "accept"
    if proto in ("tcp", "udp"):
        lo = r.from_port if r.from_port is not None and r.from_port >= 0 else 0
        hi = r.to_port if r.to_port is not None and r.to_port >= 0 else 65535
        ports = f"{lo}" if lo == hi else f"{lo}-{hi}"
        return f"{src}{proto} dport {ports} accept"
    if proto == "icmp":
        out = src + "meta l4proto icmp "
        if r.from_port is not None and r.from_port >= 0:
            out += f"icmp type {r.from_port} "
            if r.to_port is not None and r.to_port >= 0:
                out += f"icmp code {r.to_port} "
        return out + "accept"
    if proto.isdigit() and proto not in _NAMED:
        return f"{src}meta l4proto {int(proto)} accept"
    return None


def _v4(text: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


async def apply(ns: Netns, rules: tuple[IngressRule, ...] | None, folder: Path) -> None:
    """Make the namespace's filter admit exactly `rules` (None: remove it, admit all)."""
    if rules is None:
        await run(*ns.exec_prefix(), "nft", "delete", "table", "inet", TABLE, ok_if="No such file")
        return
    script = folder / "ingress.nft"
    await asyncio.to_thread(script.write_text, render(rules))
    await run(*ns.exec_prefix(), "nft", "-f", str(script))
