"""Classic ELB actions (wire shapes from botocore's `elb` model, 2012-06-01)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.cloud import Cloud
from ...core.context import Caller
from ...core.elb.model import AttributeChanges, HealthCheckDef, ListenerDef
from ...store.records import LoadBalancer
from ..ec2.actions.registry import ts
from ..query.service import Registry

REGISTRY = Registry("elb")
Req = dict[str, Any]


def _listeners(req: Req) -> list[ListenerDef]:
    return [ListenerDef.of(x["Protocol"], x["LoadBalancerPort"], x.get("InstanceProtocol"), x["InstancePort"],
                           x.get("SSLCertificateId")) for x in req.get("Listeners", [])]


def _tags(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(t["Key"], t.get("Value", "")) for t in items]


def _ids(req: Req) -> list[str]:
    return [i.get("InstanceId", "") for i in req.get("Instances", [])]


def _instances(ids: list[str]) -> dict[str, Any]:
    return {"Instances": [{"InstanceId": i} for i in ids]}


def _health_check(hc: Mapping[str, Any]) -> dict[str, Any]:
    return {"Target": hc["target"], "Interval": hc["interval"], "Timeout": hc["timeout"],
            "UnhealthyThreshold": hc["unhealthy"], "HealthyThreshold": hc["healthy"]}


def _description(cloud: Cloud, lb: LoadBalancer) -> dict[str, Any]:
    policies = {p["name"]: p for p in lb.policies}
    owner, group = cloud.elb.source_group(lb)
    dns = cloud.elb.dns_name(lb)
    return {
        "LoadBalancerName": lb.name, "DNSName": dns, "CanonicalHostedZoneName": dns,
        "CanonicalHostedZoneNameID": cloud.elb.hosted_zone_id(),
        "ListenerDescriptions": [{
            "Listener": {"Protocol": x["protocol"], "LoadBalancerPort": x["port"],
                         "InstanceProtocol": x["instance_protocol"], "InstancePort": x["instance_port"],
                         "SSLCertificateId": x["certificate"]},
            "PolicyNames": list(x["policies"])} for x in lb.listeners],
        "Policies": {
            "AppCookieStickinessPolicies": [
                {"PolicyName": p["name"], "CookieName": _attr(p, "CookieName")}
                for p in policies.values() if p["type"] == "AppCookieStickinessPolicyType"],
            "LBCookieStickinessPolicies": [
                {"PolicyName": p["name"], "CookieExpirationPeriod": _int(_attr(p, "CookieExpirationPeriod"))}
                for p in policies.values() if p["type"] == "LBCookieStickinessPolicyType"],
            "OtherPolicies": [p["name"] for p in policies.values()
                              if p["type"] not in ("AppCookieStickinessPolicyType", "LBCookieStickinessPolicyType")]},
        "BackendServerDescriptions": [],
        "AvailabilityZones": list(lb.zones), "Subnets": list(lb.subnets),
        "VPCId": cloud.network.vpc_id if lb.subnets else None,
        **_instances(list(lb.instances)),
        "HealthCheck": _health_check(lb.health_check),
        "SourceSecurityGroup": {"OwnerAlias": owner, "GroupName": group},
        "SecurityGroups": list(lb.security_groups), "CreatedTime": ts(lb.created), "Scheme": lb.scheme,
    }


def _attr(policy: Mapping[str, Any], name: str) -> str | None:
    return dict(policy["attributes"]).get(name)


def _int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


@REGISTRY.action("CreateLoadBalancer")
async def create_load_balancer(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    lb = await cloud.elb.create(caller, req["LoadBalancerName"], _listeners(req), req.get("AvailabilityZones", []),
                                req.get("Subnets", []), req.get("SecurityGroups", []), req.get("Scheme"),
                                _tags(req.get("Tags", [])))
    return {"DNSName": cloud.elb.dns_name(lb)}


@REGISTRY.action("DeleteLoadBalancer")
async def delete_load_balancer(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.delete(caller, req["LoadBalancerName"])
    return {}


@REGISTRY.action("DescribeLoadBalancers")
async def describe_load_balancers(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    lbs, marker = cloud.elb.describe(caller, req.get("LoadBalancerNames", []), req.get("Marker"), req.get("PageSize"))
    return {"LoadBalancerDescriptions": [_description(cloud, lb) for lb in lbs], "NextMarker": marker}


@REGISTRY.action("CreateLoadBalancerListeners")
async def create_listeners(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.create_listeners(caller, req["LoadBalancerName"], _listeners(req))
    return {}


@REGISTRY.action("DeleteLoadBalancerListeners")
async def delete_listeners(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.delete_listeners(caller, req["LoadBalancerName"], req["LoadBalancerPorts"])
    return {}


@REGISTRY.action("RegisterInstancesWithLoadBalancer")
async def register_instances(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return _instances(await cloud.elb.register_instances(caller, req["LoadBalancerName"], _ids(req)))


@REGISTRY.action("DeregisterInstancesFromLoadBalancer")
async def deregister_instances(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return _instances(await cloud.elb.deregister_instances(caller, req["LoadBalancerName"], _ids(req)))


@REGISTRY.action("DescribeInstanceHealth")
async def describe_instance_health(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    states = cloud.elb.instance_health(caller, req["LoadBalancerName"], _ids(req))
    return {"InstanceStates": [{"InstanceId": h.instance_id, "State": h.state, "ReasonCode": h.reason,
                                "Description": h.description} for h in states]}


@REGISTRY.action("ConfigureHealthCheck")
async def configure_health_check(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    h = req["HealthCheck"]
    hc = await cloud.elb.configure_health_check(caller, req["LoadBalancerName"], HealthCheckDef(
        h["Target"], h["Interval"], h["Timeout"], h["UnhealthyThreshold"], h["HealthyThreshold"]))
    return {"HealthCheck": _health_check(hc.row())}


@REGISTRY.action("EnableAvailabilityZonesForLoadBalancer")
async def enable_zones(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"AvailabilityZones": await cloud.elb.enable_zones(caller, req["LoadBalancerName"],
                                                              req["AvailabilityZones"])}


@REGISTRY.action("DisableAvailabilityZonesForLoadBalancer")
async def disable_zones(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"AvailabilityZones": await cloud.elb.disable_zones(caller, req["LoadBalancerName"],
                                                               req["AvailabilityZones"])}


@REGISTRY.action("AttachLoadBalancerToSubnets")
async def attach_subnets(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"Subnets": await cloud.elb.attach_subnets(caller, req["LoadBalancerName"], req["Subnets"])}


@REGISTRY.action("DetachLoadBalancerFromSubnets")
async def detach_subnets(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"Subnets": await cloud.elb.detach_subnets(caller, req["LoadBalancerName"], req["Subnets"])}


@REGISTRY.action("ApplySecurityGroupsToLoadBalancer")
async def apply_security_groups(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"SecurityGroups": await cloud.elb.apply_security_groups(caller, req["LoadBalancerName"],
                                                                    req["SecurityGroups"])}


def _attributes(a: Mapping[str, Any]) -> dict[str, Any]:
    return {"CrossZoneLoadBalancing": {"Enabled": a["cross_zone"]}, "AccessLog": {"Enabled": a["access_log"]},
            "ConnectionDraining": {"Enabled": a["draining"], "Timeout": a["draining_timeout"]},
            "ConnectionSettings": {"IdleTimeout": a["idle_timeout"]},
            "AdditionalAttributes": [{"Key": k, "Value": v} for k, v in a["extra"]]}


@REGISTRY.action("DescribeLoadBalancerAttributes")
async def describe_attributes(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"LoadBalancerAttributes": _attributes(cloud.elb.attributes(caller, req["LoadBalancerName"]))}


@REGISTRY.action("ModifyLoadBalancerAttributes")
async def modify_attributes(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    a = req["LoadBalancerAttributes"]
    drain = a.get("ConnectionDraining", {})
    changes = AttributeChanges(
        cross_zone=a.get("CrossZoneLoadBalancing", {}).get("Enabled"), draining=drain.get("Enabled"),
        draining_timeout=drain.get("Timeout"), idle_timeout=a.get("ConnectionSettings", {}).get("IdleTimeout"),
        access_log=a.get("AccessLog", {}).get("Enabled"),
        extra=tuple((x.get("Key", ""), x.get("Value", "")) for x in a.get("AdditionalAttributes", [])))
    now = await cloud.elb.modify_attributes(caller, req["LoadBalancerName"], changes)
    return {"LoadBalancerName": req["LoadBalancerName"], "LoadBalancerAttributes": _attributes(now)}


@REGISTRY.action("AddTags")
async def add_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.add_tags(caller, req["LoadBalancerNames"], _tags(req["Tags"]))
    return {}


@REGISTRY.action("RemoveTags")
async def remove_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.remove_tags(caller, req["LoadBalancerNames"], [t.get("Key", "") for t in req["Tags"]])
    return {}


@REGISTRY.action("DescribeTags")
async def describe_tags(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"TagDescriptions": [{"LoadBalancerName": lb.name,
                                 "Tags": [{"Key": k, "Value": v} for k, v in lb.tags.items()]}
                                for lb in cloud.elb.tags(caller, req["LoadBalancerNames"])]}


@REGISTRY.action("CreateLoadBalancerPolicy")
async def create_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    attrs = [(a.get("AttributeName", ""), a.get("AttributeValue", "")) for a in req.get("PolicyAttributes", [])]
    await cloud.elb.create_policy(caller, req["LoadBalancerName"], req["PolicyName"], req["PolicyTypeName"], attrs)
    return {}


@REGISTRY.action("DescribeLoadBalancerPolicies")
async def describe_policies(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    found = cloud.elb.policies(caller, req.get("LoadBalancerName"), req.get("PolicyNames", []))
    return {"PolicyDescriptions": [{
        "PolicyName": p["name"], "PolicyTypeName": p["type"],
        "PolicyAttributeDescriptions": [{"AttributeName": k, "AttributeValue": v} for k, v in p["attributes"]]}
        for p in found]}


@REGISTRY.action("DeleteLoadBalancerPolicy")
async def delete_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.delete_policy(caller, req["LoadBalancerName"], req["PolicyName"])
    return {}


@REGISTRY.action("DescribeLoadBalancerPolicyTypes")
async def describe_policy_types(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"PolicyTypeDescriptions": [{
        "PolicyTypeName": name, "Description": t["description"],
        "PolicyAttributeTypeDescriptions": [{
            "AttributeName": a["name"], "AttributeType": a["type"], "Description": a["description"],
            "DefaultValue": a["default"], "Cardinality": a["cardinality"]} for a in t["attributes"]]}
        for name, t in cloud.elb.policy_types(req.get("PolicyTypeNames", []))]}


@REGISTRY.action("CreateLBCookieStickinessPolicy")
async def create_lb_cookie_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.create_lb_cookie_policy(caller, req["LoadBalancerName"], req["PolicyName"],
                                            req.get("CookieExpirationPeriod"))
    return {}


@REGISTRY.action("CreateAppCookieStickinessPolicy")
async def create_app_cookie_policy(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.create_app_cookie_policy(caller, req["LoadBalancerName"], req["PolicyName"], req["CookieName"])
    return {}


@REGISTRY.action("SetLoadBalancerPoliciesOfListener")
async def set_listener_policies(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    await cloud.elb.set_listener_policies(caller, req["LoadBalancerName"], req["LoadBalancerPort"],
                                          req["PolicyNames"])
    return {}


@REGISTRY.action("DescribeAccountLimits")
async def describe_account_limits(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    return {"Limits": [{"Name": "classic-load-balancers", "Max": str(cloud.config.elb.max_load_balancers_per_user)},
                       {"Name": "classic-listeners", "Max": "100"},
                       {"Name": "classic-registered-instances", "Max": "1000"}]}
