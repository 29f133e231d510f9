"""The access matrix of the query services (AutoScaling; ELB's names join with a line in KINDS):
user B names user A's resources in every implemented action.

As for EC2 (test_access_matrix.py), rows are generated from botocore's model: every member of an
implemented action's input, nested in a list of structures too, whose name says it names a
resource (KINDS). B's request names A's resource there and B's own everywhere else; the answer
must be the one a name nobody has gets (GHOST), the code AutoScaling gives for a missing name,
and the state digest must not move. A control request with B's own resource must get past the
lookup (a different answer), so a row that cannot reach the ownership check fails instead of
passing vacuously. AutoScaling has no DryRun, so a control may change B's state: B's resources
are made again after it, and each row starts from a settled state. The listing actions must
never show A's names to B.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree import ElementTree

import botocore.session
import pytest
from botocore.model import Shape

from cloudctl.api.query.services import SPECS

from asg_support import FAST, client, image, settled
from rawquery import SignedQuery, StateProbe
from support import REGION, Server, Servers, wait_until

_SESSION = botocore.session.get_session()
# Per service: member name -> the kind of resource it names.
KINDS: dict[str, dict[str, str]] = {
    "autoscaling": {"AutoScalingGroupName": "group", "AutoScalingGroupNames": "group",
                    "LaunchConfigurationName": "lc", "LaunchConfigurationNames": "lc", "InstanceId": "instance",
                    "InstanceIds": "instance", "PolicyName": "policy", "PolicyNames": "policy",
                    "ResourceId": "group"},
    "cloudformation": {"StackName": "stack"},
}
# The code each service gives for a name the caller does not have.
MISSING = {"autoscaling": "ValidationError", "cloudformation": "ValidationError"}
GHOST = {"group": "no-such-group", "lc": "no-such-lc", "instance": "i-0000000000000dead", "policy": "no-such-policy",
         "stack": "no-such-stack"}
# Members that name a new resource (any account may reuse another's names), not an existing one.
NEW_NAMES = {("CreateAutoScalingGroup", "AutoScalingGroupName"),
             ("CreateLaunchConfiguration", "LaunchConfigurationName"), ("PutScalingPolicy", "PolicyName"),
             ("CreateStack", "StackName")}
# Rows answered alike whatever they name: "ok" (a listing filtered by name: empty for A's name, as
# for a ghost), "refused" (a member cloudctl refuses whatever it names), "same" (succeeds doing
# nothing for a name the caller has not, as DeleteStack does: the state check is the proof).
OVERRIDES = {
    "DescribeAutoScalingGroups:AutoScalingGroupNames.member.1": "ok",
    "DescribeLaunchConfigurations:LaunchConfigurationNames.member.1": "ok",
    "DescribeAutoScalingInstances:InstanceIds.member.1": "ok",
    "DescribePolicies:PolicyNames.member.1": "ok",
    "DescribePolicies:AutoScalingGroupName": "ok",   # (AWS lists no policies for a group it has not)
    "DescribeScalingActivities:AutoScalingGroupName": "ok",
    "CreateAutoScalingGroup:InstanceId": "refused", "CreateLaunchConfiguration:InstanceId": "refused",
    "CreateAutoScalingGroup:Tags.member.1.ResourceId": "refused",   # (it must name the group being made)
    "DeleteStack:StackName": "same",
}
STACK = '{"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "t"}}}}'
DEFAULTS = {"MinSize": "0", "MaxSize": "2", "DesiredCapacity": "1", "ShouldDecrementDesiredCapacity": "false",
            "Key": "k", "Value": "v", "ImageId": "{image}", "InstanceType": "t3.nano",
            "AdjustmentType": "ChangeInCapacity", "ScalingAdjustment": "0"}
# What an action (or one row, "Action:path") needs besides its required members for B's own request to be valid.
EXTRA: dict[str, list[tuple[str, str]]] = {
    "CreateAutoScalingGroup": [("AutoScalingGroupName", "made-by-control"), ("MinSize", "0"), ("MaxSize", "0"),
                               ("AvailabilityZones.member.1", "cloudctl-1a")],
    "CreateLaunchConfiguration": [("LaunchConfigurationName", "made-by-control"), ("ImageId", "{image}"),
                                  ("InstanceType", "t3.nano")],
    "PutScalingPolicy": [("AdjustmentType", "ChangeInCapacity"), ("ScalingAdjustment", "0")],
    "DeletePolicy": [("AutoScalingGroupName", "{group}")],
    "ExecutePolicy": [("AutoScalingGroupName", "{group}"), ("HonorCooldown", "false")],
    "CreateOrUpdateTags": [("Tags.member.1.ResourceType", "auto-scaling-group")],
    "DeleteTags": [("Tags.member.1.ResourceType", "auto-scaling-group")],
    "TerminateInstanceInAutoScalingGroup:AutoScalingGroupName": [("InstanceIds.member.1", "{instance}")],
    # (B's own: a change set that changes nothing, FAILED; braces doubled for the str.format of fills)
    "CreateChangeSet": [("TemplateBody", STACK.replace("{", "{{").replace("}", "}}"))],
}
# The resource of B's that a row's control uses, when B's usual one would not do.
CONTROL = {"AttachInstances:InstanceIds.member.1": "loose"}


@dataclass(frozen=True)
class Row:
    service: str
    action: str
    member: str
    path: str
    kind: str
    fill: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.action}:{self.path}"


def _wire(name: str, shape: Shape) -> str:
    return str(shape.serialization.get("name", name))


def _minimal(service: str, member: str, shape: Shape, key: str) -> list[tuple[str, str]]:
    if shape.type_name == "list":
        return _minimal(service, member, shape.member, key + ".member.1")
    if shape.type_name == "structure":
        return [p for m in shape.required_members
                for p in _minimal(service, m, shape.members[m], f"{key}.{_wire(m, shape.members[m])}")]
    kind = KINDS[service].get(member)
    if kind is not None:
        return [(key, "{" + kind + "}")]
    if member in DEFAULTS:
        return [(key, DEFAULTS[member])]
    if getattr(shape, "enum", None):
        return [(key, shape.enum[0])]
    return [(key, {"integer": "1", "boolean": "false"}.get(shape.type_name, "x"))]


def _rows_in(service: str, action: str, shape: Shape, prefix: str, fill: list[tuple[str, str]],
             depth: int) -> Iterator[Row]:
    for member, ms in shape.members.items():
        wire = prefix + _wire(member, ms)
        siblings = [p for m in shape.required_members if m != member
                    for p in _minimal(service, m, shape.members[m], prefix + _wire(m, shape.members[m]))]
        kind = KINDS[service].get(member)
        if kind is not None and (action, member) not in NEW_NAMES:
            yield Row(service, action, member, wire + ".member.1" if ms.type_name == "list" else wire, kind,
                      tuple(fill + siblings))
        elif depth < 1 and ms.type_name == "list" and ms.member.type_name == "structure":
            yield from _rows_in(service, action, ms.member, wire + ".member.1.", fill + siblings, depth + 1)


def matrix_rows() -> list[Row]:
    rows: list[Row] = []
    for spec in SPECS:
        if spec.name not in KINDS:
            continue
        model = _SESSION.get_service_model(spec.name)
        for action in sorted(spec.registry.actions):
            shape = model.operation_model(action).input_shape
            if shape is not None:
                rows += _rows_in(spec.name, action, shape, "", [], 0)
    return rows


ROWS = matrix_rows()


class Tenants:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.alice, self.bob = server.create_user("alice-q"), server.create_user("bob-q")
        self.a = self.make(self.alice, "alice-q")
        self.b = self.make(self.bob, "bob-q")
        self.probe = StateProbe(server.admin_url, server.token)
        self.checked = 0

    def make(self, user: dict[str, str], who: str) -> dict[str, str]:
        """The user's launch configuration, group (one instance), policy and a loose instance."""
        asg = client(self.server, user)
        names = {"lc": f"{who}-lc", "group": f"{who}-group", "policy": f"{who}-policy",
                 "image": image(self.server, user)}
        asg.create_launch_configuration(LaunchConfigurationName=names["lc"], ImageId=names["image"],
                                        InstanceType="t3.nano")
        asg.create_auto_scaling_group(AutoScalingGroupName=names["group"], LaunchConfigurationName=names["lc"],
                                      MinSize=0, MaxSize=2, DesiredCapacity=1, AvailabilityZones=["cloudctl-1a"],
                                      Tags=[{"Key": "k", "Value": who}])
        asg.put_scaling_policy(AutoScalingGroupName=names["group"], PolicyName=names["policy"],
                               AdjustmentType="ChangeInCapacity", ScalingAdjustment=0)
        ec2 = self.server.client(user)
        names["stack"] = f"{who}-stack"
        names["loose"] = ec2.run_instances(ImageId=names["image"], MinCount=1, MaxCount=1, InstanceType="t3.nano",
                                           Placement={"AvailabilityZone": "cloudctl-1a"})["Instances"][0]["InstanceId"]
        return self.ensure(user, names)

    def ensure(self, user: dict[str, str], names: dict[str, str]) -> dict[str, str]:
        """The user's resources as they are now, made again where a control removed them."""
        asg = client(self.server, user)
        asg.resume_processes(AutoScalingGroupName=names["group"])
        if not asg.describe_policies(AutoScalingGroupName=names["group"])["ScalingPolicies"]:
            asg.put_scaling_policy(AutoScalingGroupName=names["group"], PolicyName=names["policy"],
                                   AdjustmentType="ChangeInCapacity", ScalingAdjustment=0)
        asg.update_auto_scaling_group(AutoScalingGroupName=names["group"], MinSize=0, MaxSize=2, DesiredCapacity=1)

        def member() -> str | None:
            g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[names["group"]])["AutoScalingGroups"][0]
            live = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
            return live[0] if len(live) == 1 and len(g["Instances"]) == 1 else None
        names["instance"] = wait_until(member, 30, f"{names['group']} back at one instance")
        cfn = client(self.server, user, "cloudformation")
        if not [s for s in cfn.list_stacks()["StackSummaries"]
                if s["StackName"] == names["stack"] and s["StackStatus"] != "DELETE_COMPLETE"]:
            cfn.create_stack(StackName=names["stack"], TemplateBody=STACK)
        wait_until(lambda: cfn.describe_stacks(StackName=names["stack"])["Stacks"][0]["StackStatus"]
                   == "CREATE_COMPLETE" or None, 30, f"{names['stack']} created")
        return names

    def request(self, row: Row, target: str, own: dict[str, str]) -> list[tuple[str, str]]:
        extra = EXTRA.get(str(row), EXTRA.get(row.action, []))
        pairs = {k: v.format(**own) for k, v in list(row.fill) + extra}
        pairs[row.path] = target
        return list(pairs.items())

    def send(self, row: Row, pairs: list[tuple[str, str]]) -> tuple[int, bytes]:
        version = _SESSION.get_service_model(row.service).api_version
        q = SignedQuery(self.server.endpoint, self.bob, REGION, row.service, version)
        try:
            return q.send(row.action, pairs)
        finally:
            q.close()


def _code(status: int, body: bytes) -> str:
    return _outcome(status, body, "")[0]


def _outcome(status: int, body: bytes, name: str) -> tuple[str, str]:
    """The answer's code ("ok" for a success) and its message with the name asked for blanked
    (AutoScaling refuses nearly everything as ValidationError: the message tells the reasons apart)."""
    if status == 200:
        return "ok", ""
    root = ElementTree.fromstring(body)
    ns = root.tag[:-len("ErrorResponse")]
    assert root.tag.endswith("ErrorResponse"), body[:300]
    message = root.findtext(f"{ns}Error/{ns}Message") or ""
    return root.findtext(f"{ns}Error/{ns}Code") or "", message.replace(name, "<name>") if name else message


@pytest.fixture(scope="module")
def tenants(server_with: Servers) -> Tenants:
    return Tenants(server_with(autoscaling=FAST))


def test_matrix_covers_every_kind() -> None:
    assert {r.kind for r in ROWS} == {"group", "lc", "instance", "policy", "stack"}
    assert {"DescribeStacks", "DeleteStack", "DescribeStackEvents", "GetTemplate"} <= {r.action for r in ROWS}
    assert {"SetDesiredCapacity", "DeleteAutoScalingGroup", "TerminateInstanceInAutoScalingGroup",
            "DeleteLaunchConfiguration", "ExecutePolicy", "CreateOrUpdateTags", "AttachInstances",
            "CreateAutoScalingGroup"} <= {r.action for r in ROWS}
    assert "CreateOrUpdateTags:Tags.member.1.ResourceId" in {str(r) for r in ROWS}   # nested names too


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_other_users_resource_is_not_found(row: Row, tenants: Tenants) -> None:
    before = settled(tenants.server)
    want = OVERRIDES.get(str(row), MISSING[row.service])
    a_name = tenants.a[row.kind]

    def answer(target: str) -> tuple[str, str]:
        status, body = tenants.send(row, tenants.request(row, target, tenants.b))
        tenants.checked += 1
        assert status < 500, (row, status, body[:300])
        assert tenants.probe.state()[0] == before, f"{row} with {target} changed the state"
        if status == 200:
            assert a_name.encode() not in body, f"{row}: B's answer shows A's {a_name}"
        return _outcome(status, body, target)

    ghost = answer(GHOST[row.kind])
    got = answer(a_name)
    assert got == ghost, f"{row}: A's {a_name} answers {got}, a missing name {ghost}"
    if want not in ("refused", "same"):
        assert got[0] == want, f"{row} with A's {a_name}: got {got}, want {want}"
        own = tenants.b[CONTROL.get(str(row), row.kind)]
        status, body = tenants.send(row, tenants.request(row, own, tenants.b))
        assert status < 500, body[:300]
        if want == "ok":
            assert status == 200 and own.encode() in body, f"control for {row}: B's own {own} not listed"
        else:
            assert _outcome(status, body, own) != ghost, f"control for {row} with B's own {own} got {ghost}: " \
                                                         f"the row does not reach the ownership check"
        tenants.b = tenants.ensure(tenants.bob, tenants.b)


# Describe actions whose members are all optional but that need one of them (AWS refuses them bare).
NOT_LISTINGS = {"DescribeStackResources"}


def _listings() -> list[tuple[str, str]]:
    out = []
    for spec in SPECS:
        if spec.name in KINDS:
            model = _SESSION.get_service_model(spec.name)
            out += [(spec.name, a) for a in sorted(spec.registry.actions) if a.startswith("Describe")
                    and a not in NOT_LISTINGS
                    and not (model.operation_model(a).input_shape is not None
                             and model.operation_model(a).input_shape.required_members)]
    return out


@pytest.mark.parametrize("service, action", _listings())
def test_listings_never_show_other_users_resources(service: str, action: str, tenants: Tenants) -> None:
    version = _SESSION.get_service_model(service).api_version
    a_names = [tenants.a[k] for k in ("lc", "group", "policy", "instance", "stack")]
    for user, expect_own in ((tenants.bob, False), (tenants.alice, True)):
        q = SignedQuery(tenants.server.endpoint, user, REGION, service, version)
        try:
            status, body = q.send(action, [])
        finally:
            q.close()
        assert status == 200, body[:300]
        leaked = [n for n in a_names if n.encode() in body]
        if not expect_own:
            assert not leaked, f"B's {action} lists A's {leaked}"
        elif action in ("DescribeAutoScalingGroups", "DescribeLaunchConfigurations", "DescribePolicies",
                        "DescribeTags", "DescribeAutoScalingInstances", "DescribeScalingActivities",
                        "DescribeStacks"):
            assert leaked, f"A's own {action} does not list A's resources"
