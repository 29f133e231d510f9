"""The CloudFormation template language against AWS's documented behaviour: intrinsics (long and YAML
short forms, nested), conditions, parameter validation, dependency layers, the errors ValidateTemplate
gives, and the Eucalyptus CoreOS-cluster template shape. In-process, no server."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudctl.core.cloudformation.template import (
    MAX_BODY,
    Output,
    Pseudo,
    Template,
    TemplateError,
    load,
)

TYPES = {"AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::AutoScaling::LaunchConfiguration",
         "AWS::AutoScaling::AutoScalingGroup", "AWS::EC2::Instance", "AWS::CloudFormation::WaitConditionHandle"}
PSEUDO = Pseudo(region="eu-1", account_id="123456789012", stack_name="web",
                stack_id="arn:aws:cloudformation:eu-1:123456789012:stack/web/1", azs=("eu-1a", "eu-1b"))


class Physical:
    """The engine's side: a created resource's physical id, attributes and other stacks' exports."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def ref(self, logical: str) -> str:
        self.calls.append(("ref", logical))
        return f"phys-{logical}"

    def get_att(self, logical: str, attribute: str) -> Any:
        self.calls.append(("get_att", logical, attribute))
        return [f"{logical}-a", f"{logical}-b"] if attribute == "Zones" else f"{logical}/{attribute}"

    def import_value(self, name: str) -> str:
        return f"exported-{name}"


PARAMS = {
    "Name": {"Type": "String", "Default": "web"},
    "Size": {"Type": "Number", "Default": "3"},
    "Zones": {"Type": "CommaDelimitedList", "Default": "a, b ,c"},
    "Env": {"Type": "String", "Default": "prod", "AllowedValues": ["prod", "dev"]},
}
MAPPINGS = {"Region": {"eu-1": {"Ami": "ami-0123456789abcdef0", "Sizes": ["s", "m"]}}}
CONDITIONS = {"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
              "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]}}


def template(value: Any, *, extra: dict[str, Any] | None = None, conditions: dict[str, Any] | None = None) -> str:
    doc = {"Parameters": PARAMS, "Mappings": MAPPINGS, "Conditions": conditions or CONDITIONS,
           "Resources": {"Other": {"Type": "AWS::EC2::SecurityGroup"},
                         "R": {"Type": "AWS::EC2::Instance", "Properties": {"V": value}}, **(extra or {})}}
    return json.dumps(doc)


def value(expr: Any, params: dict[str, str] | None = None) -> Any:
    bound = Template.parse(template(expr), TYPES).bind(params or {}, PSEUDO)
    props = bound.properties("R", Physical())
    return props.get("V", "<absent>")


B64 = base64.b64encode
INTRINSICS = [
    # Ref: parameters (Number stays the string given, lists are split and space-trimmed), pseudo, resources
    ({"Ref": "Name"}, "web"),
    ({"Ref": "Size"}, "3"),
    ({"Ref": "Zones"}, ["a", "b", "c"]),
    ({"Ref": "AWS::Region"}, "eu-1"),
    ({"Ref": "AWS::AccountId"}, "123456789012"),
    ({"Ref": "AWS::StackName"}, "web"),
    ({"Ref": "AWS::StackId"}, PSEUDO.stack_id),
    ({"Ref": "AWS::Partition"}, "aws"),
    ({"Ref": "AWS::URLSuffix"}, "amazonaws.com"),
    ({"Ref": "AWS::NotificationARNs"}, []),
    ({"Ref": "AWS::NoValue"}, "<absent>"),
    ({"Ref": "Other"}, "phys-Other"),
    # GetAtt: list and dotted forms; the attribute name may itself be a Ref
    ({"Fn::GetAtt": ["Other", "GroupId"]}, "Other/GroupId"),
    ({"Fn::GetAtt": "Other.Endpoint.Address"}, "Other/Endpoint.Address"),
    ({"Fn::GetAtt": ["Other", {"Ref": "Name"}]}, "Other/web"),
    # Join: literal lists, lists from functions, numbers stringified
    ({"Fn::Join": ["-", ["a", {"Ref": "Name"}, 7]]}, "a-web-7"),
    ({"Fn::Join": [",", {"Ref": "Zones"}]}, "a,b,c"),
    ({"Fn::Join": ["", []]}, ""),
    ({"Fn::Join": ["|", ["x", {"Ref": "AWS::NoValue"}, "y"]]}, "x|y"),
    ({"Fn::Join": [":", {"Fn::GetAtt": ["Other", "Zones"]}]}, "Other-a:Other-b"),
    # Sub: parameters, pseudo, Res.Attr, resources, escapes, the variable map (which wins)
    ({"Fn::Sub": "${Name}-${AWS::Region}"}, "web-eu-1"),
    ({"Fn::Sub": "id=${Other} gid=${Other.GroupId}"}, "id=phys-Other gid=Other/GroupId"),
    ({"Fn::Sub": "${!Literal} ${Name}"}, "${Literal} web"),
    ({"Fn::Sub": ["${Name}:${X}", {"X": {"Ref": "Size"}, "Name": "over"}]}, "over:3"),
    ({"Fn::Sub": "no variables"}, "no variables"),
    # Base64 of a string and of a nested function
    ({"Fn::Base64": "hello"}, B64(b"hello").decode()),
    ({"Fn::Base64": {"Fn::Sub": "#!/bin/sh\necho ${Name}\n"}}, B64(b"#!/bin/sh\necho web\n").decode()),
    # Select / Split / GetAZs
    ({"Fn::Select": ["1", ["a", "b", "c"]]}, "b"),
    ({"Fn::Select": [0, {"Fn::GetAZs": ""}]}, "eu-1a"),
    ({"Fn::Select": [2, {"Ref": "Zones"}]}, "c"),
    ({"Fn::Split": [",", "a,b,,c"]}, ["a", "b", "", "c"]),
    ({"Fn::Select": [1, {"Fn::Split": ["/", {"Fn::Sub": "x/${Name}"}]}]}, "web"),
    ({"Fn::GetAZs": ""}, ["eu-1a", "eu-1b"]),
    ({"Fn::GetAZs": {"Ref": "AWS::Region"}}, ["eu-1a", "eu-1b"]),
    ({"Fn::GetAZs": "us-elsewhere-1"}, []),
    # FindInMap with a pseudo-parameter key, returning a scalar or a list
    ({"Fn::FindInMap": ["Region", {"Ref": "AWS::Region"}, "Ami"]}, "ami-0123456789abcdef0"),
    ({"Fn::FindInMap": ["Region", "eu-1", "Sizes"]}, ["s", "m"]),
    # If: chosen branch, NoValue removing the key, nested inside lists
    ({"Fn::If": ["IsProd", "big", "small"]}, "big"),
    ({"Fn::If": ["IsDev", "big", {"Ref": "AWS::NoValue"}]}, "<absent>"),
    ([{"Fn::If": ["IsDev", "x", {"Ref": "AWS::NoValue"}]}, "y"], ["y"]),
    ({"k": {"Fn::If": ["IsDev", 1, {"Ref": "AWS::NoValue"}]}, "j": 2}, {"j": 2}),
    # ImportValue through the resolver, with a Sub-built name
    ({"Fn::ImportValue": {"Fn::Sub": "${Name}-vpc"}}, "exported-web-vpc"),
    # plain values pass through; a "Condition" key in properties is data, not a condition reference
    ({"Condition": {"StringEquals": {"a": "b"}}}, {"Condition": {"StringEquals": {"a": "b"}}}),
]


@pytest.mark.parametrize("expr,expected", INTRINSICS, ids=[json.dumps(e)[:60] for e, _ in INTRINSICS])
def test_intrinsic(expr: Any, expected: Any) -> None:
    assert value(expr) == expected


def test_parameter_values_flow_into_intrinsics() -> None:
    assert value({"Fn::If": ["IsProd", "big", "small"]}, {"Env": "dev"}) == "small"
    assert value({"Fn::Join": ["+", {"Ref": "Zones"}]}, {"Zones": "x"}) == "x"
    assert value({"Ref": "Zones"}, {"Zones": ""}) == []


YAML_SHORT = [
    ("!Ref Name", "web"),
    ("!Sub '${Name}.${AWS::URLSuffix}'", "web.amazonaws.com"),
    ("!Sub ['${A}-${Name}', {A: !Ref Size}]", "3-web"),
    ("!GetAtt Other.GroupId", "Other/GroupId"),
    ("!GetAtt [Other, GroupId]", "Other/GroupId"),
    ("!Join ['', [a, !Ref Name, !Sub '-${Size}']]", "aweb-3"),
    ("!Base64 {'Fn::Join': ['', ['#cloud-config', !Ref Name]]}", B64(b"#cloud-configweb").decode()),
    ("!Select [1, !Split [',', 'x,y,z']]", "y"),
    ("!Select [0, !GetAZs '']", "eu-1a"),
    ("!GetAZs", ["eu-1a", "eu-1b"]),
    ("!FindInMap [Region, !Ref 'AWS::Region', Ami]", "ami-0123456789abcdef0"),
    ("!If [IsProd, !Ref Name, !Ref 'AWS::NoValue']", "web"),
    ("!If [IsDev, !Ref Name, !Ref 'AWS::NoValue']", "<absent>"),
    ("!ImportValue shared-subnet", "exported-shared-subnet"),
]


@pytest.mark.parametrize("short,expected", YAML_SHORT, ids=[s for s, _ in YAML_SHORT])
def test_yaml_short_forms(short: str, expected: Any) -> None:
    body = f"""
AWSTemplateFormatVersion: 2010-09-09
Parameters: {json.dumps(PARAMS)}
Mappings: {json.dumps(MAPPINGS)}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
Resources:
  Other: {{Type: AWS::EC2::SecurityGroup}}
  R:
    Type: AWS::EC2::Instance
    Properties:
      V: {short}
"""
    t = Template.parse(body, TYPES)
    assert t.version == "2010-09-09"  # unquoted YAML date stays the string
    assert t.body["Conditions"]["IsDev"] == {"Fn::Not": [{"Condition": "IsProd"}]}
    assert t.bind({}, PSEUDO).properties("R", Physical()).get("V", "<absent>") == expected


def test_yaml_short_forms_become_long_forms() -> None:
    doc = load("A: !Ref X\nB: !GetAtt R.Attr.Sub\nC: !Equals [!Ref X, !Condition Y]\nD: !GetAZs ''\n")
    assert doc == {"A": {"Ref": "X"}, "B": {"Fn::GetAtt": ["R", "Attr.Sub"]},
                   "C": {"Fn::Equals": [{"Ref": "X"}, {"Condition": "Y"}]}, "D": {"Fn::GetAZs": ""}}


CONDITION_CASES = [
    ({"Fn::Equals": [{"Ref": "Env"}, "prod"]}, True),
    ({"Fn::Equals": [{"Ref": "Size"}, 3]}, True),  # compared as CloudFormation's strings
    ({"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}, False),
    ({"Fn::Equals": [{"Ref": "Zones"}, ["a", "b", "c"]]}, True),
    ({"Fn::Not": [{"Fn::Equals": ["a", "b"]}]}, True),
    ({"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": ["1", "1"]}]}, True),
    ({"Fn::And": [{"Condition": "IsProd"}, {"Condition": "IsDev"}]}, False),
    ({"Fn::Or": [{"Condition": "IsDev"}, {"Fn::Equals": [{"Ref": "Name"}, "web"]}]}, True),
    ({"Fn::Or": [{"Condition": "IsDev"}, {"Fn::Not": [{"Condition": "IsProd"}]}]}, False),
    ({"Fn::Equals": [{"Fn::FindInMap": ["Region", {"Ref": "AWS::Region"}, "Ami"]}, "ami-0123456789abcdef0"]}, True),
    ({"Fn::Equals": [{"Fn::Select": [1, {"Ref": "Zones"}]}, "b"]}, True),
]


@pytest.mark.parametrize("expr,expected", CONDITION_CASES, ids=[json.dumps(e)[:60] for e, _ in CONDITION_CASES])
def test_condition(expr: Any, expected: bool) -> None:
    bound = Template.parse(template("x", conditions={**CONDITIONS, "C": expr}), TYPES).bind({}, PSEUDO)
    assert bound.conditions["C"] is expected


def test_conditions_gate_resources_and_outputs() -> None:
    body = json.dumps({
        "Parameters": PARAMS, "Conditions": CONDITIONS,
        "Resources": {"A": {"Type": "AWS::EC2::SecurityGroup", "Condition": "IsDev"},
                      "B": {"Type": "AWS::EC2::Instance",
                            "Properties": {"G": {"Fn::If": ["IsDev", {"Ref": "A"}, "none"]}}}},
        "Outputs": {"OnlyDev": {"Value": {"Ref": "A"}, "Condition": "IsDev"},
                    "Always": {"Value": {"Fn::Join": [",", {"Ref": "Zones"}]}, "Description": "zones",
                               "Export": {"Name": {"Fn::Sub": "${AWS::StackName}-zones"}}}}})
    t = Template.parse(body, TYPES)
    prod = t.bind({}, PSEUDO)
    assert prod.conditions == {"IsProd": True, "IsDev": False}
    assert prod.resources == ("B",)
    assert prod.deps("B") == frozenset()
    assert prod.properties("B", Physical()) == {"G": "none"}
    assert prod.outputs(Physical()) == [Output("Always", "a,b,c", "zones", "web-zones")]
    dev = t.bind({"Env": "dev"}, PSEUDO)
    assert dev.resources == ("A", "B")
    assert dev.levels() == [["A"], ["B"]]
    assert [o.value for o in dev.outputs(Physical())] == ["phys-A", "a,b,c"]


def test_dependson_an_inactive_resource_is_rejected() -> None:
    body = json.dumps({"Parameters": PARAMS, "Conditions": CONDITIONS, "Resources": {
        "A": {"Type": "AWS::EC2::SecurityGroup", "Condition": "IsDev"},
        "B": {"Type": "AWS::EC2::Instance", "DependsOn": "A"}}})
    t = Template.parse(body, TYPES)
    with pytest.raises(TemplateError, match=r"^Template format error: Unresolved resource dependencies \[A\]"):
        t.bind({}, PSEUDO)
    assert t.bind({"Env": "dev"}, PSEUDO).levels() == [["A"], ["B"]]


def test_metadata_is_resolved_and_counts_as_a_dependency() -> None:
    body = json.dumps({"Resources": {
        "H": {"Type": "AWS::CloudFormation::WaitConditionHandle"},
        "I": {"Type": "AWS::EC2::Instance", "Metadata": {"Signal": {"Ref": "H"}, "Region": {"Ref": "AWS::Region"}},
              "CreationPolicy": {"ResourceSignal": {"Count": 1}}}}})
    b = Template.parse(body, TYPES).bind({}, PSEUDO)
    assert b.levels() == [["H"], ["I"]]
    assert b.metadata("I", Physical()) == {"Signal": "phys-H", "Region": "eu-1"}
    assert b.metadata("H", Physical()) is None
    assert b.template.resources["I"].creation_policy == {"ResourceSignal": {"Count": 1}}


def test_active_resource_referencing_an_inactive_one_is_rejected() -> None:
    body = json.dumps({"Parameters": PARAMS, "Conditions": CONDITIONS, "Resources": {
        "A": {"Type": "AWS::EC2::SecurityGroup", "Condition": "IsDev"},
        "B": {"Type": "AWS::EC2::Instance", "Properties": {"G": {"Ref": "A"}}}}})
    t = Template.parse(body, TYPES)
    with pytest.raises(TemplateError, match=r"^Template format error: Unresolved resource dependencies \[A\] in "
                                            r"the Resources block of the template$"):
        t.bind({}, PSEUDO)
    assert t.bind({"Env": "dev"}, PSEUDO).deps("B") == {"A"}


# --- parameters ------------------------------------------------------------------------------------

PARAM_ERRORS = [
    ({"Type": "String", "AllowedValues": ["a", "b"]}, "c", "Parameter 'P' must be one of AllowedValues"),
    ({"Type": "Number"}, "ten", "Parameter 'P' must be a number."),
    ({"Type": "Number", "MinValue": 1}, "0", "Parameter 'P' must be a number not less than 1"),
    ({"Type": "Number", "MaxValue": 12}, "13", "Parameter 'P' must be a number not greater than 12"),
    ({"Type": "Number", "MaxValue": 12, "ConstraintDescription": "at most 12 nodes"}, "13",
     "Parameter 'P' failed to satisfy constraint: at most 12 nodes"),
    ({"Type": "String", "MinLength": 3}, "ab", "Parameter 'P' must contain at least 3 characters"),
    ({"Type": "String", "MaxLength": 3}, "abcd", "Parameter 'P' must contain at most 3 characters"),
    ({"Type": "String", "AllowedPattern": "[a-z]+"}, "abc1", "Parameter 'P' must match pattern [a-z]+"),
    ({"Type": "List<Number>"}, "1,x", "Parameter 'P' must be a number."),
    ({"Type": "CommaDelimitedList", "AllowedValues": ["a", "b"]}, "a,c", "Parameter 'P' must be one of AllowedValues"),
    ({"Type": "AWS::EC2::Image::Id"}, "not-an-image",
     "Parameter validation failed: parameter value not-an-image for parameter name P does not exist."),
    ({"Type": "List<AWS::EC2::SecurityGroup::Id>"}, "sg-0123456789abcdef0,sg-x",
     "Parameter validation failed: parameter value sg-x for parameter name P does not exist."),
    ({"Type": "AWS::EC2::KeyPair::KeyName"}, "",
     "Parameter validation failed: parameter value  for parameter name P does not exist."),
]


def one_param(spec: dict[str, Any]) -> Template:
    return Template.parse(json.dumps({"Parameters": {"P": spec},
                                      "Resources": {"R": {"Type": "AWS::EC2::Instance"}}}), TYPES)


@pytest.mark.parametrize("spec,given,message", PARAM_ERRORS, ids=[m[:50] for _, _, m in PARAM_ERRORS])
def test_parameter_errors(spec: dict[str, Any], given: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        one_param(spec).bind({"P": given}, PSEUDO)
    assert str(e.value) == message


PARAM_OK = [
    ({"Type": "Number", "MinValue": 1, "MaxValue": 12}, "12", "12"),
    ({"Type": "Number"}, "2.5", "2.5"),
    ({"Type": "List<Number>"}, "1, 2", ["1", "2"]),
    ({"Type": "String", "AllowedPattern": "[a-z]+", "MinLength": 1, "MaxLength": 3}, "abc", "abc"),
    ({"Type": "AWS::EC2::Image::Id"}, "ami-0123456789abcdef0", "ami-0123456789abcdef0"),
    ({"Type": "AWS::EC2::Image::Id"}, "emi-12345678", "emi-12345678"),
    ({"Type": "List<AWS::EC2::AvailabilityZone::Name>"}, "eu-1a,eu-1b", ["eu-1a", "eu-1b"]),
    ({"Type": "AWS::EC2::Subnet::Id"}, "subnet-0123456789abcdef0", "subnet-0123456789abcdef0"),
    ({"Type": "AWS::EC2::KeyPair::KeyName"}, "my key", "my key"),
]


@pytest.mark.parametrize("spec,given,expected", PARAM_OK, ids=[f"{s['Type']}={g}" for s, g, _ in PARAM_OK])
def test_parameter_values(spec: dict[str, Any], given: str, expected: Any) -> None:
    assert one_param(spec).bind({"P": given}, PSEUDO).parameters == {"P": expected}


def test_missing_unknown_defaulted_and_noecho_parameters() -> None:
    t = Template.parse(json.dumps({"Parameters": {
        "ClusterSize": {"Type": "Number"}, "KeyName": {"Type": "String"},
        "Secret": {"Type": "String", "NoEcho": "true", "Default": "hunter2"},
        "Kind": {"Type": "String", "Default": "m1.small", "Description": "instance type"}},
        "Resources": {"R": {"Type": "AWS::EC2::Instance"}}}), TYPES)
    with pytest.raises(TemplateError, match=r"^Parameters: \[ClusterSize, KeyName\] must have values$"):
        t.bind({}, PSEUDO)
    with pytest.raises(TemplateError, match=r"^Parameters: \[Bogus\] do not exist in the template$"):
        t.bind({"ClusterSize": "1", "KeyName": "k", "Bogus": "x"}, PSEUDO)
    b = t.bind({"ClusterSize": "2", "KeyName": "k"}, PSEUDO)
    assert b.parameters == {"ClusterSize": "2", "KeyName": "k", "Secret": "hunter2", "Kind": "m1.small"}
    assert b.shown_parameters() == {"ClusterSize": "2", "KeyName": "k", "Secret": "****", "Kind": "m1.small"}
    assert t.parameters["Kind"].description == "instance type" and t.parameters["Secret"].no_echo


# --- template errors (what ValidateTemplate reports) ------------------------------------------------

def res(**resources: Any) -> dict[str, Any]:
    return {"Resources": resources}


INSTANCE = {"Type": "AWS::EC2::Instance"}
TEMPLATE_ERRORS = [
    (res(A={"Type": "AWS::Foo::Bar"}, B={"Type": "AWS::S3::Bucket"}, C=INSTANCE),
     "Template format error: Unrecognized resource types: [AWS::Foo::Bar, AWS::S3::Bucket]"),
    (res(A={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Ref": "Nope"}}}),
     "Template format error: Unresolved resource dependencies [Nope] in the Resources block of the template"),
    (res(A={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Fn::GetAtt": ["Nope", "Id"]}}}),
     "Template format error: Unresolved resource dependencies [Nope] in the Resources block of the template"),
    (res(A={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Fn::Sub": "${Gone.Id}-${Missing}"}}}),
     "Template format error: Unresolved resource dependencies [Gone, Missing] in the Resources block of the "
     "template"),
    (res(A={"Type": "AWS::EC2::Instance", "DependsOn": ["Ghost"]}),
     "Template format error: Unresolved resource dependencies [Ghost] in the Resources block of the template"),
    ({**res(A=INSTANCE), "Outputs": {"O": {"Value": {"Ref": "Nope"}}}},
     "Template format error: Unresolved resource dependencies [Nope] in the Outputs block of the template"),
    (res(A={"Type": "AWS::EC2::Instance", "DependsOn": "B"}, B={"Type": "AWS::EC2::Instance", "DependsOn": "A"}),
     "Circular dependency between resources: [A, B]"),
    (res(A={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Ref": "C"}}},
         B={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Fn::GetAtt": ["A", "Id"]}}},
         C={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Fn::Sub": "${B}"}}},
         D={"Type": "AWS::EC2::Instance", "DependsOn": "A"}, E=INSTANCE),
     "Circular dependency between resources: [A, B, C]"),
    (res(A={"Type": "AWS::EC2::Instance", "Properties": {"X": {"Ref": "A"}}}),
     "Circular dependency between resources: [A]"),
    ({"Resources": {}}, "Template format error: At least one Resources member must be defined."),
    ({"Parameters": {"P": {"Type": "Strang"}}, **res(A=INSTANCE)},
     "Template format error: Unrecognized parameter type: Strang"),
    (res(A={"Properties": {}}),
     "Template format error: [/Resources/A] Every Resources object must contain a Type member."),
    (res(**{"my-res": INSTANCE}), "Template format error: Resource name my-res is non alphanumeric."),
    ({**res(A=INSTANCE), "Bogus": 1}, "Template format error: Invalid template property or properties [Bogus]"),
    ({**res(A=INSTANCE), "AWSTemplateFormatVersion": "2011-01-01"},
     "Template format error: '2011-01-01' is not a supported AWSTemplateFormatVersion value"),
    ({"Conditions": {"C": {"Fn::Equals": [{"Ref": "A"}, "x"]}}, **res(A=INSTANCE)},
     "Template format error: Unresolved dependencies [A]. Cannot reference resources in the Conditions block "
     "of the template"),
    (res(A={"Type": "AWS::EC2::Instance", "Condition": "Nope"}),
     "Template format error: Unresolved condition dependencies [Nope]"),
    ({"Conditions": {"A": {"Fn::Not": [{"Condition": "B"}]}, "B": {"Fn::Not": [{"Condition": "A"}]},
                     "C": {"Fn::Not": [{"Condition": "A"}]}}, **res(A=INSTANCE)},
     "Template format error: Circular dependency between conditions: [A, B]"),
    ({"Conditions": {"C": {"Fn::If": ["C", True, False]}}, **res(A=INSTANCE)},
     "Template format error: Condition C can only be a boolean operation (Fn::Equals, Fn::And, Fn::Or, Fn::Not "
     "or Condition) on parameters and other conditions"),
    (res(A={"Type": "AWS::EC2::Instance", "Propertys": {}}),
     "Template format error: [/Resources/A] Invalid template resource property 'Propertys'"),
    ({**res(A=INSTANCE), "Rules": {}}, "Template format error: Rules are not supported"),
    ({**res(A=INSTANCE), "Transform": "AWS::Serverless-2016-10-31"},
     "Template format error: Transform (macros, AWS::Serverless) is not supported"),
    (res(A={"Type": "AWS::EC2::Instance", "Metadata": {"Init": {"Fn::GetAtt": ["Nope", "X"]}}}),
     "Template format error: Unresolved resource dependencies [Nope] in the Resources block of the template"),
]


@pytest.mark.parametrize("doc,message", TEMPLATE_ERRORS, ids=[m[:60] for _, m in TEMPLATE_ERRORS])
def test_template_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as e:
        Template.parse(json.dumps(doc), TYPES)
    assert str(e.value) == message


MALFORMED = [
    ({"Ref": ["a"]}, "Template format error: Every Ref object must have a single String value."),
    ({"Fn::GetAtt": ["A"]}, "Template error: every Fn::GetAtt object requires two non-empty parameters"),
    ({"Fn::GetAtt": "NoDot"}, "Template error: every Fn::GetAtt object requires two non-empty parameters"),
    ({"Fn::Join": ["-"]}, "Template error: every Fn::Join object requires two parameters"),
    ({"Fn::Join": [1, ["a"]]}, "Template error: every Fn::Join object requires two parameters"),
    ({"Fn::Sub": ["a", "b"]}, "Template error: One or more Fn::Sub intrinsic functions don't specify"),
    ({"Fn::Sub": 5}, "Template error: One or more Fn::Sub intrinsic functions don't specify"),
    ({"Fn::Select": [0]}, "Template error: Fn::Select requires a list argument with two elements"),
    ({"Fn::Split": ["a"]}, "Template error: every Fn::Split object requires two parameters"),
    ({"Fn::FindInMap": ["M", "k"]}, "Template error: every Fn::FindInMap object requires three parameters"),
    ({"Fn::If": ["IsProd", "a"]}, "Template error: Fn::If requires a list argument with three elements"),
    ({"Fn::Base64": ["a"]}, "Template error: every Fn::Base64 object requires a string parameter"),
    ({"Fn::GetAZs": ["eu-1"]}, "Template error: every Fn::GetAZs object requires a string parameter"),
    ({"Fn::Length": [1]}, "Template format error: Unrecognized intrinsic function Fn::Length"),
    ({"Fn::If": ["NoSuch", "a", "b"]}, "Template format error: Unresolved condition dependencies [NoSuch]"),
]


@pytest.mark.parametrize("expr,message", MALFORMED, ids=[json.dumps(e)[:50] for e, _ in MALFORMED])
def test_malformed_intrinsics_fail_validation(expr: Any, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        Template.parse(template(expr), TYPES)
    assert str(e.value).startswith(message)


MALFORMED_CONDITIONS = [
    ({"Fn::Equals": ["a"]}, "Template error: every Fn::Equals object requires a list of 2 string parameters."),
    ({"Fn::And": [{"Condition": "IsProd"}]}, "Template error: every Fn::And object requires a list of at least 2"),
    ({"Fn::Or": [{"Condition": "IsProd"}] * 11}, "Template error: every Fn::Or object requires a list of at least 2"),
    ({"Fn::Not": [{"Condition": "IsProd"}, {"Condition": "IsDev"}]},
     "Template error: every Fn::Not object requires a list of 1 boolean parameters."),
    ({"Fn::And": ["yes", {"Condition": "IsProd"}]}, "Template error: every Fn::And object requires"),
]


@pytest.mark.parametrize("expr,message", MALFORMED_CONDITIONS, ids=[m[:40] for _, m in MALFORMED_CONDITIONS])
def test_malformed_conditions_fail_validation(expr: Any, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        Template.parse(template("x", conditions={**CONDITIONS, "C": expr}), TYPES)
    assert str(e.value).startswith(message)


EVALUATION_ERRORS = [
    ({"Fn::Select": [5, ["a", "b"]]}, "Template error: Fn::Select cannot select nonexistent value at index 5"),
    ({"Fn::Select": ["x", ["a"]]}, "Template error: Fn::Select requires a list argument with two elements"),
    ({"Fn::FindInMap": ["Region", "us-1", "Ami"]}, "Template error: Unable to get mapping for Region::us-1::Ami"),
    ({"Fn::Join": ["", "notalist"]}, "Template error: every Fn::Join object requires two parameters"),
    ({"Fn::Sub": "${Zones}"}, "Template error: variable Zones in Fn::Sub expression does not resolve to a string"),
    ({"Fn::Equals": ["a", "a"]}, "Template error: Fn::Equals can only be used in the Conditions block"),
]


@pytest.mark.parametrize("expr,message", EVALUATION_ERRORS, ids=[m[:50] for _, m in EVALUATION_ERRORS])
def test_evaluation_errors(expr: Any, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        value(expr)
    assert str(e.value).startswith(message)


def test_body_size_and_syntax() -> None:
    small = template("x")
    assert Template.parse(small + " " * (MAX_BODY - len(small)), TYPES).resources
    with pytest.raises(TemplateError, match="Member must have length less than or equal to 51200"):
        load(small + " " * (MAX_BODY - len(small) + 1))
    assert load(small + " " * MAX_BODY, max_bytes=2 * MAX_BODY)  # TemplateURL's larger limit is the caller's
    with pytest.raises(TemplateError, match=r"^Template format error: JSON not well-formed. \(line 3, column 2\)$"):
        load('{\n "a": 1\n "b": 2}')
    with pytest.raises(TemplateError, match=r"^Template format error: YAML not well-formed. \(line 2, column"):
        load("a: [1\nb: 2")
    with pytest.raises(TemplateError, match="YAML not well-formed"):
        load("a: !!python/object/apply:os.system ['true']")  # safe loading only
    assert load("{a: !Ref B}") == {"a": {"Ref": "B"}}  # YAML flow style, not JSON
    with pytest.raises(TemplateError, match="^Template format error: YAML aliases are not supported$"):
        load("a: &x [1, 2]\nb: [*x, *x]")
    for n in (20_000, 64):  # past Python's recursion limit, then just past ours (65 levels with the mapping)
        for deep in ('{"a": ' + "[" * n + "]" * n + "}", "a: " + "[" * n + "]" * n):
            with pytest.raises(TemplateError, match="^Template format error: the template nests deeper than 64 "
                                                    "levels$"):
                load(deep)
    assert load("a: " + "[" * 63 + "]" * 63)


def test_getatt_attributes_checked_when_types_list_them() -> None:
    attributes = {t: () for t in TYPES} | {"AWS::EC2::SecurityGroup": ("GroupId", "VpcId")}
    ok = template({"Fn::Sub": "${Other.GroupId}"}, extra={"Out": {"Type": "AWS::EC2::Instance", "Properties": {
        "G": {"Fn::GetAtt": ["Other", "VpcId"]}, "Dyn": {"Fn::GetAtt": ["Other", {"Ref": "Name"}]}}}})
    assert Template.parse(ok, attributes).resources["Out"].properties["G"] == {"Fn::GetAtt": ["Other", "VpcId"]}
    for expr in ({"Fn::GetAtt": ["Other", "Arn"]}, {"Fn::Sub": "x-${Other.Arn}"}, {"Fn::GetAtt": "Other.Arn"}):
        with pytest.raises(TemplateError) as e:
            Template.parse(template(expr), attributes)
        assert str(e.value) == "Template error: resource Other does not support attribute type Arn in Fn::GetAtt"
    assert Template.parse(template({"Fn::GetAtt": ["Other", "Arn"]}), TYPES)  # no attribute lists: not checked


# --- dependency levels ----------------------------------------------------------------------------

def test_levels_diamond_dependson_and_order() -> None:
    body = json.dumps(res(
        Top={"Type": "AWS::EC2::SecurityGroup"},
        Left={"Type": "AWS::EC2::Instance", "Properties": {"G": {"Ref": "Top"}}},
        Right={"Type": "AWS::EC2::Instance", "Properties": {"G": {"Fn::Sub": "${Top.GroupId}"}}},
        Bottom={"Type": "AWS::EC2::Instance", "DependsOn": ["Left"], "Properties": {"X": {"Fn::GetAtt": "Right.Ip"}}},
        Alone={"Type": "AWS::CloudFormation::WaitConditionHandle"}))
    b = Template.parse(body, TYPES).bind({}, PSEUDO)
    assert b.levels() == [["Top", "Alone"], ["Left", "Right"], ["Bottom"]]
    assert b.deps("Bottom") == {"Left", "Right"} and b.deps("Alone") == frozenset()
    resolver = Physical()
    assert b.properties("Bottom", resolver) == {"X": "Right/Ip"}
    assert resolver.calls == [("get_att", "Right", "Ip")]


def test_two_hundred_resources_chain_levels() -> None:
    resources = {f"R{i}": {"Type": "AWS::EC2::Instance", "Properties": {"After": {"Ref": f"R{i - 1}"}}}
                 for i in range(1, 200)}
    resources["R0"] = {"Type": "AWS::EC2::SecurityGroup"}
    levels = Template.parse(json.dumps(res(**resources)), TYPES).bind({}, PSEUDO).levels()
    assert levels == [[f"R{i}"] for i in range(200)]


# --- the Eucalyptus CoreOS-cluster template shape --------------------------------------------------

COREOS = """
AWSTemplateFormatVersion: "2010-09-09"
Description: CoreOS cluster behind one security group, sized by a parameter
Parameters:
  ImageId: {Type: AWS::EC2::Image::Id, Description: CoreOS image}
  KeyName: {Type: AWS::EC2::KeyPair::KeyName}
  ClusterSize: {Type: Number, Default: "3", MinValue: 1, MaxValue: 12}
  InstanceType: {Type: String, Default: m1.small, AllowedValues: [m1.small, m1.medium, m1.large]}
Resources:
  CoreOSSecurityGroup:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: CoreOS SecurityGroup
      SecurityGroupIngress:
        - {IpProtocol: tcp, FromPort: 22, ToPort: 22, CidrIp: 0.0.0.0/0}
  Ingress4001:
    Type: AWS::EC2::SecurityGroupIngress
    Properties:
      GroupName: !Ref CoreOSSecurityGroup
      IpProtocol: tcp
      FromPort: 4001
      ToPort: 4001
      SourceSecurityGroupId: !GetAtt CoreOSSecurityGroup.GroupId
  Ingress7001:
    Type: AWS::EC2::SecurityGroupIngress
    Properties:
      GroupName: !Ref CoreOSSecurityGroup
      IpProtocol: tcp
      FromPort: 7001
      ToPort: 7001
      SourceSecurityGroupId: !GetAtt [CoreOSSecurityGroup, GroupId]
  CoreOSLaunchConfig:
    Type: AWS::AutoScaling::LaunchConfiguration
    Properties:
      ImageId: !Ref ImageId
      InstanceType: !Ref InstanceType
      KeyName: !Ref KeyName
      SecurityGroups: [!Ref CoreOSSecurityGroup]
      UserData:
        Fn::Base64:
          Fn::Join:
            - ""
            - - "#cloud-config\\n"
              - "coreos:\\n"
              - "  etcd:\\n"
              - "    name: "
              - !Ref AWS::StackName
              - "\\n    size: "
              - !Ref ClusterSize
              - "\\n"
  CoreOSGroup:
    Type: AWS::AutoScaling::AutoScalingGroup
    Properties:
      AvailabilityZones: !GetAZs ""
      LaunchConfigurationName: !Ref CoreOSLaunchConfig
      MinSize: "1"
      MaxSize: !Ref ClusterSize
      DesiredCapacity: !Ref ClusterSize
Outputs:
  GroupName: {Value: !Ref CoreOSGroup, Description: the cluster's group}
"""


def test_coreos_cluster_template() -> None:
    t = Template.parse(COREOS, TYPES)
    assert t.description == "CoreOS cluster behind one security group, sized by a parameter"
    assert list(t.parameters) == ["ImageId", "KeyName", "ClusterSize", "InstanceType"]
    assert t.resource_types == ["AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress",
                                "AWS::AutoScaling::LaunchConfiguration", "AWS::AutoScaling::AutoScalingGroup"]
    with pytest.raises(TemplateError, match=r"^Parameters: \[ImageId, KeyName\] must have values$"):
        t.bind({}, PSEUDO)
    with pytest.raises(TemplateError, match=r"^Parameter 'ClusterSize' must be a number not greater than 12$"):
        t.bind({"ImageId": "ami-0123456789abcdef0", "KeyName": "core", "ClusterSize": "13"}, PSEUDO)
    with pytest.raises(TemplateError, match=r"^Parameter 'InstanceType' must be one of AllowedValues$"):
        t.bind({"ImageId": "ami-0123456789abcdef0", "KeyName": "core", "InstanceType": "x9.huge"}, PSEUDO)

    b = t.bind({"ImageId": "ami-0123456789abcdef0", "KeyName": "core", "ClusterSize": "2"}, PSEUDO)
    assert b.levels() == [["CoreOSSecurityGroup"], ["Ingress4001", "Ingress7001", "CoreOSLaunchConfig"],
                          ["CoreOSGroup"]]
    r = Physical()
    assert b.properties("Ingress7001", r) == {"GroupName": "phys-CoreOSSecurityGroup", "IpProtocol": "tcp",
                                              "FromPort": 7001, "ToPort": 7001,
                                              "SourceSecurityGroupId": "CoreOSSecurityGroup/GroupId"}
    lc = b.properties("CoreOSLaunchConfig", r)
    assert base64.b64decode(lc.pop("UserData")).decode() == "#cloud-config\ncoreos:\n  etcd:\n    name: web\n" \
                                                            "    size: 2\n"
    assert lc == {"ImageId": "ami-0123456789abcdef0", "InstanceType": "m1.small", "KeyName": "core",
                  "SecurityGroups": ["phys-CoreOSSecurityGroup"]}
    assert b.properties("CoreOSGroup", r) == {"AvailabilityZones": ["eu-1a", "eu-1b"],
                                              "LaunchConfigurationName": "phys-CoreOSLaunchConfig",
                                              "MinSize": "1", "MaxSize": "2", "DesiredCapacity": "2"}
    assert b.outputs(r) == [Output("GroupName", "phys-CoreOSGroup", "the cluster's group", None)]
    # the same template in JSON gives the same document
    again = Template.parse(json.dumps(t.body), TYPES).bind({"ImageId": "ami-0123456789abcdef0", "KeyName": "core",
                                                            "ClusterSize": "2"}, PSEUDO)
    assert again.levels() == b.levels()
    assert again.properties("CoreOSLaunchConfig", r) == b.properties("CoreOSLaunchConfig", r)


# --- properties ------------------------------------------------------------------------------------

plain = st.text(alphabet=st.characters(blacklist_characters="${}", blacklist_categories=("Cs",)), max_size=20)


@given(st.text(max_size=3), st.lists(plain, max_size=6))
def test_join_is_str_join(delim: str, items: list[str]) -> None:
    assert value({"Fn::Join": [delim, items]}) == delim.join(items)


@given(st.text(min_size=1, max_size=3), st.lists(plain, min_size=1, max_size=6))
def test_split_undoes_join(delim: str, items: list[str]) -> None:
    if any(delim in i for i in items):
        return
    assert value({"Fn::Split": [delim, {"Fn::Join": [delim, items]}]}) == items


@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True), plain), max_size=5), plain)
def test_sub_substitutes_each_variable_and_keeps_escapes(pairs: list[tuple[str, str]], tail: str) -> None:
    variables = dict(pairs)
    source = "".join(f"<${{{k}}}|${{!{k}}}>" for k in variables) + tail
    expected = "".join(f"<{v}|${{{k}}}>" for k, v in variables.items()) + tail
    assert value({"Fn::Sub": [source, variables]}) == expected
