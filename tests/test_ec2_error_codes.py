"""The error codes clients branch on, through boto3 against a real server: each refusal answers
the code botocore's and AWS's error lists give for the same situation, and changes nothing."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def fails(code: str, call: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(**kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


@pytest.fixture
def ec2(server: Any) -> Any:
    return server.client(server.create_user(f"codes-{uuid.uuid4().hex[:10]}"))


def rules(ec2: Any, gid: str) -> list[tuple[bool, str, str | None]]:
    out = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]
    return sorted((r["IsEgress"], r["IpProtocol"], r.get("CidrIpv4")) for r in out)


ALL_IPV6 = {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}


def test_revoking_an_ipv6_rule_is_not_found(ec2: Any) -> None:
    """Terraform's aws_security_group revokes the IPv6 egress rule AWS gives every new group and
    tolerates only InvalidPermission.NotFound; no IPv6 rule can exist here."""
    gid = ec2.create_security_group(GroupName="tf", Description="tf")["GroupId"]
    before = rules(ec2, gid)
    assert before == [(True, "-1", "0.0.0.0/0")]
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid, IpPermissions=[ALL_IPV6])
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupId=gid,
          IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    # with an IPv4 rule that does exist in the same request: all or nothing
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid,
          IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, ALL_IPV6])
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid,
          IpPermissions=[{"IpProtocol": "-1", "PrefixListIds": [{"PrefixListId": "pl-12345678"}]}])
    # the group is looked up first, as in EC2
    fails("InvalidGroup.NotFound", ec2.revoke_security_group_egress, GroupId="sg-0123456789abcdef0",
          IpPermissions=[ALL_IPV6])
    assert rules(ec2, gid) == before
    # authorizing one stays a clear refusal
    msg = fails("InvalidParameterValue", ec2.authorize_security_group_egress, GroupId=gid, IpPermissions=[ALL_IPV6])
    assert "IPv6" in msg
    assert rules(ec2, gid) == before
    # Terraform's two revokes after creating a group, exactly as it sends them (ports 0 with -1)
    ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[{
        "IpProtocol": "-1", "FromPort": 0, "ToPort": 0, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert rules(ec2, gid) == []
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid, IpPermissions=[{
        "IpProtocol": "-1", "FromPort": 0, "ToPort": 0, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
