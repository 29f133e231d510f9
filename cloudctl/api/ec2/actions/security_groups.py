"""CreateSecurityGroup, DeleteSecurityGroup, DescribeSecurityGroups, Authorize/Revoke
SecurityGroupIngress/Egress, DescribeSecurityGroupRules."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....core.sg_permissions import RuleChange
from ....store.records import SecurityGroup, SecurityGroupRule
from ..ip_permissions import permissions as asked
from ..protocol import LazyList
from ..requests import query, tags_for
from .registry import action, tag_list


def _ports(r: SecurityGroupRule) -> dict[str, Any]:
    if r.protocol in ("tcp", "udp", "icmp"):
        return {"FromPort": r.from_port, "ToPort": r.to_port}
    return {}


def permissions(cloud: Cloud, g: SecurityGroup, egress: bool) -> list[dict[str, Any]]:
    """EC2 groups a group's rules by protocol and ports, each with its CIDRs and peer groups."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in cloud.security_groups.rules_of(g.id):
        if r.egress != egress:
            continue
        key = (r.protocol, r.from_port, r.to_port)
        p = merged.get(key)
        if p is None:
            p = merged[key] = {"IpProtocol": r.protocol, **_ports(r), "IpRanges": [], "UserIdGroupPairs": [],
                               "Ipv6Ranges": [], "PrefixListIds": []}
        if r.cidr:
            p["IpRanges"].append({"CidrIp": r.cidr, **({"Description": r.description} if r.description else {})})
        else:
            pair = {"GroupId": r.peer_group_id, "UserId": r.peer_owner}
            if r.description:
                pair["Description"] = r.description
            p["UserIdGroupPairs"].append(pair)
    return list(merged.values())


def group_view(cloud: Cloud, g: SecurityGroup) -> dict[str, Any]:
    return {"GroupId": g.id, "GroupName": g.name, "Description": g.description, "OwnerId": g.owner,
            "VpcId": g.vpc_id, "IpPermissions": permissions(cloud, g, False),
            "IpPermissionsEgress": permissions(cloud, g, True), "Tags": tag_list(cloud, g.id),
            "SecurityGroupArn": f"arn:aws:ec2:{cloud.config.region}:{g.owner}:security-group/{g.id}"}


def rule_view(cloud: Cloud, r: SecurityGroupRule) -> dict[str, Any]:
    view: dict[str, Any] = {
        "SecurityGroupRuleId": r.id, "GroupId": r.group_id, "GroupOwnerId": r.owner, "IsEgress": r.egress,
        "IpProtocol": r.protocol, "FromPort": -1 if r.from_port is None else r.from_port,
        "ToPort": -1 if r.to_port is None else r.to_port, "Description": r.description or None,
        "Tags": tag_list(cloud, r.id),
        "SecurityGroupRuleArn": f"arn:aws:ec2:{cloud.config.region}:{r.owner}:security-group-rule/{r.id}",
    }
    if r.cidr:
        view["CidrIpv4"] = r.cidr
    else:
        view["ReferencedGroupInfo"] = {"GroupId": r.peer_group_id, "UserId": r.peer_owner}
    return view


@action("CreateSecurityGroup")
async def create_security_group(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    g = await cloud.security_groups.create(caller, req.get("GroupName"), req.get("Description"), req.get("VpcId"),
                                           tags_for(req, "security-group"))
    return {"GroupId": g.id, "Tags": tag_list(cloud, g.id),
            "SecurityGroupArn": f"arn:aws:ec2:{cloud.config.region}:{g.owner}:security-group/{g.id}"}


@action("DeleteSecurityGroup")
async def delete_security_group(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    g = await cloud.security_groups.delete(caller, req.get("GroupId"), req.get("GroupName"))
    return {"Return": True, "GroupId": g.id}


@action("DescribeSecurityGroups")
async def describe_security_groups(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    groups, token = await cloud.security_groups.describe(caller, query(req, "GroupIds"),
                                                         tuple(req.get("GroupNames") or ()))
    # Built now, from the state as it is now (rules, tags); only the writing is done in slices.
    views = [group_view(cloud, g) for g in groups]
    return {"SecurityGroups": LazyList(views, len(views)), "NextToken": token}


@action("DescribeSecurityGroupRules")
async def describe_security_group_rules(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    rules, token = cloud.security_groups.describe_rules(caller, query(req, "SecurityGroupRuleIds"))
    return {"SecurityGroupRules": [rule_view(cloud, r) for r in rules], "NextToken": token}


async def _authorize(cloud: Cloud, caller: Caller, req: dict[str, Any], egress: bool) -> dict[str, Any]:
    change = RuleChange(egress, req.get("GroupId"), req.get("GroupName"), asked(req),
                        tags=tags_for(req, "security-group-rule"))
    rules = await cloud.security_groups.authorize(caller, change)
    return {"Return": True, "SecurityGroupRules": [rule_view(cloud, r) for r in rules]}


async def _revoke(cloud: Cloud, caller: Caller, req: dict[str, Any], egress: bool) -> dict[str, Any]:
    rule_ids = tuple(req.get("SecurityGroupRuleIds") or ())
    # Rules named by id and no IpPermissions: the flat rule members, if any, are not read.
    perms = asked(req) if req.get("IpPermissions") or not rule_ids else ()
    change = RuleChange(egress, req.get("GroupId"), req.get("GroupName"), perms, rule_ids)
    rules = await cloud.security_groups.revoke(caller, change)
    revoked = []
    for r in rules:
        v = {k: val for k, val in rule_view(cloud, r).items()
             if k not in ("GroupOwnerId", "Tags", "SecurityGroupRuleArn", "ReferencedGroupInfo")}
        if r.peer_group_id:
            v["ReferencedGroupId"] = r.peer_group_id
        revoked.append(v)
    return {"Return": True, "RevokedSecurityGroupRules": revoked}


@action("AuthorizeSecurityGroupIngress")
async def authorize_ingress(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return await _authorize(cloud, caller, req, False)


@action("AuthorizeSecurityGroupEgress")
async def authorize_egress(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return await _authorize(cloud, caller, req, True)


@action("RevokeSecurityGroupIngress")
async def revoke_ingress(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return await _revoke(cloud, caller, req, False)


@action("RevokeSecurityGroupEgress")
async def revoke_egress(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    return await _revoke(cloud, caller, req, True)
