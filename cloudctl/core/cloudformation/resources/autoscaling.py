"""AWS::AutoScaling resources over core/autoscaling (the AutoScaling API's own core calls)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...autoscaling.groups import GroupInput
from ...autoscaling.launch_configs import LaunchConfigInput
from ...autoscaling.model import TemplateRef
from ...autoscaling.policies import PolicyInput
from ...errors import CloudError
from . import LOGICAL_ID, STACK_ID, Ctx, Failed, Handler, Made, as_bool, as_int, gone, handler, need, until

GROUP_WAIT_S = 900.0


def _strs(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return tuple(str(x) for x in v)


@handler
class LaunchConfiguration(Handler):
    type = "AWS::AutoScaling::LaunchConfiguration"

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        lcs = ctx.services.autoscaling.launch_configs
        name = props.get("LaunchConfigurationName") or ctx.name()
        if lcs.get(ctx.owner, name) is not None and props.get("LaunchConfigurationName") is None:
            return Made(name)   # made by this resource before a restart (the name is derived from it)
        await lcs.create(ctx.caller, LaunchConfigInput(
            name=name, image_id=str(need(props, "ImageId")), instance_type=str(need(props, "InstanceType")),
            key_name=props.get("KeyName") or None, security_groups=_strs(props.get("SecurityGroups")) or (),
            user_data=props.get("UserData"), kernel_id=props.get("KernelId"), ramdisk_id=props.get("RamdiskId"),
            associate_public_ip=as_bool(props.get("AssociatePublicIpAddress")),
            monitoring=as_bool(props.get("InstanceMonitoring")) is not False))
        return Made(name)

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.autoscaling.launch_configs.delete(ctx.caller, physical)
        except CloudError as e:
            if not gone(e):
                raise


@handler
class AutoScalingGroup(Handler):
    """Made when its desired instances are in service, as CloudFormation waits for them."""
    type = "AWS::AutoScaling::AutoScalingGroup"

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        asg = ctx.services.autoscaling
        name = props.get("AutoScalingGroupName") or ctx.name()
        if asg.groups.get(ctx.owner, name) is None or props.get("AutoScalingGroupName") is not None:
            lt = props.get("LaunchTemplate")
            tags = tuple((str(t["Key"]), str(t.get("Value", "")), bool(as_bool(t.get("PropagateAtLaunch"))))
                         for t in props.get("Tags") or ())
            await asg.groups.create(ctx.caller, GroupInput(
                name=name, launch_configuration=props.get("LaunchConfigurationName"),
                template=TemplateRef(lt.get("LaunchTemplateId"), lt.get("LaunchTemplateName"), lt.get("Version"))
                if lt else None,
                min_size=as_int(props, "MinSize"), max_size=as_int(props, "MaxSize"),
                desired=as_int(props, "DesiredCapacity"), default_cooldown=as_int(props, "Cooldown"),
                zones=_strs(props.get("AvailabilityZones")), subnet_ids=_strs(props.get("VPCZoneIdentifier")),
                health_check_type=props.get("HealthCheckType"),
                grace_period=as_int(props, "HealthCheckGracePeriod"),
                termination_policies=_strs(props.get("TerminationPolicies")),
                load_balancers=_strs(props.get("LoadBalancerNames")), tags=tags,
                system_tags=tuple((k, v, True) for k, v in ctx.system_tags)))
        await until(lambda: self._in_service(ctx, name), GROUP_WAIT_S, f"AutoScalingGroup {name}")
        return Made(name)

    @staticmethod
    def _in_service(ctx: Ctx, name: str) -> bool:
        asg = ctx.services.autoscaling
        g = asg.groups.get(ctx.owner, name)
        if g is None:
            raise Failed(f"AutoScalingGroup {name} was deleted")
        instances = ctx.services.compute.of_owner(ctx.owner)
        ready = sum(1 for m in asg.members.of_group(ctx.owner, name) if m.lifecycle == "InService"
                    and getattr(instances.get(m.id), "state", None) == "running")
        if ready >= g.desired:
            return True
        failed = [a for a in asg.activities.of_group(ctx.owner, name) if a.status == "Failed"]
        if failed and not asg.activities.open_of(ctx.owner, name) and ready == 0:
            raise Failed(failed[-1].status_message or f"Launching instances for {name} failed")
        return False

    async def delete(self, ctx: Ctx, physical: str) -> None:
        """Done when the group and its instances are gone: its security groups and launch source,
        deleted next, must not be in use any more (a real guest takes a while to stop)."""
        asg = ctx.services.autoscaling
        ours = {m.id for m in asg.members.of_group(ctx.owner, physical)}
        try:
            await asg.groups.delete(ctx.caller, physical, True)
        except CloudError as e:
            if not gone(e):
                raise
        await until(lambda: asg.groups.get(ctx.owner, physical) is None, GROUP_WAIT_S,
                    f"AutoScalingGroup {physical} deletion")
        # After a restart its members may be gone already: its instances still stopping carry the
        # stack's tags (propagated). One a user detached from the group runs on, as in AWS.
        tags, compute = ctx.services.tags, ctx.services.compute
        mine = compute.of_owner(ctx.owner)
        ours |= {i for i in tags.resources_with(STACK_ID, {ctx.stack_id})
                 if tags.of(i).get(LOGICAL_ID) == ctx.logical and getattr(mine.get(i), "state", "") == "shutting-down"}

        def ended() -> bool:
            mine = compute.of_owner(ctx.owner)
            return all(getattr(mine.get(i), "state", "terminated") == "terminated" for i in ours)

        await until(ended, GROUP_WAIT_S, f"AutoScalingGroup {physical}'s instances terminating")


@handler
class ScalingPolicy(Handler):
    type = "AWS::AutoScaling::ScalingPolicy"
    attributes = frozenset({"Arn"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        group = str(need(props, "AutoScalingGroupName"))
        name = ctx.name()
        pol = ctx.services.autoscaling.policies
        made = await pol.put(ctx.caller, PolicyInput(
            group=group, name=name, adjustment_type=props.get("AdjustmentType"),
            adjustment=as_int(props, "ScalingAdjustment"), cooldown=as_int(props, "Cooldown"),
            min_magnitude=as_int(props, "MinAdjustmentMagnitude")))
        arn = made.arn
        return Made(arn, {"Arn": arn, "_group": group, "_name": name})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.autoscaling.policies.delete(ctx.caller, ctx.attributes.get("_group"),
                                                           ctx.attributes.get("_name") or physical)
        except CloudError as e:
            if not gone(e):
                raise
