"""The load-balancer data-plane contract: run, reconfigure, inspect and remove one proxy per
load balancer.

Like the other driver contracts it knows nothing of users, instances or the store: it is given a
complete `BalancerSpec` (listeners, backends by address, health check, stickiness) and makes the
proxy match it. ELB's vocabulary (InService, reason codes) is the core's; the driver reports what
the proxy itself says of each backend. Every method is a coroutine and never blocks the loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import Literal

from ...slim import dataclass

Protocol_ = Literal["HTTP", "TCP"]          # HTTPS/SSL listeners are TCP pass-through


@dataclass(frozen=True, slots=True)
class Listener:
    port: int                     # the load balancer's port
    protocol: Protocol_
    backend_port: int
    backend_protocol: Protocol_
    cookie: str | None = None     # HTTP only: an LB cookie name (stickiness) set by the proxy
    app_cookie: str | None = None  # HTTP only: stick on this application cookie
    cookie_ttl: int | None = None  # seconds; None: a session cookie


@dataclass(frozen=True, slots=True)
class HealthCheck:
    target: str                   # "HTTP:80/path", "HTTPS:443/path", "TCP:22", "SSL:443"
    interval: int                 # seconds
    timeout: int
    healthy_threshold: int        # rise
    unhealthy_threshold: int      # fall


@dataclass(frozen=True, slots=True)
class Backend:
    name: str                     # stable id (the instance id): the proxy's server name
    address: str                  # IPv4 the proxy connects to


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the proxy runs. With a `bridge`, in a network namespace of its own plugged into that
    host bridge with `address/prefix` (the guests' plumbing); without, in the controller's own
    namespace on `address` (loopback: `test:///` clouds, whose guests have no network)."""

    address: str
    prefix: int = 32
    bridge: str | None = None
    vlan: int | None = None
    gateway: str | None = None


@dataclass(frozen=True, slots=True)
class IngressRule:
    """One kind of traffic the proxy may receive (its security groups' ingress rules, peer groups
    already expanded to their members' addresses). Anything else arriving is dropped; replies to
    the proxy's own connections (health checks, backends) are always let in."""

    protocol: str                 # "tcp", "udp", "icmp", "all", or an IP protocol number
    from_port: int | None         # tcp/udp: first port; icmp: type (-1/None: any)
    to_port: int | None           # tcp/udp: last port; icmp: code (-1/None: any)
    cidrs: tuple[str, ...]        # IPv4 sources: networks or addresses


@dataclass(frozen=True, slots=True)
class BalancerSpec:
    name: str                     # the load balancer's name (unique): namespaces, files, sockets
    placement: Placement
    listeners: tuple[Listener, ...]
    backends: tuple[Backend, ...]
    health_check: HealthCheck
    idle_timeout: int = 60        # seconds
    draining_timeout: int | None = None   # connection draining: seconds to finish, None: off
    cross_zone: bool = True
    stats: bool = False           # serve the proxy's statistics page (admin-only flag)
    # What may reach the proxy; None: no filtering. Enforced only with a bridge placement (a
    # namespace of its own): in the controller's namespace it would mean editing the host's firewall.
    ingress: tuple[IngressRule, ...] | None = None


@dataclass(frozen=True, slots=True)
class BackendState:
    """What the proxy says of one backend: its check status as the proxy reports it."""

    up: bool
    checked: bool                 # False until the first check completed (registration in progress)
    last_change: float            # epoch seconds of the last UP/DOWN transition (or of the reload)
    detail: str = ""              # the proxy's last check result (e.g. "L4CON", "L7STS 500")


@dataclass(frozen=True, slots=True)
class BalancerStats:
    requests: int                 # sessions/requests served since start, all frontends
    backend_errors: int           # connection + response errors towards backends
    healthy: int
    unhealthy: int
    seen_at: float                # when these were read
    backends: dict[str, BackendState] = field(default_factory=dict)


class LoadBalancerError(Exception):
    """The proxy could not be started, reloaded or read; the message is the tool's own text."""


class LoadBalancerDriver(ABC):
    @abstractmethod
    async def apply(self, spec: BalancerSpec) -> None:
        """Make the proxy for `spec.name` run exactly `spec`: start it (namespace and all) if it is
        not running, else reload it gracefully (no connection dropped, no old process left)."""

    @abstractmethod
    async def remove(self, name: str) -> None:
        """Stop the proxy and remove its namespace and files; a no-op if none exists."""

    @abstractmethod
    async def stats(self, name: str) -> BalancerStats:
        """The proxy's counters and each backend's check state, read from its runtime API."""

    @abstractmethod
    async def running(self) -> set[str]:
        """The names of the proxies that exist now (alive), including ones no spec asked for:
        the caller restarts the missing and reports or removes the orphans."""

    async def close(self) -> None:
        """Forget connections to proxies; the proxies themselves keep running."""
