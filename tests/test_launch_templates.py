"""EC2 launch templates through boto3 and the AWS CLI against a served cloudctl on test:///: every
action, versions ($Latest/$Default, Min/MaxVersion, filters, pages), RunInstances from a template
with the request's own parameters over it, refusals (EC2's code, the state untouched), users kept
apart, and the seam AutoScaling launches through."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import BlockDevice
from cloudctl.core.launch_templates import TemplateData, TemplateRef

from rawquery import StateProbe
from support import REGION, Server, Servers, wait_state, write_config

USER_DATA = base64.b64encode(b"#!/bin/sh\necho from-template\n").decode()
NANO = {"InstanceType": "t3.nano"}


class Env:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.alice, self.bob = server.create_user("lt-alice"), server.create_user("lt-bob")
        self.ec2, self.bob_ec2 = server.client(self.alice), server.client(self.bob)
        self.probe = StateProbe(server.admin_url, server.token)
        images = self.ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
        self.image = images[0]["ImageId"]
        self.ec2.create_key_pair(KeyName="lt-key")

    def refused(self, code: str, call: Callable[..., Any], **kw: Any) -> str:
        """`call(**kw)` fails with `code` and changes nothing; the message. The state is first let
        settle: an earlier test's terminations may still be landing (one commit each)."""
        before = self.probe.settle()
        with pytest.raises(ClientError) as e:
            call(**kw)
        assert e.value.response["Error"]["Code"] == code, (call, kw, e.value.response["Error"])
        assert self.probe.state() == before, f"{call} {kw} changed the state"
        return str(e.value.response["Error"]["Message"])

    def aws(self, *args: str) -> Any:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.alice["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": self.alice["SecretAccessKey"], "AWS_DEFAULT_REGION": REGION,
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        cli = Path(sys.executable).parent / "aws"
        out = subprocess.run([str(cli), "--endpoint-url", self.server.endpoint, "--output", "json", *args],
                             env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout) if out.stdout.strip() else None


@pytest.fixture(scope="module")
def env(server_with: Servers) -> Iterator[Env]:
    yield Env(server_with())


def _data(env: Env, **over: Any) -> dict[str, Any]:
    return {"ImageId": env.image, "InstanceType": "t3.nano", "KeyName": "lt-key", "UserData": USER_DATA,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "web"}]},
                                  {"ResourceType": "volume", "Tags": [{"Key": "disk", "Value": "web"}]}],
            "InstanceInitiatedShutdownBehavior": "terminate", **over}


def _tags(x: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in x.get("Tags", [])}


def test_create_describe_versions_modify_delete(env: Env) -> None:
    ec2 = env.ec2
    made = ec2.create_launch_template(
        LaunchTemplateName="web", VersionDescription="first", LaunchTemplateData=_data(env),
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "team", "Value": "a"}]}])
    lt = made["LaunchTemplate"]
    tid = lt["LaunchTemplateId"]
    assert tid.startswith("lt-") and lt["LaunchTemplateName"] == "web"
    assert (lt["DefaultVersionNumber"], lt["LatestVersionNumber"]) == (1, 1)
    assert lt["CreatedBy"] == f"arn:aws:iam::{env.alice['AccountId']}:user/lt-alice"
    assert _tags(lt) == {"team": "a"}
    got = ec2.describe_launch_templates(LaunchTemplateNames=["web"])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in got] == [tid] and _tags(got[0]) == {"team": "a"}
    assert [t["LaunchTemplateId"] for t in ec2.describe_launch_templates(
        Filters=[{"Name": "tag:team", "Values": ["a"]}])["LaunchTemplates"]] == [tid]
    assert [t["ResourceId"] for t in ec2.describe_tags(
        Filters=[{"Name": "resource-type", "Values": ["launch-template"]}])["Tags"]] == [tid]

    v1 = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"]
    assert len(v1) == 1 and v1[0]["VersionNumber"] == 1 and v1[0]["DefaultVersion"] is True
    assert v1[0]["VersionDescription"] == "first"
    assert v1[0]["LaunchTemplateData"] == _data(env)   # what was given comes back, exactly

    # A version from version 1 with the instance type overridden; one from nothing.
    v2 = ec2.create_launch_template_version(LaunchTemplateId=tid, SourceVersion="1", VersionDescription="bigger",
                                            LaunchTemplateData={"InstanceType": "t3.micro"})
    v2d = v2["LaunchTemplateVersion"]
    assert v2d["VersionNumber"] == 2 and v2d["DefaultVersion"] is False
    assert v2d["LaunchTemplateData"] == _data(env, InstanceType="t3.micro")
    v3 = ec2.create_launch_template_version(LaunchTemplateName="web", LaunchTemplateData={"ImageId": env.image})
    assert v3["LaunchTemplateVersion"]["LaunchTemplateData"] == {"ImageId": env.image}

    def numbers(**kw: Any) -> list[int]:
        return [v["VersionNumber"] for v in ec2.describe_launch_template_versions(
            LaunchTemplateId=tid, **kw)["LaunchTemplateVersions"]]

    assert numbers() == [1, 2, 3]
    assert numbers(Versions=["$Latest"]) == [3] and numbers(Versions=["$Default", "2"]) == [1, 2]
    assert numbers(MinVersion="2") == [2, 3] and numbers(MaxVersion="2") == [1, 2]
    assert numbers(Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}]) == [2]
    assert numbers(Filters=[{"Name": "is-default-version", "Values": ["true"]}]) == [1]
    page = ec2.describe_launch_template_versions(LaunchTemplateId=tid, MaxResults=2)
    assert [v["VersionNumber"] for v in page["LaunchTemplateVersions"]] == [1, 2]
    rest = ec2.describe_launch_template_versions(LaunchTemplateId=tid, MaxResults=2, NextToken=page["NextToken"])
    assert [v["VersionNumber"] for v in rest["LaunchTemplateVersions"]] == [3] and "NextToken" not in rest
    paged = [v["VersionNumber"] for p in ec2.get_paginator("describe_launch_template_versions").paginate(
        LaunchTemplateName="web", PaginationConfig={"PageSize": 1}) for v in p["LaunchTemplateVersions"]]
    assert paged == [1, 2, 3]

    # The default moves; the default version cannot be deleted, others can, numbers are not reused.
    mod = ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion="2")["LaunchTemplate"]
    assert (mod["DefaultVersionNumber"], mod["LatestVersionNumber"]) == (2, 3)
    assert numbers(Versions=["$Default"]) == [2]
    gone = ec2.delete_launch_template_versions(LaunchTemplateId=tid, Versions=["2", "3", "9"])
    assert [v["VersionNumber"] for v in gone["SuccessfullyDeletedLaunchTemplateVersions"]] == [3]
    failed = {v["VersionNumber"]: v["ResponseError"]["Code"]
              for v in gone["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert failed == {2: "unexpectedError", 9: "launchTemplateVersionDoesNotExist"}
    assert numbers() == [1, 2]
    assert ec2.describe_launch_templates(LaunchTemplateIds=[tid])["LaunchTemplates"][0]["LatestVersionNumber"] == 2
    v4 = ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={"ImageId": env.image})
    assert v4["LaunchTemplateVersion"]["VersionNumber"] == 4

    # All templates' $Latest at once; then the template goes with its versions and tags.
    ec2.create_launch_template(LaunchTemplateName="other", LaunchTemplateData={"InstanceType": "t3.nano"})
    latest = ec2.describe_launch_template_versions(Versions=["$Latest"])["LaunchTemplateVersions"]
    assert sorted((v["LaunchTemplateName"], v["VersionNumber"]) for v in latest) == [("other", 1), ("web", 4)]
    deleted = ec2.delete_launch_template(LaunchTemplateName="web")["LaunchTemplate"]
    assert deleted["LaunchTemplateId"] == tid
    env.refused("InvalidLaunchTemplateId.NotFound", ec2.describe_launch_templates, LaunchTemplateIds=[tid])
    env.refused("InvalidLaunchTemplateName.NotFoundException", ec2.describe_launch_templates,
                LaunchTemplateNames=["web"])
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [tid]}])["Tags"] == []
    ec2.delete_launch_template(LaunchTemplateName="other")


def test_run_instances_from_a_template_with_overrides(env: Env) -> None:
    ec2 = env.ec2
    subnet = ec2.describe_subnets()["Subnets"][-1]
    group = ec2.create_security_group(GroupName="lt-web", Description="web")["GroupId"]
    data = _data(env, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}],
                 NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet["SubnetId"], "Groups": [group]}])
    tid = ec2.create_launch_template(LaunchTemplateName="runner", LaunchTemplateData=data)[
        "LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=tid, SourceVersion="1",
                                       LaunchTemplateData={"InstanceType": "t3.micro"})
    # The default version (1), by id.
    inst = ec2.run_instances(LaunchTemplate={"LaunchTemplateId": tid}, MinCount=1, MaxCount=1)["Instances"][0]
    assert (inst["ImageId"], inst["InstanceType"], inst["KeyName"]) == (env.image, "t3.nano", "lt-key")
    assert inst["SubnetId"] == subnet["SubnetId"] and [g["GroupId"] for g in inst["SecurityGroups"]] == [group]
    assert _tags(inst) == {"role": "web", "aws:ec2launchtemplate:id": tid, "aws:ec2launchtemplate:version": "1"}
    attr = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
    assert attr["UserData"]["Value"] == USER_DATA
    behaviour = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"],
                                                Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}])
    assert {v["Attachments"][0]["Device"]: v["Size"] for v in vols["Volumes"]}.get("/dev/sdf") == 2
    assert all(_tags(v) == {"disk": "web"} for v in vols["Volumes"])
    # $Latest by name, the request's own type and tags over the template's.
    over = ec2.run_instances(LaunchTemplate={"LaunchTemplateName": "runner", "Version": "$Latest"},
                             InstanceType="t3.small", MinCount=2, MaxCount=2,
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": "role", "Value": "db"}]}])["Instances"]
    assert [i["InstanceType"] for i in over] == ["t3.small", "t3.small"]
    assert _tags(over[0]) == {"role": "db", "aws:ec2launchtemplate:id": tid, "aws:ec2launchtemplate:version": "2"}
    v2 = ec2.run_instances(LaunchTemplate={"LaunchTemplateId": tid, "Version": "2"}, MinCount=1,
                           MaxCount=1)["Instances"][0]
    assert v2["InstanceType"] == "t3.micro"
    ids = [inst["InstanceId"], v2["InstanceId"], *(i["InstanceId"] for i in over)]
    wait_state(ec2, ids, "running")
    # GetLaunchTemplateData: the instance's settings, as a template would hold them.
    got = ec2.get_launch_template_data(InstanceId=inst["InstanceId"])["LaunchTemplateData"]
    assert (got["ImageId"], got["InstanceType"], got["KeyName"]) == (env.image, "t3.nano", "lt-key")
    assert got["NetworkInterfaces"][0]["SubnetId"] == subnet["SubnetId"]
    assert got["TagSpecifications"] == [{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "web"}]}]
    # The template may go; what was launched from it stays.
    ec2.terminate_instances(InstanceIds=ids)
    ec2.delete_launch_template(LaunchTemplateId=tid)


def test_refusals_keep_ec2_codes_and_the_state(env: Env) -> None:
    ec2 = env.ec2
    tid = ec2.create_launch_template(LaunchTemplateName="strict", LaunchTemplateData={"ImageId": env.image})[
        "LaunchTemplate"]["LaunchTemplateId"]
    ghost = "lt-0000000000000dead"
    cases: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
        ("InvalidLaunchTemplateName.AlreadyExistsException", ec2.create_launch_template,
         {"LaunchTemplateName": "strict", "LaunchTemplateData": NANO}),
        ("InvalidLaunchTemplateName.MalformedException", ec2.create_launch_template,
         {"LaunchTemplateName": "a b", "LaunchTemplateData": NANO}),
        ("InvalidParameterValue", ec2.create_launch_template,
         {"LaunchTemplateName": "spot", "LaunchTemplateData": {"InstanceMarketOptions": {"MarketType": "spot"}}}),
        ("InvalidParameterValue", ec2.create_launch_template,
         {"LaunchTemplateName": "imds", "LaunchTemplateData": {"MetadataOptions": {"HttpTokens": "required"}}}),
        ("InvalidParameterValue", ec2.create_launch_template,
         {"LaunchTemplateName": "enc", "LaunchTemplateData": {"BlockDeviceMappings": [
             {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "Encrypted": True}}]}}),
        ("InvalidParameterValue", ec2.create_launch_template,
         {"LaunchTemplateName": "type", "LaunchTemplateData": {"InstanceType": "x9.huge"}}),
        ("InvalidUserData.Malformed", ec2.create_launch_template,
         {"LaunchTemplateName": "userdata", "LaunchTemplateData": {"UserData": "!!"}}),
        ("InvalidParameterValue", ec2.create_launch_template,
         {"LaunchTemplateName": "awstag", "LaunchTemplateData": {"TagSpecifications": [
             {"ResourceType": "instance", "Tags": [{"Key": "aws:x", "Value": "1"}]}]}}),
        ("InvalidParameterCombination", ec2.create_launch_template,
         {"LaunchTemplateName": "both", "LaunchTemplateData": {
             "SecurityGroupIds": ["sg-1"], "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "subnet-1"}]}}),
        ("InvalidLaunchTemplateId.NotFound", ec2.create_launch_template_version,
         {"LaunchTemplateId": ghost, "LaunchTemplateData": NANO}),
        ("InvalidLaunchTemplateId.Malformed", ec2.describe_launch_templates, {"LaunchTemplateIds": ["lt-?"]}),
        ("InvalidLaunchTemplateId.VersionNotFound", ec2.create_launch_template_version,
         {"LaunchTemplateId": tid, "SourceVersion": "7", "LaunchTemplateData": NANO}),
        ("MissingParameter", ec2.create_launch_template_version, {"LaunchTemplateData": NANO}),
        ("InvalidLaunchTemplateId.VersionNotFound", ec2.modify_launch_template,
         {"LaunchTemplateId": tid, "DefaultVersion": "2"}),
        ("InvalidLaunchTemplateName.NotFoundException", ec2.delete_launch_template, {"LaunchTemplateName": "none"}),
        ("InvalidLaunchTemplateId.NotFound", ec2.delete_launch_template_versions,
         {"LaunchTemplateId": ghost, "Versions": ["1"]}),
        ("InvalidLaunchTemplateId.VersionNotFound", ec2.describe_launch_template_versions,
         {"LaunchTemplateId": tid, "Versions": ["3"]}),
        ("InvalidParameterValue", ec2.describe_launch_template_versions, {"LaunchTemplateId": tid, "MinVersion": "x"}),
        ("InvalidParameterCombination", ec2.describe_launch_template_versions, {"Versions": ["1"]}),
        ("InvalidParameterValue", ec2.describe_launch_template_versions,
         {"LaunchTemplateId": tid, "Filters": [{"Name": "nope", "Values": ["1"]}]}),
        ("InvalidParameterCombination", ec2.describe_launch_templates, {"LaunchTemplateIds": [tid], "MaxResults": 5}),
        ("InvalidInstanceID.NotFound", ec2.get_launch_template_data, {"InstanceId": "i-0000000000000dead"}),
        ("InvalidLaunchTemplateId.NotFound", ec2.run_instances,
         {"LaunchTemplate": {"LaunchTemplateId": ghost}, "MinCount": 1, "MaxCount": 1}),
        ("InvalidLaunchTemplateName.NotFoundException", ec2.run_instances,
         {"LaunchTemplate": {"LaunchTemplateName": "none"}, "MinCount": 1, "MaxCount": 1}),
        ("InvalidLaunchTemplateId.VersionNotFound", ec2.run_instances,
         {"LaunchTemplate": {"LaunchTemplateId": tid, "Version": "5"}, "MinCount": 1, "MaxCount": 1}),
        ("InvalidParameterValue", ec2.run_instances,
         {"LaunchTemplate": {"LaunchTemplateId": tid}, "InstanceType": "x9.huge", "MinCount": 1, "MaxCount": 1}),
    ]
    for code, call, kw in cases:
        env.refused(code, call, **kw)
    # A template with no image launches only when the request gives one.
    ec2.create_launch_template(LaunchTemplateName="no-image", LaunchTemplateData={"InstanceType": "t3.nano"})
    env.refused("MissingParameter", ec2.run_instances, LaunchTemplate={"LaunchTemplateName": "no-image"},
                MinCount=1, MaxCount=1)
    # DryRun answers as EC2 does and changes nothing.
    env.refused("DryRunOperation", ec2.create_launch_template, LaunchTemplateName="dry", LaunchTemplateData=NANO,
                DryRun=True)
    env.refused("DryRunOperation", ec2.delete_launch_template, LaunchTemplateId=tid, DryRun=True)
    for name in ("strict", "no-image"):
        ec2.delete_launch_template(LaunchTemplateName=name)


def test_members_asking_for_what_is_anyway_are_accepted_others_named_in_the_refusal(env: Env) -> None:
    ec2 = env.ec2
    harmless = {"EbsOptimized": False, "Monitoring": {"Enabled": False}, "DisableApiStop": False,
                "MetadataOptions": {"HttpTokens": "optional", "HttpEndpoint": "enabled"},
                "CreditSpecification": {"CpuCredits": "standard"}, "Placement": {"Tenancy": "default"}}
    tid = ec2.create_launch_template(LaunchTemplateName="harmless", LaunchTemplateData={**NANO, **harmless})[
        "LaunchTemplate"]["LaunchTemplateId"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"][0]
    assert data["LaunchTemplateData"] == NANO
    ec2.delete_launch_template(LaunchTemplateId=tid)
    for member, value in (("EbsOptimized", True), ("Placement", {"Tenancy": "dedicated"}),
                          ("CpuOptions", {"CoreCount": 2}), ("IamInstanceProfile", {"Name": "x"})):
        message = env.refused("InvalidParameterValue", ec2.create_launch_template, LaunchTemplateName="refused",
                              LaunchTemplateData={**NANO, member: value})
        assert member in message and "not supported" in message, message
    message = env.refused("InvalidParameterValue", ec2.create_launch_template, LaunchTemplateName="refused",
                          LaunchTemplateData={"NetworkInterfaces": [{"DeviceIndex": 0, "Ipv4PrefixCount": 2}]})
    assert "Ipv4PrefixCount" in message


def test_users_do_not_see_each_others_templates(env: Env) -> None:
    tid = env.ec2.create_launch_template(LaunchTemplateName="mine", LaunchTemplateData={"ImageId": env.image})[
        "LaunchTemplate"]["LaunchTemplateId"]
    bob = env.bob_ec2
    assert bob.describe_launch_templates()["LaunchTemplates"] == []
    assert bob.describe_launch_template_versions(Versions=["$Latest"])["LaunchTemplateVersions"] == []
    env.refused("InvalidLaunchTemplateId.NotFound", bob.describe_launch_template_versions, LaunchTemplateId=tid)
    env.refused("InvalidLaunchTemplateName.NotFoundException", bob.describe_launch_templates,
                LaunchTemplateNames=["mine"])
    env.refused("InvalidLaunchTemplateId.NotFound", bob.delete_launch_template, LaunchTemplateId=tid)
    env.refused("InvalidLaunchTemplateId.NotFound", bob.modify_launch_template, LaunchTemplateId=tid,
                DefaultVersion="1")
    env.refused("InvalidLaunchTemplateId.NotFound", bob.create_tags, Resources=[tid],
                Tags=[{"Key": "k", "Value": "v"}])
    env.refused("InvalidLaunchTemplateId.NotFound", bob.run_instances, LaunchTemplate={"LaunchTemplateId": tid},
                MinCount=1, MaxCount=1)
    # Names are per account: Bob may have his own "mine".
    theirs = bob.create_launch_template(LaunchTemplateName="mine", LaunchTemplateData=NANO)["LaunchTemplate"]
    assert theirs["LaunchTemplateId"] != tid
    bob.delete_launch_template(LaunchTemplateName="mine")
    env.ec2.delete_launch_template(LaunchTemplateName="mine")


def test_aws_cli(env: Env) -> None:
    made = env.aws("ec2", "create-launch-template", "--launch-template-name", "cli",
                   "--launch-template-data", json.dumps({"ImageId": env.image, "InstanceType": "t3.nano"}))
    tid = made["LaunchTemplate"]["LaunchTemplateId"]
    env.aws("ec2", "create-launch-template-version", "--launch-template-id", tid, "--source-version", "1",
            "--launch-template-data", '{"InstanceType": "t3.micro"}')
    env.aws("ec2", "modify-launch-template", "--launch-template-id", tid, "--default-version", "2")
    listed = env.aws("ec2", "describe-launch-templates", "--launch-template-names", "cli")["LaunchTemplates"]
    assert listed[0]["DefaultVersionNumber"] == 2
    versions = env.aws("ec2", "describe-launch-template-versions", "--launch-template-id", tid,
                       "--versions", "$Default")["LaunchTemplateVersions"]
    assert versions[0]["LaunchTemplateData"] == {"ImageId": env.image, "InstanceType": "t3.micro"}
    run = env.aws("ec2", "run-instances", "--launch-template", f"LaunchTemplateId={tid}", "--count", "1")
    assert run["Instances"][0]["InstanceType"] == "t3.micro"
    env.aws("ec2", "terminate-instances", "--instance-ids", run["Instances"][0]["InstanceId"])
    env.aws("ec2", "delete-launch-template", "--launch-template-id", tid)
    assert env.aws("ec2", "describe-launch-templates")["LaunchTemplates"] == []


def test_templates_survive_a_restart(new_server: Servers) -> None:
    """Journaled: after a SIGKILL the templates, versions and default are as acknowledged."""
    server = new_server()
    user = server.create_user("lt-crash")
    ec2 = server.client(user)
    tid = ec2.create_launch_template(LaunchTemplateName="kept", LaunchTemplateData={"InstanceType": "t3.nano"})[
        "LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={"InstanceType": "t3.micro"})
    ec2.modify_launch_template(LaunchTemplateId=tid, DefaultVersion="2")
    server.kill()
    server.start()
    ec2 = server.client(user)
    lt = ec2.describe_launch_templates()["LaunchTemplates"]
    assert [(t["LaunchTemplateId"], t["DefaultVersionNumber"], t["LatestVersionNumber"]) for t in lt] == [(tid, 2, 2)]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=tid, Versions=["$Default"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data == {"InstanceType": "t3.micro"}


# -- the core: the seam AutoScaling launches through, and TemplateData on its own --------------------

def test_template_data_round_trips_and_merges() -> None:
    d = TemplateData(image_id="ami-1", instance_type="t3.nano", group_ids=("sg-1",),
                     block_devices=(BlockDevice("/dev/sdf", 2), BlockDevice("/dev/sdg", 3)),
                     instance_tags=(("a", "1"), ("b", "2")), disable_api_termination=False)
    assert TemplateData.from_record(json.loads(json.dumps(d.to_record()))) == d
    m = d.merged(TemplateData(instance_type="t3.micro", group_names=("web",),
                              block_devices=(BlockDevice("/dev/sdg", 9),), instance_tags=(("b", "3"),)))
    assert (m.image_id, m.instance_type, m.group_ids, m.group_names) == ("ami-1", "t3.micro", (), ("web",))
    assert m.block_devices == (BlockDevice("/dev/sdf", 2), BlockDevice("/dev/sdg", 9))
    assert m.instance_tags == (("a", "1"), ("b", "3")) and m.disable_api_termination is False
    spec = m.launch_spec(2, 3, "tok", system_tags=(("aws:x", "y"),))
    assert (spec.min_count, spec.max_count, spec.client_token, spec.group_names) == (2, 3, "tok", ("web",))
    with pytest.raises(CloudError) as e:
        TemplateData(instance_type="t3.nano").launch_spec()
    assert e.value.code == "MissingParameter"


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


async def test_the_seam_autoscaling_launches_through(cloud: Cloud) -> None:
    """`cloud.launch_templates.launch_spec(account, id, name, version)`: the version's settings as a
    LaunchSpec of one instance and no owner, with the template tags; the service names the owner."""
    bob, eve = Caller(await cloud.users.create("bob")), Caller(await cloud.users.create("eve"))
    image = next(iter(cloud.images.table.values())).id
    t, _ = await cloud.launch_templates.create(bob, "asg", None, TemplateData(image_id=image, instance_type="t3.nano"))
    ref = TemplateRef(t.id)
    await cloud.launch_templates.create_version(bob, ref, "1", None, TemplateData(instance_type="t3.micro"))
    seam = cloud.launch_templates.launch_spec
    spec = seam(bob.account, t.id, None, None)
    assert (spec.image_id, spec.instance_type, spec.min_count, spec.max_count, spec.owner) == (
        image, "t3.nano", 1, 1, None)
    assert spec.system_tags == (("aws:ec2launchtemplate:id", t.id), ("aws:ec2launchtemplate:version", "1"))
    assert seam(bob.account, None, "asg", "$Latest").instance_type == "t3.micro"
    assert seam(bob.account, None, "asg", "2").system_tags[1] == ("aws:ec2launchtemplate:version", "2")
    for args, code in (((eve.account, t.id, None, None), "InvalidLaunchTemplateId.NotFound"),
                       ((eve.account, None, "asg", None), "InvalidLaunchTemplateName.NotFoundException"),
                       ((bob.account, t.id, None, "3"), "InvalidLaunchTemplateId.VersionNotFound")):
        with pytest.raises(CloudError) as e:
            seam(*args)
        assert e.value.code == code
    # The cloud's own tags do not count against a user's 50.
    fifty = tuple((f"k{i}", "v") for i in range(50))
    full, _ = await cloud.launch_templates.create(bob, "fifty", None, TemplateData(image_id=image, instance_tags=fifty))
    _, (tagged,) = await cloud.compute.run(bob, seam(bob.account, full.id, None, None))
    assert len(cloud.tags.of(tagged.id)) == 52
    _, (inst,) = await cloud.compute.run(Caller.service("autoscaling"), replace(spec, owner=bob.account))
    assert inst.owner == bob.account and inst.instance_type == "t3.nano"
    assert dict(cloud.tags.of(inst.id)) == {"aws:ec2launchtemplate:id": t.id, "aws:ec2launchtemplate:version": "1"}
