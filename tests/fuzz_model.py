"""Hypothesis strategies for EC2 Query requests, built from botocore's EC2 model.

`RequestStrategies(pools).request(action)` draws the flat form fields of one request
(`{"InstanceId.1": "i-…", "Filter.1.Name": …}`), keyed as botocore's EC2 serializer names them.
Values mix what a handler accepts (enum members, ids of real resources from `pools`) with
hostile ones (empty, huge, NUL, bad UTF-8, markup, shell and path characters, absurd numbers),
so requests get past the parser often enough to reach the handlers. Some required members are
left out and unknown ones added. A value of type `bytes` is sent as those bytes (percent-encoded).
"""
from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape
from hypothesis import strategies as st

Value = str | bytes
Pairs = list[tuple[str, Value]]

_SERVICE: ServiceModel | None = None


def service_model() -> ServiceModel:
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = botocore.session.get_session().get_service_model("ec2")
    return _SERVICE


# Member name (singular) → resource kind and id prefix, for members that carry resource ids.
ID_MEMBERS: dict[str, tuple[str, str]] = {
    "InstanceId": ("instance", "i"), "VolumeId": ("volume", "vol"), "SnapshotId": ("snapshot", "snap"),
    "ImageId": ("image", "ami"), "KernelId": ("kernel", "aki"), "RamdiskId": ("ramdisk", "ari"),
    "KeyPairId": ("keypair", "key"), "GroupId": ("group", "sg"), "SecurityGroupId": ("group", "sg"),
    "AllocationId": ("address", "eipalloc"), "AssociationId": ("association", "eipassoc"),
    "SubnetId": ("subnet", "subnet"), "VpcId": ("vpc", "vpc"), "Resource": ("any", "i"),
    "KeyName": ("keyname", ""), "GroupName": ("groupname", ""), "PublicIp": ("publicip", ""),
    "NetworkInterfaceId": ("interface", "eni"),
    "LaunchTemplateId": ("launchtemplate", "lt"), "LaunchTemplateName": ("launchtemplatename", ""),
}


def id_member(name: str) -> tuple[str, str] | None:
    """The (kind, prefix) of a member holding resource ids: `InstanceIds` → instance."""
    if name in ID_MEMBERS:
        return ID_MEMBERS[name]
    if name.endswith("s") and name[:-1] in ID_MEMBERS:
        return ID_MEMBERS[name[:-1]]
    return None


@dataclass
class Pools:
    """Real ids the fuzzer may use: its own resources and another user's (foreign) ones."""
    own: dict[str, list[str]] = field(default_factory=dict)
    foreign: dict[str, list[str]] = field(default_factory=dict)


HOSTILE: list[Value] = [
    "", " ", "\x00", "a\x00b", "<", "<x>&amp;</x>", "]]>", "'", '"', "'; DROP TABLE x; --",
    "$(reboot)", "`id`", "; rm -rf /", "|", "../", "../../../etc/passwd", "/etc/shadow", "..",
    "%00", "%", "\r\n", "\n\nX-Injected: 1", "\t", "\u202e", "\ufeff", "\U0001f600", "é",
    "A" * 256, "A" * 4097, "x" * 70_000, "\\", "*", "?", "{{7*7}}", "${jndi:x}", "null", "None",
    "true", "-1", "0", "1e309", "NaN",
    b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"a\x80b", b"\x00\xff",
]
INTS: list[int] = [0, -1, 1, 2, 3, 4, 8, 16, 100, 1000, 1001, 65536, 2**31 - 1, 2**31, 2**32, 2**63 - 1,
                   2**63, 2**64, -2**63, -2**63 - 1, 10**30]
BAD_NUMBERS: list[Value] = ["", "1.5", "0x10", " 1", "1 ", "+1", "١", "1_000", "1e3", "--1", "inf", "nan",
                            "9" * 5000]
BOOLS: list[Value] = ["true", "false", "True", "FALSE", "1", "0", "yes", "", "t", " true", "null"]
TIMESTAMPS: list[Value] = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z", "2026-01-01", "1700000000",
                           "2026-13-45T99:99:99Z", "0000-00-00", "9999-12-31T23:59:59+14:00", "", "now"]
FLOATS: list[Value] = ["0", "1.5", "-0", "1e400", "nan", "inf", "-inf", "1e-400", "", "x"]


# Values that mean something to the handlers, per member name (mixed with random text).
SPECIAL: dict[str, list[Value]] = {
    "InstanceType": ["t3.nano", "t3.micro", "m5.xlarge", "x9.huge"],
    "AvailabilityZone": ["cloudctl-1a", "cloudctl-1b", "us-east-1a"],
    "Device": ["/dev/sdf", "/dev/vdb", "/dev/xvdz", "xvdb", "/dev/sda1", "/dev/../etc"],
    "Name": ["instance-id", "tag:Name", "tag-key", "owner-id", "state", "image-id", "key-name",
             "volume-id", "status", "resource-id", "fuzz-name"],
    "Key": ["Name", "aws:x", "k" * 128, "k" * 129],
    "Attribute": ["instanceType", "userData", "kernel", "disableApiTermination"],
    "ImageLocation": ["cloudctl-blank.img", "../cloudctl.yaml", "/etc/passwd", "http://127.0.0.1/x.img",
                      "cloudctl-blank.img\x00", "x" * 5000, "images/../../state/admin.token"],
    "NextToken": ["", "eyJ4IjoxfQ==", "!!"],
    **{name: ["$Latest", "$Default", "1", "2", "0", "-1", "99999999999999999999"]
       for name in ("Version", "Versions", "DefaultVersion", "SourceVersion", "MinVersion", "MaxVersion")},
}
# Optional members offered often (with ids): the ones handlers validate first.
FOCUS = (set(SPECIAL) - {"Name", "Key", "NextToken"}) | {"UserData", "Size", "MinCount", "MaxCount", "Description",
                                                         "PublicKeyMaterial", "Value", "Filters", "Tags"}


def _ssh_key() -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " fuzz@cloudctl"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BASE64: list[Value] = [
    _b64(b"#!/bin/sh\necho hi\n"), _b64(b""), _b64(os.urandom(64)), _b64(b"x" * (16 * 1024)),
    _b64(b"x" * (16 * 1024 + 1)), _b64(os.urandom(40_000)), _b64(_ssh_key().encode()),
    "!!!", "abc", "ab=c", "====", "a" * 4097, "YQ", "YQ==\n", "YQ===", "\x00", b"\xff",
]


def _text() -> st.SearchStrategy[Value]:
    """Plain names (so a request gets past this member to the next), random text, hostile bytes."""
    return st.one_of(st.from_regex(r"[a-z][a-z0-9-]{2,20}", fullmatch=True), st.text(max_size=24),
                     st.sampled_from(HOSTILE), st.binary(max_size=12))


class RequestStrategies:
    """Builds request strategies over the EC2 model; `pools` is read at draw time, so ids of
    resources created later are used too."""

    def __init__(self, pools: Pools, max_optional: int = 4) -> None:
        self.model = service_model()
        self.pools = pools
        self.max_optional = max_optional

    # -- values ---------------------------------------------------------------------------------
    def _ids(self, kind: str, prefix: str) -> st.SearchStrategy[Value]:
        pools = self.pools

        def pick(which: str, i: int) -> Value:
            src = pools.own if which == "own" else pools.foreign
            if kind == "any":
                ids = [x for v in src.values() for x in v]
            else:
                ids = src.get(kind, [])
            if ids:
                return ids[i % len(ids)]
            return f"{prefix or 'x'}-{'0' * 17}"

        real = st.tuples(st.sampled_from(["own", "own", "foreign"]), st.integers(0, 50)).map(lambda t: pick(*t))
        shaped = st.binary(min_size=9, max_size=9).map(lambda b: f"{prefix or 'x'}-{b.hex()[:17]}")
        short = st.binary(min_size=4, max_size=4).map(lambda b: f"{prefix or 'x'}-{b.hex()}")
        return st.one_of(real, real, shaped, short, _text(), st.sampled_from(
            [f"{prefix}-", f"{prefix}-XYZ", f"{prefix}-{'f' * 17}0", f"{prefix.upper()}-{'0' * 17}", "i-0"]))

    def _string(self, name: str, shape: Shape) -> st.SearchStrategy[Value]:
        ids = id_member(name)
        if ids is not None:
            return self._ids(*ids)
        if name == "UserData":
            return st.sampled_from(BASE64)
        if shape.enum:
            return st.one_of(st.sampled_from(list(shape.enum)), st.sampled_from(list(shape.enum)), _text())
        if name in SPECIAL:
            return st.one_of(st.sampled_from(SPECIAL[name]), _text())
        return _text()

    def _scalar(self, name: str, shape: Shape) -> st.SearchStrategy[Value]:
        t = shape.type_name
        if t == "string":
            return self._string(name, shape)
        if t in ("integer", "long"):
            return st.one_of(st.sampled_from(INTS).map(str), st.integers(-5, 20).map(str), st.sampled_from(BAD_NUMBERS))
        if t == "boolean":
            return st.sampled_from(BOOLS)
        if t == "timestamp":
            return st.sampled_from(TIMESTAMPS)
        if t == "blob":
            return st.sampled_from(BASE64)
        if t in ("float", "double"):
            return st.sampled_from(FLOATS)
        raise NotImplementedError(f"shape {shape.name} of type {t}")

    # -- shapes ---------------------------------------------------------------------------------
    def member(self, name: str, shape: Shape, depth: int, required: bool = False) -> st.SearchStrategy[Pairs]:
        """Pairs (key suffix, value) for one member; a suffix is '' or starts with '.'."""
        t = shape.type_name
        if t == "structure":
            if depth > 3:
                return st.just([])
            return self.structure(shape, depth + 1, prefix=".")
        if t == "list":
            item = self.member(name, shape.member, depth + 1)

            def number(items: list[Pairs]) -> Pairs:
                return [(f".{i + 1}{k}", v) for i, pairs in enumerate(items) for k, v in pairs]
            small = st.lists(item, min_size=1 if required else 0, max_size=3).map(number)
            if depth > 1:   # huge lists only near the top: a huge list of huge lists is just a huge body
                return small
            huge = st.builds(lambda pairs, n: number([pairs] * _fit(pairs, n)), item,
                             st.sampled_from([200, 1001, 5000]))
            odd = st.builds(lambda pairs, idx: [(f".{idx}{k}", v) for k, v in pairs], item,
                            st.sampled_from(["0", "-1", "99999999999999999999", "x", "1.5", ""]))
            unindexed = item   # `KeyName=x`: the first element of a list of scalars; refused for structures
            return st.one_of(small, small, small, huge, odd, unindexed)
        return self._scalar(name, shape).map(lambda v: [("", v)])

    def structure(self, shape: Shape, depth: int, prefix: str = "") -> st.SearchStrategy[Pairs]:
        members = shape.members
        required = list(shape.required_members)
        optional = [m for m in members if m not in required]
        wire = {m: wire_name(m, members[m]) for m in members}
        max_optional = self.max_optional

        @st.composite
        def build(draw: Callable[..., Any]) -> Pairs:
            chosen = [m for m in required if draw(st.sampled_from([True] * 7 + [False]))]
            # Members naming resources, and those with values of their own (UserData, Device...),
            # are what handlers look at first: offer them often.
            chosen += [m for m in optional if (id_member(m) or m in FOCUS) and draw(st.booleans())]
            if optional:
                chosen += [m for m in draw(st.lists(st.sampled_from(optional), max_size=max_optional, unique=True))
                           if m not in chosen]
            if not chosen and prefix and members:   # an empty nested structure says nothing
                chosen = [draw(st.sampled_from(list(members)))]
            out: Pairs = []
            for m in chosen:
                for k, v in draw(self.member(m, members[m], depth, m in required)):
                    out.append((f"{prefix}{wire[m]}{k}", v))
            if draw(st.sampled_from([False] * 15 + [True])):   # an unknown parameter
                out.append((prefix + draw(st.sampled_from(["Foo", "instanceId", "InstanceId.1.Bar",
                                                           "Filter.1.Foo", "X" * 300, "\x00", ""])),
                            draw(_text())))
            return out
        return build()

    def request(self, action: str) -> st.SearchStrategy[Pairs]:
        op = self.model.operation_model(action)
        if op.input_shape is None:
            return st.just([])
        return self.structure(op.input_shape, 0)


def _fit(pairs: Pairs, n: int, budget: int = 2_000_000) -> int:
    """How many copies of `pairs` fit the body budget (the server refuses bodies over 4 MiB)."""
    size = sum(len(k) + 3 * len(v) + 8 for k, v in pairs) or 1
    return max(1, min(n, budget // size))


def wire_name(member: str, shape: Shape) -> str:
    """As botocore's EC2 serializer names a member: queryName, else capitalised locationName."""
    s = shape.serialization
    if s.get("queryName"):
        return str(s["queryName"])
    if s.get("name"):
        name = str(s["name"])
        return name[0].upper() + name[1:]
    return member
