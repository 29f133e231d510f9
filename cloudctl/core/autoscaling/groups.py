"""AutoScaling groups: their desired state (sizes, zones, launch source, processes, tags), as the
API changes it. Every change is journaled; converging the instances to it is the reconciler's
(`reconciler.py`), woken by `kick` after each change."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ...config import Config
from ...slim import dataclass
from ...store.records import ScalingActivity, ScalingGroup, ScalingMember
from ...store.store import MultiIndex, Store
from ..compute import Compute
from ..context import Caller
from ..errors import CloudError
from ..network import Networks
from ..tags import Tags
from .activities import Activities, stamp
from .launch_configs import LaunchConfigs
from .members import Members
from .model import (
    GROUP_TAG,
    HEALTH_CHECK_TYPES,
    PROCESSES,
    TERMINATION_POLICIES,
    BalancerMembership,
    TemplateRef,
    TemplateSource,
    activity_in_progress,
    already_exists,
    arn,
    check_name,
    in_use,
    key,
    limit_exceeded,
    page,
    validation,
)

MAX_TAGS = 50
MAX_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class GroupInput:
    """Create/UpdateAutoScalingGroup in the core's terms: None is "not given"."""
    name: str
    launch_configuration: str | None = None
    template: TemplateRef | None = None
    min_size: int | None = None
    max_size: int | None = None
    desired: int | None = None
    default_cooldown: int | None = None
    zones: tuple[str, ...] | None = None
    subnet_ids: tuple[str, ...] | None = None
    health_check_type: str | None = None
    grace_period: int | None = None
    termination_policies: tuple[str, ...] | None = None
    load_balancers: tuple[str, ...] | None = None
    protect_new: bool | None = None
    tags: tuple[tuple[str, str, bool], ...] = ()
    # `aws:` tags the cloud's own services set (CloudFormation's), never from a wire: the user tag
    # check does not apply to them; propagated ones reach the instances as their system tags.
    system_tags: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class TagInput:
    group: str
    key: str
    value: str | None = None
    propagate: bool | None = None
    resource_type: str = "auto-scaling-group"


class Groups:
    def __init__(self, store: Store, config: Config, network: Networks, tags: Tags, compute: Compute,
                 launch_configs: LaunchConfigs, members: Members, activities: Activities,
                 templates: TemplateSource, balancers: BalancerMembership) -> None:
        self.store = store
        self.config = config
        self.network = network
        self.tags = tags
        self.compute = compute
        self.launch_configs = launch_configs
        self.members = members
        self.activities = activities
        self.templates = templates
        self.balancers = balancers
        self.kick: Callable[[], None] = lambda: None   # the reconciler's wake-up (set when it starts)
        self.terminate_now: Callable[[ScalingActivity], Any] | None = None   # the reconciler's termination
        self.on_drop: list[Callable[[Any, ScalingGroup], None]] = []   # rows to drop with a group (policies)
        self.table = store.table(ScalingGroup)
        self._by_owner: MultiIndex[ScalingGroup] = self.table.add_index(MultiIndex(lambda g: g.owner))
        self._by_lc: MultiIndex[ScalingGroup] = self.table.add_index(
            MultiIndex(lambda g: key(g.owner, g.launch_configuration) if g.launch_configuration else None))

    # -- lookups -------------------------------------------------------------------------------
    def get(self, owner: str, name: str) -> ScalingGroup | None:
        return self.table.get(key(owner, name))

    def named(self, caller: Caller, name: str) -> ScalingGroup:
        g = self.get(caller.account, name)
        if g is None:
            raise validation(f"AutoScalingGroup name not found - AutoScalingGroup {name} not found")
        return g

    def _live(self, caller: Caller, name: str) -> ScalingGroup:
        g = self.named(caller, name)
        if g.deleting:
            raise validation(f"AutoScalingGroup {name} is pending delete.")
        return g

    def using_launch_configuration(self, owner: str, name: str) -> str | None:
        g = next(iter(self._by_lc.get(key(owner, name)).values()), None)
        return g.name if g else None

    def count(self, owner: str) -> int:
        return len(self._by_owner.get(owner))

    # -- validation ----------------------------------------------------------------------------
    def _source(self, caller: Caller, spec: GroupInput) -> None:
        if spec.launch_configuration is not None and spec.template is not None:
            raise validation("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, "
                             "InstanceId or MixedInstancesPolicy parameter.")
        if spec.launch_configuration is not None:
            self.launch_configs.named(caller.account, spec.launch_configuration)
        if spec.template is not None:
            t = spec.template
            try:
                self.templates.launch_spec(caller.account, t.template_id, t.name, t.version)
            except CloudError as e:
                raise validation(e.message) from None

    def _placement(self, zones: tuple[str, ...] | None,
                   subnet_ids: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The zones and subnets a group spans: the subnets' zones when subnets are named."""
        subnets = tuple(dict.fromkeys(subnet_ids or ()))
        if subnets:
            found = []
            for sid in subnets:
                try:
                    found.append(self.network.get(sid))
                except CloudError:
                    raise validation(f"The subnet ID '{sid}' does not exist") from None
            of_subnets = tuple(dict.fromkeys(s.zone for s in found))
            if zones and set(zones) != set(of_subnets):
                raise validation("The availability zones of the specified subnets and the Auto Scaling group "
                                 "do not match")
            return of_subnets, subnets
        zones = tuple(dict.fromkeys(zones or ()))
        if not zones:
            raise validation("At least one Availability Zone or VPC Subnet is required.")
        for z in zones:
            if z not in self.config.zones:
                raise validation(f"The availability zone '{z}' is not valid in this region")
        return zones, ()

    @staticmethod
    def _sizes(lo: int, hi: int, desired: int) -> None:
        for what, n in (("MinSize", lo), ("MaxSize", hi), ("DesiredCapacity", desired)):
            if not 0 <= n <= MAX_SIZE:
                raise validation(f"{what} must be between 0 and {MAX_SIZE} (got {n})")
        if hi < lo:
            raise validation(f"Max bound, {hi}, must be greater than or equal to min bound, {lo}")
        if not lo <= desired <= hi:
            raise validation(f"Desired capacity:{desired} must be between the specified min size:{lo} and max "
                             f"size:{hi}")

    def _balancers(self, caller: Caller, names: Sequence[str]) -> tuple[str, ...]:
        for n in names:
            if not self.balancers.exists(caller.account, n):
                raise validation(f"Provided Load Balancers may not be valid. Please ensure they exist and try "
                                 f"again. LoadBalancer: {n} could not be found")
        return tuple(dict.fromkeys(names))

    @staticmethod
    def _others(spec: GroupInput) -> None:
        if spec.health_check_type is not None and spec.health_check_type not in HEALTH_CHECK_TYPES:
            raise validation(f"Invalid HealthCheckType '{spec.health_check_type}': expected EC2 or ELB")
        for what, n in (("HealthCheckGracePeriod", spec.grace_period), ("DefaultCooldown", spec.default_cooldown)):
            if n is not None and n < 0:
                raise validation(f"{what} must not be negative (got {n})")
        for p in spec.termination_policies or ():
            if p not in TERMINATION_POLICIES:
                raise validation(f"Termination policy '{p}' is not one of {', '.join(TERMINATION_POLICIES)}")

    @staticmethod
    def _tag(group: str, k: str, v: str) -> None:
        if not 1 <= len(k) <= 128 or len(v) > 256 or not k.isprintable() or not v.isprintable():
            raise validation(f"Tag key must be 1-128 and value at most 256 printable characters (key '{k[:64]}')")
        if k.lower().startswith("aws:"):
            raise validation(f"Tag keys starting with 'aws:' are reserved for internal use (key '{k[:64]}')")

    # -- create / update / delete ----------------------------------------------------------------
    async def create(self, caller: Caller, spec: GroupInput) -> ScalingGroup:
        check_name("autoScalingGroupName", spec.name)
        if self.get(caller.account, spec.name) is not None:
            raise already_exists(f"AutoScalingGroup by this name already exists - A group with the name "
                                 f"{spec.name} already exists")
        if self.count(caller.account) >= self.config.autoscaling.max_groups:
            raise limit_exceeded(f"You have reached the limit of {self.config.autoscaling.max_groups} "
                                 f"AutoScaling groups")
        if spec.launch_configuration is None and spec.template is None:
            raise validation("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, "
                             "InstanceId or MixedInstancesPolicy parameter.")
        if spec.min_size is None or spec.max_size is None:
            raise validation("MinSize and MaxSize are required")
        desired = spec.min_size if spec.desired is None else spec.desired
        self._sizes(spec.min_size, spec.max_size, desired)
        self._source(caller, spec)
        zones, subnets = self._placement(spec.zones, spec.subnet_ids)
        self._others(spec)
        lbs = self._balancers(caller, spec.load_balancers or ())
        seen: dict[str, tuple[str, str, bool]] = {}
        for k, v, p in spec.tags:
            self._tag(spec.name, k, v)
            seen[k] = (k, v, p)
        if len(seen) > MAX_TAGS:
            raise limit_exceeded(f"The number of tags exceeds the limit of {MAX_TAGS}")
        for k, v, p in spec.system_tags:
            seen[k] = (k, v, p)
        caller.check_dry_run()
        t = spec.template
        g = ScalingGroup(
            id=key(caller.account, spec.name), owner=caller.account, name=spec.name,
            arn=arn(self.config.region, caller.account, "autoScalingGroup", str(uuid.uuid4()),
                    f"autoScalingGroupName/{spec.name}"),
            min_size=spec.min_size, max_size=spec.max_size, desired=desired, created=time.time(),
            launch_configuration=spec.launch_configuration,
            template_id=t.template_id if t else None, template_name=t.name if t else None,
            template_version=t.version if t else None, zones=zones, subnet_ids=subnets,
            default_cooldown=300 if spec.default_cooldown is None else spec.default_cooldown,
            health_check_type=spec.health_check_type or "EC2", grace_period=spec.grace_period or 0,
            termination_policies=spec.termination_policies or ("Default",), load_balancers=lbs,
            tags=tuple(seen.values()), protect_new=bool(spec.protect_new))
        with self.store.txn() as tx:
            tx.put(g)
        await self.store.sync()
        self.kick()
        return g

    async def update(self, caller: Caller, spec: GroupInput) -> ScalingGroup:
        g = self._live(caller, spec.name)
        lo = g.min_size if spec.min_size is None else spec.min_size
        hi = g.max_size if spec.max_size is None else spec.max_size
        desired = g.desired if spec.desired is None else spec.desired
        if spec.desired is None:   # (AWS moves the desired capacity into a new min..max range)
            desired = min(max(desired, lo), hi) if lo <= hi else desired
        self._sizes(lo, hi, desired)
        changes: dict[str, Any] = {"min_size": lo, "max_size": hi, "desired": desired}
        if spec.launch_configuration is not None or spec.template is not None:
            self._source(caller, spec)
            t = spec.template
            changes.update(launch_configuration=spec.launch_configuration,
                           template_id=t.template_id if t else None, template_name=t.name if t else None,
                           template_version=t.version if t else None)
        if spec.zones is not None or spec.subnet_ids is not None:
            zones, subnets = self._placement(spec.zones if spec.zones is not None else
                                             (None if spec.subnet_ids else g.zones),
                                             spec.subnet_ids)
            changes.update(zones=zones, subnet_ids=subnets)
        self._others(spec)
        for name, value in (("default_cooldown", spec.default_cooldown), ("health_check_type", spec.health_check_type),
                            ("grace_period", spec.grace_period), ("termination_policies", spec.termination_policies),
                            ("protect_new", spec.protect_new)):
            if value is not None:
                changes[name] = value
        caller.check_dry_run()
        new = replace(g, **changes)
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()
        self.kick()
        return new

    async def delete(self, caller: Caller, name: str, force: bool) -> None:
        g = self.named(caller, name)
        if g.deleting:
            return
        if not force:
            if self.activities.open_of(g.owner, g.name):
                raise activity_in_progress("You cannot delete an AutoScalingGroup while there are scaling "
                                           "activities in progress for that group.")
            if self.members.count(g.owner, g.name):
                raise in_use("You cannot delete an AutoScalingGroup while there are instances or pending "
                             "Spot instance request(s) still in the group.")
        caller.check_dry_run()
        with self.store.txn() as tx:
            if force and (self.members.count(g.owner, g.name) or self.activities.open_of(g.owner, g.name)):
                tx.put(replace(g, deleting=True, min_size=0, desired=0))   # the reconciler finishes it
            else:
                self.drop(tx, g)
        await self.store.sync()
        self.kick()

    def drop(self, tx: Any, g: ScalingGroup) -> None:
        """The group's rows go: it, its policies (by the caller's `on_drop`) and its activities."""
        tx.delete(g)
        self.activities.drop_group(tx, g.owner, g.name)
        for hook in self.on_drop:
            hook(tx, g)

    # -- capacity --------------------------------------------------------------------------------
    def in_cooldown(self, g: ScalingGroup, cooldown: int | None = None) -> bool:
        wait = g.default_cooldown if cooldown is None else cooldown
        return time.time() < g.last_scaled + wait

    async def set_desired(self, caller: Caller, name: str, desired: int, honor_cooldown: bool) -> None:
        g = self._live(caller, name)
        if desired > g.max_size:
            raise validation(f"New SetDesiredCapacity value {desired} is above max value {g.max_size} for the "
                             f"AutoScalingGroup.")
        if desired < g.min_size:
            raise validation(f"New SetDesiredCapacity value {desired} is below min value {g.min_size} for the "
                             f"AutoScalingGroup.")
        if honor_cooldown and self.in_cooldown(g):
            raise activity_in_progress(f"Scaling activity cannot be performed on {name}: the group is in its "
                                       f"cooldown period")
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.put(replace(g, desired=desired, last_scaled=time.time() if honor_cooldown else g.last_scaled))
        await self.store.sync()
        self.kick()

    # -- instances -------------------------------------------------------------------------------
    def describe_instances(self, caller: Caller, ids: Sequence[str], max_records: int | None,
                           token: str | None) -> tuple[list[ScalingMember], str | None]:
        mine = self.members.of_owner(caller.account)
        keys = sorted(i for i in mine if not ids or i in ids)
        got, nxt = page(keys, max_records, token, "autoscaling-instances", 50, 50, sorted(ids))
        return [mine[i] for i in got], nxt

    def member(self, caller: Caller, instance_id: str) -> ScalingMember:
        m = self.members.of_owner(caller.account).get(instance_id)
        if m is None:
            raise validation(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
        return m

    async def terminate_instances(self, caller: Caller, ids: Sequence[str], decrement: bool,
                                  group: str | None = None) -> list[ScalingActivity]:
        """TerminateInstanceInAutoScalingGroup: each instance out of its group (which replaces it
        unless `decrement`); all are checked before any is touched."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise validation("At least one instance id is required")
        ms = [self.member(caller, iid) for iid in ids]
        shrink: dict[str, int] = {}
        for m in ms:
            if group is not None and m.group != group:
                raise validation(f"Instance Id not found - No managed instance found for instance ID: {m.id}")
            if m.lifecycle != "InService":
                raise activity_in_progress(f"The instance {m.id} is already {m.lifecycle.lower()}.")
            shrink[m.group] = shrink.get(m.group, 0) + (1 if decrement else 0)
        groups = {name: self.named(caller, name) for name in shrink}
        for name, n in shrink.items():
            g = groups[name]
            if g.desired - n < g.min_size:
                raise validation(f"Currently, desiredSize equals minSize ({g.min_size}). Terminating instance "
                                 f"without replacement will violate group's min size constraint. Either set "
                                 f"shouldDecrementDesiredCapacity flag to false or lower group's min size.")
        caller.check_dry_run()
        now = time.time()
        acts = []
        desired = {name: g.desired for name, g in groups.items()}
        for m in ms:
            cause = f"At {stamp(now)} instance {m.id} was taken out of service in response to a user request"
            if decrement:
                cause += f", shrinking the capacity from {desired[m.group]} to {desired[m.group] - 1}."
                desired[m.group] -= 1
            else:
                cause += "."
            acts.append(self.activities.new(m.owner, m.group, "terminate", cause,
                                            f"Terminating EC2 instance: {m.id}", instance_ids=(m.id,)))
        self.activities.busy.update(a.id for a in acts)   # (the reconciler's terminate ends them)
        with self.store.txn() as tx:
            for m, act in zip(ms, acts, strict=True):
                tx.put(act)
                tx.put(replace(m, lifecycle="Terminating"))
            for name, g in groups.items():
                if desired[name] != g.desired:
                    tx.put(replace(g, desired=desired[name]))
        await self.store.sync()
        if self.terminate_now is not None:
            acts = [await self.terminate_now(a) for a in acts]
        self.kick()
        return acts

    async def attach_instances(self, caller: Caller, name: str, ids: Sequence[str]) -> None:
        g = self._live(caller, name)
        ids = list(dict.fromkeys(ids))
        try:
            insts = self.compute.owned(caller, ids)
        except CloudError as e:
            raise validation(e.message) from None
        for i in insts:
            if i.state not in ("pending", "running"):
                raise validation(f"Instance {i.id} is not in a valid state (it is {i.state}); only pending or "
                                 f"running instances can be attached")
            other = self.members.get(i.id)
            if other is not None:
                raise validation(f"The instance {i.id} is already part of the Auto Scaling group {other.group}")
            if i.zone not in g.zones or (g.subnet_ids and i.subnet_id not in g.subnet_ids):
                raise validation(f"The instance {i.id} is not in the correct availability zone or VPC subnets of "
                                 f"the Auto Scaling group")
        if g.desired + len(insts) > g.max_size:
            raise validation(f"AutoScalingGroup: {name} has min-size={g.min_size}, max-size={g.max_size}, and "
                             f"desired-size={g.desired}. Attaching {len(insts)} instance(s) would exceed its max-size")
        caller.check_dry_run()
        if not insts:
            return
        # Registered first, then journaled: a crash between leaves a retry that registers again (no
        # harm) and commits, where the other order left members no load balancer ever learns of.
        await self.register(g, [i.id for i in insts])
        now = time.time()
        with self.store.txn() as tx:
            for n, i in enumerate(insts):
                self.members.add(tx, i, g.name, None, None, g.protect_new)
                cause = (f"At {stamp(now)} an instance was added in response to user request. Keeping the capacity "
                         f"at the new {g.desired + n + 1}.")
                tx.put(self.activities.new(g.owner, g.name, "attach", cause,
                                           f"Attaching an existing EC2 instance: {i.id}", status="Successful",
                                           instance_ids=(i.id,)))
            tx.put(replace(g, desired=g.desired + len(insts)))
        await self.store.sync()
        self.kick()

    async def detach_instances(self, caller: Caller, name: str, ids: Sequence[str],
                               decrement: bool) -> list[ScalingActivity]:
        g = self._live(caller, name)
        ids = list(dict.fromkeys(ids))
        ms = []
        for iid in ids:
            m = self.members.of_owner(caller.account).get(iid)
            if m is None or m.group != g.name:
                raise validation(f"The instance {iid} is not part of Auto Scaling group {name}.")
            ms.append(m)
        if decrement and g.desired - len(ms) < g.min_size:
            raise validation(f"AutoScalingGroup: {name} has min-size={g.min_size}, max-size={g.max_size}, and "
                             f"desired-size={g.desired}. Detaching {len(ms)} instance(s) with "
                             f"ShouldDecrementDesiredCapacity would go below its min-size")
        caller.check_dry_run()
        now = time.time()
        acts = []
        new_desired = g.desired - len(ms) if decrement else g.desired
        for m in ms:
            cause = f"At {stamp(now)} instance {m.id} was detached in response to a user request"
            cause += f", shrinking the capacity from {g.desired} to {new_desired}." if decrement else "."
            acts.append(self.activities.new(g.owner, g.name, "detach", cause, f"Detaching EC2 instance: {m.id}",
                                            status="Successful", instance_ids=(m.id,)))
        await self.deregister(g, [m.id for m in ms])
        with self.store.txn() as tx:
            for m, a in zip(ms, acts, strict=True):
                self.members.remove(tx, m)
                tx.put(a)
            tx.put(replace(g, desired=new_desired))
        await self.store.sync()
        self.kick()
        return acts

    # -- processes -------------------------------------------------------------------------------
    async def suspend(self, caller: Caller, name: str, processes: Sequence[str], suspend: bool) -> None:
        g = self._live(caller, name)
        for p in processes:
            if p not in PROCESSES:
                raise validation(f"Process name not found - {p[:64]} is not a scaling process")
        chosen = set(processes or PROCESSES)
        current = dict(g.suspended)
        if suspend:
            for p in PROCESSES:
                if p in chosen and p not in current:
                    current[p] = f"User suspended at {stamp(time.time())}"
        else:
            current = {p: r for p, r in current.items() if p not in chosen}
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.put(replace(g, suspended=tuple((p, current[p]) for p in PROCESSES if p in current)))
        await self.store.sync()
        self.kick()

    # -- tags --------------------------------------------------------------------------------------
    def _tag_group(self, caller: Caller, t: TagInput) -> ScalingGroup:
        if t.resource_type != "auto-scaling-group":
            raise validation(f"Invalid resource type '{t.resource_type[:64]}': expected auto-scaling-group")
        return self._live(caller, t.group)

    async def put_tags(self, caller: Caller, tags: Sequence[TagInput]) -> None:
        changed: dict[str, ScalingGroup] = {}
        for t in tags:
            g = changed.get(t.group) or self._tag_group(caller, t)
            self._tag(g.name, t.key, t.value or "")
            now = {k: (k, v, p) for k, v, p in g.tags}
            old = now.get(t.key)
            propagate = t.propagate if t.propagate is not None else (old[2] if old else False)
            now[t.key] = (t.key, t.value or "", propagate)
            if sum(not k.startswith("aws:") for k in now) > MAX_TAGS:
                raise limit_exceeded(f"The number of tags on {g.name} exceeds the limit of {MAX_TAGS}")
            changed[g.name] = replace(g, tags=tuple(now.values()))
        caller.check_dry_run()
        with self.store.txn() as tx:
            for g in changed.values():
                tx.put(g)
        await self.store.sync()

    async def delete_tags(self, caller: Caller, tags: Sequence[TagInput]) -> None:
        changed: dict[str, ScalingGroup] = {}
        for t in tags:
            g = changed.get(t.group) or self._tag_group(caller, t)
            if t.key.lower().startswith("aws:"):
                raise validation(f"Tag keys starting with 'aws:' are reserved for internal use (key '{t.key[:64]}')")
            changed[g.name] = replace(g, tags=tuple(x for x in g.tags if x[0] != t.key))
        caller.check_dry_run()
        with self.store.txn() as tx:
            for g in changed.values():
                tx.put(g)
        await self.store.sync()

    def describe_tags(self, caller: Caller, filters: Mapping[str, Sequence[str]], max_records: int | None,
                      token: str | None) -> tuple[list[tuple[str, str, str, bool]], str | None]:
        known = {"auto-scaling-group", "key", "value", "propagate-at-launch"}
        for f in filters:
            if f not in known:
                raise validation(f"Filter name '{f[:64]}' is not valid; expected one of {', '.join(sorted(known))}")
        rows = {}
        for g in self._by_owner.get(caller.account).values():
            for k, v, p in g.tags:
                if self._matches(filters, g.name, k, v, p):
                    rows[f"{g.name}\x1f{k}"] = (g.name, k, v, p)
        keys, nxt = page(sorted(rows), max_records, token, "asg-tags", 50, 100,
                         sorted((k, sorted(v)) for k, v in filters.items()))
        return [rows[k] for k in keys], nxt

    @staticmethod
    def _matches(filters: Mapping[str, Sequence[str]], group: str, k: str, v: str, p: bool) -> bool:
        have = {"auto-scaling-group": group, "key": k, "value": v, "propagate-at-launch": "true" if p else "false"}
        return all(have[f] in values for f, values in filters.items())

    def describe(self, caller: Caller, names: Sequence[str], filters: Mapping[str, Sequence[str]],
                 max_records: int | None, token: str | None) -> tuple[list[ScalingGroup], str | None]:
        mine = self._by_owner.get(caller.account)
        for f in filters:
            if f not in ("tag-key", "tag-value") and not f.startswith("tag:"):
                raise validation(f"Filter name '{f[:64]}' is not valid for DescribeAutoScalingGroups")
        picked = []
        for g in mine.values():
            if names and g.name not in names:
                continue
            tags = {k: v for k, v, _ in g.tags}
            ok = True
            for f, values in filters.items():
                if f == "tag-key":
                    ok = ok and any(k in values for k in tags)
                elif f == "tag-value":
                    ok = ok and any(v in values for v in tags.values())
                else:
                    ok = ok and tags.get(f[4:]) in values
            if ok:
                picked.append(g.name)
        keys, nxt = page(sorted(picked), max_records, token, "asg-groups", 50, 100, sorted(names),
                         sorted((k, sorted(v)) for k, v in filters.items()))
        return [mine[key(caller.account, n)] for n in keys], nxt

    # -- load balancers -----------------------------------------------------------------------------
    async def attach_balancers(self, caller: Caller, name: str, names: Sequence[str]) -> None:
        g = self._live(caller, name)
        lbs = self._balancers(caller, names)
        caller.check_dry_run()
        # The members registered before the group names the load balancer: a crash between is
        # undone by the client's retry (the load balancer is still new to the group then).
        added = [n for n in lbs if n not in g.load_balancers]
        ids = [m.id for m in self.members.of_group(g.owner, g.name) if m.lifecycle == "InService"]
        if ids and "AddToLoadBalancer" not in dict(g.suspended):
            for lb in added:
                await self.balancers.register(g.owner, lb, ids)
        new = replace(g, load_balancers=tuple(dict.fromkeys((*g.load_balancers, *lbs))))
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()

    async def detach_balancers(self, caller: Caller, name: str, names: Sequence[str]) -> None:
        g = self._live(caller, name)
        caller.check_dry_run()
        gone = [n for n in dict.fromkeys(names) if n in g.load_balancers]
        # Deregistered before the group forgets the load balancer (a retry after a crash finds it still named).
        ids = [m.id for m in self.members.of_group(g.owner, g.name)]
        if ids:
            for lb in gone:
                await self.balancers.deregister(g.owner, lb, ids)
        new = replace(g, load_balancers=tuple(n for n in g.load_balancers if n not in gone))
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()

    async def register(self, g: ScalingGroup, ids: Sequence[str]) -> None:
        """Register a group's new instances with its load balancers (one deleted since is skipped:
        the group keeps its name, as AWS's does, and launching goes on)."""
        if not ids or "AddToLoadBalancer" in dict(g.suspended):
            return
        for lb in g.load_balancers:
            if self.balancers.exists(g.owner, lb):
                await self.balancers.register(g.owner, lb, ids)

    async def deregister(self, g: ScalingGroup, ids: Sequence[str]) -> None:
        if not ids:
            return
        for lb in g.load_balancers:
            await self.balancers.deregister(g.owner, lb, ids)


__all__ = ["GROUP_TAG", "GroupInput", "Groups", "TagInput"]
