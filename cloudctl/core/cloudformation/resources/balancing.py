"""AWS::ElasticLoadBalancing::LoadBalancer over core/elb (a classic load balancer, its listeners,
health check and instances)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...elb.model import HealthCheckDef, ListenerDef
from . import Ctx, Failed, Handler, Made, as_int, handler


def _listeners(props: Mapping[str, Any]) -> list[ListenerDef]:
    out = []
    for li in props.get("Listeners") or ():
        try:
            out.append(ListenerDef.of(str(li["Protocol"]), int(li["LoadBalancerPort"]), li.get("InstanceProtocol"),
                                      int(li["InstancePort"]), li.get("SSLCertificateId")))
        except (KeyError, TypeError, ValueError):
            raise Failed("Each listener needs Protocol, LoadBalancerPort and InstancePort") from None
    return out


@handler
class LoadBalancer(Handler):
    type = "AWS::ElasticLoadBalancing::LoadBalancer"
    attributes = frozenset({"DNSName", "CanonicalHostedZoneName", "CanonicalHostedZoneNameID",
                            "SourceSecurityGroup.GroupName", "SourceSecurityGroup.OwnerAlias"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        elb = ctx.services.elb
        name = props.get("LoadBalancerName") or ctx.name(32)
        lb = next((x for x in elb.of_owner(ctx.owner).values() if x.name == name), None)
        if lb is None or props.get("LoadBalancerName"):
            tags = [(str(t["Key"]), str(t.get("Value", ""))) for t in props.get("Tags") or ()]
            lb = await elb.create(ctx.caller, name, _listeners(props), [str(z) for z in props.get("AvailabilityZones")
                                                                        or ()],
                                  [str(s) for s in props.get("Subnets") or ()],
                                  [str(g) for g in props.get("SecurityGroups") or ()], props.get("Scheme"), tags,
                                  system_tags=ctx.system_tags)
        hc = props.get("HealthCheck")
        if hc:
            await elb.configure_health_check(ctx.caller, name, HealthCheckDef(
                target=str(hc["Target"]), interval=as_int(hc, "Interval") or 30, timeout=as_int(hc, "Timeout") or 5,
                unhealthy=as_int(hc, "UnhealthyThreshold") or 2, healthy=as_int(hc, "HealthyThreshold") or 10))
        if props.get("Instances"):
            await elb.register_instances(ctx.caller, name, [str(i) for i in props["Instances"]])
        dns = elb.dns_name(elb.get(ctx.caller, name))
        return Made(name, {"DNSName": dns, "CanonicalHostedZoneName": dns, "CanonicalHostedZoneNameID": "",
                           "SourceSecurityGroup.GroupName": "default", "SourceSecurityGroup.OwnerAlias": ctx.owner})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        await ctx.services.elb.delete(ctx.caller, physical)   # (gone already: success, as in ELB)
