"""A classic load balancer's parts in the core's terms, with the checks ELB makes on each.

The API layer builds these from the wire (botocore's member names); the checks here are ELB's
own (name form, listener protocols, health-check target and ranges, policy types), so every
front end refuses the same things with the same `ValidationError` / ELB codes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ...slim import dataclass
from .errors import invalid, invalid_config

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
_TAG = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)
PROTOCOLS = ("HTTP", "HTTPS", "TCP", "SSL")
_LAYER = {"HTTP": 7, "HTTPS": 7, "TCP": 4, "SSL": 4}
SCHEMES = ("internet-facing", "internal")
MAX_TAGS = 10
MAX_POLICIES = 20
LB_COOKIE = "LBCookieStickinessPolicyType"
APP_COOKIE = "AppCookieStickinessPolicyType"
STICKINESS = (LB_COOKIE, APP_COOKIE)

# The policy types cloudctl's data plane implements (HAProxy cookies), as ELB describes them.
POLICY_TYPES: dict[str, dict[str, Any]] = {
    APP_COOKIE: {
        "description": "Stickiness policy with session lifetimes controlled by the lifetime of the "
                       "application-generated cookie. This policy can be associated only with HTTP/HTTPS listeners.",
        "attributes": [{"name": "CookieName", "type": "String", "cardinality": "ONE", "default": None,
                        "description": "The name of the application cookie used for stickiness."}]},
    LB_COOKIE: {
        "description": "Stickiness policy with session lifetimes controlled by the browser (user-agent) or "
                       "a specified expiration period. This policy can be associated only with HTTP/HTTPS "
                       "listeners.",
        "attributes": [{"name": "CookieExpirationPeriod", "type": "Long", "cardinality": "ZERO_OR_ONE",
                        "default": None, "description": "The time period, in seconds, after which the cookie "
                        "should be considered stale. Not specifying this parameter indicates that the "
                        "stickiness session will last for the duration of the browser session."}]},
}


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise invalid("LoadBalancerName must contain only alphanumeric characters or hyphens, start and end "
                      "with an alphanumeric character, and be at most 32 characters long.")
    return name


@dataclass(frozen=True, slots=True)
class ListenerDef:
    protocol: str
    port: int
    instance_protocol: str
    instance_port: int
    certificate: str | None = None

    @classmethod
    def of(cls, protocol: str, port: int, instance_protocol: str | None, instance_port: int,
           certificate: str | None = None) -> ListenerDef:
        """A listener as ELB reads one: protocols case-insensitive; the instance protocol defaults
        to the front one (HTTP behind HTTPS, TCP behind SSL)."""
        proto = protocol.upper()
        if proto not in PROTOCOLS:
            raise invalid(f"Invalid protocol '{protocol}' for listener on port {port}: expected one of "
                          f"{', '.join(PROTOCOLS)}.")
        if not 1 <= port <= 65535:
            raise invalid(f"LoadBalancerPort {port} must be between 1 and 65535.")
        if not 1 <= instance_port <= 65535:
            raise invalid(f"InstancePort {instance_port} must be between 1 and 65535.")
        back = (instance_protocol or {"HTTPS": "HTTP", "SSL": "TCP"}.get(proto, proto)).upper()
        if back not in PROTOCOLS:
            raise invalid(f"Invalid instance protocol '{instance_protocol}' for listener on port {port}.")
        if _LAYER[proto] != _LAYER[back]:
            raise invalid(f"Listener protocol '{proto}' and instance protocol '{back}' are not compatible.")
        if proto == "HTTP" and back == "HTTPS":
            raise invalid_config("cloudctl does not re-encrypt towards instances: an HTTP listener needs "
                                 "instance protocol HTTP.")
        return cls(proto, port, back, instance_port, certificate or None)

    def row(self, policies: Sequence[str] = ()) -> dict[str, Any]:
        return {"protocol": self.protocol, "port": self.port, "instance_protocol": self.instance_protocol,
                "instance_port": self.instance_port, "certificate": self.certificate, "policies": tuple(policies)}

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> ListenerDef:
        return cls(r["protocol"], r["port"], r["instance_protocol"], r["instance_port"], r.get("certificate"))


def check_listeners(listeners: Sequence[ListenerDef], existing: Sequence[ListenerDef] = ()) -> list[ListenerDef]:
    """New listeners minus exact repeats of existing ones; a port taken by a different one is
    DuplicateListener, as ELB answers."""
    from .errors import duplicate_listener
    seen = {x.port: x for x in existing}
    out = []
    for x in listeners:
        if x.port in seen:
            if seen[x.port] != x:
                raise duplicate_listener(x.port)
            continue
        seen[x.port] = x
        out.append(x)
    return out


@dataclass(frozen=True, slots=True)
class HealthCheckDef:
    target: str
    interval: int
    timeout: int
    unhealthy: int
    healthy: int

    @classmethod
    def default_for(cls, listener: ListenerDef) -> HealthCheckDef:
        """ELB's default: a TCP connect to the first listener's instance port every 30 s."""
        return cls(f"TCP:{listener.instance_port}", 30, 5, 2, 10)

    def checked(self) -> HealthCheckDef:
        target = check_target(self.target)
        if not 5 <= self.interval <= 300:
            raise invalid("HealthCheck Interval must be between 5 and 300 seconds.")
        if not 2 <= self.timeout <= 60:
            raise invalid("HealthCheck Timeout must be between 2 and 60 seconds.")
        if self.timeout >= self.interval:
            raise invalid("HealthCheck Timeout must be less than Interval.")
        for what, n in (("UnhealthyThreshold", self.unhealthy), ("HealthyThreshold", self.healthy)):
            if not 2 <= n <= 10:
                raise invalid(f"HealthCheck {what} must be between 2 and 10.")
        return HealthCheckDef(target, self.interval, self.timeout, self.unhealthy, self.healthy)

    def row(self) -> dict[str, Any]:
        return {"target": self.target, "interval": self.interval, "timeout": self.timeout,
                "unhealthy": self.unhealthy, "healthy": self.healthy}

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> HealthCheckDef:
        return cls(r["target"], r["interval"], r["timeout"], r["unhealthy"], r["healthy"])


def check_target(target: str) -> str:
    """`HTTP:port/path`, `HTTPS:port/path`, `TCP:port` or `SSL:port` (protocol case-insensitive)."""
    proto, sep, rest = target.partition(":")
    proto = proto.upper()
    if not sep or proto not in PROTOCOLS:
        raise invalid(f"HealthCheck Target '{target}' must be PROTOCOL:PORT[/PATH] with protocol "
                      f"HTTP, HTTPS, TCP or SSL.")
    port, slash, path = rest.partition("/")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise invalid(f"HealthCheck Target '{target}' has no valid port (1-65535).")
    if proto in ("HTTP", "HTTPS"):
        if not slash:
            raise invalid(f"HealthCheck Target '{target}': an {proto} target needs a path, e.g. {proto}:{port}/")
        if len(path) > 1023 or not all(0x21 <= ord(c) <= 0x7E for c in path):
            raise invalid(f"HealthCheck Target '{target}' has an invalid path.")
        return f"{proto}:{int(port)}/{path}"
    if slash:
        raise invalid(f"HealthCheck Target '{target}': a {proto} target takes no path.")
    return f"{proto}:{int(port)}"


@dataclass(frozen=True, slots=True)
class AttributeChanges:
    """ModifyLoadBalancerAttributes: None leaves an attribute as it is."""

    cross_zone: bool | None = None
    draining: bool | None = None
    draining_timeout: int | None = None
    idle_timeout: int | None = None
    access_log: bool | None = None
    extra: tuple[tuple[str, str], ...] = ()


DEFAULT_ATTRIBUTES: dict[str, Any] = {"cross_zone": False, "draining": False, "draining_timeout": 300,
                                      "idle_timeout": 60, "access_log": False, "extra": ()}
# AdditionalAttributes cloudctl keeps (and what they may be): ELB's desync mitigation mode, which
# HAProxy's HTTP parsing always applies in its strictest form, is stored and reported.
EXTRA_ATTRIBUTES = {"elb.http.desyncmitigationmode": ("monitor", "defensive", "strictest")}


def apply_attributes(current: Mapping[str, Any], ch: AttributeChanges) -> dict[str, Any]:
    from .errors import attribute_not_found
    out = {**DEFAULT_ATTRIBUTES, **current}
    if ch.access_log:
        raise invalid_config("Access logs need an S3 bucket, and cloudctl has no S3: AccessLog must stay disabled.")
    if ch.idle_timeout is not None and not 1 <= ch.idle_timeout <= 3600:
        raise invalid("ConnectionSettings IdleTimeout must be between 1 and 3600 seconds.")
    if ch.draining_timeout is not None and not 1 <= ch.draining_timeout <= 3600:
        raise invalid("ConnectionDraining Timeout must be between 1 and 3600 seconds.")
    extra = dict(out["extra"])
    for key, value in ch.extra:
        allowed = EXTRA_ATTRIBUTES.get(key)
        if allowed is None:
            raise attribute_not_found(key)
        if value not in allowed:
            raise invalid(f"Invalid value '{value}' for attribute {key}: expected one of {', '.join(allowed)}.")
        extra[key] = value
    for name in ("cross_zone", "draining", "draining_timeout", "idle_timeout"):
        v = getattr(ch, name)
        if v is not None:
            out[name] = v
    out["extra"] = tuple(sorted(extra.items()))
    return out


def check_tags(tags: Sequence[tuple[str, str]]) -> dict[str, str]:
    from .errors import duplicate_tag_keys
    out: dict[str, str] = {}
    for key, value in tags:
        if not 1 <= len(key) <= 128 or not _TAG.match(key):
            raise invalid(f"Tag key '{key[:128]}' must be 1-128 letters, digits, spaces or _.:/=+-@.")
        if key.lower().startswith("aws:"):
            raise invalid(f"Tag key '{key}' uses the reserved prefix 'aws:'.")
        if len(value) > 256 or not _TAG.match(value):
            raise invalid(f"Tag value for key '{key}' must be at most 256 letters, digits, spaces or _.:/=+-@.")
        if key in out:
            raise duplicate_tag_keys(key)
        out[key] = value
    return out
