"""What an update of each resource type's properties does: in place (with no or some interruption)
or a replacement (a new physical resource, the old one deleted at cleanup). One table for the
engine and for change sets. AWS documents each property's "Update requires"; a property is listed
here as in place only where cloudctl's own service can change it on the resource it has
(resources/updaters.py does it) — every other change, and any property not listed, replaces."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...slim import dataclass

NONE, SOME = "NoInterruption", "SomeInterruption"   # (in place; anything else is a replacement)

IN_PLACE: dict[str, dict[str, str]] = {
    # Security groups: the rules change on the group; GroupName, GroupDescription, VpcId replace.
    "AWS::EC2::SecurityGroup": {"SecurityGroupIngress": NONE, "SecurityGroupEgress": NONE},
    # Instance: type and user data while stopped (stop, modify, start, as AWS does for EBS-backed);
    # its groups and termination protection while running. ImageId, AvailabilityZone, KeyName,
    # SubnetId, PrivateIpAddress, SecurityGroups (names) replace.
    "AWS::EC2::Instance": {"InstanceType": SOME, "UserData": SOME, "SecurityGroupIds": NONE,
                           "DisableApiTermination": NONE},
    # A group's sizes, launch source and policies are UpdateAutoScalingGroup's; its name replaces.
    "AWS::AutoScaling::AutoScalingGroup": {
        "MinSize": NONE, "MaxSize": NONE, "DesiredCapacity": NONE, "LaunchConfigurationName": NONE,
        "LaunchTemplate": NONE, "Cooldown": NONE, "HealthCheckType": NONE, "HealthCheckGracePeriod": NONE,
        "TerminationPolicies": NONE, "AvailabilityZones": NONE, "VPCZoneIdentifier": NONE},
    # PutScalingPolicy overwrites a policy of the same name; moving it to another group replaces.
    "AWS::AutoScaling::ScalingPolicy": {"AdjustmentType": NONE, "ScalingAdjustment": NONE, "Cooldown": NONE,
                                        "MinAdjustmentMagnitude": NONE},
    # An address is (dis)associated in place; its Domain replaces.
    "AWS::EC2::EIP": {"InstanceId": NONE},
    # Health check and registered instances in place; name, listeners, zones, scheme replace here.
    "AWS::ElasticLoadBalancing::LoadBalancer": {"HealthCheck": NONE, "Instances": NONE},
    # (LaunchConfiguration, SecurityGroupIngress/Egress, EIPAssociation, Volume, VolumeAttachment,
    # KeyPair, LaunchTemplate, WaitConditionHandle, WaitCondition: every change replaces.)
}

PENDING = "{{cloudctl:pending:"   # how a change set's preview shows a value known only once applied


@dataclass(frozen=True, slots=True)
class Diff:
    """One resource's changed properties and what applying them takes."""
    changed: tuple[str, ...]
    replace: bool
    interruption: str          # NoInterruption | SomeInterruption | Replacement
    dynamic: tuple[str, ...]   # changed properties whose new value is known only once applied
    rtype: str

    @property
    def replacement(self) -> str:
        """DescribeChangeSet's Replacement: True, False, or Conditional (it depends on a value
        known only once a resource it refers to is replaced)."""
        if self.replace:
            sure = [p for p in self.changed if p not in self.dynamic and IN_PLACE.get(self.rtype, {}).get(p) is None]
            return "True" if sure else "Conditional"
        return "False"


def canonical(props: Mapping[str, Any]) -> str:
    """Properties as one comparable JSON text (numbers and booleans as CloudFormation sees them:
    strings, so "2" and 2 are the same value)."""
    return json.dumps(_norm(props), sort_keys=True, separators=(",", ":"))


def _norm(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return v


def diff(rtype: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> Diff | None:
    """None when nothing changes; else which properties do and whether that replaces."""
    a, b = _norm(old), _norm(new)
    changed = tuple(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
    if not changed:
        return None
    table = IN_PLACE.get(rtype, {})
    modes = [table.get(k) for k in changed]
    replace = any(m is None for m in modes)
    interruption = "Replacement" if replace else (SOME if SOME in modes else NONE)
    dynamic = tuple(k for k in changed if PENDING in json.dumps(b.get(k)))
    return Diff(changed, replace, interruption, dynamic, rtype)
