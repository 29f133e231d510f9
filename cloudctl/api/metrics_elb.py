"""Per-load-balancer series on `/metrics`, from each proxy's last statistics reading (taken by
the load balancers' supervision round, never at scrape time). Labelled by the load balancer's
id and address, not its name or owner (names are the users' words)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .metrics_format import Family

if TYPE_CHECKING:
    from ..core.cloud import Cloud

_LABELS = ["load_balancer", "address"]


class ElbCollector:
    def __init__(self, cloud: "Cloud") -> None:
        self.cloud = cloud

    def collect(self) -> Iterable[Family]:
        elb = self.cloud.elb if self.cloud.built("elb") else None   # (not built: no load balancer, no proxy)
        requests = Family.counter("cloudctl_elb_requests", "requests (HTTP) or connections (TCP) the "
                                  "load balancer's proxy served, all listeners", labels=_LABELS)
        errors = Family.counter("cloudctl_elb_backend_errors", "connection and response errors towards "
                                "the instances", labels=_LABELS)
        healthy = Family.gauge("cloudctl_elb_healthy_hosts", "registered instances the proxy's checks "
                               "find up", labels=_LABELS)
        unhealthy = Family.gauge("cloudctl_elb_unhealthy_hosts", "registered instances the proxy's "
                                 "checks find down", labels=_LABELS)
        proxies = Family.gauge("cloudctl_elb_proxy_up", "1 if the load balancer's proxy was read at the "
                               "last supervision round", labels=_LABELS)
        for lb in list(elb.table.values()) if elb is not None else []:
            labels = [lb.id, lb.address]
            s = elb.plane.reading(lb.id)
            proxies.add(labels, 0 if s is None else 1)
            if s is None:
                continue
            requests.add(labels, s.requests)
            errors.add(labels, s.backend_errors)
            healthy.add(labels, s.healthy)
            unhealthy.add(labels, s.unhealthy)
        yield from (requests, errors, healthy, unhealthy, proxies)
        yield Family.counter("cloudctl_elb_proxy_restarts", "load balancer proxies found gone and started "
                             "again", value=elb.plane.restarts if elb is not None else 0)
        yield Family.counter("cloudctl_elb_orphans_removed", "proxies found without a load balancer and "
                             "removed", value=elb.plane.orphans_removed if elb is not None else 0)
