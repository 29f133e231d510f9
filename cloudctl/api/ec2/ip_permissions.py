"""Authorize*/Revoke*'s rule parameters as the core's `Permission`s.

EC2 names rules either as `IpPermissions` or, from the EC2-Classic era, with flat members
(`IpProtocol`, `FromPort`, `ToPort`, `CidrIp`, `SourceSecurityGroupName`, ...) for one rule;
both become Permissions here. The values are checked by the core.
"""
from __future__ import annotations

from typing import Any

from ...core.errors import CloudError
from ...core.sg_permissions import ANYWHERE, GroupPeer, IpRange, Permission

_FLAT = ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName", "SourceSecurityGroupOwnerId")


def permissions(req: dict[str, Any]) -> tuple[Permission, ...]:
    """The rules a request names; none (the core then asks for some) if it names none."""
    perms = req.get("IpPermissions")
    if perms:
        flat = [k for k in _FLAT if req.get(k) is not None]
        if flat:
            raise CloudError("InvalidParameterCombination",
                             f"The parameter '{flat[0]}' may not be used in combination with 'ipPermissions'")
        return tuple(permission(p) for p in perms)
    if req.get("SourceSecurityGroupName"):
        peer = GroupPeer(group_name=req["SourceSecurityGroupName"], user_id=req.get("SourceSecurityGroupOwnerId"))
        return (Permission(req.get("IpProtocol") or "-1", req.get("FromPort"), req.get("ToPort"), peers=(peer,)),)
    if req.get("IpProtocol") is not None or req.get("CidrIp"):
        return (Permission(req.get("IpProtocol"), req.get("FromPort"), req.get("ToPort"),
                           ranges=(IpRange(req.get("CidrIp") or ANYWHERE),)),)
    return ()


def permission(p: dict[str, Any]) -> Permission:
    """One `IpPermissions` member."""
    return Permission(
        protocol=p.get("IpProtocol"), from_port=p.get("FromPort"), to_port=p.get("ToPort"),
        ranges=tuple(IpRange(r.get("CidrIp"), r.get("Description") or "") for r in p.get("IpRanges") or ()),
        peers=tuple(GroupPeer(g.get("GroupId"), g.get("GroupName"), g.get("UserId"), g.get("Description") or "")
                    for g in p.get("UserIdGroupPairs") or ()),
        ipv6_ranges=tuple(r.get("CidrIpv6") or "" for r in p.get("Ipv6Ranges") or ()),
        prefix_lists=tuple(r.get("PrefixListId") or "" for r in p.get("PrefixListIds") or ()))
