"""The reconciler: converges each group's instances to its desired state.

On every tick (and at once when the API changes a group or an instance of a group stops, dies
or its host turns impaired) each group is looked at: members that are gone are dropped, unhealthy
ones (past the grace period) replaced, and the difference between desired and actual capacity
launched or terminated, balanced across the group's zones. Each launch and termination is a
scaling activity journaled *before* it starts; a launch's ClientToken is derived from its
activity, so an activity found InProgress after a crash is finished by the same launch, never
by a second one. A failed launch is a Failed activity with EC2's reason, and the group's next
launch waits out an exponential backoff: no hot loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from ...config import Config
from ...store.records import Instance, ScalingActivity, ScalingGroup, ScalingMember
from ...store.store import Store
from ..compute import Compute
from ..context import Caller
from ..errors import CloudError
from ..events import Events
from ..launch import LaunchSpec
from ..users import Users
from .activities import Activities, stamp
from .groups import Groups
from .launch_configs import LaunchConfigs
from .members import Members
from .model import BalancerMembership, TemplateSource

log = logging.getLogger("cloudctl.autoscaling")

MAX_BATCH = 50          # instances per launch activity (one Compute.run, one transaction)
GROUPS_PER_TURN = 4     # groups looked at between two turns of the loop
SERVICE = Caller.service("autoscaling")
LIVE = ("pending", "running")


def token_of(activity_id: str) -> str:
    """The ClientToken of an activity's launch: the same after a crash, so it launches once."""
    return f"asg-{activity_id}"


class Reconciler:
    def __init__(self, store: Store, config: Config, groups: Groups, members: Members, activities: Activities,
                 launch_configs: LaunchConfigs, compute: Compute, users: Users,
                 templates: TemplateSource, balancers: BalancerMembership) -> None:
        self.store = store
        self.settings = config.autoscaling
        self.groups = groups
        self.members = members
        self.activities = activities
        self.launch_configs = launch_configs
        self.compute = compute
        self.users = users
        self.templates = templates
        self.balancers = balancers
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.ticks = 0
        groups.kick = self.kick
        groups.terminate_now = self.terminate

    # -- running -------------------------------------------------------------------------------
    def kick(self) -> None:
        """Look at the groups now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """The supervised loop: finish what a crash left open, then tick forever."""
        try:
            await self.resume()
        except Exception:   # (what is still open is taken up by the ticks)
            log.exception("autoscaling: resuming the open activities failed")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception:   # one failed round must not end the loop
                log.exception("autoscaling tick failed")

    async def watch(self, events: Events) -> None:
        """Wake on what changes a group's health: a member leaving pending/running, a host's state."""
        with events.listen() as feed:
            async for ev in feed:
                if ev.kind == "instance.state" and ev.data.get("state") not in LIVE and \
                        self.members.get(ev.subject) is not None:
                    self.kick()
                elif ev.kind.startswith("host."):
                    self.kick()

    async def resume(self) -> None:
        """Finish the activities a crash left InProgress: a launch again with its own ClientToken
        (returning the instances it made, if it made them), a termination again (idempotent)."""
        for a in self.activities.open():
            await self._take_up(a)

    async def _take_up(self, a: ScalingActivity) -> None:
        """Carry out an InProgress activity nobody is working on (left by a crash or a failed write)."""
        if a.id in self.activities.busy:
            return
        g = self.groups.get(a.owner, a.group)
        if a.kind == "launch" and g is not None:
            await self._launch(g, a)
        elif a.kind == "terminate":
            await self.terminate(a)
        else:
            with self.store.txn() as tx:
                tx.put(self.activities.finish(a, "Cancelled", "The group was deleted"))
            await self.store.sync()

    async def tick(self) -> None:
        async with self._lock:
            self.ticks += 1
            for n, gid in enumerate([g.id for g in self.groups.table.values()]):
                g = self.groups.table.get(gid)
                if g is not None:
                    try:
                        await self._group(g)
                    except CloudError as e:
                        log.warning("autoscaling group %s: %s", g.name, e)
                    except Exception:   # (a failed write: the group's open activities are taken up next tick)
                        log.exception("autoscaling group %s: the tick failed", g.name)
                if n % GROUPS_PER_TURN == GROUPS_PER_TURN - 1:
                    await asyncio.sleep(0)

    # -- one group -----------------------------------------------------------------------------
    def _lb_health(self, g: ScalingGroup) -> dict[str, str]:
        if g.health_check_type != "ELB":
            return {}
        out: dict[str, str] = {}
        for lb in g.load_balancers:
            if not self.balancers.exists(g.owner, lb):   # (deleted since: it judges nobody)
                continue
            for iid, state in self.balancers.health(g.owner, lb).items():
                if state == "OutOfService" or iid not in out:
                    out[iid] = state
        return out

    def _unhealthy(self, g: ScalingGroup, m: ScalingMember, inst: Instance, lb: Mapping[str, str],
                   now: float) -> str | None:
        """Why a member fails its health check (EC2: not running or impaired; ELB: OutOfService), or None."""
        if now < m.launched + g.grace_period:
            return None
        if inst.state not in LIVE:
            return f"an EC2 health check indicating it has been terminated or stopped ({inst.state})"
        if inst.state == "running" and self.compute.host_trouble(inst.host):
            return "an EC2 instance status check failure"
        if lb.get(m.id) == "OutOfService":
            return "an ELB system health check failure"
        return None

    async def _group(self, g: ScalingGroup) -> None:
        for a in self.activities.open_of(g.owner, g.name):   # first what is left open, then what it changed
            await self._take_up(a)
        g = self.groups.table.get(g.id) or g
        now = time.time()
        suspended = dict(g.suspended)
        lb = self._lb_health(g)
        gone: list[ScalingMember] = []
        sick: list[tuple[ScalingMember, str]] = []
        in_service: list[ScalingMember] = []
        for m in self.members.of_group(g.owner, g.name):
            if m.lifecycle != "InService":
                continue
            inst = self.compute.table.get(m.id)
            if inst is None or inst.state == "terminated":
                gone.append(m)
                continue
            why = None if "HealthCheck" in suspended else self._unhealthy(g, m, inst, lb, now)
            if why is not None and "ReplaceUnhealthy" not in suspended:
                sick.append((m, why))
                continue
            if why is not None and m.health != "Unhealthy":
                m = dataclasses.replace(m, health="Unhealthy")
                with self.store.txn() as tx:
                    tx.put(m)
                self.store.flush()
            in_service.append(m)
        if gone:
            await self._forget(g, gone)
        for m, why in sick:
            await self._replace(g, m, why)
        if self.activities.open_of(g.owner, g.name):
            return   # (a termination by request is under way: its outcome decides)
        n = len(in_service)
        desired = 0 if g.deleting else g.desired
        if n < desired and "Launch" not in suspended and now >= g.retry_at:
            await self._scale_out(g, in_service, desired - n)
        elif n > desired and ("Terminate" not in suspended or g.deleting):
            await self._scale_in(g, in_service, n - desired)
        g2 = self.groups.table.get(g.id)
        if g2 is not None and g2.deleting and not self.members.count(g.owner, g.name) \
                and not self.activities.open_of(g.owner, g.name):
            with self.store.txn() as tx:
                self.groups.drop(tx, g2)
            await self.store.sync()

    async def _forget(self, g: ScalingGroup, gone: Sequence[ScalingMember]) -> None:
        """Members whose instance is terminated (by anyone): out of the group, with an activity each."""
        now = time.time()
        with self.store.txn() as tx:
            for m in gone:
                self.members.remove(tx, m)
                tx.put(self.activities.new(
                    g.owner, g.name, "terminate",
                    f"At {stamp(now)} an instance was taken out of service in response to an EC2 health check "
                    f"indicating it has been terminated or stopped.",
                    f"Terminating EC2 instance: {m.id}", status="Successful", instance_ids=(m.id,)))
            self.activities.trim(tx, g.owner, g.name)
        await self.store.sync()

    async def _replace(self, g: ScalingGroup, m: ScalingMember, why: str) -> None:
        cause = f"At {stamp(time.time())} an instance was taken out of service in response to {why}."
        act = self.activities.new(g.owner, g.name, "terminate", cause, f"Terminating EC2 instance: {m.id}",
                                  instance_ids=(m.id,))
        with self.store.txn() as tx:
            tx.put(act)
            tx.put(dataclasses.replace(m, health="Unhealthy", lifecycle="Terminating"))
        await self.store.sync()
        await self.terminate(act)

    # -- scaling out ----------------------------------------------------------------------------
    def _plan(self, g: ScalingGroup, in_service: Sequence[ScalingMember], count: int) -> dict[str, int]:
        """How many to launch in each zone: each new instance into the zone with fewest (balanced)."""
        have = Counter(m.zone for m in in_service)
        plan: Counter[str] = Counter()
        for _ in range(count):
            z = min(g.zones, key=lambda z: (have[z] + plan[z], g.zones.index(z)))
            plan[z] += 1
        return dict(plan)

    def _subnet(self, g: ScalingGroup, zone: str) -> str | None:
        if not g.subnet_ids:
            return None
        for sid in g.subnet_ids:
            with contextlib.suppress(CloudError):
                if self.groups.network.get(sid).zone == zone:
                    return sid
        return None

    async def _scale_out(self, g: ScalingGroup, in_service: Sequence[ScalingMember], count: int) -> None:
        n = len(in_service)
        for zone, k in self._plan(g, in_service, count).items():
            while k > 0:
                batch = min(k, MAX_BATCH)
                cause = (f"At {stamp(time.time())} an instance was started in response to a difference between "
                         f"desired and actual capacity, increasing the capacity from {n} to {n + batch}.")
                source = f"lc:{g.launch_configuration}" if g.launch_configuration else \
                    f"lt:{g.template_id or ''}\x1f{g.template_name or ''}\x1f{g.template_version or ''}"
                act = self.activities.new(g.owner, g.name, "launch", cause, "Launching a new EC2 instance",
                                          zone=zone, subnet_id=self._subnet(g, zone), count=batch, details=source)
                with self.store.txn() as tx:
                    tx.put(act)
                await self.store.sync()
                if not await self._launch(g, act):
                    return   # (backing off: the other zones wait too, as the group's launches do)
                g = self.groups.table.get(g.id) or g
                n += batch
                k -= batch

    def _spec(self, g: ScalingGroup, act: ScalingActivity) -> LaunchSpec:
        kind, _, ref = act.details.partition(":")
        if kind == "lc":
            lc = self.launch_configs.get(g.owner, ref)
            if lc is None:
                raise CloudError("ValidationError", f"Launch configuration {ref} does not exist any more")
            spec = self.launch_configs.spec(lc)
        else:
            tid, name, version = ref.split("\x1f")
            spec = self.templates.launch_spec(g.owner, tid or None, name or None, version or None)
        tags = tuple((k, v) for k, v, p in g.tags if p and not k.startswith("aws:"))
        system = tuple((k, v) for k, v, p in g.tags if p and k.startswith("aws:"))   # (CloudFormation's)
        return dataclasses.replace(spec, zone=act.zone, subnet_id=act.subnet_id, min_count=1, max_count=act.count,
                                   client_token=token_of(act.id), owner=g.owner,
                                   instance_tags=(*spec.instance_tags, *tags),
                                   system_tags=(*spec.system_tags, *system), private_ip=None)

    async def _launch(self, g: ScalingGroup, act: ScalingActivity) -> bool:
        """Carry out a launch activity; False if it failed (the group backs off)."""
        self.activities.busy.add(act.id)
        try:
            return await self._launch_busy(g, act)
        finally:
            self.activities.busy.discard(act.id)

    async def _launch_busy(self, g: ScalingGroup, act: ScalingActivity) -> bool:
        try:
            spec = self._spec(g, act)
            _, launched = await self.compute.run(SERVICE, spec)
        except CloudError as e:
            g = self.groups.table.get(g.id) or g
            failures = g.failures + 1
            wait = min(self.settings.backoff_s * 2 ** (failures - 1), self.settings.backoff_max_s)
            with self.store.txn() as tx:
                tx.put(self.activities.finish(act, "Failed", f"{e.code}: {e.message}",
                                              description="Launching a new EC2 instance. Status Reason: "
                                                          f"{e.message}. Launching EC2 instance failed."))
                if self.groups.table.get(g.id) is not None:
                    tx.put(dataclasses.replace(g, failures=failures, retry_at=time.time() + wait))
                self.activities.trim(tx, g.owner, g.name)
            await self.store.sync()
            log.info("autoscaling group %s: launch failed (%s); next try in %.0f s", g.name, e.code, wait)
            return False
        g = self.groups.table.get(g.id) or g
        ids = tuple(i.id for i in launched)
        # Into the load balancers before the activity is done: a crash between leaves it InProgress,
        # and taking it up again launches nothing new (the token) and registers again (no harm).
        await self.groups.register(g, ids)
        lc = act.details[3:] if act.details.startswith("lc:") else None
        template = act.details[3:] if act.details.startswith("lt:") else None
        with self.store.txn() as tx:
            for inst in launched:
                if self.members.get(inst.id) is None:
                    self.members.add(tx, inst, g.name, lc, template, g.protect_new)
            word = "instance" if len(ids) == 1 else f"{len(ids)} instances"
            msg = "" if len(ids) == act.count else \
                f"Launched {len(ids)} of {act.count}: the cloud has no room for more."
            tx.put(self.activities.finish(act, "Successful", msg, instance_ids=ids,
                                          description=f"Launching a new EC2 {word}: {', '.join(ids)}"))
            if self.groups.table.get(g.id) is not None and (g.failures or g.retry_at):
                tx.put(dataclasses.replace(g, failures=0, retry_at=0.0))
            self.activities.trim(tx, g.owner, g.name)
        await self.store.sync()
        return True

    # -- scaling in -----------------------------------------------------------------------------
    def _victim(self, g: ScalingGroup, candidates: list[ScalingMember], now: float) -> ScalingMember:
        """The member to terminate: from the zone with most (of the zones tied for most, the one the
        policies pick), then by the group's termination policies; the instance id last (deterministic)."""
        counts = Counter(m.zone for m in candidates)
        most = max(counts.values())
        pool = [m for m in candidates if counts[m.zone] == most]   # (zones tied for most: the policies decide)
        current_lc = g.launch_configuration
        current_lt = f"{g.template_id or ''}\x1f{g.template_name or ''}\x1f{g.template_version or ''}"

        def rank(m: ScalingMember) -> tuple[object, ...]:
            out: list[object] = []
            for p in g.termination_policies:
                if p in ("Default", "OldestLaunchConfiguration", "OldestLaunchTemplate", "AllocationStrategy"):
                    old_lc = m.launch_configuration != current_lc if current_lc else False
                    old_lt = m.template != current_lt if g.template_id or g.template_name else False
                    out.append(0 if (old_lc or old_lt) else 1)
                    if p == "Default":
                        out.append((3600 - (now - m.launched) % 3600))   # closest to the next instance hour
                elif p == "OldestInstance":
                    out.append(m.launched)
                elif p == "NewestInstance":
                    out.append(-m.launched)
                elif p == "ClosestToNextInstanceHour":
                    out.append(3600 - (now - m.launched) % 3600)
            out.append(m.id)
            return tuple(out)
        return min(pool, key=rank)

    async def _scale_in(self, g: ScalingGroup, in_service: Sequence[ScalingMember], count: int) -> None:
        candidates = [m for m in in_service if not m.protected or g.deleting]
        now = time.time()
        n = len(in_service)
        acts: list[ScalingActivity] = []
        with self.store.txn() as tx:
            for _ in range(min(count, len(candidates))):
                m = self._victim(g, candidates, now)
                candidates.remove(m)
                why = ("the group being deleted" if g.deleting else
                       "a difference between desired and actual capacity")
                cause = (f"At {stamp(now)} an instance was taken out of service in response to {why}, "
                         f"shrinking the capacity from {n} to {n - 1}.")
                n -= 1
                act = self.activities.new(g.owner, g.name, "terminate", cause, f"Terminating EC2 instance: {m.id}",
                                          instance_ids=(m.id,))
                tx.put(act)
                tx.put(dataclasses.replace(m, lifecycle="Terminating"))
                acts.append(act)
        await self.store.sync()
        for act in acts:
            await self.terminate(act)

    async def terminate(self, act: ScalingActivity) -> ScalingActivity:
        """Carry out a termination activity: out of the load balancers, then EC2's TerminateInstances."""
        self.activities.busy.add(act.id)
        try:
            return await self._terminate_busy(act)
        finally:
            self.activities.busy.discard(act.id)

    async def _terminate_busy(self, act: ScalingActivity) -> ScalingActivity:
        g = self.groups.get(act.owner, act.group)
        iid = act.instance_ids[0]
        m = self.members.get(iid)
        user = self.users.by_account(act.owner)
        status, message = "Successful", ""
        try:
            if g is not None:
                await self.groups.deregister(g, [iid])
            inst = self.compute.table.get(iid)
            if user is not None and inst is not None and inst.state != "terminated":
                await self.compute.terminate(Caller(user), [iid])
        except CloudError as e:
            status, message = "Failed", f"{e.code}: {e.message}"
        done = self.activities.finish(act, status, message)
        with self.store.txn() as tx:
            tx.put(done)
            if m is not None:
                if status == "Successful":
                    self.members.remove(tx, m)
                else:   # (back in service; the next tick decides again)
                    tx.put(dataclasses.replace(m, lifecycle="InService"))
            self.activities.trim(tx, act.owner, act.group)
        await self.store.sync()
        return done
