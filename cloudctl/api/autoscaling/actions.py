"""AutoScaling actions (wire shapes from botocore's `autoscaling` model): each turns the parsed
request into one call on core/autoscaling and its rows into the answer's shape."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ...core.autoscaling.groups import GroupInput, TagInput
from ...core.autoscaling.launch_configs import LaunchConfigInput
from ...core.autoscaling.model import ADJUSTMENT_TYPES, PROCESSES, TERMINATION_POLICIES, TemplateRef
from ...core.autoscaling.policies import PolicyInput
from ...core.cloud import Cloud
from ...core.context import Caller
from ...core.errors import CloudError
from ...core.launch import BlockDevice
from ...store.records import LaunchConfiguration, ScalingActivity, ScalingGroup, ScalingMember, ScalingPolicy
from ..ec2.actions.registry import ts
from ..query.service import Registry

REGISTRY = Registry("autoscaling")
Req = dict[str, Any]


def _refuse(req: Req, allowed: Mapping[str, object]) -> None:
    """Parameters cloudctl does not implement are refused, unless they ask for what it does anyway
    (the neutral value a client sends by default, given in `allowed`)."""
    for name, value in req.items():
        if name in allowed and (allowed[name] is None or value == allowed[name] or value in (None, [], "", 0, False)):
            continue
        raise CloudError("ValidationError", f"cloudctl's AutoScaling does not support the parameter {name}")


def _asg(cloud: Cloud) -> Any:
    return cloud.autoscaling


# -- launch configurations --------------------------------------------------------------------

_LC_PARAMS = {k: None for k in ("LaunchConfigurationName", "ImageId", "KeyName", "SecurityGroups", "UserData",
                                "InstanceType", "KernelId", "RamdiskId", "BlockDeviceMappings", "InstanceMonitoring",
                                "AssociatePublicIpAddress")} | {"EbsOptimized": False, "PlacementTenancy": "default"}


def _devices(req: Req) -> tuple[BlockDevice, ...]:
    out = []
    for m in req.get("BlockDeviceMappings", []):
        if "VirtualName" in m or m.get("NoDevice"):
            raise CloudError("ValidationError", "cloudctl supports EBS block device mappings only")
        ebs = m.get("Ebs", {})
        out.append(BlockDevice(device=m["DeviceName"], size=ebs.get("VolumeSize"), volume_type=ebs.get("VolumeType"),
                               snapshot_id=ebs.get("SnapshotId"),
                               delete_on_termination=ebs.get("DeleteOnTermination", True)))
    return tuple(out)


@REGISTRY.action("CreateLaunchConfiguration")
async def create_launch_configuration(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, _LC_PARAMS)
    if "ImageId" not in req or "InstanceType" not in req:
        raise CloudError("ValidationError", "ImageId and InstanceType are required (cloudctl does not create a "
                         "launch configuration from an instance)")
    await _asg(cloud).launch_configs.create(caller, LaunchConfigInput(
        name=req["LaunchConfigurationName"], image_id=req["ImageId"], instance_type=req["InstanceType"],
        key_name=req.get("KeyName"), security_groups=tuple(req.get("SecurityGroups", ())),
        user_data=req.get("UserData"), kernel_id=req.get("KernelId"), ramdisk_id=req.get("RamdiskId"),
        associate_public_ip=req.get("AssociatePublicIpAddress"),
        monitoring=req.get("InstanceMonitoring", {}).get("Enabled", True), block_devices=_devices(req)))
    return {}


def _lc_view(lc: LaunchConfiguration) -> dict[str, Any]:
    devices = [{"DeviceName": d["device"], "Ebs": {k: v for k, v in (
        ("SnapshotId", d.get("snapshot_id")), ("VolumeSize", d.get("size")), ("VolumeType", d.get("volume_type")),
        ("DeleteOnTermination", d.get("delete_on_termination"))) if v is not None}} for d in lc.block_devices]
    return {"LaunchConfigurationName": lc.name, "LaunchConfigurationARN": lc.arn, "ImageId": lc.image_id,
            "KeyName": lc.key_name or "", "SecurityGroups": list(lc.security_groups),
            "ClassicLinkVPCSecurityGroups": [], "UserData": lc.user_data or "", "InstanceType": lc.instance_type,
            "KernelId": lc.kernel_id or "", "RamdiskId": lc.ramdisk_id or "", "BlockDeviceMappings": devices,
            "InstanceMonitoring": {"Enabled": lc.monitoring}, "CreatedTime": ts(lc.created), "EbsOptimized": False,
            "AssociatePublicIpAddress": lc.associate_public_ip}


@REGISTRY.action("DescribeLaunchConfigurations")
async def describe_launch_configurations(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    rows, token = _asg(cloud).launch_configs.describe(caller, req.get("LaunchConfigurationNames", []),
                                                      req.get("MaxRecords"), req.get("NextToken"))
    return {"LaunchConfigurations": [_lc_view(r) for r in rows], "NextToken": token}


@REGISTRY.action("DeleteLaunchConfiguration")
async def delete_launch_configuration(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).launch_configs.delete(caller, req["LaunchConfigurationName"])
    return {}


# -- groups -----------------------------------------------------------------------------------

_GROUP_PARAMS: dict[str, object] = {k: None for k in (
    "AutoScalingGroupName", "LaunchConfigurationName", "LaunchTemplate", "MixedInstancesPolicy", "MinSize",
    "MaxSize", "DesiredCapacity", "DefaultCooldown", "AvailabilityZones", "LoadBalancerNames", "HealthCheckType",
    "HealthCheckGracePeriod", "VPCZoneIdentifier", "TerminationPolicies", "NewInstancesProtectedFromScaleIn",
    "Tags")} | {"TargetGroupARNs": [], "CapacityRebalance": False, "MaxInstanceLifetime": 0,
                "DesiredCapacityType": "units", "DeletionProtection": "none", "ServiceLinkedRoleARN": ""}


def _template(req: Req) -> TemplateRef | None:
    lt = req.get("LaunchTemplate")
    mixed = req.get("MixedInstancesPolicy")
    if mixed is not None:
        if lt is not None or set(mixed) - {"LaunchTemplate"} or set(mixed.get("LaunchTemplate", {})) - {
                "LaunchTemplateSpecification"}:
            raise CloudError("ValidationError", "cloudctl supports a MixedInstancesPolicy of one launch template "
                             "only (no overrides or instances distribution)")
        lt = mixed.get("LaunchTemplate", {}).get("LaunchTemplateSpecification")
        if lt is None:
            raise CloudError("ValidationError", "MixedInstancesPolicy must name a launch template")
    if lt is None:
        return None
    if ("LaunchTemplateId" in lt) == ("LaunchTemplateName" in lt):
        raise CloudError("ValidationError", "Valid requests must contain either launchTemplateId or "
                         "LaunchTemplateName")
    return TemplateRef(lt.get("LaunchTemplateId"), lt.get("LaunchTemplateName"), lt.get("Version"))


def _group_input(req: Req, create: bool) -> GroupInput:
    _refuse(req, _GROUP_PARAMS if create else {k: v for k, v in _GROUP_PARAMS.items()
                                                  if k not in ("LoadBalancerNames", "Tags", "TargetGroupARNs")})
    vpc = req.get("VPCZoneIdentifier")
    subnets = tuple(s.strip() for s in vpc.split(",") if s.strip()) if vpc is not None else None
    tags = []
    for t in req.get("Tags", []):
        if t.get("ResourceId", req["AutoScalingGroupName"]) != req["AutoScalingGroupName"] or \
                t.get("ResourceType", "auto-scaling-group") != "auto-scaling-group":
            raise CloudError("ValidationError", "A tag must name the group being created")
        tags.append((t["Key"], t.get("Value", ""), bool(t.get("PropagateAtLaunch", False))))
    zones = req.get("AvailabilityZones")
    policies = req.get("TerminationPolicies")
    return GroupInput(
        name=req["AutoScalingGroupName"], launch_configuration=req.get("LaunchConfigurationName"),
        template=_template(req), min_size=req.get("MinSize"), max_size=req.get("MaxSize"),
        desired=req.get("DesiredCapacity"), default_cooldown=req.get("DefaultCooldown"),
        zones=tuple(zones) if zones is not None else None, subnet_ids=subnets,
        health_check_type=req.get("HealthCheckType"), grace_period=req.get("HealthCheckGracePeriod"),
        termination_policies=tuple(policies) if policies else None,
        load_balancers=tuple(req.get("LoadBalancerNames", ())), protect_new=req.get("NewInstancesProtectedFromScaleIn"),
        tags=tuple(tags))


@REGISTRY.action("CreateAutoScalingGroup")
async def create_auto_scaling_group(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.create(caller, _group_input(req, create=True))
    return {}


@REGISTRY.action("UpdateAutoScalingGroup")
async def update_auto_scaling_group(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.update(caller, _group_input(req, create=False))
    return {}


@REGISTRY.action("DeleteAutoScalingGroup")
async def delete_auto_scaling_group(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.delete(caller, req["AutoScalingGroupName"], req.get("ForceDelete", False))
    return {}


def _template_view(cloud: Cloud, owner: str, ref: str | None) -> dict[str, str] | None:
    """A launch template as AWS shows a group's: by its id and its name, whichever it was named by
    (Terraform keeps the id, Ansible reads the name); one deleted since shows what was given."""
    if not ref:
        return None
    tid, name, version = ref.split("\x1f")
    templates = cloud.launch_templates
    t = templates.table.get(tid) if tid else templates.by_name(owner, name)
    if t is not None and t.owner == owner:
        tid, name = t.id, t.name
    return {k: v for k, v in (("LaunchTemplateId", tid), ("LaunchTemplateName", name),
                              ("Version", version or "$Default")) if v}


def _lifecycle(cloud: Cloud, m: ScalingMember) -> tuple[str, str]:
    inst = cloud.compute.table.get(m.id)
    state = m.lifecycle
    if state == "InService" and inst is not None and inst.state == "pending":
        state = "Pending"
    return state, inst.instance_type if inst is not None else ""


def _member_view(cloud: Cloud, m: ScalingMember, with_group: bool) -> dict[str, Any]:
    state, itype = _lifecycle(cloud, m)
    inst = cloud.compute.table.get(m.id)
    view: dict[str, Any] = {"InstanceId": m.id, "InstanceType": itype}
    if with_group:
        view["AutoScalingGroupName"] = m.group
    view |= {"AvailabilityZone": m.zone, "LifecycleState": state, "HealthStatus": m.health,
             "LaunchConfigurationName": m.launch_configuration,
             "LaunchTemplate": _template_view(cloud, m.owner, m.template),
             "ImageId": inst.image_id if inst is not None else None, "ProtectedFromScaleIn": m.protected}
    return view


def _tag_view(group: str, k: str, v: str, p: bool) -> dict[str, Any]:
    return {"ResourceId": group, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": p}


def _group_view(cloud: Cloud, g: ScalingGroup) -> dict[str, Any]:
    members = cloud.autoscaling.members.of_group(g.owner, g.name)
    template = None
    if g.template_id or g.template_name:
        ref = f"{g.template_id or ''}\x1f{g.template_name or ''}\x1f{g.template_version or ''}"
        template = _template_view(cloud, g.owner, ref)
    return {"AutoScalingGroupName": g.name, "AutoScalingGroupARN": g.arn,
            "LaunchConfigurationName": g.launch_configuration, "LaunchTemplate": template,
            "MinSize": g.min_size, "MaxSize": g.max_size, "DesiredCapacity": g.desired,
            "DefaultCooldown": g.default_cooldown, "AvailabilityZones": list(g.zones),
            "LoadBalancerNames": list(g.load_balancers), "TargetGroupARNs": [],
            "HealthCheckType": g.health_check_type, "HealthCheckGracePeriod": g.grace_period,
            "Instances": [_member_view(cloud, m, False) for m in sorted(members, key=lambda m: m.id)],
            "CreatedTime": ts(g.created),
            "SuspendedProcesses": [{"ProcessName": p, "SuspensionReason": r} for p, r in g.suspended],
            "VPCZoneIdentifier": ",".join(g.subnet_ids) or None, "EnabledMetrics": [],
            "Status": "Delete in progress" if g.deleting else None,
            "Tags": [_tag_view(g.name, k, v, p) for k, v, p in g.tags],
            "TerminationPolicies": list(g.termination_policies),
            "NewInstancesProtectedFromScaleIn": g.protect_new, "ServiceLinkedRoleARN": None,
            "CapacityRebalance": False, "TrafficSources": []}


def _filters(req: Req) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in req.get("Filters", []):
        out.setdefault(f.get("Name", ""), []).extend(f.get("Values", []))
    return out


@REGISTRY.action("DescribeAutoScalingGroups")
async def describe_auto_scaling_groups(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    rows, token = _asg(cloud).groups.describe(caller, req.get("AutoScalingGroupNames", []), _filters(req),
                                              req.get("MaxRecords"), req.get("NextToken"))
    return {"AutoScalingGroups": [_group_view(cloud, g) for g in rows], "NextToken": token}


@REGISTRY.action("DescribeAutoScalingInstances")
async def describe_auto_scaling_instances(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    rows, token = _asg(cloud).groups.describe_instances(caller, req.get("InstanceIds", []), req.get("MaxRecords"),
                                                        req.get("NextToken"))
    return {"AutoScalingInstances": [_member_view(cloud, m, True) for m in rows], "NextToken": token}


@REGISTRY.action("SetDesiredCapacity")
async def set_desired_capacity(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.set_desired(caller, req["AutoScalingGroupName"], req["DesiredCapacity"],
                                         req.get("HonorCooldown", False))
    return {}


def _activity_view(a: ScalingActivity, arn: str | None = None) -> dict[str, Any]:
    return {"ActivityId": a.id, "AutoScalingGroupName": a.group, "Description": a.description, "Cause": a.cause,
            "StartTime": ts(a.start), "EndTime": ts(a.end) if a.end is not None else None, "StatusCode": a.status,
            "StatusMessage": a.status_message or None, "Progress": a.progress, "Details": "{}",
            "AutoScalingGroupARN": arn}


@REGISTRY.action("TerminateInstanceInAutoScalingGroup")
async def terminate_instance_in_auto_scaling_group(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    if ("InstanceId" in req) == ("InstanceIds" in req):
        raise CloudError("ValidationError", "Either InstanceId or InstanceIds is required, not both")
    acts = await _asg(cloud).groups.terminate_instances(
        caller, [req["InstanceId"]] if "InstanceId" in req else req["InstanceIds"],
        req["ShouldDecrementDesiredCapacity"], req.get("AutoScalingGroupName"))
    if "InstanceId" in req:
        return {"Activity": _activity_view(acts[0])}
    return {"Activities": [_activity_view(a) for a in acts]}


@REGISTRY.action("AttachInstances")
async def attach_instances(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.attach_instances(caller, req["AutoScalingGroupName"], req.get("InstanceIds", []))
    return {}


@REGISTRY.action("DetachInstances")
async def detach_instances(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    acts = await _asg(cloud).groups.detach_instances(caller, req["AutoScalingGroupName"], req.get("InstanceIds", []),
                                                     req["ShouldDecrementDesiredCapacity"])
    return {"Activities": [_activity_view(a) for a in acts]}


@REGISTRY.action("SuspendProcesses")
async def suspend_processes(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.suspend(caller, req["AutoScalingGroupName"], req.get("ScalingProcesses", []), True)
    return {}


@REGISTRY.action("ResumeProcesses")
async def resume_processes(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.suspend(caller, req["AutoScalingGroupName"], req.get("ScalingProcesses", []), False)
    return {}


@REGISTRY.action("DescribeScalingActivities")
async def describe_scaling_activities(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"ActivityIds": None, "AutoScalingGroupName": None, "MaxRecords": None, "NextToken": None,
                  "IncludeDeletedGroups": False, "IncludeManagedResources": None})
    group = req.get("AutoScalingGroupName")
    rows, token = _asg(cloud).activities.describe(caller, req.get("ActivityIds", []), group, req.get("MaxRecords"),
                                                  req.get("NextToken"))
    groups = _asg(cloud).groups
    arns = {g: (r.arn if (r := groups.get(caller.account, g)) else None) for g in {a.group for a in rows}}
    return {"Activities": [_activity_view(a, arns[a.group]) for a in rows], "NextToken": token}


# -- tags -------------------------------------------------------------------------------------

def _tags(items: Iterable[dict[str, Any]]) -> list[TagInput]:
    return [TagInput(group=t.get("ResourceId", ""), key=t["Key"], value=t.get("Value"),
                     propagate=t.get("PropagateAtLaunch"), resource_type=t.get("ResourceType", "auto-scaling-group"))
            for t in items]


@REGISTRY.action("CreateOrUpdateTags")
async def create_or_update_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.put_tags(caller, _tags(req["Tags"]))
    return {}


@REGISTRY.action("DeleteTags")
async def delete_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.delete_tags(caller, _tags(req["Tags"]))
    return {}


@REGISTRY.action("DescribeTags")
async def describe_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    rows, token = _asg(cloud).groups.describe_tags(caller, _filters(req), req.get("MaxRecords"), req.get("NextToken"))
    return {"Tags": [_tag_view(*r) for r in rows], "NextToken": token}


# -- load balancers ---------------------------------------------------------------------------

@REGISTRY.action("AttachLoadBalancers")
async def attach_load_balancers(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.attach_balancers(caller, req["AutoScalingGroupName"], req["LoadBalancerNames"])
    return {}


@REGISTRY.action("DetachLoadBalancers")
async def detach_load_balancers(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).groups.detach_balancers(caller, req["AutoScalingGroupName"], req["LoadBalancerNames"])
    return {}


@REGISTRY.action("DescribeLoadBalancers")
async def describe_load_balancers(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    g = _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"LoadBalancers": [{"LoadBalancerName": n, "State": "InService"} for n in g.load_balancers]}


@REGISTRY.action("DescribeLoadBalancerTargetGroups")
async def describe_load_balancer_target_groups(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"LoadBalancerTargetGroups": []}   # (classic load balancers only: no target groups)


@REGISTRY.action("DescribeTrafficSources")
async def describe_traffic_sources(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    g = _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    kind = req.get("TrafficSourceType")
    if kind not in (None, "elb"):
        return {"TrafficSources": []}
    return {"TrafficSources": [{"TrafficSource": n, "State": "InService", "Identifier": n, "Type": "elb"}
                               for n in g.load_balancers]}


# -- policies ---------------------------------------------------------------------------------

@REGISTRY.action("PutScalingPolicy")
async def put_scaling_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {k: None for k in ("AutoScalingGroupName", "PolicyName", "PolicyType", "AdjustmentType",
                                    "MinAdjustmentMagnitude", "ScalingAdjustment", "Cooldown", "Enabled")})
    p = await _asg(cloud).policies.put(caller, PolicyInput(
        group=req["AutoScalingGroupName"], name=req["PolicyName"], adjustment_type=req.get("AdjustmentType"),
        adjustment=req.get("ScalingAdjustment"), cooldown=req.get("Cooldown"),
        min_magnitude=req.get("MinAdjustmentMagnitude"), policy_type=req.get("PolicyType", "SimpleScaling"),
        enabled=req.get("Enabled", True)))
    return {"PolicyARN": p.arn, "Alarms": []}


def _policy_view(p: ScalingPolicy) -> dict[str, Any]:
    return {"AutoScalingGroupName": p.group, "PolicyName": p.name, "PolicyARN": p.arn, "PolicyType": "SimpleScaling",
            "AdjustmentType": p.adjustment_type, "MinAdjustmentStep": p.min_magnitude,
            "MinAdjustmentMagnitude": p.min_magnitude, "ScalingAdjustment": p.adjustment, "Cooldown": p.cooldown,
            "StepAdjustments": [], "Alarms": [], "Enabled": p.enabled}


@REGISTRY.action("DescribePolicies")
async def describe_policies(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    rows, token = _asg(cloud).policies.describe(caller, req.get("AutoScalingGroupName"), req.get("PolicyNames", []),
                                                req.get("PolicyTypes", []), req.get("MaxRecords"),
                                                req.get("NextToken"))
    return {"ScalingPolicies": [_policy_view(p) for p in rows], "NextToken": token}


@REGISTRY.action("DeletePolicy")
async def delete_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await _asg(cloud).policies.delete(caller, req.get("AutoScalingGroupName"), req["PolicyName"])
    return {}


@REGISTRY.action("ExecutePolicy")
async def execute_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"AutoScalingGroupName": None, "PolicyName": None, "HonorCooldown": None})
    await _asg(cloud).policies.execute(caller, req.get("AutoScalingGroupName"), req["PolicyName"],
                                       req.get("HonorCooldown", True))
    return {}


# -- what cloudctl has none of, answered truthfully ---------------------------------------------

@REGISTRY.action("DescribeAccountLimits")
async def describe_account_limits(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    a = _asg(cloud)
    cfg = cloud.config.autoscaling
    return {"MaxNumberOfAutoScalingGroups": cfg.max_groups, "MaxNumberOfLaunchConfigurations":
            cfg.max_launch_configurations, "NumberOfAutoScalingGroups": a.groups.count(caller.account),
            "NumberOfLaunchConfigurations": a.launch_configs.count(caller.account)}


@REGISTRY.action("DescribeAdjustmentTypes")
async def describe_adjustment_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"AdjustmentTypes": [{"AdjustmentType": t} for t in ADJUSTMENT_TYPES]}


@REGISTRY.action("DescribeTerminationPolicyTypes")
async def describe_termination_policy_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"TerminationPolicyTypes": list(TERMINATION_POLICIES)}


@REGISTRY.action("DescribeScalingProcessTypes")
async def describe_scaling_process_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"Processes": [{"ProcessName": p} for p in PROCESSES]}


@REGISTRY.action("DescribeLifecycleHooks")
async def describe_lifecycle_hooks(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"LifecycleHooks": []}


@REGISTRY.action("DescribeLifecycleHookTypes")
async def describe_lifecycle_hook_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"LifecycleHookTypes": []}   # (no lifecycle hooks can be made here)


@REGISTRY.action("DescribeWarmPool")
async def describe_warm_pool(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"Instances": []}


@REGISTRY.action("DescribeNotificationConfigurations")
async def describe_notification_configurations(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    for name in req.get("AutoScalingGroupNames", []):
        _asg(cloud).groups.named(caller, name)
    return {"NotificationConfigurations": []}


@REGISTRY.action("DescribeScheduledActions")
async def describe_scheduled_actions(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    if "AutoScalingGroupName" in req:
        _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"ScheduledUpdateGroupActions": []}


@REGISTRY.action("DescribeInstanceRefreshes")
async def describe_instance_refreshes(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    return {"InstanceRefreshes": []}


@REGISTRY.action("DescribeMetricCollectionTypes")
async def describe_metric_collection_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"Metrics": [], "Granularities": []}   # (no group metrics are collected)


# AutoScaling's group metrics (the names EnableMetricsCollection takes); cloudctl collects none.
GROUP_METRICS = frozenset(
    ("GroupMinSize", "GroupMaxSize", "GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances",
     "GroupStandbyInstances", "GroupTerminatingInstances", "GroupTotalInstances", "GroupInServiceCapacity",
     "GroupPendingCapacity", "GroupStandbyCapacity", "GroupTerminatingCapacity", "GroupTotalCapacity",
     "WarmPoolDesiredCapacity", "WarmPoolWarmedCapacity", "WarmPoolPendingCapacity", "WarmPoolTerminatingCapacity",
     "WarmPoolTotalCapacity", "GroupAndWarmPoolDesiredCapacity", "GroupAndWarmPoolTotalCapacity"))


@REGISTRY.action("DisableMetricsCollection")
async def disable_metrics_collection(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    """Nothing is ever collected, so there is nothing to stop: the group and the names are checked
    (Ansible's autoscaling_group disables collection on every run without metrics_collection)."""
    _asg(cloud).groups.named(caller, req["AutoScalingGroupName"])
    unknown = sorted(set(req.get("Metrics", [])) - GROUP_METRICS)
    if unknown:
        raise CloudError("ValidationError", f"Invalid metrics: {', '.join(unknown)}")
    return {}
