"""Security group rules as a caller asks for them, and the checks on their values.

A `Permission` is one protocol and port range with the peers it opens to (CIDR ranges, other
groups), as it arrives from a front end: values are checked here, peer groups are looked up by
`SecurityGroups`, and each (range or peer) becomes one `NewRule`, then one stored rule.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from ..slim import dataclass
from .errors import CloudError

MAX_TEXT = 255
# EC2-VPC's character set for group names, descriptions and rule descriptions.
TEXT = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$")
ANYWHERE = "0.0.0.0/0"
_PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
              "-1": "-1", "all": "-1"}

TagPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class IpRange:
    """An IPv4 CIDR the rule opens to (checked when the rule is made)."""
    cidr: str | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class GroupPeer:
    """A group the rule opens to: by id, or by name (in `user_id`'s account, else the caller's)."""
    group_id: str | None = None
    group_name: str | None = None
    user_id: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Permission:
    """One protocol and port range, open to CIDR ranges and groups. The protocol is as given
    (`tcp`, `6`, `-1`, ...) and normalised here; ports are ICMP type and code for ICMP.
    IPv6 ranges and prefix lists are carried so the core can answer for them (it has neither)."""
    protocol: str | None
    from_port: int | None = None
    to_port: int | None = None
    ranges: tuple[IpRange, ...] = ()
    peers: tuple[GroupPeer, ...] = ()
    ipv6_ranges: tuple[str, ...] = ()
    prefix_lists: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleChange:
    """Authorize*/Revoke*: the group (by id; ingress may name it instead), the rules, and for a
    revoke the ids of rules to remove too; `tags` go on each authorized rule."""
    egress: bool
    group_id: str | None = None
    group_name: str | None = None
    permissions: tuple[Permission, ...] = ()
    rule_ids: tuple[str, ...] = ()
    tags: TagPairs = ()


@dataclass(frozen=True, slots=True)
class NewRule:
    """One rule as asked for, its values checked and its peer resolved, before it has an id."""

    egress: bool
    protocol: str
    from_port: int | None
    to_port: int | None
    cidr: str | None
    peer_group_id: str | None
    peer_owner: str | None
    description: str = ""

    @property
    def identity(self) -> tuple[Any, ...]:
        return (self.egress, self.protocol, self.from_port, self.to_port, self.cidr, self.peer_group_id)

    def text(self) -> str:
        peer = self.cidr or self.peer_group_id
        proto = {"-1": "ALL"}.get(self.protocol, self.protocol.upper())
        return f'peer: {peer}, {proto}, from port: {self.from_port}, to port: {self.to_port}, ALLOW'


def protocol(value: Any) -> str:
    if value is None or str(value).strip() == "":
        raise CloudError("MissingParameter", "The request must contain the parameter ipProtocol")
    s = str(value).strip().lower()
    if s in _PROTOCOLS:
        return _PROTOCOLS[s]
    if s.isascii() and s.isdigit() and 0 <= int(s) <= 255:
        return str(int(s))
    raise CloudError("InvalidParameterValue", f"Invalid value '{value}' for IP protocol. Unknown protocol.")


def ports(proto: str, lo: int | None, hi: int | None) -> tuple[int | None, int | None]:
    if proto in ("tcp", "udp"):
        if lo is None or hi is None:
            raise CloudError("InvalidParameterValue",
                             "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange.")
        if not (0 <= lo <= 65535 and 0 <= hi <= 65535) or lo > hi:
            raise CloudError("InvalidParameterValue", f"Invalid {proto.upper()} port range {lo}-{hi}: ports are "
                                                      f"0-65535 and FromPort may not exceed ToPort")
        return lo, hi
    if proto == "icmp":
        lo = -1 if lo is None else lo
        hi = -1 if hi is None else hi
        if not (-1 <= lo <= 255 and -1 <= hi <= 255):
            raise CloudError("InvalidParameterValue", f"Invalid ICMP type {lo} or code {hi}: each is -1 (any) or 0-255")
        if lo == -1 and hi != -1:
            raise CloudError("InvalidParameterValue", f"Invalid ICMP code {hi}: any type (-1) needs any code (-1)")
        return lo, hi
    return None, None   # all protocols, or another protocol: ports do not apply


def cidr(value: Any) -> str:
    if not value or "/" not in str(value):
        raise CloudError("InvalidParameterValue", f"CIDR block {value} is malformed")
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        raise CloudError("InvalidParameterValue", f"CIDR block {value} is malformed") from None
    return str(net)


def rule_description(value: Any) -> str:
    text = value or ""
    if len(text) > MAX_TEXT or not TEXT.match(text):
        raise CloudError("InvalidParameterValue",
                         "Invalid rule description: up to 255 characters "
                         "from a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*")
    return str(text)
