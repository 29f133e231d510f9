"""Simple scaling policies: a named change of a group's desired capacity, run by ExecutePolicy
(honouring the policy's cooldown, or the group's, unless told not to)."""
from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ...slim import dataclass
from ...store.records import ScalingGroup, ScalingPolicy
from ...store.store import MultiIndex, Store
from ..context import Caller
from .groups import Groups
from .model import ADJUSTMENT_TYPES, activity_in_progress, arn, check_name, key, page, validation


@dataclass(frozen=True, slots=True)
class PolicyInput:
    group: str
    name: str
    adjustment_type: str | None
    adjustment: int | None
    cooldown: int | None = None
    min_magnitude: int | None = None
    policy_type: str = "SimpleScaling"
    enabled: bool = True


def new_capacity(kind: str, adjustment: int, current: int, lo: int, hi: int, min_magnitude: int | None) -> int:
    """The desired capacity a policy asks for, kept within lo..hi (AWS's rounding for percentages:
    toward zero, at least MinAdjustmentMagnitude, at least 1 when the change is not zero)."""
    if kind == "ExactCapacity":
        target = adjustment
    elif kind == "ChangeInCapacity":
        target = current + adjustment
    else:
        change = current * adjustment / 100
        step = math.trunc(change)
        if step == 0 and change != 0:
            step = 1 if change > 0 else -1
        if min_magnitude and abs(step) < min_magnitude and adjustment != 0:
            step = min_magnitude if adjustment > 0 else -min_magnitude
        target = current + step
    return min(max(target, lo), hi)


class Policies:
    def __init__(self, store: Store, region: str, groups: Groups) -> None:
        self.store = store
        self.region = region
        self.groups = groups
        self.table = store.table(ScalingPolicy)
        self._by_group: MultiIndex[ScalingPolicy] = self.table.add_index(MultiIndex(lambda p: key(p.owner, p.group)))
        self._by_owner: MultiIndex[ScalingPolicy] = self.table.add_index(MultiIndex(lambda p: p.owner))
        groups.on_drop.append(self._drop)

    def _drop(self, tx: Any, g: ScalingGroup) -> None:
        for p in list(self._by_group.get(key(g.owner, g.name)).values()):
            tx.delete(p)

    async def put(self, caller: Caller, spec: PolicyInput) -> ScalingPolicy:
        check_name("policyName", spec.name)
        g = self.groups.named(caller, spec.group)
        if spec.policy_type != "SimpleScaling":
            raise validation(f"PolicyType {spec.policy_type[:64]} is not supported by cloudctl: only SimpleScaling")
        if spec.adjustment_type not in ADJUSTMENT_TYPES:
            raise validation(f"AdjustmentType must be one of {', '.join(ADJUSTMENT_TYPES)}")
        if spec.adjustment is None:
            raise validation("ScalingAdjustment is required for a SimpleScaling policy")
        if spec.adjustment_type == "ExactCapacity" and spec.adjustment < 0:
            raise validation("ScalingAdjustment must not be negative for ExactCapacity")
        if spec.min_magnitude is not None:
            if spec.adjustment_type != "PercentChangeInCapacity":
                raise validation("MinAdjustmentMagnitude may only be given for PercentChangeInCapacity")
            if spec.min_magnitude < 1:
                raise validation("MinAdjustmentMagnitude must be at least 1")
        if spec.cooldown is not None and spec.cooldown < 0:
            raise validation("Cooldown must not be negative")
        caller.check_dry_run()
        pid = key(caller.account, g.name, spec.name)
        old = self.table.get(pid)
        p = ScalingPolicy(
            id=pid, owner=caller.account, group=g.name, name=spec.name,
            arn=old.arn if old else arn(self.region, caller.account, "scalingPolicy", str(uuid.uuid4()),
                                        f"autoScalingGroupName/{g.name}:policyName/{spec.name}"),
            adjustment_type=spec.adjustment_type, adjustment=spec.adjustment, cooldown=spec.cooldown,
            min_magnitude=spec.min_magnitude, enabled=spec.enabled)
        with self.store.txn() as tx:
            tx.put(p)
        await self.store.sync()
        return p

    def _named(self, caller: Caller, group: str | None, name: str) -> ScalingPolicy:
        if name.startswith("arn:"):
            p = next((x for x in self._by_owner.get(caller.account).values() if x.arn == name), None)
        elif group is None:
            raise validation("AutoScalingGroupName is required when the policy is named by name")
        else:
            p = self.table.get(key(caller.account, group, name))
        if p is None:
            raise validation(f"No such policy: {name[:128]}")
        return p

    async def delete(self, caller: Caller, group: str | None, name: str) -> None:
        p = self._named(caller, group, name)
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.delete(p)
        await self.store.sync()

    async def execute(self, caller: Caller, group: str | None, name: str, honor_cooldown: bool) -> None:
        p = self._named(caller, group, name)
        g = self.groups.named(caller, p.group)
        if g.deleting:
            raise validation(f"AutoScalingGroup {g.name} is pending delete.")
        if not p.enabled:
            raise validation(f"The policy {p.name} is disabled")
        if honor_cooldown and self.groups.in_cooldown(g, p.cooldown):
            raise activity_in_progress(f"Scaling activity cannot be performed on {g.name}: the group is in its "
                                       f"cooldown period")
        caller.check_dry_run()
        desired = new_capacity(p.adjustment_type, p.adjustment, g.desired, g.min_size, g.max_size, p.min_magnitude)
        with self.store.txn() as tx:
            tx.put(replace(g, desired=desired, last_scaled=time.time()))
        await self.store.sync()
        self.groups.kick()

    def describe(self, caller: Caller, group: str | None, names: Sequence[str], types: Sequence[str],
                 max_records: int | None, token: str | None) -> tuple[list[ScalingPolicy], str | None]:
        rows = (self._by_group.get(key(caller.account, group)) if group is not None
                else self._by_owner.get(caller.account))
        picked = {p.id: p for p in rows.values()
                  if (not names or p.name in names or p.arn in names) and (not types or "SimpleScaling" in types)}
        keys, nxt = page(sorted(picked), max_records, token, "asg-policies", 50, 50, group, sorted(names),
                         sorted(types))
        return [picked[k] for k in keys], nxt
