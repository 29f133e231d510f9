"""Each hypervisor host's monitored health: written by the monitor's polls, read by compute
(an instance on a host in error is impaired), failover and the APIs. Apart from the monitor so
compute can be given it when it is built, before the monitor (which drives compute) exists."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import field

from ..drivers.hypervisor.base import HostPoll
from ..slim import dataclass


@dataclass(slots=True)
class HostHealth:
    name: str
    state: str = "init"
    since: float = field(default_factory=time.time)
    last_seen: float | None = None        # last successful poll (epoch s)
    failing_since: float | None = None    # first failure of the current run of failures
    error: str = ""                       # the last failure's message
    polls: int = 0
    failures: int = 0
    last_poll_s: float = 0.0
    last: HostPoll | None = None          # the last successful poll's figures


class HostStates:
    def __init__(self, hosts: Iterable[str]) -> None:
        self.hosts = {name: HostHealth(name) for name in hosts}

    def state_of(self, host: str) -> str:
        h = self.hosts.get(host)
        return h.state if h is not None else "error"

    def impaired_reason(self, host: str) -> str | None:
        """Why instances on `host` are impaired, or None when they are not."""
        h = self.hosts.get(host)
        if h is None or h.state != "error":
            return None
        return f"host {host} unreachable since {stamp(h.failing_since)}: {h.error}"

    def impaired_since(self, host: str) -> float | None:
        h = self.hosts.get(host)
        return h.failing_since if h is not None and h.state == "error" else None


def stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t or 0))
