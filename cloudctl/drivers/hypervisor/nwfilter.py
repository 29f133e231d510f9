"""libvirt nwfilter XML for a FirewallSpec: one filter per guest, referenced by its interface.

libvirt turns it into ebtables rules (layer 2: ARP, anti-spoofing, nothing but IPv4) and
iptables rules on the bridge ports (br_netfilter, physdev match) with conntrack, so every accept
also lets the replies through. Redefining the filter under the same name and UUID re-applies it
to the running guests that use it. Directions are the guest's view: `in` is traffic to the
guest, `out` traffic from it.
"""
from __future__ import annotations

import ipaddress
import uuid

from ...xmltext import quoteattr
from .base import FirewallRule, FirewallSpec

FILTER_PREFIX = "cloudctl-"
_NS = uuid.UUID("5d7f3c2e-93f1-4b55-9a52-3c0f6a1d8b10")

#: IP protocols nwfilter can match by name (numbers as EC2 gives them). Others cannot be
#: expressed at all, so a rule for them allows nothing (fail closed).
PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "all": "all", "6": "tcp", "17": "udp", "1": "icmp",
             "2": "igmp", "50": "esp", "51": "ah", "132": "sctp", "136": "udplite"}
_PORTED = frozenset({"tcp", "udp", "sctp", "udplite"})

#: Always reachable, as in EC2, where security groups do not apply to the instance metadata.
METADATA_EGRESS = FirewallRule("tcp", 80, 80, ("169.254.169.254/32",))


def filter_name(domain: str) -> str:
    return FILTER_PREFIX + domain


def filter_uuid(name: str) -> str:
    """Stable per name: redefining a filter must repeat its UUID."""
    return str(uuid.uuid5(_NS, name))


def _peer(cidr: str, side: str) -> str:
    net = ipaddress.IPv4Network(cidr, strict=False)
    if net.prefixlen == 0:
        return ""
    return f" {side}ipaddr='{net.network_address}' {side}ipmask='{net.prefixlen}'"


def _rule_xml(rule: FirewallRule, direction: str, priority: int) -> list[str]:
    proto = PROTOCOLS.get(rule.protocol)
    if proto is None:
        return []
    side = "src" if direction == "in" else "dst"
    ports = ""
    if proto in _PORTED and rule.from_port is not None:
        ports = f" dstportstart='{rule.from_port}' dstportend='{rule.to_port}'"
    elif proto == "icmp":
        if rule.from_port is not None and rule.from_port >= 0:
            ports = f" type='{rule.from_port}'"
            if rule.to_port is not None and rule.to_port >= 0:
                ports += f" code='{rule.to_port}'"
    return [f"  <rule action='accept' direction='{direction}' priority='{priority}'>"
            f"<{proto}{_peer(p, side)}{ports}/></rule>" for p in rule.peers]


def nwfilter_xml(name: str, spec: FirewallSpec) -> str:
    mac, ip = quoteattr(spec.mac), quoteattr(spec.ip)
    lines = [
        f"<filter name={quoteattr(name)} chain='root'>",
        f"  <uuid>{filter_uuid(name)}</uuid>",
        # layer 2: the guest sends only from its own MAC and IP, and nothing but ARP and IPv4
        f"  <rule action='drop' direction='out' priority='-900'><mac srcmacaddr={mac} match='no'/></rule>",
        f"  <rule action='drop' direction='out' priority='-850'><arp arpsrcipaddr={ip} match='no'/></rule>",
        f"  <rule action='drop' direction='out' priority='-850'><arp arpsrcmacaddr={mac} match='no'/></rule>",
        "  <rule action='accept' direction='inout' priority='-800'><arp/></rule>",
        f"  <rule action='drop' direction='out' priority='-750'><ip srcipaddr={ip} match='no'/></rule>",
        "  <rule action='accept' direction='inout' priority='-700'><mac protocolid='ipv4'/></rule>",
        "  <rule action='drop' direction='inout' priority='-650'><mac/></rule>",
    ]
    for rule in spec.ingress:
        lines += _rule_xml(rule, "in", 100)
    for rule in (*spec.egress, METADATA_EGRESS):
        lines += _rule_xml(rule, "out", 100)
    lines += ["  <rule action='drop' direction='in' priority='900'><all/></rule>",
              "  <rule action='drop' direction='out' priority='900'><all/></rule>",
              "</filter>"]
    return "\n".join(lines)
