"""The access matrix, generated: user B names user A's resources in every implemented action.

Rows come from the EC2 model: every member of an implemented action's input (nested ones too)
that holds a resource id (`fuzz_model.ID_MEMBERS`: InstanceId(s), VolumeId(s), KeyName(s),
GroupId(s), AllocationId, Resources, ...). Each row sends B's request with A's id there and B's
own valid values everywhere else, and checks: the AWS `.NotFound` code for that kind (EXPECTED,
with per-row exceptions in OVERRIDES), the same answer under DryRun (no existence leak), and the
state digest unchanged. A control request with B's own id must get past the lookup, so a row
that cannot reach the ownership check fails instead of passing vacuously.
Actions are covered as they are implemented (rows are derived, not listed); one whose request
needs more than its required members gets a line in EXTRA; a new resource kind gets a line in
EXPECTED and GHOST (and its creation in `tenants.make_resources`).
"""
from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.model import Shape

from cloudctl.api.ec2.actions import ACTIONS
from cloudctl.api.ec2.model import OPERATIONS

from fuzz_model import id_member, service_model, wire_name
from rawquery import SignedQuery, StateProbe, error_code
from support import REGION, Server, Servers
from tenants import make_resources, summary

# kind → the code B gets for A's resource of that kind.
EXPECTED = {
    "instance": "InvalidInstanceID.NotFound", "volume": "InvalidVolume.NotFound",
    "snapshot": "InvalidSnapshot.NotFound", "image": "InvalidAMIID.NotFound",
    "keyname": "InvalidKeyPair.NotFound", "keypair": "InvalidKeyPair.NotFound",
    "group": "InvalidGroup.NotFound", "groupname": "InvalidGroup.NotFound",
    "address": "InvalidAllocationID.NotFound", "association": "InvalidAssociationID.NotFound",
    "publicip": "InvalidAddress.NotFound", "interface": "InvalidNetworkInterfaceID.NotFound",
    "launchtemplate": "InvalidLaunchTemplateId.NotFound",
    "launchtemplatename": "InvalidLaunchTemplateName.NotFoundException",
}
# A well-formed id of each kind that names nothing: B's answer for A's resource must be the same.
GHOST = {
    "instance": "i-0000000000000dead", "volume": "vol-0000000000000dead", "snapshot": "snap-0000000000000dead",
    "image": "ami-0000000000000dead", "keyname": "no-such-key", "keypair": "key-0000000000000dead",
    "group": "sg-0000000000000dead", "groupname": "no-such-group", "address": "eipalloc-0000000000000dead",
    "association": "eipassoc-0000000000000dead", "publicip": "198.51.100.254",
    "interface": "eni-0000000000000dead", "launchtemplate": "lt-0000000000000dead",
    "launchtemplatename": "no-such-template",
}
# Rows whose answer is not EXPECTED[kind]: "ok" is a success that changes nothing (EC2 answers
# DeleteKeyPair for a key the caller does not have with success); "refused" is a member this
# cloud refuses whatever it names (the answer must still be the same as for a GHOST id).
OVERRIDES = {
    "DeleteKeyPair:KeyName": "ok", "DeleteKeyPair:KeyPairId": "ok",
    "CreateImage:BlockDeviceMapping.1.Ebs.SnapshotId": "refused",       # simulated hosts have no disk
    "RegisterImage:BlockDeviceMapping.1.Ebs.SnapshotId": "refused",     # images from snapshots: not yet
    "ModifyInstanceAttribute:BlockDeviceMapping.1.Ebs.VolumeId": "refused",
    "ImportImage:DiskContainer.1.SnapshotId": "refused",                # imports from URLs only
    "RunInstances:NetworkInterface.1.NetworkInterfaceId": "refused",    # a launch makes its own interface
}
# Members that name a new resource, not an existing one.
NEW_NAMES = {("CreateKeyPair", "KeyName"), ("ImportKeyPair", "KeyName"), ("CreateSecurityGroup", "GroupName"),
             ("CreateLaunchTemplate", "LaunchTemplateName")}
# Members whose ids are kept, not looked up: a launch template's settings may name an image or a
# key made later, as in EC2; they are checked when something launches from it (RunInstances rows).
NOT_LOOKED_UP = {("CreateLaunchTemplate", "LaunchTemplateData"), ("CreateLaunchTemplateVersion", "LaunchTemplateData")}
# Kinds that are the cloud's, shared by every user.
SHARED = {"subnet", "vpc"}
# Kinds a `Resources` list (CreateTags, DeleteTags) can name: resources with ids.
TAGGABLE = ("instance", "volume", "snapshot", "image", "keypair", "group", "address", "launchtemplate")
# What each action (or one row, "Action:path") needs besides its required members for B's own
# request to be valid.
EXTRA: dict[str, list[tuple[str, str]]] = {
    "CreateTags": [("Tag.1.Key", "k"), ("Tag.1.Value", "v")],
    "RunInstances": [("MinCount", "1"), ("MaxCount", "1"), ("InstanceType", "t3.nano"), ("ImageId", "{public_image}")],
    "CreateVolume": [("Size", "1"), ("AvailabilityZone", "cloudctl-1a")],
    "ModifyInstanceAttribute": [("InstanceType.Value", "t3.micro")],
    "ModifyInstanceAttribute:BlockDeviceMapping.1.Ebs.VolumeId": [
        ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"), ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true")],
    "RunInstances:BlockDeviceMapping.1.Ebs.SnapshotId": [
        ("MinCount", "1"), ("MaxCount", "1"), ("InstanceType", "t3.nano"), ("ImageId", "{public_image}"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/sdh")],
    "DescribeInstanceAttribute": [("Attribute", "instanceType")],
    "CreateLaunchTemplateVersion": [("LaunchTemplateData.InstanceType", "t3.nano")],
    "AttachVolume": [("Device", "/dev/sdg")],
    "CreateImage": [("NoReboot", "true")],
    "DetachVolume": [("VolumeId", "{attached_volume}"), ("Force", "true")],
    "AssociateAddress": [("AllocationId", "{address}"), ("InstanceId", "{instance}"), ("AllowReassociation", "false")],
    **{f"{verb}SecurityGroup{way}": [
        ("GroupId", "{group}"), ("IpPermissions.1.IpProtocol", "tcp"), ("IpPermissions.1.FromPort", "22"),
        ("IpPermissions.1.ToPort", "22"), ("IpPermissions.1.IpRanges.1.CidrIp", "10.9.9.0/24")]
       for verb in ("Authorize", "Revoke") for way in ("Ingress", "Egress")},
}
# Members that name the same resource another way: the target replaces its twin.
TWINS = {"GroupName": "GroupId", "GroupId": "GroupName", "KeyName": "KeyPairId", "KeyPairId": "KeyName",
         "PublicIp": "AllocationId", "AllocationId": "PublicIp", "NetworkInterfaceId": "InstanceId",
         "LaunchTemplateId": "LaunchTemplateName", "LaunchTemplateName": "LaunchTemplateId"}
DEFAULTS = {"Name": "matrix-name", "Description": "matrix", "Device": "/dev/sdg", "Key": "k", "Value": "v",
            "Attribute": "instanceType", "DeviceName": "/dev/sdh", "PublicKeyMaterial": "", "IpProtocol": "tcp"}
# The resource a kind's control request uses, when B's first one would not do.
CONTROL_PICK = {("AttachVolume", "VolumeId"): ("volume", 0), ("DetachVolume", "VolumeId"): ("volume", 1),
                ("CreateVolume", "SnapshotId"): ("snapshot", 0)}


@dataclass(frozen=True)
class Row:
    action: str
    member: str       # botocore member name holding the id
    path: str         # its wire key, e.g. "InstanceId.1" or "BlockDeviceMapping.1.Ebs.SnapshotId"
    kind: str
    fill: tuple[tuple[str, str], ...]   # required members around it, "{kind}" placeholders

    def __str__(self) -> str:
        return f"{self.action}:{self.path}"


def _minimal(member: str, shape: Shape, key: str, depth: int = 0) -> list[tuple[str, str]]:
    """A valid-looking value for a required member at `key`, B's own resource where it is an id."""
    t = shape.type_name
    if t == "list":
        return _minimal(member, shape.member, key + ".1", depth + 1)
    if t == "structure":
        out: list[tuple[str, str]] = []
        for m in shape.required_members if depth < 4 else ():
            out += _minimal(m, shape.members[m], f"{key}.{wire_name(m, shape.members[m])}", depth + 1)
        return out
    ids = id_member(member)
    if ids is not None:
        return [(key, "{" + ids[0] + "}")]
    if member in DEFAULTS:
        return [(key, DEFAULTS[member])]
    if getattr(shape, "enum", None):
        return [(key, shape.enum[0])]
    return [(key, {"integer": "1", "long": "1", "boolean": "false"}.get(t, "x"))]


def _rows_in(action: str, shape: Shape, prefix: str, fill: list[tuple[str, str]], depth: int) -> Iterator[Row]:
    for member, ms in shape.members.items():
        ids = id_member(member)
        wire = prefix + wire_name(member, ms)
        siblings = [p for m in shape.required_members if m != member
                    for p in _minimal(m, shape.members[m], prefix + wire_name(m, shape.members[m]))]
        if ms.name.startswith("PlacementGroup") or (action, member) in NOT_LOOKED_UP:
            continue   # (placement groups are not security groups)
        if ids is not None and (action, member) not in NEW_NAMES and ids[0] not in SHARED:
            kinds = list(TAGGABLE) if ids[0] == "any" else [ids[0]]
            path = wire + ".1" if ms.type_name == "list" else wire
            for kind in kinds:
                if kind in EXPECTED:
                    yield Row(action, member, path, kind, tuple(fill + siblings))
            continue
        if depth < 2:
            inner = ms.member if ms.type_name == "list" else ms
            if inner.type_name == "structure":
                sub = wire + ".1." if ms.type_name == "list" else wire + "."
                yield from _rows_in(action, inner, sub, fill + siblings, depth + 1)


def matrix_rows() -> list[Row]:
    model = service_model()
    rows: list[Row] = []
    for action in sorted(a for a in ACTIONS if a in OPERATIONS):
        shape = model.operation_model(action).input_shape
        if shape is not None:
            rows += _rows_in(action, shape, "", [], 0)
    return rows


ROWS = matrix_rows()


class Tenants:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.alice, self.bob = server.create_user("alice-m"), server.create_user("bob-m")
        self.a = make_resources(server, self.alice, "alice-m")
        self.b = make_resources(server, self.bob, "bob-m")
        self.bob_q = SignedQuery(server.endpoint, self.bob, REGION)
        self.alice_q = SignedQuery(server.endpoint, self.alice, REGION)
        self.probe = StateProbe(server.admin_url, server.token)
        self.checked = 0

    def request(self, row: Row, target: str, dry_run: bool) -> list[tuple[str, str]]:
        own = {k: v[0] for k, v in self.b.items() if v} | {"attached_volume": self.b["volume"][1]}
        extra = EXTRA.get(str(row), EXTRA.get(row.action, []))
        pairs = {k: v.format(**own) for k, v in list(row.fill) + extra}
        if row.path == row.member or row.path == row.member + ".1":   # a top-level member
            pairs.pop(TWINS.get(row.member, ""), None)
        pairs[row.path] = target
        if dry_run:
            pairs["DryRun"] = "true"
        return list(pairs.items())


@pytest.fixture(scope="module")
def tenants(server_with: Servers, request: pytest.FixtureRequest) -> Iterator[Tenants]:
    t = Tenants(server_with())
    t.probe.settle()
    yield t
    summary(request.config, "access matrix", f"{len(ROWS)} rows over {len({r.action for r in ROWS})} actions; "
            f"{t.checked} cross-user requests checked")


def test_matrix_covers_every_kind_and_id_action() -> None:
    """The generated rows cover the resource kinds implemented so far, in every action naming them."""
    actions = {r.action for r in ROWS}
    assert {"TerminateInstances", "AttachVolume", "CreateTags", "DeleteSnapshot", "DescribeKeyPairs",
            "RunInstances", "DeregisterImage", "GetConsoleOutput"} <= actions
    assert {"instance", "volume", "snapshot", "image", "keyname", "keypair"} <= {r.kind for r in ROWS}
    assert any(r.path.startswith("BlockDeviceMapping.1.Ebs.") for r in ROWS)   # nested ids too
    if "CreateSecurityGroup" in ACTIONS:
        assert {"group", "groupname"} <= {r.kind for r in ROWS}
    if "AllocateAddress" in ACTIONS:
        assert {"address", "association", "publicip"} <= {r.kind for r in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_other_users_resource_is_not_found(row: Row, tenants: Tenants) -> None:
    a_ids = tenants.a.get(row.kind)
    if not a_ids:
        pytest.skip(f"no {row.kind} resources in this build")
    want = OVERRIDES.get(str(row), EXPECTED[row.kind])
    before = tenants.probe.state()

    def answer(target: str, dry_run: bool) -> str:
        pairs = tenants.request(row, target, dry_run)
        status, body = tenants.bob_q.send(row.action, pairs)
        tenants.checked += 1
        assert status < 500, (row, status, body[:300])
        assert tenants.probe.state() == before, f"{row} with {target} changed the state"
        return "ok" if status in (200, 412) and want == "ok" else error_code(status, body) or ""

    for dry_run in (False, True):
        ghost = answer(GHOST[row.kind], dry_run)
        for target in a_ids:
            code = answer(target, dry_run)
            assert code == ghost, f"{row}: A's {target} answers {code}, a missing id {ghost} (DryRun={dry_run})"
            if want != "refused":
                assert code == want, f"{row} with A's {target} (DryRun={dry_run}): got {code}, want {want}"
    # Control: B's own resource gets past the lookup (DryRun, so it changes nothing).
    kind, i = CONTROL_PICK.get((row.action, row.member), (row.kind, 0))
    own = (tenants.b.get(kind) or [None])[i] if i < len(tenants.b.get(kind) or []) else None
    assert own, f"B has no {kind} for the control of {row}"
    status, body = tenants.bob_q.send(row.action, tenants.request(row, own, dry_run=True))
    code = "ok" if status == 200 else error_code(status, body)
    assert code != EXPECTED[row.kind] and code not in ("MissingParameter", "UnknownParameter"), \
        f"control for {row} with B's own {own} got {code}: the row does not reach the ownership check"
    assert tenants.probe.state() == before


def _describe_actions() -> list[str]:
    """The listing actions: Describe* with no required member."""
    model = service_model()
    return sorted(a for a in ACTIONS if a in OPERATIONS and a.startswith("Describe")
                  and not model.operation_model(a).input_shape.required_members)


@pytest.mark.parametrize("action", _describe_actions())
def test_describe_never_lists_other_users_resources(action: str, tenants: Tenants) -> None:
    a_ids = [x for k, v in tenants.a.items() if k not in ("public_image",) for x in v]
    a_ids.append(tenants.alice["AccountId"])
    filters = {"instance-id", "volume-id", "snapshot-id", "image-id", "key-name", "key-pair-id", "resource-id",
               "owner-id", "group-id", "allocation-id", "tag:owner", "tag-value", "attachment.instance-id"}
    requests: list[list[tuple[str, str]]] = [[]]
    requests += [[("Filter.1.Name", f), ("Filter.1.Value.1", v)] for f in sorted(filters)
                 for v in ("alice-m", *a_ids)][:200]
    for pairs in requests:
        status, body = tenants.bob_q.send(action, pairs)
        tenants.checked += 1
        assert status < 500, (action, pairs, body[:300])
        assert pairs or status == 200, (action, body[:300])
        if status != 200:
            error_code(status, body)
            continue
        leaked = [x for x in a_ids if x.encode() in body]
        assert not leaked, f"B's {action} {pairs} lists A's {leaked}"
    # A sees their own (the describe works at all): at least one of A's ids in A's plain listing.
    status, body = tenants.alice_q.send(action, [])
    if action in ("DescribeInstances", "DescribeVolumes", "DescribeSnapshots", "DescribeKeyPairs", "DescribeTags"):
        assert status == 200 and any(x.encode() in body for x in a_ids), action


def test_admin_endpoint_refuses_users(tenants: Tenants) -> None:
    """EC2 keys are no admin credentials; no token → 401; a wrong token → 401."""
    server = tenants.server
    alice = tenants.alice
    attempts: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {alice['SecretAccessKey']}"},
        {"Authorization": f"Bearer {alice['AccessKeyId']}"},
        {"Authorization": f"Bearer {server.token}x"}, {"Authorization": f"Bearer {server.token[:-1]}"},
    ]
    # A SigV4 signature made with a user's keys, as an EC2 client would send it.
    signed = tenants.alice_q.signed(b"")
    attempts.append({k: v for k, v in signed.items() if k.lower() in ("authorization", "x-amz-date")})
    for headers in attempts:
        for method, path, body in (("GET", "/v0/users", None), ("POST", "/v0/users", b'{"name": "mallory"}'),
                                   ("GET", "/v0/state/digest", None), ("DELETE", "/v0/users/bob-m", None)):
            req = urllib.request.Request(server.admin_url + path, data=body, method=method, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
                pytest.fail(f"admin {method} {path} accepted {headers}")
            assert err.value.code == 401, (headers, method, path)
            tenants.checked += 1
    names = [u["UserName"] for u in server.admin("GET", "/v0/users")]
    assert "mallory" not in names and "bob-m" in names


# -- Elastic Load Balancing ---------------------------------------------------------------------
# The same matrix for ELB (signing name elasticloadbalancing, botocore's `elb`): rows derived from
# every implemented action's input, one per member naming a load balancer (LoadBalancerName(s)),
# an instance (Instances.member.N.InstanceId) or a security group. B names A's; the answer must be
# the one for a name nobody has, and the state unchanged. ELB has no DryRun, so the control (B's
# own resource gets past the lookup) may change B's state; B's load balancer is put back after it.

ELB_EXPECTED = {"loadbalancer": "LoadBalancerNotFound", "instance": "InvalidInstance", "group": "InvalidSecurityGroup"}
ELB_GHOST = {"loadbalancer": "no-such-lb", "instance": "i-0000000000000dead", "group": "sg-0000000000000dead"}
ELB_OVERRIDES = {"DeleteLoadBalancer:LoadBalancerName": "ok"}   # deleting what the caller lacks succeeds
# B's valid value for each required member (the load balancer's name aside), by member name.
ELB_FILL: dict[str, list[tuple[str, str]]] = {
    "Listeners": [("Listeners.member.1.Protocol", "HTTP"), ("Listeners.member.1.LoadBalancerPort", "8000"),
                  ("Listeners.member.1.InstanceProtocol", "HTTP"), ("Listeners.member.1.InstancePort", "8080")],
    "LoadBalancerPorts": [("LoadBalancerPorts.member.1", "8000")],
    "Instances": [("Instances.member.1.InstanceId", "{instance}")],
    "HealthCheck": [("HealthCheck.Target", "TCP:8080"), ("HealthCheck.Interval", "30"), ("HealthCheck.Timeout", "5"),
                    ("HealthCheck.UnhealthyThreshold", "2"), ("HealthCheck.HealthyThreshold", "2")],
    "AvailabilityZones": [("AvailabilityZones.member.1", "cloudctl-1a")],
    "Subnets": [("Subnets.member.1", "{subnet}")],
    "SecurityGroups": [("SecurityGroups.member.1", "{group}")],
    "LoadBalancerAttributes": [("LoadBalancerAttributes.ConnectionSettings.IdleTimeout", "60")],
    "Tags": [("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "v")],
    "PolicyName": [("PolicyName", "matrix-policy")],
    "PolicyTypeName": [("PolicyTypeName", "LBCookieStickinessPolicyType")],
    "CookieName": [("CookieName", "c")],
    "LoadBalancerPort": [("LoadBalancerPort", "8000")],
    "PolicyNames": [("PolicyNames", "")],
}
ELB_FILL_OF = {("RemoveTags", "Tags"): [("Tags.member.1.Key", "k")]}   # (a key only)
ELB_NEW = {("CreateLoadBalancer", "LoadBalancerName")}   # names a new load balancer
ELB_OWN_LB = "b-matrix"


@dataclass(frozen=True)
class ElbRow:
    action: str
    member: str
    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.action}:{self.member}"


def _elb_model() -> Any:
    import botocore.session
    return botocore.session.get_session().get_service_model("elb")


def elb_rows() -> list[ElbRow]:
    from cloudctl.api.elb.actions import REGISTRY as ELB
    model = _elb_model()
    rows = []
    for action in sorted(ELB.actions):
        shape = model.operation_model(action).input_shape
        for member in (shape.members if shape is not None else {}):
            if (action, member) in ELB_NEW:
                continue
            if member == "LoadBalancerName":
                rows.append(ElbRow(action, member, member, "loadbalancer"))
            elif member.startswith("LoadBalancerNames"):
                rows.append(ElbRow(action, member, f"{member}.member.1", "loadbalancer"))
            elif member == "Instances":
                rows.append(ElbRow(action, member, "Instances.member.1.InstanceId", "instance"))
            elif member == "SecurityGroups":
                rows.append(ElbRow(action, member, "SecurityGroups.member.1", "group"))
    return rows


ELB_ROWS = elb_rows()


class ElbTenants:
    def __init__(self, t: Tenants) -> None:
        from support import REGION as region
        self.t = t
        self.bob_q = SignedQuery(t.server.endpoint, t.bob, region, "elasticloadbalancing", "2012-06-01")
        self.alice_q = SignedQuery(t.server.endpoint, t.alice, region, "elasticloadbalancing", "2012-06-01")
        ec2 = t.server.client(t.alice)
        self.subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        self.a_lb = "a-matrix"
        self.ensure(self.alice_q, self.a_lb, t.a)
        self.ensure(self.bob_q, ELB_OWN_LB, t.b)

    def ensure(self, q: SignedQuery, name: str, own: dict[str, list[str]]) -> None:
        """The user's load balancer, with a listener on 8000, their first instance and a policy."""
        status, _ = q.send("DescribeLoadBalancers", [("LoadBalancerNames.member.1", name)])
        if status != 200:
            fill = [*ELB_FILL["Listeners"], *ELB_FILL["AvailabilityZones"]]
            status, body = q.send("CreateLoadBalancer", [("LoadBalancerName", name), *fill])
            assert status == 200, body
        for action, pairs in (("CreateLoadBalancerListeners", ELB_FILL["Listeners"]),
                              ("RegisterInstancesWithLoadBalancer", [("Instances.member.1.InstanceId",
                                                                      own["instance"][0])]),
                              ("CreateLBCookieStickinessPolicy", [("PolicyName", "matrix-policy")])):
            q.send(action, [("LoadBalancerName", name), *pairs])   # (DuplicatePolicyName once it exists)

    def request(self, row: ElbRow, target: str) -> list[tuple[str, str]]:
        model = _elb_model()
        shape = model.operation_model(row.action).input_shape
        own = {"instance": self.t.b["instance"][0], "group": self.t.b["group"][0], "subnet": self.subnet}
        pairs: dict[str, str] = {}
        for member in shape.required_members:
            if member == "LoadBalancerName":
                pairs[member] = ELB_OWN_LB if row.action != "CreateLoadBalancer" else "b-matrix-new"
            elif member.startswith("LoadBalancerNames"):
                pairs[f"{member}.member.1"] = ELB_OWN_LB
            else:
                fill = ELB_FILL_OF.get((row.action, member), ELB_FILL[member])
                pairs.update((k, v.format(**own)) for k, v in fill)
        if row.action == "CreateLoadBalancer":
            pairs.update(ELB_FILL["AvailabilityZones"])
        if row.kind != "loadbalancer" and row.member not in shape.required_members:
            pairs.update((k, v.format(**own)) for k, v in ELB_FILL[row.member])
        pairs[row.path] = target
        return list(pairs.items())


@pytest.fixture(scope="module")
def elb_tenants(tenants: Tenants) -> Iterator[ElbTenants]:
    e = ElbTenants(tenants)
    yield e
    for q, name in ((e.alice_q, e.a_lb), (e.bob_q, ELB_OWN_LB), (e.bob_q, "b-matrix-new")):
        q.send("DeleteLoadBalancer", [("LoadBalancerName", name)])


def _query_code(status: int, body: bytes) -> str:
    from xml.etree import ElementTree
    root = ElementTree.fromstring(body)
    assert root.tag.endswith("ErrorResponse"), body[:300]
    ns = root.tag[:-len("ErrorResponse")]
    return root.findtext(f"{ns}Error/{ns}Code") or ""


def test_elb_matrix_covers_every_action_naming_a_load_balancer() -> None:
    from cloudctl.api.elb.actions import REGISTRY as ELB
    named = {r.action for r in ELB_ROWS if r.kind == "loadbalancer"}
    free = {"CreateLoadBalancer", "DescribeLoadBalancerPolicyTypes", "DescribeAccountLimits"}
    assert set(ELB.actions) - free <= named, sorted(set(ELB.actions) - free - named)
    assert {r.kind for r in ELB_ROWS} == set(ELB_EXPECTED)


@pytest.mark.parametrize("row", ELB_ROWS, ids=str)
def test_elb_other_users_resource_is_not_found(row: ElbRow, elb_tenants: ElbTenants) -> None:
    t = elb_tenants.t
    a_ids = [elb_tenants.a_lb] if row.kind == "loadbalancer" else t.a[row.kind][:1]
    want = ELB_OVERRIDES.get(str(row), ELB_EXPECTED[row.kind])
    before = t.probe.settle()

    def answer(target: str) -> str:
        status, body = elb_tenants.bob_q.send(row.action, elb_tenants.request(row, target))
        t.checked += 1
        assert status < 500, (row, status, body[:300])
        assert t.probe.state() == before, f"{row} with {target} changed the state"
        return "ok" if status == 200 else _query_code(status, body)

    ghost = answer(ELB_GHOST[row.kind])
    for target in a_ids:
        code = answer(target)
        assert code == ghost == want, f"{row}: A's {target} answers {code}, a missing one {ghost}, want {want}"
    status, body = elb_tenants.bob_q.send(row.action, elb_tenants.request(row, {
        "loadbalancer": ELB_OWN_LB, "instance": t.b["instance"][0], "group": t.b["group"][0]}[row.kind]))
    code = "ok" if status == 200 else _query_code(status, body)
    assert code != ELB_EXPECTED[row.kind] and code != "ValidationError" or row.action == "DeleteLoadBalancer", \
        f"control for {row} with B's own got {code}: the row does not reach the ownership check"
    elb_tenants.bob_q.send("DeleteLoadBalancer", [("LoadBalancerName", "b-matrix-new")])
    elb_tenants.ensure(elb_tenants.bob_q, ELB_OWN_LB, t.b)
    status, body = elb_tenants.alice_q.send("DescribeLoadBalancers", [("LoadBalancerNames.member.1",
                                                                        elb_tenants.a_lb)])
    assert status == 200 and t.a["instance"][0].encode() in body, "A's load balancer changed"


def test_elb_describe_never_lists_other_users_load_balancers(elb_tenants: ElbTenants) -> None:
    for action in ("DescribeLoadBalancers", "DescribeLoadBalancerPolicies"):
        status, body = elb_tenants.bob_q.send(action, [])
        assert status == 200 and b"a-matrix" not in body, body[:300]
    status, body = elb_tenants.alice_q.send("DescribeLoadBalancers", [])
    assert status == 200 and b"a-matrix" in body
