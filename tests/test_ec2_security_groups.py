"""Security groups: boto3 and the AWS CLI against the real server (every call, error code, filter),
then the core in-process over libvirt's test driver to see the filter each host would enforce
after rules and memberships change. Enforcement with packets is in tests/e2e/test_security_groups.py."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_ec2_wire import aws

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.compute import InstanceChanges
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec
from cloudctl.core.sg_permissions import GroupPeer, IpRange, Permission, RuleChange
from cloudctl.drivers.hypervisor.base import FirewallRule

from support import wait_state, write_config


def fails(code: str, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


@pytest.fixture
def user(server: Any) -> dict[str, str]:
    return server.create_user(f"sg-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def ec2(server: Any, user: dict[str, str]) -> Any:
    return server.client(user)


@pytest.fixture
def image_id(ec2: Any) -> str:
    return str(ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"])


def tcp(port: int, *cidrs: str, to: int | None = None) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port if to is None else to,
            "IpRanges": [{"CidrIp": c} for c in cidrs]}


def group(ec2: Any, gid: str) -> dict[str, Any]:
    return ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]


def rules(ec2: Any, gid: str) -> list[dict[str, Any]]:
    return ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]


def snapshot(ec2: Any) -> list[Any]:
    """Everything a user can see of their groups, to check that a rejected call changed nothing."""
    gs = ec2.describe_security_groups()["SecurityGroups"]
    return sorted((g["GroupId"], g["GroupName"], repr(sorted(map(repr, rules(ec2, g["GroupId"]))))) for g in gs)


# -- groups ----------------------------------------------------------------------------------------

def test_default_group_allows_itself_and_cannot_go(ec2: Any) -> None:
    gs = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in gs] == ["default"]
    d = gs[0]
    assert d["IpPermissions"] == [{"IpProtocol": "-1", "IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [],
                                   "UserIdGroupPairs": [{"GroupId": d["GroupId"], "UserId": d["OwnerId"]}]}]
    assert d["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"] == d["GroupId"]
    fails("CannotDelete", ec2.delete_security_group, GroupId=d["GroupId"])
    fails("CannotDelete", ec2.delete_security_group, GroupName="default")
    fails("InvalidGroup.Reserved", ec2.create_security_group, GroupName="default", Description="x")
    assert ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"] == d["GroupId"]


def test_create_validation_and_isolation(server: Any, ec2: Any) -> None:
    vpc = ec2.describe_security_groups()["SecurityGroups"][0]["VpcId"]
    out = ec2.create_security_group(GroupName="web", Description="web servers", VpcId=vpc,
                                    TagSpecifications=[{"ResourceType": "security-group",
                                                        "Tags": [{"Key": "tier", "Value": "front"}]}])
    gid = out["GroupId"]
    assert gid.startswith("sg-") and out["Tags"] == [{"Key": "tier", "Value": "front"}]
    before = snapshot(ec2)
    fails("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="web", Description="again")
    fails("InvalidParameterValue", ec2.create_security_group, GroupName="sg-web", Description="x")
    fails("InvalidParameterValue", ec2.create_security_group, GroupName="w" * 256, Description="x")
    fails("InvalidParameterValue", ec2.create_security_group, GroupName="ok", Description="d" * 256)
    fails("InvalidParameterValue", ec2.create_security_group, GroupName="caf\u00e9", Description="x")
    fails("MissingParameter", ec2.create_security_group, GroupName="nodesc", Description="")
    fails("InvalidVpcID.NotFound", ec2.create_security_group, GroupName="x", Description="x",
          VpcId="vpc-0123456789abcdef0")
    fails("DryRunOperation", ec2.create_security_group, GroupName="dry", Description="x", DryRun=True)
    assert snapshot(ec2) == before
    assert ec2.create_security_group(GroupName="w" * 255, Description="d" * 255)["GroupId"]
    g = group(ec2, gid)
    assert (g["GroupName"], g["Description"], g["VpcId"]) == ("web", "web servers", vpc)
    assert g["IpPermissions"] == [] and g["IpPermissionsEgress"][0]["IpProtocol"] == "-1"
    # another account sees none of it, and the same name is free there
    other = server.client(server.create_user(f"sg-{uuid.uuid4().hex[:10]}"))
    fails("InvalidGroup.NotFound", other.describe_security_groups, GroupIds=[gid])
    fails("InvalidGroup.NotFound", other.delete_security_group, GroupId=gid)
    fails("InvalidGroup.NotFound", other.authorize_security_group_ingress, GroupId=gid,
          IpPermissions=[tcp(22, "10.0.0.0/8")])
    assert other.create_security_group(GroupName="web", Description="mine")["GroupId"] != gid
    fails("InvalidGroupId.Malformed", ec2.describe_security_groups, GroupIds=["web"])
    fails("InvalidGroup.NotFound", ec2.describe_security_groups, GroupNames=["nope"])


def test_delete_by_id_and_name(ec2: Any) -> None:
    a = ec2.create_security_group(GroupName="a", Description="a")["GroupId"]
    b = ec2.create_security_group(GroupName="b", Description="b")["GroupId"]
    ec2.create_tags(Resources=[a], Tags=[{"Key": "k", "Value": "v"}])
    assert ec2.delete_security_group(GroupId=a)["GroupId"] == a
    ec2.delete_security_group(GroupName="b")
    fails("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[a])
    fails("InvalidGroup.NotFound", ec2.delete_security_group, GroupId=b)
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [a]}])["Tags"] == []
    assert ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [a, b]}])["SecurityGroupRules"] == []


# -- rules -----------------------------------------------------------------------------------------

def test_authorize_forms_and_the_rule_set_returned(ec2: Any) -> None:
    gid = ec2.create_security_group(GroupName="app", Description="app")["GroupId"]
    lb = ec2.create_security_group(GroupName="lb", Description="lb")["GroupId"]
    out = ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "6", "FromPort": 80, "ToPort": 443,
         "IpRanges": [{"CidrIp": "10.1.0.0/16", "Description": "office"}, {"CidrIp": "192.168.0.0/24"}]},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "UserIdGroupPairs": [{"GroupId": lb}]},
        {"IpProtocol": "17", "FromPort": 53, "ToPort": 53,
         "UserIdGroupPairs": [{"GroupName": "lb", "Description": "dns"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]},
        {"IpProtocol": "47", "IpRanges": [{"CidrIp": "10.9.0.0/16"}]},
    ])
    assert out["Return"] is True
    got = {(r["IpProtocol"], r["FromPort"], r["ToPort"], r.get("CidrIpv4") or r["ReferencedGroupInfo"]["GroupId"],
            r.get("Description")) for r in out["SecurityGroupRules"]}
    assert got == {("tcp", 80, 443, "10.1.0.0/16", "office"), ("tcp", 80, 443, "192.168.0.0/24", None),
                   ("icmp", 8, -1, lb, None), ("udp", 53, 53, lb, "dns"), ("-1", -1, -1, gid, None),
                   ("47", -1, -1, "10.9.0.0/16", None)}
    assert all(not r["IsEgress"] and r["GroupId"] == gid and r["SecurityGroupRuleId"].startswith("sgr-")
               for r in out["SecurityGroupRules"])
    # the same rules, as DescribeSecurityGroupRules and grouped as IpPermissions
    assert ({r["SecurityGroupRuleId"] for r in out["SecurityGroupRules"]}
            <= {r["SecurityGroupRuleId"] for r in rules(ec2, gid)})
    perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in group(ec2, gid)["IpPermissions"]}
    assert sorted(r["CidrIp"] for r in perms[("tcp", 80, 443)]["IpRanges"]) == ["10.1.0.0/16", "192.168.0.0/24"]
    assert perms[("udp", 53, 53)]["UserIdGroupPairs"][0]["GroupId"] == lb
    assert ("-1", None, None) in perms and ("47", None, None) in perms
    # the flat form (CidrIp, SourceSecurityGroupName) and egress
    ec2.authorize_security_group_ingress(GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8")
    ec2.authorize_security_group_ingress(GroupName="app", SourceSecurityGroupName="default")
    ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=[tcp(5432, "10.2.0.0/16")])
    g = group(ec2, gid)
    assert any(p["IpProtocol"] == "tcp" and p["FromPort"] == 22 and p["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
               for p in g["IpPermissions"])
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    assert any(pair["GroupId"] == default for p in g["IpPermissions"] for pair in p["UserIdGroupPairs"])
    assert {p["IpProtocol"] for p in g["IpPermissionsEgress"]} == {"-1", "tcp"}


@pytest.mark.parametrize("perm,code", [
    (tcp(70000, "10.0.0.0/8"), "InvalidParameterValue"),
    (tcp(80, "10.0.0.0/8", to=79), "InvalidParameterValue"),
    ({"IpProtocol": "tcp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue"),
    ({"IpProtocol": "icmp", "FromPort": 300, "ToPort": 0, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
     "InvalidParameterValue"),
    ({"IpProtocol": "icmp", "FromPort": -1, "ToPort": 3, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
     "InvalidParameterValue"),
    ({"IpProtocol": "bogus", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue"),
    ({"IpProtocol": "256", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue"),
    ({"IpProtocol": "\u00b2", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, "InvalidParameterValue"),
    (tcp(22, "10.0.0.1/8"), "InvalidParameterValue"),
    (tcp(22, "10.0.0.0"), "InvalidParameterValue"),
    (tcp(22, "300.0.0.0/8"), "InvalidParameterValue"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2}, "InvalidParameterValue"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupId": "sg-0123456789abcdef0"}]},
     "InvalidGroup.NotFound"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupName": "nope"}]},
     "InvalidGroup.NotFound"),
    ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
     "InvalidParameterValue"),
])
def test_bad_permissions_change_nothing(ec2: Any, perm: dict[str, Any], code: str) -> None:
    gid = ec2.create_security_group(GroupName="g", Description="g")["GroupId"]
    before = snapshot(ec2)
    # a good permission in the same request is not added either: all or nothing
    fails(code, ec2.authorize_security_group_ingress, GroupId=gid, IpPermissions=[tcp(8080, "10.0.0.0/8"), perm])
    assert snapshot(ec2) == before


def test_rules_named_both_ways_or_not_at_all(ec2: Any) -> None:
    """IpPermissions and the flat members together, or no rule at all, are refused."""
    gid = ec2.create_security_group(GroupName="w", Description="w")["GroupId"]
    before = snapshot(ec2)
    msg = fails("InvalidParameterCombination", ec2.authorize_security_group_ingress, GroupId=gid,
                IpPermissions=[tcp(22, "10.0.0.0/8")], CidrIp="10.0.0.0/8")
    assert "CidrIp" in msg
    fails("MissingParameter", ec2.authorize_security_group_ingress, GroupId=gid)
    fails("MissingParameter", ec2.revoke_security_group_ingress, GroupId=gid)
    fails("MissingParameter", ec2.authorize_security_group_ingress, GroupName="w", IpPermissions=[
        {"IpProtocol": "", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    assert snapshot(ec2) == before


def test_duplicates_and_missing_rules(ec2: Any) -> None:
    gid = ec2.create_security_group(GroupName="d", Description="d")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[tcp(22, "10.0.0.0/8")])
    before = snapshot(ec2)
    msg = fails("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=gid,
                IpPermissions=[tcp(443, "0.0.0.0/0"), tcp(22, "10.0.0.0/8")])
    assert "10.0.0.0/8" in msg and "22" in msg
    # the same rule in another spelling (protocol number, flat form) is the same rule
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=gid,
          IpPermissions=[{"IpProtocol": "6", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=gid,
          IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8")
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=gid,
          IpPermissions=[tcp(80, "10.0.0.0/8", "10.0.0.0/8")])
    fails("InvalidPermission.Duplicate", ec2.authorize_security_group_egress, GroupId=gid,
          IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupId=gid,
          IpPermissions=[tcp(22, "10.0.0.0/8"), tcp(23, "10.0.0.0/8")])
    fails("InvalidPermission.NotFound", ec2.revoke_security_group_egress, GroupId=gid,
          IpPermissions=[tcp(22, "10.0.0.0/8")])
    fails("InvalidSecurityGroupRuleId.NotFound", ec2.revoke_security_group_ingress, GroupId=gid,
          SecurityGroupRuleIds=["sgr-0123456789abcdef0"])
    fails("InvalidSecurityGroupRuleId.Malformed", ec2.revoke_security_group_ingress, GroupId=gid,
          SecurityGroupRuleIds=["rule-1"])
    fails("DryRunOperation", ec2.revoke_security_group_ingress, GroupId=gid, IpPermissions=[tcp(22, "10.0.0.0/8")],
          DryRun=True)
    assert snapshot(ec2) == before


def test_revoke_by_permission_and_by_rule_id(ec2: Any) -> None:
    gid = ec2.create_security_group(GroupName="r", Description="r")["GroupId"]
    added = ec2.authorize_security_group_ingress(GroupId=gid,
                                                 IpPermissions=[tcp(22, "10.0.0.0/8"), tcp(80, "0.0.0.0/0")])
    by_port = {r["FromPort"]: r["SecurityGroupRuleId"] for r in added["SecurityGroupRules"]}
    out = ec2.revoke_security_group_ingress(GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8")
    assert out["Return"] is True
    assert [r["SecurityGroupRuleId"] for r in out["RevokedSecurityGroupRules"]] == [by_port[22]]
    ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[by_port[80]])
    assert group(ec2, gid)["IpPermissions"] == []
    egress = [r for r in rules(ec2, gid) if r["IsEgress"]]
    ec2.revoke_security_group_egress(GroupId=gid,
                                     IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert rules(ec2, gid) == [] and len(egress) == 1


def test_describe_filters_and_pages(ec2: Any) -> None:
    web = ec2.create_security_group(GroupName="web-1", Description="public web")["GroupId"]
    db = ec2.create_security_group(GroupName="db-1", Description="database")["GroupId"]
    ec2.create_tags(Resources=[db], Tags=[{"Key": "tier", "Value": "data"}])
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[tcp(443, "0.0.0.0/0")])
    ec2.authorize_security_group_ingress(GroupId=db, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": web}]}])
    ec2.authorize_security_group_egress(GroupId=db, IpPermissions=[tcp(25, "10.5.0.0/16")])
    owner = group(ec2, web)["OwnerId"]

    def names(*filters: tuple[str, list[str]]) -> list[str]:
        gs = ec2.describe_security_groups(Filters=[{"Name": n, "Values": v} for n, v in filters])["SecurityGroups"]
        return sorted(g["GroupName"] for g in gs)

    assert names(("group-name", ["web-1"])) == ["web-1"]
    assert names(("group-id", [db])) == ["db-1"]
    assert names(("description", ["*web*"])) == ["web-1"]
    assert names(("owner-id", [owner])) == ["db-1", "default", "web-1"]
    assert names(("vpc-id", [group(ec2, web)["VpcId"]])) == ["db-1", "default", "web-1"]
    assert names(("tag:tier", ["data"])) == ["db-1"]
    assert names(("ip-permission.protocol", ["tcp"])) == ["db-1", "web-1"]
    assert names(("ip-permission.from-port", ["443"])) == ["web-1"]
    assert names(("ip-permission.to-port", ["5432"])) == ["db-1"]
    assert names(("ip-permission.cidr", ["0.0.0.0/0"])) == ["web-1"]
    assert names(("ip-permission.group-id", [web])) == ["db-1"]
    assert names(("ip-permission.group-name", ["web-1"])) == ["db-1"]
    assert names(("egress.ip-permission.cidr", ["10.5.0.0/16"])) == ["db-1"]
    assert names(("egress.ip-permission.to-port", ["25"])) == ["db-1"]
    assert names(("group-name", ["*-1"]), ("ip-permission.protocol", ["tcp"]), ("tag:tier", ["data"])) == ["db-1"]
    fails("InvalidParameterValue", ec2.describe_security_groups, Filters=[{"Name": "bogus", "Values": ["x"]}])
    for n in range(5):
        ec2.create_security_group(GroupName=f"page-{n}", Description="p")
    seen, token = [], None
    while True:
        page = ec2.describe_security_groups(MaxResults=5, **({"NextToken": token} if token else {}))
        assert len(page["SecurityGroups"]) <= 5
        seen += [g["GroupId"] for g in page["SecurityGroups"]]
        token = page.get("NextToken")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 8
    fails("InvalidPaginationToken", ec2.describe_security_groups, MaxResults=5, NextToken="garbage")


def test_describe_rules_filters_and_tags(ec2: Any) -> None:
    gid = ec2.create_security_group(GroupName="t", Description="t")["GroupId"]
    added = ec2.authorize_security_group_ingress(
        GroupId=gid, IpPermissions=[tcp(22, "10.0.0.0/8"), tcp(80, "10.0.0.0/8")],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "why", "Value": "admin"}]}])
    ids = [r["SecurityGroupRuleId"] for r in added["SecurityGroupRules"]]
    assert all(r["Tags"] == [{"Key": "why", "Value": "admin"}] for r in added["SecurityGroupRules"])
    ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "only", "Value": "one"}])
    got = ec2.describe_security_group_rules(Filters=[{"Name": "tag:only", "Values": ["one"]}])["SecurityGroupRules"]
    assert [r["SecurityGroupRuleId"] for r in got] == [ids[0]]
    got = ec2.describe_security_group_rules(
        Filters=[{"Name": "security-group-rule-id", "Values": [ids[1]]}])["SecurityGroupRules"]
    assert [r["FromPort"] for r in got] == [80]
    assert [r["SecurityGroupRuleId"] for r in ec2.describe_security_group_rules(
        SecurityGroupRuleIds=[ids[1]])["SecurityGroupRules"]] == [ids[1]]
    fails("InvalidSecurityGroupRuleId.NotFound", ec2.describe_security_group_rules,
          SecurityGroupRuleIds=["sgr-0123456789abcdef0"])
    fails("InvalidParameterValue", ec2.describe_security_group_rules, Filters=[{"Name": "nope", "Values": ["x"]}])
    assert len(rules(ec2, gid)) == 3   # and the default egress rule


@pytest.mark.slow
def test_aws_cli(server: Any, user: dict[str, str]) -> None:
    gid = aws(server, user, "create-security-group", "--group-name", "cli", "--description", "from the CLI")["GroupId"]
    out = aws(server, user, "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp",
              "--port", "22", "--cidr", "203.0.113.0/24")
    assert out["Return"] is True
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"]) for r in out["SecurityGroupRules"]] == \
        [("tcp", 22, 22, "203.0.113.0/24")]
    shown = aws(server, user, "describe-security-groups", "--group-names", "cli",
                "--query", "SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp")
    assert shown == "203.0.113.0/24"
    with pytest.raises(AssertionError, match="InvalidPermission.Duplicate"):
        aws(server, user, "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp",
            "--port", "22", "--cidr", "203.0.113.0/24")
    aws(server, user, "delete-security-group", "--group-id", gid)


# -- instances -------------------------------------------------------------------------------------

def test_instances_in_groups(ec2: Any, image_id: str) -> None:
    a = ec2.create_security_group(GroupName="ia", Description="a")["GroupId"]
    b = ec2.create_security_group(GroupName="ib", Description="b")["GroupId"]
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    before = ec2.describe_instances()["Reservations"]
    fails("InvalidGroup.NotFound", ec2.run_instances, ImageId=image_id, MinCount=1, MaxCount=1,
          SecurityGroupIds=[a, "sg-0123456789abcdef0"])
    fails("InvalidGroup.NotFound", ec2.run_instances, ImageId=image_id, MinCount=1, MaxCount=1, SecurityGroups=["nope"])
    fails("InvalidGroupId.Malformed", ec2.run_instances, ImageId=image_id, MinCount=1, MaxCount=1,
          SecurityGroupIds=["nope"])
    assert ec2.describe_instances()["Reservations"] == before
    i1 = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, SecurityGroupIds=[a, b])["Instances"][0]
    i2 = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, SecurityGroups=["ib"])["Instances"][0]
    i3 = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                           NetworkInterfaces=[{"DeviceIndex": 0, "Groups": [a]}])["Instances"][0]
    i4 = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    assert i1["SecurityGroups"] == [{"GroupId": a, "GroupName": "ia"}, {"GroupId": b, "GroupName": "ib"}]
    assert i2["SecurityGroups"] == [{"GroupId": b, "GroupName": "ib"}]
    assert i3["SecurityGroups"] == [{"GroupId": a, "GroupName": "ia"}]
    assert i4["SecurityGroups"] == [{"GroupId": default, "GroupName": "default"}]
    ids = [i["InstanceId"] for i in (i1, i2, i3, i4)]
    wait_state(ec2, ids, "running")

    def found(name: str, *values: str) -> set[str]:
        res = ec2.describe_instances(Filters=[{"Name": name, "Values": list(values)}])["Reservations"]
        return {i["InstanceId"] for r in res for i in r["Instances"]}

    assert found("instance.group-id", a) == {ids[0], ids[2]}
    assert found("group-id", b) == {ids[0], ids[1]}
    assert found("instance.group-name", "default") == {ids[3]}
    assert found("group-name", "i*") == set(ids[:3])
    # in use: the group stays
    fails("DependencyViolation", ec2.delete_security_group, GroupId=b)
    # ModifyInstanceAttribute replaces the set (live); DescribeInstanceAttribute shows it
    ec2.modify_instance_attribute(InstanceId=ids[1], Groups=[a])
    assert ec2.describe_instance_attribute(InstanceId=ids[1], Attribute="groupSet")["Groups"] == \
        [{"GroupId": a, "GroupName": "ia"}]
    fails("InvalidGroup.NotFound", ec2.modify_instance_attribute, InstanceId=ids[1], Groups=["sg-0123456789abcdef0"])
    assert found("group-id", a) == {ids[0], ids[1], ids[2]}
    ec2.terminate_instances(InstanceIds=[ids[0]])
    wait_state(ec2, [ids[0]], "terminated")
    ec2.delete_security_group(GroupId=b)   # its last instance is gone
    fails("DependencyViolation", ec2.delete_security_group, GroupId=a)
    ec2.terminate_instances(InstanceIds=ids[1:])


def test_a_referenced_group_stays(ec2: Any) -> None:
    src = ec2.create_security_group(GroupName="src", Description="s")["GroupId"]
    dst = ec2.create_security_group(GroupName="dst", Description="d")["GroupId"]
    perm = {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "UserIdGroupPairs": [{"GroupId": src}]}
    ec2.authorize_security_group_ingress(GroupId=dst, IpPermissions=[perm])
    fails("DependencyViolation", ec2.delete_security_group, GroupId=src)
    ec2.revoke_security_group_ingress(GroupId=dst, IpPermissions=[perm])
    ec2.delete_security_group(GroupId=src)
    # a group referring only to itself can go
    ec2.authorize_security_group_ingress(GroupId=dst, IpPermissions=[{**perm, "UserIdGroupPairs": [{"GroupId": dst}]}])
    ec2.delete_security_group(GroupId=dst)


def test_survives_a_crash(new_server: Any) -> None:
    srv = new_server()
    user = srv.create_user("crash")
    ec2 = srv.client(user)
    gid = ec2.create_security_group(GroupName="keep", Description="k")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[tcp(22, "10.0.0.0/8")])
    ec2.create_tags(Resources=[gid], Tags=[{"Key": "a", "Value": "b"}])
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SecurityGroupIds=[gid])["Instances"][0]["InstanceId"]
    before = ec2.describe_security_groups()["SecurityGroups"]
    srv.kill()
    srv.start()
    ec2 = srv.client(user)
    assert ec2.describe_security_groups()["SecurityGroups"] == before
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["SecurityGroups"] == [{"GroupId": gid, "GroupName": "keep"}]
    fails("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="keep", Description="k")


# -- what the hosts are told to enforce (in-process, libvirt's test driver) ------------------------

@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    cfg = load_config(write_config(tmp_path, model_cache, terminated_visible_s=0))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def launch(cloud: Cloud, caller: Caller, groups: list[str]) -> str:
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(caller, LaunchSpec(image.id, instance_type="t3.nano",
                                                          group_ids=tuple(groups)))
    await cloud.compute.idle()
    return insts[0].id


def applied(cloud: Cloud, iid: str) -> Any:
    inst = cloud.compute.table.get(iid)
    return cloud.drivers[inst.host].firewalls.get(iid)  # type: ignore[attr-defined]


def ip(cloud: Cloud, iid: str) -> str:
    return cloud.compute.table.get(iid).private_ip


async def test_filters_follow_rules_and_members(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    sg = cloud.security_groups
    web = (await sg.create(caller, "web", "w")).id
    db = (await sg.create(caller, "db", "d")).id
    w1 = await launch(cloud, caller, [web])
    spec = applied(cloud, w1)
    inst = cloud.compute.table.get(w1)
    assert (spec.ip, spec.mac) == (inst.private_ip, inst.mac)
    assert spec.ingress == () and spec.egress == (FirewallRule("all", None, None, ("0.0.0.0/0",)),)

    await sg.authorize(caller, RuleChange(False, web, permissions=(
        Permission("tcp", 443, 443, ranges=(IpRange("0.0.0.0/0"),)),
        Permission("icmp", -1, -1, peers=(GroupPeer(web),)))))
    await cloud.compute.idle()
    assert applied(cloud, w1).ingress == (FirewallRule("icmp", -1, -1, (ip(cloud, w1),)),
                                          FirewallRule("tcp", 443, 443, ("0.0.0.0/0",)))
    await sg.authorize(caller, RuleChange(False, db, permissions=(
        Permission("tcp", 5432, 5432, peers=(GroupPeer(web),)),)))
    d1 = await launch(cloud, caller, [db])
    assert applied(cloud, d1).ingress == (FirewallRule("tcp", 5432, 5432, (ip(cloud, w1),)),)

    # a second web instance: both web members and the db see its address
    w2 = await launch(cloud, caller, [web])
    await cloud.compute.idle()
    both = tuple(sorted((ip(cloud, w1), ip(cloud, w2))))
    assert applied(cloud, w1).ingress[0] == FirewallRule("icmp", -1, -1, both)
    assert applied(cloud, w2).ingress[0] == FirewallRule("icmp", -1, -1, both)
    assert applied(cloud, d1).ingress == (FirewallRule("tcp", 5432, 5432, both),)

    # revoke: gone from the members' filters
    await sg.revoke(caller, RuleChange(False, web, permissions=(
        Permission("tcp", 443, 443, ranges=(IpRange("0.0.0.0/0"),)),)))
    await cloud.compute.idle()
    assert [r.protocol for r in applied(cloud, w1).ingress] == ["icmp"]

    # w2 moves to db only (live): it loses web's rules, the others stop seeing it as a web member
    await cloud.compute.modify_attribute(caller, w2, InstanceChanges(group_ids=(db,)))
    await cloud.compute.idle()
    assert applied(cloud, w2).ingress == (FirewallRule("tcp", 5432, 5432, (ip(cloud, w1),)),)
    assert applied(cloud, w1).ingress == (FirewallRule("icmp", -1, -1, (ip(cloud, w1),)),)
    assert applied(cloud, d1).ingress == (FirewallRule("tcp", 5432, 5432, (ip(cloud, w1),)),)

    # terminate w1: its filter goes, and no filter names its address any more
    w1_ip = ip(cloud, w1)
    host = cloud.compute.table.get(w1).host
    await cloud.compute.terminate(caller, [w1])
    await cloud.compute.idle()
    assert w1 not in cloud.drivers[host].firewalls  # type: ignore[attr-defined]
    for other in (w2, d1):
        assert all(w1_ip not in r.peers for r in applied(cloud, other).ingress)
    assert applied(cloud, d1).ingress == ()

    # rejected calls leave the filters as they were
    now = applied(cloud, d1)
    with pytest.raises(CloudError):
        await sg.authorize(caller, RuleChange(False, db, permissions=(
            Permission("tcp", 1, 1, ranges=(IpRange("10.0.0.0/8"),)),
            Permission("tcp", 5, 1, ranges=(IpRange("10.0.0.0/8"),)))))
    await cloud.compute.idle()
    assert applied(cloud, d1) == now


async def test_filters_come_back_after_a_restart(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    caller = Caller(await c.users.create("u"))
    g = (await c.security_groups.create(caller, "g", "g")).id
    await c.security_groups.authorize(caller, RuleChange(False, g, permissions=(
        Permission("udp", 53, 53, ranges=(IpRange("10.0.0.0/8"),)),)))
    iid = await launch(c, caller, [g])
    want = applied(c, iid)
    await c.stop()
    c2 = await Cloud.open(cfg, "http://127.0.0.1:0")   # new driver objects: nothing applied yet
    try:
        await c2.compute.idle()
        assert applied(c2, iid) == want
        assert FirewallRule("udp", 53, 53, ("10.0.0.0/8",)) in want.ingress
    finally:
        await c2.stop()


def test_nwfilter_xml_for_a_spec() -> None:
    """The filter a real host gets (its enforcement is proven with packets in tests/e2e)."""
    import xml.etree.ElementTree as ET

    from cloudctl.drivers.hypervisor.base import FirewallSpec
    from cloudctl.drivers.hypervisor.nwfilter import filter_uuid, nwfilter_xml

    spec = FirewallSpec(name="i-1", mac="02:00:00:00:00:01", ip="10.0.0.5", ingress=(
        FirewallRule("tcp", 22, 25, ("10.1.0.0/16", "0.0.0.0/0")), FirewallRule("icmp", 8, -1, ("10.0.0.6/32",)),
        FirewallRule("47", None, None, ("10.0.0.0/8",))), egress=(FirewallRule("all", None, None, ("0.0.0.0/0",)),))
    root = ET.fromstring(nwfilter_xml("cloudctl-i-1", spec))
    assert root.get("name") == "cloudctl-i-1" and root.findtext("uuid") == filter_uuid("cloudctl-i-1")
    accepts = [(r.get("direction"), r[0].tag, dict(r[0].attrib)) for r in root.iter("rule")
               if r.get("action") == "accept" and r[0].tag not in ("arp", "mac")]
    assert ("in", "tcp", {"srcipaddr": "10.1.0.0", "srcipmask": "16",
                          "dstportstart": "22", "dstportend": "25"}) in accepts
    assert ("in", "tcp", {"dstportstart": "22", "dstportend": "25"}) in accepts          # from anywhere
    assert ("in", "icmp", {"srcipaddr": "10.0.0.6", "srcipmask": "32", "type": "8"}) in accepts
    assert ("out", "all", {}) in accepts
    assert not any(tag == "47" for _, tag, _ in accepts)   # no nwfilter protocol for it: nothing allowed
    drops = [(r.get("direction"), r[0].tag, r.get("priority")) for r in root.iter("rule") if r.get("action") == "drop"]
    assert ("in", "all", "900") in drops and ("out", "all", "900") in drops
    assert ("out", "ip", "-750") in drops   # the guest sends from its own address only
