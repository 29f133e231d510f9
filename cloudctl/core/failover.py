"""Host-failure policy: which instances of a failed host boot again elsewhere, and the fence
that must come first (OpenNebula's host-error hook, pacemaker's fencing).

Each instance has an effective policy (`Config.failure_policy`: its type's, else its host's, else
the global one; `none` on a host without shared storage). When a host turns `error` and one of
its instances has `restart`, the host's fence agent is run until it confirms the host is off,
with a growing pause between failures. Only a confirmed fence (the agent's, or the admin's word
through `host fence`) moves anything: in one transaction the `host.fenced` event and every move
it allows are journaled, so a crash either loses the whole step (the host is still in error at
start-up and is fenced again: powering off an off host is harmless) or keeps it whole (the moved
instances are pending on their new hosts and start-up reconciliation boots them). `none`
instances stay where they are, impaired, until the host answers again.

A fence counts until the host answers again. It is kept in memory only: after a controller
restart a host is fenced anew rather than trusted to be still off.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..config import Config, FenceCommand, FenceIpmi, Host
from ..drivers.fence import FenceAgent, FenceError
from ..slim import dataclass
from ..store.records import Instance
from ..store.store import Store, Txn
from .compute import Compute
from .events import Events
from .instance_store import gib_needed
from .scheduler import HostCapacity, Scheduler
from .tasks import Supervisor

log = logging.getLogger("cloudctl.failover")

MOVABLE = ("pending", "running")


def agent_for(cfg: FenceIpmi | FenceCommand | None) -> FenceAgent | None:
    """The host's fence agent, its module imported only then (most hosts have none)."""
    if isinstance(cfg, FenceIpmi):
        from ..drivers.fence.ipmi import IpmiFence
        return IpmiFence(cfg.host, cfg.port, cfg.user, cfg.password, cfg.timeout_s)
    if isinstance(cfg, FenceCommand):
        from ..drivers.fence.command import CommandFence
        return CommandFence(cfg.argv, cfg.timeout_s)
    return None


@dataclass(slots=True)
class Fencing:
    """One host's fencing, for `host show` and the retry loop."""
    attempts: int = 0              # failed attempts since the host last answered
    last_error: str = ""
    next_attempt: float | None = None
    fenced_at: float | None = None  # confirmed off (until the host answers again)
    fenced_by: str = ""
    running: bool = False
    told_admin: bool = False       # host.fence_needed recorded for this failure (no agent)

    @property
    def state(self) -> str:
        if self.fenced_at is not None:
            return "fenced"
        if self.running:
            return "fencing"
        return "failed" if self.attempts else "idle"


class Failover:
    def __init__(self, store: Store, config: Config, compute: Compute, scheduler: Scheduler,
                 events: Events, state_of: Callable[[str], str], tasks: Supervisor,
                 agents: dict[str, FenceAgent] | None = None) -> None:
        self.store = store
        self.state_of = state_of   # the host's monitored state
        self.config = config
        self.compute = compute
        self.scheduler = scheduler
        self.events = events
        self.tasks = tasks
        self.hosts: dict[str, Host] = {h.name: h for h in config.hosts}
        self.agents = agents if agents is not None else {
            h.name: a for h in config.hosts if (a := agent_for(h.fence)) is not None}
        self.fencing = {name: Fencing() for name in self.hosts}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._no_room: dict[str, set[str]] = {}   # per fenced host: instances already reported

    # -- policy ----------------------------------------------------------------------------
    def policy_of(self, inst: Instance) -> str:
        host = self.hosts.get(inst.host)
        return self.config.failure_policy(host, inst.instance_type) if host is not None else "none"

    def candidates(self, host: str) -> list[Instance]:
        """The instances of `host` that restart elsewhere once it is fenced."""
        return sorted((i for i in self.compute.on_host(host).values()
                       if i.state in MOVABLE and self.policy_of(i) == "restart"), key=lambda i: i.id)

    # -- called by the monitor -------------------------------------------------------------
    def host_failing(self, host: str) -> None:
        """Each round `host` is in error: fence it if something waits for that, or restart what
        the fence allowed but had no room for then."""
        f = self.fencing[host]
        if f.fenced_at is not None:
            if self.candidates(host):
                self.compute.work.spawn(self._restart_rest(host))
            return
        if host in self._tasks:
            return
        waiting = self.candidates(host)
        if not waiting:
            return
        if host in self.agents:
            self._tasks[host] = self.tasks.spawn("failover", self._fence_loop(host), f"fence {host}")
        elif not f.told_admin:
            f.told_admin = True
            self.events.emit("host.fence_needed", host,
                             f"{len(waiting)} instance(s) with failure_policy restart wait for the admin's "
                             f"`cloudctl host fence {host}` (no fence agent)", None,
                             instances=[i.id for i in waiting])

    def host_back(self, host: str) -> None:
        """The host answers: a fence no longer holds, and no more attempts are made. (An attempt
        under way is let finish: a BMC left halfway through a power-off is worse; if it
        confirms, the host is off and restarting its instances is safe.)"""
        f = self.fencing[host]
        f.attempts, f.last_error, f.next_attempt, f.fenced_at, f.fenced_by = 0, "", None, None, ""
        f.told_admin = False
        self._no_room.pop(host, None)

    # -- fencing ---------------------------------------------------------------------------
    async def _fence_loop(self, host: str) -> None:
        f = self.fencing[host]
        agent = self.agents[host]
        mon = self.config.monitor
        try:
            while self._still_wanted(host):
                f.running, f.next_attempt = True, None
                try:
                    how = await agent.fence(host)
                except Exception as e:  # FenceError, or an agent's bug: neither is a fence
                    if not isinstance(e, FenceError):
                        log.exception("fence agent of %s failed", host)
                        e = FenceError(f"{type(e).__name__}: {e}")
                    f.running = False
                    f.attempts += 1
                    f.last_error = str(e)
                    delay = min(mon.fence_retry_max_s, mon.fence_retry_s * 2 ** (f.attempts - 1))
                    f.next_attempt = time.time() + delay
                    log.error("host %s: fence attempt %d failed: %s; next in %g s", host, f.attempts, e, delay)
                    with self.store.txn() as tx:
                        self.events.add(tx, "host.fence_failed", host, f"{agent.kind} fence failed: {e}", None,
                                        agent=agent.kind, attempt=f.attempts, reason=str(e), retry_in_s=delay)
                    self.store.flush()
                    await asyncio.sleep(delay)
                    continue
                f.running = False
                # No await between the agent's answer and the journaled moves.
                await self.confirm(host, agent.kind, how)
                return
        except Exception:
            log.exception("fencing %s failed", host)
        finally:
            f.running = False
            self._tasks.pop(host, None)

    def _still_wanted(self, host: str) -> bool:
        return (self.state_of(host) == "error" and self.fencing[host].fenced_at is None
                and bool(self.candidates(host)))

    async def confirm(self, host: str, by: str, how: str) -> list[str]:
        """`host` is off for certain (`by` the admin or an agent kind): journal the fence and
        every restart it allows in one transaction, then boot them. Returns the moved ids."""
        f = self.fencing[host]
        f.fenced_at, f.fenced_by, f.last_error, f.next_attempt = time.time(), by, "", None
        task = self._tasks.get(host)
        if task is not None and task is not asyncio.current_task():
            task.cancel()   # the admin's word made the agent's attempts moot
        moved, left = self._plan(host)
        with self.store.txn() as tx:
            self.events.add(tx, "host.fenced", host, f"{host} fenced ({by}): {how}", None, by=by, how=how,
                            restarted=[i.id for i, _ in moved], no_room=[i.id for i in left])
            self._record(tx, host, moved, left)
        await self.store.sync()
        return self._boot(moved)

    async def _restart_rest(self, host: str) -> None:
        """Candidates a fence allowed to move but for which there was no room at the time."""
        if self.fencing[host].fenced_at is None:
            return
        moved, left = self._plan(host)
        if not moved and all(i.id in self._no_room.get(host, ()) for i in left):
            return
        with self.store.txn() as tx:
            self._record(tx, host, moved, left)
        await self.store.sync()
        self._boot(moved)

    def _plan(self, host: str) -> tuple[list[tuple[Instance, str]], list[Instance]]:
        """Targets for the candidates of `host`: shared-storage hosts of the same zone with room."""
        def ok(h: HostCapacity) -> bool:
            cfg = self.hosts.get(h.name)
            return h.name != host and cfg is not None and cfg.shared_storage
        moved: list[tuple[Instance, str]] = []
        left: list[Instance] = []
        held: list[tuple[HostCapacity, int, int, int]] = []
        try:
            for inst in self.candidates(host):
                t = self.compute.type_of(inst.instance_type)
                disk = gib_needed(inst, t)
                target = self.scheduler.pick(inst.zone, t, accept=ok, disk=disk)
                if target is None:
                    left.append(inst)
                    continue
                moved.append((inst, target.name))
                # Held on the target while planning so the next pick sees the room it takes;
                # the usage index counts it for real once the move is put.
                target.used_vcpus += t.vcpus
                target.used_memory_mib += t.memory_mib
                target.used_disk_gib += disk
                held.append((target, t.vcpus, t.memory_mib, disk))
        finally:
            for cap, vcpus, mem, disk in held:
                cap.used_vcpus -= vcpus
                cap.used_memory_mib -= mem
                cap.used_disk_gib -= disk
        return moved, left

    def _record(self, tx: Txn, host: str, moved: list[tuple[Instance, str]], left: list[Instance]) -> None:
        why = f"host {host} failed"
        for inst, target in moved:
            self.compute.relocate(tx, inst, target, why)
        reported = self._no_room.setdefault(host, set())
        for inst in left:
            if inst.id not in reported:
                reported.add(inst.id)
                log.error("instance %s: no other shared-storage host in %s has room to restart it", inst.id,
                          inst.zone)
                self.events.add(tx, "instance.restart_failed", inst.id,
                                f"host {host} fenced but no other host of {inst.zone} with shared storage has room",
                                "InsufficientInstanceCapacity", owner=inst.owner, host=host)

    def _boot(self, moved: list[tuple[Instance, str]]) -> list[str]:
        for inst, _ in moved:
            self.compute.converge(inst.id)
        return [inst.id for inst, _ in moved]

    # -- views -----------------------------------------------------------------------------
    def view(self, host: str) -> dict[str, object]:
        """Policy and fencing of one host for `host show` and the admin API."""
        cfg = self.hosts[host]
        f = self.fencing[host]
        agent = self.agents.get(host)
        counts = {"restart": 0, "none": 0}
        for inst in self.compute.on_host(host).values():
            if inst.state in MOVABLE:
                counts[self.policy_of(inst)] += 1
        return {
            "shared_storage": cfg.shared_storage,
            "failure_policy": (cfg.failure_policy or self.config.monitor.failure_policy)
            if cfg.shared_storage else "none",
            "failure_policy_from": "no shared_storage" if not cfg.shared_storage
            else "host" if cfg.failure_policy else "monitor",
            "instance_policies": counts,
            "fence_agent": agent.describe() if agent is not None else None,
            "fence_state": f.state, "fence_attempts": f.attempts, "fence_error": f.last_error,
            "fence_next_attempt": f.next_attempt, "fenced_at": f.fenced_at, "fenced_by": f.fenced_by,
        }
