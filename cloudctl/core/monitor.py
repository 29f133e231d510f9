"""Host monitoring: a periodic poll per hypervisor host, host states, and the safety net for
domains that died without an event.

Lifecycle events update instances at once; the poll catches what events miss (a dropped
connection, a qemu killed while the controller was restarting). One task keeps every host's next
round (a heap of due times) and starts each round as a task of its own, all on the event loop, with
the hypervisor calls on the driver's lane of shared threads. A task per host, sleeping between its
rounds, held ~2 KiB a host (its frame, the task, the supervisor's bookkeeping): 0.4 MiB with 200.

Host states follow OpenNebula's: `on` (monitored), `error` (failing for longer than the grace
period), `disabled` (admin: monitored, no new placements), `offline` (admin: not monitored),
and `init` until the first answer. Nothing is deleted because a host is unreachable: its
instances keep their records and are reported impaired until it answers again.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable

from ..config import Config
from ..drivers.hypervisor.base import HostPoll, HypervisorDriver, HypervisorError, Power
from ..store.records import HostAdmin, Instance
from ..store.store import Store
from .compute import Compute
from .errors import CloudError
from .events import Events
from .failover import Failover
from .host_health import HostHealth, HostStates
from .scheduler import Scheduler
from .tasks import Supervisor

log = logging.getLogger("cloudctl.monitor")

ADMIN_STATES = ("enabled", "disabled", "offline")
DEAD = frozenset({Power.OFF, Power.CRASHED})


PollObserver = Callable[[str, float, bool], None]   # host, seconds, succeeded


class Monitor:
    def __init__(self, store: Store, config: Config, compute: Compute, scheduler: Scheduler,
                 drivers: dict[str, HypervisorDriver], events: Events, health: HostStates,
                 tasks: Supervisor) -> None:
        self.store = store
        self.config = config
        self.compute = compute
        self.scheduler = scheduler
        self.drivers = drivers
        self.events = events
        self.admin = store.table(HostAdmin)
        self.health = health
        self.hosts = health.hosts
        self.tasks = tasks
        self._ratios = {h.name: (h.cpu_overcommit or config.overcommit.cpu,
                                 h.memory_overcommit or config.overcommit.memory) for h in config.hosts}
        self.on_poll: PollObserver | None = None
        self._missing: dict[str, set[str]] = {}   # per host: running instances whose domain one poll missed
        self._due: list[tuple[float, str]] = []   # (loop time, host) of the next rounds, a heap
        self.failover = Failover(store, config, compute, scheduler, events, health.state_of, tasks)

    # -- state -----------------------------------------------------------------------------
    def admin_state(self, host: str) -> str:
        row = self.admin.get(host)
        return row.admin if row is not None else "enabled"

    def state_of(self, host: str) -> str:
        return self.health.state_of(host)

    def impaired_reason(self, host: str) -> str | None:
        """Why instances on `host` are impaired, or None when they are not."""
        return self.health.impaired_reason(host)

    def impaired_since(self, host: str) -> float | None:
        return self.health.impaired_since(host)

    def _target(self, h: HostHealth, now: float) -> str:
        admin = self.admin_state(h.name)
        if admin == "offline":
            return "offline"
        if h.failing_since is not None and now - h.failing_since >= self.config.monitor.grace_s:
            return "error"
        if admin == "disabled":
            return "disabled"
        if h.last_seen is None:
            return "init"
        return "on"

    def _settle(self, h: HostHealth, now: float) -> None:
        """Move `h` to the state its figures call for; record the change as an event."""
        new = self._target(h, now)
        cap = self.scheduler.hosts.get(h.name)
        if cap is not None:
            cap.enabled = new == "on"
        if new == h.state:
            return
        old, h.state, h.since = h.state, new, now
        reason = f": {h.error}" if new == "error" and h.error else ""
        log.warning("host %s: %s -> %s%s", h.name, old, new, reason)
        with self.store.txn() as tx:
            self.events.add(tx, "host.state", h.name, f"{old} -> {new}{reason}", None,
                            state=new, previous=old, instances=len(self.compute.on_host(h.name)))
        self.store.flush()

    async def set_admin(self, host: str, admin: str) -> HostHealth:
        """Enable, disable (no new placements) or take a host offline (not monitored)."""
        if host not in self.hosts:
            raise CloudError.not_found("NoSuchEntity", f"host {host} does not exist")
        if admin not in ADMIN_STATES:
            raise CloudError("InvalidRequest", f"admin state must be one of {', '.join(ADMIN_STATES)}")
        with self.store.txn() as tx:
            tx.put(HostAdmin(name=host, admin=admin, changed_at=time.time()))
        await self.store.sync()
        h = self.hosts[host]
        if admin == "offline":
            h.failing_since = None
        self._settle(h, time.time())
        return h

    async def fence(self, host: str) -> list[str]:
        """The admin's word that `host` is powered off (fenced). Its running instances whose
        effective failure policy is `restart` boot again on other hosts of their zone; never
        before a fence (this word or the host's fence agent), so an instance cannot run on two
        hosts at once. Returns the instances restarted."""
        h = self.hosts.get(host)
        if h is None:
            raise CloudError.not_found("NoSuchEntity", f"host {host} does not exist")
        if h.state not in ("error", "offline"):
            raise CloudError.wrong_state("IncorrectState", f"host {host} is {h.state}: only a host in error or "
                                                           f"offline can be fenced")
        return await self.failover.confirm(host, "admin", "confirmed powered off by the admin")

    # -- polling ---------------------------------------------------------------------------
    def start(self, connected: set[str]) -> None:
        """Initial states from the start-up connection, then the task that polls the hosts."""
        now = time.time()
        for name, h in self.hosts.items():
            if name in connected:
                h.last_seen = now
            else:
                h.failing_since, h.error = now, "could not connect at start-up"
            self._settle(h, now)
        self.tasks.spawn("monitor", self._run(), "monitor")

    async def _run(self) -> None:
        """Each host's rounds, `interval_s` ±10 % apart from the end of one to the start of the
        next (a host is never polled twice at once), the first ones spread over the interval.

        A round ending pushes its host's next due time, never sooner than 0.9 intervals away; this
        task sleeps at most that long, so it wakes in time for it without being woken."""
        loop = asyncio.get_running_loop()
        interval = self.config.monitor.interval_s
        now = loop.time()
        due = self._due = [(now + random.uniform(0, interval), name) for name in self.hosts]
        heapq.heapify(due)
        while True:
            now = loop.time()
            while due and due[0][0] <= now + 0.001:   # (the loop's clock is in ms)
                name = heapq.heappop(due)[1]
                self.tasks.spawn("monitor", self._round(name, interval), f"monitor {name}")
            await asyncio.sleep(min(due[0][0] - now, 0.9 * interval) if due else 0.9 * interval)

    async def _round(self, name: str, interval: float) -> None:
        try:
            await self.poll_host(name)
        except Exception:  # a bug in one round must not end monitoring of the host
            log.exception("monitoring %s failed", name)
        heapq.heappush(self._due, (asyncio.get_running_loop().time() + interval * random.uniform(0.9, 1.1), name))

    async def poll_host(self, name: str) -> HostHealth:
        """One round for one host: poll, update its state, settle its instances."""
        h = self.hosts[name]
        if self.admin_state(name) == "offline":
            self._settle(h, time.time())
            return h
        before = {i.id: i for i in self.compute.on_host(name).values() if i.state == "running"}
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.drivers[name].poll(), self.config.monitor.timeout_s)
        except (HypervisorError, TimeoutError) as e:
            h.last_poll_s = time.perf_counter() - t0
            h.polls += 1
            h.failures += 1
            h.error = str(e) or f"no answer within {self.config.monitor.timeout_s:g} s"
            now = time.time()
            if h.failing_since is None:
                h.failing_since = now
            self._observe(name, h.last_poll_s, False)
            self._settle(h, now)
            if h.state == "error":
                self.failover.host_failing(name)
            return h
        h.last_poll_s = time.perf_counter() - t0
        h.polls += 1
        now = time.time()
        h.last_seen, h.failing_since, h.error, h.last = now, None, "", result
        self.failover.host_back(name)
        self._update_capacity(name, result)
        self._observe(name, h.last_poll_s, True)
        self._settle(h, now)
        self._dead_domains(name, before, result)
        self._strays(name, result)
        return h

    def _strays(self, name: str, poll: HostPoll) -> None:
        """Domains of instances that live on another host now: the host was fenced and they
        were restarted elsewhere while it was away.

        The same walk makes the kept poll name each instance's domain by the instance row's own id
        string: the poll's names are fresh copies from libvirt, ~68 B each kept until the next poll
        (3.4 MB at 50,000 instances)."""
        table = self.compute.table
        names: list[str] = []
        for domain in poll.domains.names:
            inst = table.get(domain)
            if inst is None:
                names.append(domain)
                continue
            names.append(inst.id)
            if inst.host != name:
                log.warning("host %s: %s runs on %s now; removing its old domain here", name, domain, inst.host)
                self.compute.remove_stray(name, domain)
        poll.domains.names = tuple(names)

    def _observe(self, name: str, seconds: float, ok: bool) -> None:
        if self.on_poll is not None:
            self.on_poll(name, seconds, ok)

    def _update_capacity(self, name: str, poll: HostPoll) -> None:
        """A host that was unreachable at start-up gets its real size once it answers."""
        cap = self.scheduler.hosts.get(name)
        if cap is None or (cap.vcpus and cap.memory_mib):
            return
        cpu, mem = self._ratios[name]
        cap.vcpus, cap.memory_mib = int(poll.resources.cpus * cpu), int(poll.resources.memory_mib * mem)

    def _dead_domains(self, name: str, before: dict[str, Instance], poll: HostPoll) -> None:
        """Running instances whose domain is off, or missing from two polls in a row, with
        nothing of ours acting on them. (A domain the hypervisor reports off is acted on at once;
        a missing one is confirmed by the next poll before its instance is called stopped.)"""
        power = poll.domains.powers()
        missing_before = self._missing.get(name, set())
        missing_now: set[str] = set()
        for iid, inst in before.items():
            p = power.get(iid)
            if p is not None and p not in DEAD:
                continue
            if self.compute.table.get(iid) is not inst or self.compute.work.busy(iid):
                continue   # changed or being worked on since the poll began: not ours to judge
            if p is None and iid not in missing_before:
                missing_now.add(iid)
                continue
            what = "is gone" if p is None else f"is {p}"
            self.compute.domain_lost(inst, f"its domain {what} on {name}")
        self._missing[name] = missing_now


def host_view(h: HostHealth, monitor: Monitor, scheduler: Scheduler) -> dict[str, object]:
    """The admin's view of one host (`cloudctl host list|show`)."""
    cap = scheduler.hosts.get(h.name)
    res = h.last.resources if h.last else None
    out: dict[str, object] = {
        "name": h.name, "state": h.state, "admin": monitor.admin_state(h.name),
        "zone": cap.zone if cap else "", "vcpus": cap.vcpus if cap else 0,
        "used_vcpus": cap.used_vcpus if cap else 0, "memory_mib": cap.memory_mib if cap else 0,
        "used_memory_mib": cap.used_memory_mib if cap else 0, "instances": cap.instances if cap else 0,
        "enabled": cap.enabled if cap else False, "last_seen": h.last_seen, "since": h.since,
        "error": h.error, "polls": h.polls, "failures": h.failures,
        "last_poll_ms": round(h.last_poll_s * 1000, 2),
        "free_memory_mib": res.free_memory_mib if res else None,
        "domains": len(h.last.domains) if h.last else None,
    }
    out.update(monitor.failover.view(h.name))
    return out

