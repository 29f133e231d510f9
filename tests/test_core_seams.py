"""The core holds no wire format: no core module reads an EC2 request parameter by its wire name.

Front ends (EC2, XML-RPC, HIL, and the services that launch from inside the cloud) hand the core
its own types (`Query`, `LaunchSpec`, request dataclasses); a core method that still looks up
"InstanceIds" or "TagSpecifications" in a dict is a seam the next front end would have to forge an
EC2 request to cross. The wire names are every input member botocore's EC2 model gives the actions
cloudctl serves, so a new action's parameters are covered without editing this test.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator

import botocore.session

from cloudctl.api.ec2.actions import ACTIONS

from support import ROOT

CORE = ROOT / "cloudctl" / "core"
# Wire-looking names that are not parameters, each with why.
NOT_PARAMETERS = {
    ("cloudctl/core/network.py", "{'Name': ...}"): "a subnet's Name tag: a tag key, as DescribeSubnets filters it",
    **{("cloudctl/core/cloudformation/template.py", f"'{key}'"): "a CloudFormation template's own key (Parameters' "
       "and Resources' Type, Description, Outputs' Value, Export's Name): the template language, not a request"
       for key in ("Type", "Description", "Value", "Name")},
}


def _members(shape: object, seen: set[str]) -> Iterator[str]:
    name = getattr(shape, "name", None)
    if name in seen:
        return
    seen.add(name)
    for member_name, member in getattr(shape, "members", {}).items():
        yield member_name
        yield from _members(member, seen)
    member = getattr(shape, "member", None)
    if member is not None:
        yield from _members(member, seen)


def wire_names() -> set[str]:
    model = botocore.session.get_session().get_service_model("ec2")
    names: set[str] = set()
    seen: set[str] = set()
    for op in ACTIONS:
        shape = model.operation_model(op).input_shape
        if shape is not None:
            names.update(_members(shape, seen))
    return names


def wire_lookups(source: str, names: set[str]) -> Iterator[tuple[int, str]]:
    """`x["Name"]`, `x.get("Name")`, `x.pop("Name")` and `{"Name": ...}` with an EC2 wire name."""
    for node in ast.walk(ast.parse(source)):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop", "setdefault") and node.args):
            key = node.args[0]
        if isinstance(key, ast.Constant) and key.value in names:
            yield node.lineno, repr(key.value)
        if isinstance(node, ast.Dict):
            for k in node.keys:
                if isinstance(k, ast.Constant) and k.value in names:
                    yield node.lineno, f"{{{k.value!r}: ...}}"


def test_the_wire_names_are_real() -> None:
    names = wire_names()
    assert {"InstanceIds", "Filters", "TagSpecifications", "IpPermissions", "MaxResults"} <= names


def test_no_core_module_reads_an_ec2_parameter() -> None:
    names = wire_names()
    # (core/cloudformation reads CloudFormation templates — a language the core parses, whose
    # section and property names are AWS's parameter names — not an EC2 request.)
    found = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in sorted(CORE.rglob("*.py"))
             if "core/cloudformation/" not in path.as_posix()
             for line, what in wire_lookups(path.read_text(), names)
             if (str(path.relative_to(ROOT)), what) not in NOT_PARAMETERS]
    assert found == []


def test_the_scan_finds_each_kind_of_lookup() -> None:
    source = "def f(req):\n    return req.get('InstanceIds'), req['Filters'], {'MaxResults': 5}, req['host']\n"
    assert sorted(what for _, what in wire_lookups(source, wire_names())) == [
        "'Filters'", "'InstanceIds'", "{'MaxResults': ...}"]
