"""In-place updates, one function per resource type: the properties replacement.py lists as in
place, changed on the physical resource through the cloud's own services. Each is idempotent
(applying the same new properties again is harmless), so an update resumed after a crash, or a
rollback applying the old properties back, can simply run it again."""
from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...autoscaling.groups import GroupInput
from ...autoscaling.model import TemplateRef
from ...autoscaling.policies import PolicyInput
from ...compute import InstanceChanges
from ...elb.model import HealthCheckDef
from ...errors import CloudError
from ...sg_permissions import RuleChange
from ..replacement import IN_PLACE, canonical
from . import Ctx, Failed, as_bool, as_int, gone, until
from .addresses import Association
from .autoscaling import GROUP_WAIT_S, AutoScalingGroup, _strs
from .ec2 import INSTANCE_WAIT_S, _permission

Updater = Callable[[Ctx, str, Mapping[str, Any], Mapping[str, Any]], Awaitable[Mapping[str, str] | None]]
UPDATERS: dict[str, Updater] = {}


def updater(rtype: str) -> Callable[[Updater], Updater]:
    def put(fn: Updater) -> Updater:
        UPDATERS[rtype] = fn
        return fn
    return put


def _changed(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> bool:
    return canonical({key: old.get(key)}) != canonical({key: new.get(key)})


@updater("AWS::EC2::SecurityGroup")
async def security_group(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Rules no longer listed are revoked, new ones authorized (AWS: no interruption)."""
    sgs = ctx.services.security_groups
    for egress, key in ((False, "SecurityGroupIngress"), (True, "SecurityGroupEgress")):
        before = {canonical(p): p for p in old.get(key) or ()}
        after = {canonical(p): p for p in new.get(key) or ()}
        for k in before.keys() - after.keys():
            try:
                await sgs.revoke(ctx.caller, RuleChange(egress, group_id=physical,
                                                        permissions=(_permission(before[k], egress),)))
            except CloudError as e:
                if not gone(e) and e.code != "InvalidPermission.NotFound":
                    raise
        for k in after.keys() - before.keys():
            try:
                await sgs.authorize(ctx.caller, RuleChange(egress, group_id=physical,
                                                           permissions=(_permission(after[k], egress),)))
            except CloudError as e:
                if e.code != "InvalidPermission.Duplicate":
                    raise
    return None


@updater("AWS::EC2::Instance")
async def instance(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Groups and termination protection on the running instance; type and user data stop it,
    change it and start it again (AWS: some interruption). A start refused for capacity fails
    the update, which is then rolled back the same way."""
    compute = ctx.services.compute
    running = InstanceChanges(
        group_ids=tuple(str(g) for g in new.get("SecurityGroupIds") or ())
        if _changed(old, new, "SecurityGroupIds") else None,
        disable_api_termination=bool(as_bool(new.get("DisableApiTermination")))
        if _changed(old, new, "DisableApiTermination") else None)
    if running:
        await compute.modify_attribute(ctx.caller, physical, running)
    itype = str(new.get("InstanceType") or "") if _changed(old, new, "InstanceType") else None
    user_data = _user_data(new.get("UserData")) if _changed(old, new, "UserData") else None
    if itype is None and user_data is None:
        return None
    current = compute.of_owner(ctx.owner).get(physical)
    if current is None or current.state in ("shutting-down", "terminated"):
        raise Failed(f"Instance {physical} is gone")
    if itype is not None and not itype:
        itype = next(iter(ctx.services.config.instance_types))
    if current.state != "stopped":
        await compute.stop(ctx.caller, [physical])
    await until(lambda: _state(ctx, physical) == "stopped", INSTANCE_WAIT_S, f"Instance {physical} stop")
    await compute.modify_attribute(ctx.caller, physical, InstanceChanges(instance_type=itype, user_data=user_data))
    await compute.start(ctx.caller, [physical])
    await until(lambda: _state(ctx, physical) == "running", INSTANCE_WAIT_S, f"Instance {physical} start")
    return None


def _user_data(v: Any) -> bytes:
    if not v:
        return b""
    try:
        return base64.b64decode(str(v), validate=True)
    except ValueError:
        return str(v).encode()


def _state(ctx: Ctx, iid: str) -> str:
    i = ctx.services.compute.of_owner(ctx.owner).get(iid)
    if i is None or i.state in ("shutting-down", "terminated"):
        raise Failed(f"Instance {iid} was terminated")
    return str(i.state)


@updater("AWS::AutoScaling::AutoScalingGroup")
async def scaling_group(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """UpdateAutoScalingGroup with what changed; done when the desired instances are in service."""
    def given(key: str) -> bool:
        return _changed(old, new, key)

    lt = new.get("LaunchTemplate") if given("LaunchTemplate") else None
    lc = new.get("LaunchConfigurationName") if given("LaunchConfigurationName") else None
    await ctx.services.autoscaling.groups.update(ctx.caller, GroupInput(
        name=physical, launch_configuration=str(lc) if lc else None,
        template=TemplateRef(lt.get("LaunchTemplateId"), lt.get("LaunchTemplateName"), lt.get("Version"))
        if lt else None,
        min_size=as_int(new, "MinSize") if given("MinSize") else None,
        max_size=as_int(new, "MaxSize") if given("MaxSize") else None,
        desired=as_int(new, "DesiredCapacity") if given("DesiredCapacity") else None,
        default_cooldown=as_int(new, "Cooldown") if given("Cooldown") else None,
        zones=_strs(new.get("AvailabilityZones")) if given("AvailabilityZones") else None,
        subnet_ids=_strs(new.get("VPCZoneIdentifier")) if given("VPCZoneIdentifier") else None,
        health_check_type=new.get("HealthCheckType") if given("HealthCheckType") else None,
        grace_period=as_int(new, "HealthCheckGracePeriod") if given("HealthCheckGracePeriod") else None,
        termination_policies=_strs(new.get("TerminationPolicies")) if given("TerminationPolicies") else None))
    await until(lambda: AutoScalingGroup._in_service(ctx, physical), GROUP_WAIT_S, f"AutoScalingGroup {physical}")
    return None


@updater("AWS::AutoScaling::ScalingPolicy")
async def scaling_policy(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """PutScalingPolicy again under the same name: it overwrites the policy."""
    await ctx.services.autoscaling.policies.put(ctx.caller, PolicyInput(
        group=str(ctx.attributes.get("_group") or new.get("AutoScalingGroupName")),
        name=str(ctx.attributes.get("_name")), adjustment_type=new.get("AdjustmentType"),
        adjustment=as_int(new, "ScalingAdjustment"), cooldown=as_int(new, "Cooldown"),
        min_magnitude=as_int(new, "MinAdjustmentMagnitude")))
    return None


@updater("AWS::EC2::EIP")
async def eip(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    addrs = ctx.services.addresses
    a = addrs.table.get(physical)
    if a is None:
        raise Failed(f"Address {physical} is gone")
    if new.get("InstanceId"):
        await addrs.associate(ctx.caller, Association(allocation_id=a.allocation_id,
                                                      instance_id=str(new["InstanceId"]), allow_reassociation=True))
    elif a.association_id:
        await addrs.disassociate(ctx.caller, a.association_id, None)
    return None


@updater("AWS::ElasticLoadBalancing::LoadBalancer")
async def load_balancer(ctx: Ctx, physical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    elb = ctx.services.elb
    hc = new.get("HealthCheck")
    if _changed(old, new, "HealthCheck") and hc:
        await elb.configure_health_check(ctx.caller, physical, HealthCheckDef(
            target=str(hc["Target"]), interval=as_int(hc, "Interval") or 30, timeout=as_int(hc, "Timeout") or 5,
            unhealthy=as_int(hc, "UnhealthyThreshold") or 2, healthy=as_int(hc, "HealthyThreshold") or 10))
    if _changed(old, new, "Instances"):
        before = {str(i) for i in old.get("Instances") or ()}
        after = {str(i) for i in new.get("Instances") or ()}
        if before - after:
            await elb.deregister_instances(ctx.caller, physical, sorted(before - after))
        if after - before:
            await elb.register_instances(ctx.caller, physical, sorted(after - before))
    return None


def check() -> None:
    """Every type with in-place properties has its updater (a test holds the table to it)."""
    missing = set(IN_PLACE) - set(UPDATERS)
    if missing:
        raise AssertionError(f"no updater for {sorted(missing)}")
