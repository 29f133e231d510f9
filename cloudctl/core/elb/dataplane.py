"""Keeps one proxy per load balancer in step with its row, and reads what the proxies say.

After each committed change the load balancer is marked dirty and one task per load balancer
applies its newest spec (changes made meanwhile are folded into one apply; a deleted row removes
the proxy). A supervision round every `refresh_s` compares the proxies that exist
(`driver.running()`) with the table: a missing or failed one is applied again (a dead proxy is
recreated, a controller restart re-adopts the ones still running by reloading them), one whose
spec moved without a change to its row (a registered instance stopped, started or terminated)
is re-applied, and an orphan (a proxy no row asks for: a crash between the delete's commit and
the proxy's removal) is removed and counted. The same round reads every proxy's statistics,
which DescribeInstanceHealth, AutoScaling and /metrics use.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ...drivers.loadbalancer.base import (
    Backend,
    BalancerSpec,
    BalancerStats,
    HealthCheck,
    IngressRule,
    Listener,
    LoadBalancerDriver,
    LoadBalancerError,
    Placement,
)
from ...store.records import Instance, LoadBalancer
from ...store.store import Table
from ..network import Subnet
from ..tasks import Supervisor
from .model import APP_COOKIE, DEFAULT_ATTRIBUTES, LB_COOKIE

log = logging.getLogger("cloudctl.elb")

BACKEND_STATES = ("pending", "running")   # instances the proxy sends traffic to (its checks decide the rest)
_WIRE = {"HTTP": "HTTP", "HTTPS": "TCP", "TCP": "TCP", "SSL": "TCP"}   # HTTPS/SSL: TLS passed through


class DataPlane:
    def __init__(self, driver: LoadBalancerDriver, table: Table[LoadBalancer], instances: Table[Instance],
                 subnet_of: Callable[[str], Subnet | None], tasks: Supervisor, stats_page: bool,
                 ingress_of: Callable[[LoadBalancer], tuple[IngressRule, ...] | None] | None = None) -> None:
        self.driver = driver
        self.table = table
        self.instances = instances
        self.subnet_of = subnet_of
        self.tasks = tasks
        self.stats_page = stats_page
        self.ingress_of = ingress_of                   # its security groups' ingress, where enforced
        self.stats: dict[str, BalancerStats] = {}      # by load balancer id: the last reading
        self.applied: dict[str, BalancerSpec] = {}     # what each proxy was last made to run
        self.errors: dict[str, str] = {}               # the last failure to apply, until one succeeds
        self.orphans_removed = 0
        self.restarts = 0                              # proxies found missing and applied again
        self._was_running: set[str] = set()           # proxies alive at the last round
        self._dirty: set[str] = set()
        self._appliers: dict[str, asyncio.Task[None]] = {}
        self._started = False

    # -- specs -----------------------------------------------------------------------------------
    def spec(self, lb: LoadBalancer) -> BalancerSpec:
        """The load balancer's row as the driver's complete description of its proxy."""
        policies = {p["name"]: p for p in lb.policies}
        listeners = []
        for x in sorted(lb.listeners, key=lambda x: x["port"]):
            cookie = app_cookie = ttl = None
            for name in x["policies"]:
                p = policies.get(name)
                if p is None:
                    continue
                attrs = dict(p["attributes"])
                if p["type"] == LB_COOKIE:
                    cookie = "AWSELB"
                    period = attrs.get("CookieExpirationPeriod")
                    ttl = int(period) if period not in (None, "") and int(period) > 0 else None
                elif p["type"] == APP_COOKIE:
                    app_cookie = attrs.get("CookieName")
            front, back = _WIRE[x["protocol"]], _WIRE[x["instance_protocol"]]
            http = front == back == "HTTP"
            listeners.append(Listener(port=x["port"], protocol=front if http else "TCP",
                                      backend_port=x["instance_port"], backend_protocol=back if http else "TCP",
                                      cookie=cookie if http else None,
                                      app_cookie=app_cookie if http else None, cookie_ttl=ttl if http else None))
        backends = []
        for iid in lb.instances:
            inst = self.instances.get(iid)
            if inst is not None and inst.state in BACKEND_STATES and inst.private_ip:
                backends.append(Backend(name=iid, address=inst.private_ip))
        hc = lb.health_check
        attrs = {**DEFAULT_ATTRIBUTES, **lb.attributes}
        placement = self.placement(lb)
        # Only a proxy in a namespace of its own can be filtered without touching the host's firewall.
        ingress = self.ingress_of(lb) if self.ingress_of is not None and placement.bridge is not None else None
        return BalancerSpec(
            name=lb.id, placement=placement, listeners=tuple(listeners), backends=tuple(backends),
            health_check=HealthCheck(target=hc["target"], interval=hc["interval"], timeout=hc["timeout"],
                                     healthy_threshold=hc["healthy"], unhealthy_threshold=hc["unhealthy"]),
            idle_timeout=attrs["idle_timeout"],
            draining_timeout=attrs["draining_timeout"] if attrs["draining"] else None,
            cross_zone=attrs["cross_zone"], stats=self.stats_page, ingress=ingress)

    def placement(self, lb: LoadBalancer) -> Placement:
        subnet = self.subnet_of(lb.placement_subnet) if lb.leased and lb.placement_subnet else None
        if subnet is None or not subnet.bridge:
            return Placement(address=lb.address)
        return Placement(address=lb.address, prefix=subnet.net.prefixlen, bridge=subnet.bridge, vlan=subnet.vlan,
                         gateway=str(subnet.gateway))

    # -- applying --------------------------------------------------------------------------------
    def changed(self, lb_id: str) -> None:
        """A committed change to the load balancer (or its deletion): make its proxy follow."""
        if not self._started:
            return   # the first supervision round applies everything
        self._dirty.add(lb_id)
        if lb_id not in self._appliers:
            self._appliers[lb_id] = self.tasks.spawn("elb", self._converge(lb_id), f"elb apply {lb_id}")

    async def _converge(self, lb_id: str) -> None:
        try:
            while lb_id in self._dirty:
                self._dirty.discard(lb_id)
                lb = self.table.get(lb_id)
                try:
                    if lb is None:
                        await self.driver.remove(lb_id)
                        self.applied.pop(lb_id, None)
                        self.stats.pop(lb_id, None)
                    else:
                        spec = self.spec(lb)
                        await self.driver.apply(spec)
                        self.applied[lb_id] = spec
                    self.errors.pop(lb_id, None)
                except LoadBalancerError as e:
                    self.errors[lb_id] = str(e)
                    self.applied.pop(lb_id, None)
                    log.error("load balancer %s: the proxy could not be %s: %s", lb_id,
                              "removed" if lb is None else "configured", e)
        finally:
            self._appliers.pop(lb_id, None)

    def busy(self, lb_id: str) -> bool:
        return lb_id in self._appliers

    async def idle(self) -> None:
        """Wait for the applies under way (tests, shutdown)."""
        while self._appliers:
            await asyncio.gather(*list(self._appliers.values()), return_exceptions=True)

    # -- supervision -----------------------------------------------------------------------------
    async def supervise(self) -> None:
        """One round: recreate the missing, re-apply the moved, remove orphans, read statistics."""
        self._started = True
        try:
            running = await self.driver.running()
        except LoadBalancerError as e:
            log.error("load balancers: cannot list the proxies: %s", e)
            return
        for name in sorted(running - set(self.table.rows)):
            if self.busy(name):
                continue   # its deletion is being applied
            log.warning("load balancer proxy %s has no load balancer (an orphan): removing it", name)
            self.orphans_removed += 1
            self.changed(name)
        for lb in list(self.table.values()):
            if self.busy(lb.id):
                continue
            if lb.id not in running:
                if lb.id in self.applied or lb.id in self._was_running:
                    log.warning("load balancer %s (%s): its proxy is gone: starting it again", lb.id, lb.name)
                    self.restarts += 1
                self.changed(lb.id)
            elif self.applied.get(lb.id) != self.spec(lb):
                self.changed(lb.id)
        self._was_running = running
        await self._read_stats(running)

    def proxy_state(self, lb: LoadBalancer) -> str:
        """For operators: in step | applying | error: … | pending (not applied yet)."""
        if self.busy(lb.id):
            return "applying"
        if lb.id in self.errors:
            return "error: " + self.errors[lb.id]
        return "in step" if self.applied.get(lb.id) == self.spec(lb) else "pending"

    async def _read_stats(self, running: set[str]) -> None:
        ids = [i for i in self.table.rows if i in running]

        async def one(lb_id: str) -> None:
            try:
                self.stats[lb_id] = await self.driver.stats(lb_id)
            except LoadBalancerError as e:
                log.debug("load balancer %s: cannot read its statistics: %s", lb_id, e)

        await asyncio.gather(*(one(i) for i in ids))
        for gone in set(self.stats) - set(self.table.rows):
            del self.stats[gone]

    def reading(self, lb_id: str) -> BalancerStats | None:
        return self.stats.get(lb_id)

    async def close(self, remove: bool = False) -> None:
        """Stop applying; with `remove`, stop every proxy too (else they serve on, to be adopted)."""
        for t in list(self._appliers.values()):
            t.cancel()
        await asyncio.gather(*list(self._appliers.values()), return_exceptions=True)
        if remove:
            try:
                names = await self.driver.running()
            except LoadBalancerError:
                names = set()
            for name in sorted(names | set(self.table.rows)):
                try:
                    await self.driver.remove(name)
                except LoadBalancerError as e:
                    log.error("load balancer %s: its proxy could not be removed: %s", name, e)
        try:
            await self.driver.close()
        except LoadBalancerError:
            pass

    def now(self) -> float:
        return time.time()
