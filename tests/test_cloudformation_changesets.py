"""Change sets on `test:///`: what DescribeChangeSet shows (Add/Modify/Remove, Replacement
True/False/Conditional, the property details) before anything changes, executing one, an empty
one FAILED as AWS words it, a CREATE change set's REVIEW_IN_PROGRESS stack, `aws cloudformation
deploy` (the real AWS CLI) for a new stack and an update, and another user seeing none of it."""
from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import FAST, aws, client, digest, settled
from elbsupport import public_image
from support import Server, wait_until
from support.clients import aws_cli


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    return server_with(autoscaling=FAST)


@pytest.fixture(scope="module")
def user(srv: Server) -> dict[str, str]:
    return srv.create_user("reviewer")


@pytest.fixture(scope="module")
def cfn(srv: Server, user: dict[str, str]) -> Any:
    return client(srv, user, "cloudformation")


@pytest.fixture(scope="module")
def ec2(srv: Server, user: dict[str, str]) -> Any:
    return srv.client(user)


def body(image: str, *, desc: str = "one", itype: str = "t3.nano", old: bool = True, new: bool = False) -> str:
    res: dict[str, Any] = {
        "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": desc}},
        "Rule": {"Type": "AWS::EC2::SecurityGroupIngress",
                 "Properties": {"GroupId": {"Fn::GetAtt": ["Sg", "GroupId"]}, "IpProtocol": "tcp", "FromPort": 22,
                                "ToPort": 22, "CidrIp": "10.0.0.0/8"}},
        "Solo": {"Type": "AWS::EC2::Instance",
                 "Properties": {"ImageId": image, "InstanceType": itype, "SecurityGroupIds": [{"Ref": "Sg"}]}}}
    if old:
        res["Old"] = {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "old"}}
    if new:
        res["New"] = {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "new"}}
    return json.dumps({"Resources": res})


def stack_status(cfn: Any, name: str) -> str:
    return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])


def settle(cfn: Any, name: str) -> str:
    def done() -> str | None:
        s = stack_status(cfn, name)
        return None if s.endswith("_IN_PROGRESS") else s
    return str(wait_until(done, timeout=120))


def change_set_done(cfn: Any, cs: str, stack: str | None = None) -> dict[str, Any]:
    kw = {"StackName": stack} if stack else {}
    return dict(wait_until(lambda: (d := cfn.describe_change_set(ChangeSetName=cs, **kw))["Status"]
                           not in ("CREATE_PENDING", "CREATE_IN_PROGRESS") and d or None, timeout=60))


def resources(cfn: Any, name: str) -> dict[str, str]:
    return {r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}


def code(e: Any) -> tuple[str, str, int]:
    r = e.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def delete(cfn: Any, name: str) -> None:
    sid = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName=name)
    wait_until(lambda: cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE" or None,
               timeout=120)


def test_change_set_shows_the_changes_then_runs_them(srv: Server, user: dict[str, str], cfn: Any,
                                                       ec2: Any) -> None:
    image = public_image(ec2)
    cfn.create_stack(StackName="review", TemplateBody=body(image))
    assert settle(cfn, "review") == "CREATE_COMPLETE"
    before = resources(cfn, "review")
    # The group replaced (its description), so the rule that names it: Conditional; the instance's
    # type in place; a group added, one removed.
    cs = cfn.create_change_set(StackName="review", ChangeSetName="v2", Description="second",
                               TemplateBody=body(image, desc="two", itype="t3.micro", old=False, new=True))
    assert cs["StackId"] == cfn.describe_stacks(StackName="review")["Stacks"][0]["StackId"]
    rc, _, err = aws(srv, user, "cloudformation", "wait", "change-set-create-complete", "--stack-name", "review",
                     "--change-set-name", "v2")
    assert rc == 0, err
    d = cfn.describe_change_set(ChangeSetName=cs["Id"])   # (by its ARN, no stack name needed)
    assert (d["Status"], d["ExecutionStatus"], d["ChangeSetName"], d["Description"]) == \
        ("CREATE_COMPLETE", "AVAILABLE", "v2", "second")
    got = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in d["Changes"]}
    assert {k: (c["Action"], c.get("Replacement")) for k, c in got.items()} == {
        "Sg": ("Modify", "True"), "Rule": ("Modify", "Conditional"), "Solo": ("Modify", "False"),
        "New": ("Add", None), "Old": ("Remove", None)}
    assert got["Sg"]["PhysicalResourceId"] == before["Sg"] and got["Sg"]["Scope"] == ["Properties"]
    assert got["Sg"]["Details"] == [{"Target": {"Attribute": "Properties", "Name": "GroupDescription",
                                                "RequiresRecreation": "Always"},
                                     "Evaluation": "Static", "ChangeSource": "DirectModification"}]
    assert got["Rule"]["Details"][0]["Target"] == {"Attribute": "Properties", "Name": "GroupId",
                                                   "RequiresRecreation": "Conditionally"}
    assert got["Rule"]["Details"][0]["Evaluation"] == "Dynamic"
    solo = {x["Target"]["Name"]: x["Target"]["RequiresRecreation"] for x in got["Solo"]["Details"]}
    assert solo == {"InstanceType": "Never", "SecurityGroupIds": "Never"}
    # Nothing changed yet.
    assert stack_status(cfn, "review") == "CREATE_COMPLETE" and resources(cfn, "review") == before
    listed = cfn.list_change_sets(StackName="review")["Summaries"]
    assert [(s["ChangeSetName"], s["Status"], s["ExecutionStatus"]) for s in listed] == \
        [("v2", "CREATE_COMPLETE", "AVAILABLE")]

    cfn.execute_change_set(ChangeSetName="v2", StackName="review")
    assert settle(cfn, "review") == "UPDATE_COMPLETE"
    after = resources(cfn, "review")
    assert set(after) == {"Sg", "Rule", "Solo", "New"}
    assert after["Sg"] != before["Sg"] and after["Rule"] != before["Rule"] and after["Solo"] == before["Solo"]
    inst = ec2.describe_instances(InstanceIds=[after["Solo"]])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "t3.micro" and [g["GroupId"] for g in inst["SecurityGroups"]] == [after["Sg"]]
    left = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}
    assert left == {after["Sg"], after["New"]}     # the replaced and the removed groups deleted
    assert cfn.describe_change_set(ChangeSetName="v2", StackName="review")["ExecutionStatus"] == "EXECUTE_COMPLETE"
    delete(cfn, "review")


def test_an_empty_change_set_fails_and_can_be_deleted(srv: Server, cfn: Any, ec2: Any) -> None:
    image = public_image(ec2)
    text = body(image, old=False)
    cfn.create_stack(StackName="same", TemplateBody=text)
    assert settle(cfn, "same") == "CREATE_COMPLETE"
    cfn.create_change_set(StackName="same", ChangeSetName="nothing", TemplateBody=text)
    d = change_set_done(cfn, "nothing", "same")
    assert (d["Status"], d["ExecutionStatus"]) == ("FAILED", "UNAVAILABLE")
    assert d["StatusReason"] == ("The submitted information didn't contain changes. Submit different information "
                                 "to create a change set.")
    with pytest.raises(ClientError) as e:
        cfn.execute_change_set(ChangeSetName="nothing", StackName="same")
    assert code(e)[0] == "InvalidChangeSetStatus"
    with pytest.raises(ClientError) as e:
        cfn.create_change_set(StackName="same", ChangeSetName="nothing", TemplateBody=text)
    assert code(e)[:2] == ("AlreadyExistsException", "ChangeSet [nothing] already exists")
    cfn.delete_change_set(ChangeSetName="nothing", StackName="same")
    with pytest.raises(ClientError) as e:
        cfn.describe_change_set(ChangeSetName="nothing", StackName="same")
    assert code(e) == ("ChangeSetNotFound", "ChangeSet [nothing] does not exist", 404)
    assert cfn.list_change_sets(StackName="same")["Summaries"] == []
    assert stack_status(cfn, "same") == "CREATE_COMPLETE"
    delete(cfn, "same")


def test_a_create_change_set_makes_a_stack_in_review(cfn: Any, ec2: Any) -> None:
    image = public_image(ec2)
    cs = cfn.create_change_set(StackName="fresh", ChangeSetName="first", ChangeSetType="CREATE",
                               TemplateBody=body(image, old=False))
    assert stack_status(cfn, "fresh") == "REVIEW_IN_PROGRESS"
    d = change_set_done(cfn, cs["Id"])
    assert d["Status"] == "CREATE_COMPLETE"
    assert sorted((c["ResourceChange"]["Action"], c["ResourceChange"]["LogicalResourceId"]) for c in d["Changes"]) \
        == [("Add", "Rule"), ("Add", "Sg"), ("Add", "Solo")]
    assert cfn.describe_stack_resources(StackName="fresh")["StackResources"] == []
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName="fresh", TemplateBody=body(image))
    assert code(e)[0] == "ValidationError"
    cfn.execute_change_set(ChangeSetName=cs["Id"])
    assert settle(cfn, "fresh") == "CREATE_COMPLETE"
    assert set(resources(cfn, "fresh")) == {"Sg", "Rule", "Solo"}
    delete(cfn, "fresh")
    # A stack left in review is deleted with nothing to delete.
    cfn.create_change_set(StackName="abandoned", ChangeSetName="c1", ChangeSetType="CREATE",
                          TemplateBody=body(image))
    delete(cfn, "abandoned")


def test_aws_cloudformation_deploy(srv: Server, user: dict[str, str], cfn: Any, ec2: Any, tmp_path: Any) -> None:
    tpl = tmp_path / "t.json"
    # (groups only: quick to make, so the CLI's stack waiters, polling every 30 s, mostly find them done)
    tpl.write_text(json.dumps({
        "Parameters": {"Port": {"Type": "Number"}, "Label": {"Type": "String", "Default": "deployed"}},
        "Resources": {
            "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
                "GroupDescription": "deployed", "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": {"Ref": "Port"}, "ToPort": {"Ref": "Port"},
                     "CidrIp": "0.0.0.0/0"}]}},
            "Other": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": {"Ref": "Label"}}}},
        "Outputs": {"Group": {"Value": {"Ref": "Sg"}}}}))
    args = ("cloudformation", "deploy", "--template-file", str(tpl), "--stack-name", "deployed")

    def deploy(*more: str) -> tuple[int, str]:
        rc, out, err = aws_cli(srv, user, *args, *more, text=True)
        return rc, out + err

    rc, err = deploy("--parameter-overrides", "Port=22")
    assert rc == 0, err
    assert "Successfully created/updated stack - deployed" in err
    assert stack_status(cfn, "deployed") == "CREATE_COMPLETE"
    first = resources(cfn, "deployed")
    rc, err = deploy("--parameter-overrides", "Port=443", "Label=relabelled")
    assert rc == 0, err
    assert stack_status(cfn, "deployed") == "UPDATE_COMPLETE"
    now = resources(cfn, "deployed")
    assert now["Sg"] == first["Sg"] and now["Other"] != first["Other"]   # in place; replaced
    sg = ec2.describe_security_groups(GroupIds=[first["Sg"]])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [443]
    other = ec2.describe_security_groups(GroupIds=[now["Other"]])["SecurityGroups"][0]
    assert other["Description"] == "relabelled"
    same = ("--parameter-overrides", "Port=443", "Label=relabelled")
    rc, err = deploy(*same)
    assert rc != 0 and "No changes to deploy" in err, err
    # The CLI names its change sets by the second, and a FAILED one stays (as in AWS): cleared, so
    # the next deploy in the same second does not collide with it.
    failed = [c for c in cfn.list_change_sets(StackName="deployed")["Summaries"] if c["Status"] == "FAILED"]
    assert len(failed) == 1
    cfn.delete_change_set(ChangeSetName=failed[0]["ChangeSetId"])
    rc, err = deploy(*same, "--no-fail-on-empty-changeset")
    assert rc == 0 and "No changes to deploy" in err, err
    assert stack_status(cfn, "deployed") == "UPDATE_COMPLETE"
    delete(cfn, "deployed")


def test_another_user_sees_no_change_set(srv: Server, cfn: Any, ec2: Any) -> None:
    image = public_image(ec2)
    cfn.create_stack(StackName="mine-cs", TemplateBody=body(image, old=False))
    assert settle(cfn, "mine-cs") == "CREATE_COMPLETE"
    cs = cfn.create_change_set(StackName="mine-cs", ChangeSetName="pending", TemplateBody=body(image))
    assert change_set_done(cfn, cs["Id"])["Status"] == "CREATE_COMPLETE"
    other = client(srv, srv.create_user("peeker"), "cloudformation")
    # By its ARN: no such change set; by name on the stack: no such stack (as for a name nobody has).
    for kw, want in (({"ChangeSetName": cs["Id"]}, "ChangeSetNotFound"),
                     ({"ChangeSetName": "pending", "StackName": "mine-cs"}, "ValidationError")):
        for call in (other.describe_change_set, other.execute_change_set, other.delete_change_set):
            with pytest.raises(ClientError) as e:
                call(**kw)
            assert code(e)[0] == want, call
    with pytest.raises(ClientError) as e:
        other.describe_change_set(ChangeSetName="pending", StackName="no-such-stack")
    assert code(e)[:2] == ("ValidationError", "Stack [no-such-stack] does not exist")
    with pytest.raises(ClientError) as e:
        other.list_change_sets(StackName="mine-cs")
    assert code(e)[0] == "ValidationError"
    with pytest.raises(ClientError) as e:
        other.create_change_set(StackName="mine-cs", ChangeSetName="theirs", TemplateBody=body(image))
    assert code(e)[:2] == ("ValidationError", "Stack with id mine-cs does not exist")
    assert cfn.describe_change_set(ChangeSetName=cs["Id"])["ExecutionStatus"] == "AVAILABLE"
    assert stack_status(cfn, "mine-cs") == "CREATE_COMPLETE"
    delete(cfn, "mine-cs")


BASE = json.dumps({"Parameters": {"P": {"Type": "String", "Default": "x"}},
                   "Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                                       "Properties": {"GroupDescription": {"Ref": "P"}}}}})
RETYPED = json.dumps({"Resources": {"G": {"Type": "AWS::EC2::KeyPair", "Properties": {"KeyName": "k"}}}})
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("UpdateStack", {"StackName": "ghost", "TemplateBody": BASE}, "ValidationError"),
    ("UpdateStack", {"StackName": "base", "TemplateBody": BASE, "UsePreviousTemplate": True}, "ValidationError"),
    ("UpdateStack", {"StackName": "base", "UsePreviousTemplate": True,
                     "Parameters": [{"ParameterKey": "Q", "UsePreviousValue": True}]}, "ValidationError"),
    ("UpdateStack", {"StackName": "base", "TemplateBody": "{broken"}, "ValidationError"),
    ("UpdateStack", {"StackName": "base", "TemplateBody": RETYPED}, "ValidationError"),
    ("UpdateStack", {"StackName": "base", "UsePreviousTemplate": True}, "ValidationError"),   # no change
    ("CancelUpdateStack", {"StackName": "base"}, "ValidationError"),
    ("CreateChangeSet", {"StackName": "base", "ChangeSetName": "c", "TemplateBody": BASE,
                         "ChangeSetType": "IMPORT"}, "ValidationError"),
    ("CreateChangeSet", {"StackName": "base", "ChangeSetName": "1c", "TemplateBody": BASE}, "ValidationError"),
    ("CreateChangeSet", {"StackName": "base", "ChangeSetName": "c", "TemplateBody": BASE,
                         "ChangeSetType": "CREATE"}, "ValidationError"),
    ("CreateChangeSet", {"StackName": "ghost", "ChangeSetName": "c", "TemplateBody": BASE}, "ValidationError"),
    ("CreateChangeSet", {"StackName": "fresh2", "ChangeSetName": "c", "TemplateBody": "{broken",
                         "ChangeSetType": "CREATE"}, "ValidationError"),
    ("DescribeChangeSet", {"StackName": "base", "ChangeSetName": "ghost"}, "ChangeSetNotFound"),
    ("ExecuteChangeSet", {"StackName": "base", "ChangeSetName": "ghost"}, "ChangeSetNotFound"),
    ("DeleteChangeSet", {"ChangeSetName": "arn:aws:cloudformation:cloudctl-1:1:changeSet/x/y"}, "ChangeSetNotFound"),
    ("ListChangeSets", {"StackName": "ghost"}, "ValidationError"),
]


@pytest.fixture(scope="module")
def base(cfn: Any) -> str:
    cfn.create_stack(StackName="base", TemplateBody=BASE)
    assert settle(cfn, "base") == "CREATE_COMPLETE"
    return "base"


@pytest.mark.parametrize("action, params, err", BAD, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_input_is_refused_and_changes_nothing(srv: Server, cfn: Any, base: str, action: str,
                                                  params: dict[str, Any], err: str) -> None:
    before = settled(srv)
    with pytest.raises(ClientError) as e:
        getattr(cfn, "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_"))(**params)
    assert code(e)[0] == err
    assert digest(srv) == before
    assert stack_status(cfn, "base") == "CREATE_COMPLETE"


def test_a_change_set_changing_a_resource_type_fails(cfn: Any, base: str) -> None:
    cfn.create_change_set(StackName=base, ChangeSetName="retype", TemplateBody=RETYPED)
    d = change_set_done(cfn, "retype", base)
    assert (d["Status"], d["StatusReason"]) == ("FAILED", "Update of resource type is not permitted. The new template "
                                                "modifies resource type of the following resources: [G]")
    cfn.delete_change_set(ChangeSetName="retype", StackName=base)
    assert stack_status(cfn, base) == "CREATE_COMPLETE"
