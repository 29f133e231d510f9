"""AWS::EC2 resources over the cloud's security groups and compute (the EC2 API's own core calls)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...addresses import public_dns
from ...compute import private_dns
from ...context import Caller
from ...errors import CloudError
from ...launch import LaunchSpec
from ...sg_permissions import GroupPeer, IpRange, Permission, RuleChange
from . import LOGICAL_ID, STACK_ID, Ctx, Failed, Handler, Made, as_bool, gone, handler, need, until

SERVICE = Caller.service("cloudformation")
INSTANCE_WAIT_S = 600.0


def _user_tags(props: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((str(t["Key"]), str(t.get("Value", ""))) for t in props.get("Tags") or ())


def _permission(p: Mapping[str, Any], egress: bool) -> Permission:
    peer = None
    if not egress and (p.get("SourceSecurityGroupId") or p.get("SourceSecurityGroupName")):
        peer = GroupPeer(group_id=p.get("SourceSecurityGroupId"), group_name=p.get("SourceSecurityGroupName"),
                         user_id=p.get("SourceSecurityGroupOwnerId"))
    elif egress and p.get("DestinationSecurityGroupId"):
        peer = GroupPeer(group_id=p["DestinationSecurityGroupId"])
    cidr = p.get("CidrIp")

    def port(k: str) -> int | None:
        return None if p.get(k) in (None, "") else int(p[k])

    return Permission(protocol=str(need(p, "IpProtocol")), from_port=port("FromPort"), to_port=port("ToPort"),
                      ranges=(IpRange(cidr, p.get("Description") or ""),) if cidr else (),
                      peers=(peer,) if peer else ())


def _group_ref(props: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """GroupId, else GroupName (a Ref to a default-VPC group gives its id, so an sg- name is an id)."""
    gid, name = props.get("GroupId"), props.get("GroupName")
    if not gid and name and str(name).startswith("sg-"):
        gid, name = name, None
    if not gid and not name:
        raise Failed("Property GroupId or GroupName cannot be empty.")
    return gid, name


@handler
class SecurityGroup(Handler):
    type = "AWS::EC2::SecurityGroup"
    attributes = frozenset({"GroupId", "VpcId"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        sgs = ctx.services.security_groups
        name = props.get("GroupName") or ctx.name()
        g = sgs._group_by_name(ctx.owner, name)
        if g is None or ctx.services.tags.of(g.id).get(STACK_ID) != ctx.stack_id:
            g = await sgs.create(ctx.caller, name, need(props, "GroupDescription"), props.get("VpcId"),
                                 ctx.system_tags + _user_tags(props))
        for egress, key in ((False, "SecurityGroupIngress"), (True, "SecurityGroupEgress")):
            for p in props.get(key) or ():
                try:
                    await sgs.authorize(ctx.caller, RuleChange(egress, group_id=g.id,
                                                               permissions=(_permission(p, egress),)))
                except CloudError as e:
                    if e.code != "InvalidPermission.Duplicate":
                        raise
        return Made(g.id, {"GroupId": g.id, "VpcId": g.vpc_id})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.security_groups.delete(ctx.caller, physical, None)
        except CloudError as e:
            if not gone(e):
                raise


class _Rule(Handler):
    egress = False

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        sgs = ctx.services.security_groups
        gid, name = _group_ref(props)
        change = RuleChange(self.egress, group_id=gid, group_name=None if gid else name,
                            permissions=(_permission(props, self.egress),), tags=ctx.system_tags)
        try:
            rule = (await sgs.authorize(ctx.caller, change))[0]
        except CloudError as e:
            if e.code != "InvalidPermission.Duplicate":
                raise
            g = sgs.group(ctx.caller, gid, name, {})
            mine = [r for r in sgs.rules_of(g.id) if ctx.services.tags.of(r.id).get(STACK_ID) == ctx.stack_id
                    and ctx.services.tags.of(r.id).get(LOGICAL_ID) == ctx.logical]
            if not mine:
                raise
            rule = mine[0]
        return Made(rule.id, {"GroupId": rule.group_id})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        sgs = ctx.services.security_groups
        gid = ctx.attributes.get("GroupId")
        if not gid:
            return
        try:
            await sgs.revoke(ctx.caller, RuleChange(self.egress, group_id=gid, rule_ids=(physical,)))
        except CloudError as e:
            if not gone(e):
                raise


@handler
class SecurityGroupIngress(_Rule):
    type = "AWS::EC2::SecurityGroupIngress"


@handler
class SecurityGroupEgress(_Rule):
    type = "AWS::EC2::SecurityGroupEgress"
    egress = True


def _instance_attributes(ctx: Ctx, i: Any) -> dict[str, str]:
    """Fn::GetAtt's names as DescribeInstances shows them: the public address is the instance's
    Elastic IP (assigned at launch in a subnet mapping public addresses, or associated since)."""
    region = ctx.services.config.region
    eip = ctx.services.addresses.of_instance(i.id)
    public = eip.public_ip if eip is not None else ""
    return {"AvailabilityZone": i.zone, "PrivateIp": i.private_ip or "",
            "PrivateDnsName": private_dns(i, region) if i.private_ip else "",
            "PublicIp": public, "PublicDnsName": public_dns(public, region) if public else ""}


@handler
class Instance(Handler):
    type = "AWS::EC2::Instance"
    attributes = frozenset({"AvailabilityZone", "PrivateIp", "PublicIp", "PrivateDnsName", "PublicDnsName"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        groups = [str(g) for g in props.get("SecurityGroups") or ()]
        ids = tuple(str(g) for g in props.get("SecurityGroupIds") or ()) + tuple(g for g in groups
                                                                                 if g.startswith("sg-"))
        nic = (props.get("NetworkInterfaces") or [{}])[0]    # (the first one's subnet and public address)
        spec = LaunchSpec(image_id=str(need(props, "ImageId")), instance_type=props.get("InstanceType"),
                          zone=props.get("AvailabilityZone"), subnet_id=props.get("SubnetId") or nic.get("SubnetId"),
                          public_ip=as_bool(nic.get("AssociatePublicIpAddress")),
                          private_ip=props.get("PrivateIpAddress"), key_name=props.get("KeyName"),
                          user_data=props.get("UserData"), group_ids=ids,
                          group_names=tuple(g for g in groups if not g.startswith("sg-")),
                          instance_tags=_user_tags(props), system_tags=ctx.system_tags,
                          client_token=ctx.token, owner=ctx.owner,
                          disable_api_termination=bool(as_bool(props.get("DisableApiTermination"))))
        _, instances = await ctx.services.compute.run(SERVICE, spec)
        iid = instances[0].id
        compute = ctx.services.compute

        def running() -> bool:
            i = compute.of_owner(ctx.owner).get(iid)
            if i is None or i.state in ("shutting-down", "terminated"):
                raise Failed(f"Instance {iid} was terminated: {getattr(i, 'transition_reason', '') or 'gone'}")
            return bool(i.state == "running")

        await until(running, INSTANCE_WAIT_S, f"Instance {iid}")
        return Made(iid, _instance_attributes(ctx, compute.of_owner(ctx.owner)[iid]))

    async def delete(self, ctx: Ctx, physical: str) -> None:
        compute = ctx.services.compute
        i = compute.of_owner(ctx.owner).get(physical)
        if i is None or i.state == "terminated":
            return
        await compute.terminate(ctx.caller, [physical])

        def done() -> bool:
            j = compute.of_owner(ctx.owner).get(physical)
            return j is None or j.state == "terminated"

        await until(done, INSTANCE_WAIT_S, f"Instance {physical}")
