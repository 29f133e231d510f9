"""Bad input on every ELB action: ELB's error code in the query protocol's shape, the HTTP status
botocore's model gives it, and the state digest unchanged (nothing journaled)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from elbsupport import elb_client, elb_config, launch, public_image
from rawquery import StateProbe
from support import Server

L = [{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080}]
TCP = [{"Protocol": "TCP", "LoadBalancerPort": 9000, "InstanceProtocol": "TCP", "InstancePort": 9000}]
HC = {"Target": "HTTP:80/", "Interval": 10, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 2}


@pytest.fixture(scope="module")
def env(server_with: Any) -> dict[str, Any]:
    srv: Server = server_with(**elb_config())
    alice, bob = srv.create_user("alice"), srv.create_user("bob")
    elb, ec2 = elb_client(srv, alice, validate=False), srv.client(alice)
    inst = launch(ec2, public_image(ec2), 1)[0]["InstanceId"]
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]}
    foreign_group = srv.client(bob).create_security_group(GroupName="bobs", Description="b")["GroupId"]
    elb.create_load_balancer(LoadBalancerName="zoned", Listeners=[*L, *TCP], AvailabilityZones=["cloudctl-1a"])
    elb.create_load_balancer(LoadBalancerName="subnetted", Listeners=L, Subnets=[subnets["cloudctl-1a"]])
    elb.register_instances_with_load_balancer(LoadBalancerName="zoned", Instances=[{"InstanceId": inst}])
    elb.create_lb_cookie_stickiness_policy(LoadBalancerName="zoned", PolicyName="sticky")
    return {"srv": srv, "elb": elb, "inst": inst, "subnets": subnets, "foreign_group": foreign_group,
            "probe": StateProbe(srv.admin_url, srv.token)}


def _cases(inst: str, subnets: dict[str, str], foreign_group: str) -> list[tuple[str, str, dict[str, Any], str]]:
    a, b = subnets["cloudctl-1a"], subnets["cloudctl-1b"]
    z = {"LoadBalancerName": "zoned"}
    ghost = {"LoadBalancerName": "ghost"}
    return [
        ("create bad name", "create_load_balancer", {"LoadBalancerName": "-bad-", "Listeners": L,
                                                     "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create long name", "create_load_balancer", {"LoadBalancerName": "x" * 33, "Listeners": L,
                                                      "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create no listeners", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": [],
                                                         "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create bad protocol", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": [
            {**L[0], "Protocol": "FTP"}], "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create mixed layers", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": [
            {**L[0], "InstanceProtocol": "TCP"}], "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create port 0", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": [
            {**L[0], "LoadBalancerPort": 0}], "AvailabilityZones": ["cloudctl-1a"]}, "ValidationError"),
        ("create two listeners one port", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": [
            *L, {**L[0], "InstancePort": 81}], "AvailabilityZones": ["cloudctl-1a"]}, "DuplicateListener"),
        ("create no placement", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L}, "ValidationError"),
        ("create zones and subnets", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                              "AvailabilityZones": ["cloudctl-1a"], "Subnets": [a]},
         "ValidationError"),
        ("create unknown zone", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                         "AvailabilityZones": ["us-east-1a"]}, "ValidationError"),
        ("create unknown subnet", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                           "Subnets": ["subnet-0000dead"]}, "SubnetNotFound"),
        ("create foreign group", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                          "AvailabilityZones": ["cloudctl-1a"],
                                                          "SecurityGroups": [foreign_group]}, "InvalidSecurityGroup"),
        ("create bad scheme", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                       "AvailabilityZones": ["cloudctl-1a"], "Scheme": "public"},
         "ValidationError"),
        ("create repeated tag", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                         "AvailabilityZones": ["cloudctl-1a"],
                                                         "Tags": [{"Key": "k", "Value": "1"}, {"Key": "k"}]},
         "DuplicateTagKeys"),
        ("create 11 tags", "create_load_balancer", {"LoadBalancerName": "n", "Listeners": L,
                                                    "AvailabilityZones": ["cloudctl-1a"],
                                                    "Tags": [{"Key": f"k{i}"} for i in range(11)]}, "TooManyTags"),
        ("create existing", "create_load_balancer", {"LoadBalancerName": "zoned", "Listeners": L,
                                                     "AvailabilityZones": ["cloudctl-1a"]},
         "DuplicateLoadBalancerName"),
        ("delete bad name", "delete_load_balancer", {"LoadBalancerName": "a_b"}, "ValidationError"),
        ("describe unknown", "describe_load_balancers", {"LoadBalancerNames": ["ghost"]}, "LoadBalancerNotFound"),
        ("describe page 0", "describe_load_balancers", {"PageSize": 0}, "ValidationError"),
        ("listeners unknown lb", "create_load_balancer_listeners", {**ghost, "Listeners": L}, "LoadBalancerNotFound"),
        ("listeners clash", "create_load_balancer_listeners", {**z, "Listeners": [{**L[0], "InstancePort": 81}]},
         "DuplicateListener"),
        ("delete listeners unknown lb", "delete_load_balancer_listeners", {**ghost, "LoadBalancerPorts": [80]},
         "LoadBalancerNotFound"),
        ("register unknown instance", "register_instances_with_load_balancer",
         {**z, "Instances": [{"InstanceId": "i-0000000000000dead"}]}, "InvalidInstance"),
        ("register unknown lb", "register_instances_with_load_balancer", {**ghost, "Instances": [{"InstanceId": inst}]},
         "LoadBalancerNotFound"),
        ("deregister unregistered", "deregister_instances_from_load_balancer",
         {"LoadBalancerName": "subnetted", "Instances": [{"InstanceId": inst}]}, "InvalidInstance"),
        ("health unregistered", "describe_instance_health", {"LoadBalancerName": "subnetted",
                                                             "Instances": [{"InstanceId": inst}]}, "InvalidInstance"),
        ("health unknown lb", "describe_instance_health", ghost, "LoadBalancerNotFound"),
        ("check without path", "configure_health_check", {**z, "HealthCheck": {**HC, "Target": "HTTP:80"}},
         "ValidationError"),
        ("check bad port", "configure_health_check", {**z, "HealthCheck": {**HC, "Target": "TCP:0"}},
         "ValidationError"),
        ("check interval 1", "configure_health_check", {**z, "HealthCheck": {**HC, "Interval": 1}}, "ValidationError"),
        ("check timeout >= interval", "configure_health_check", {**z, "HealthCheck": {**HC, "Timeout": 10}},
         "ValidationError"),
        ("check threshold 11", "configure_health_check", {**z, "HealthCheck": {**HC, "HealthyThreshold": 11}},
         "ValidationError"),
        ("enable unknown zone", "enable_availability_zones_for_load_balancer", {**z, "AvailabilityZones": ["nope"]},
         "ValidationError"),
        ("disable every zone", "disable_availability_zones_for_load_balancer",
         {**z, "AvailabilityZones": ["cloudctl-1a"]}, "InvalidConfigurationRequest"),
        ("enable zone on subnets", "enable_availability_zones_for_load_balancer",
         {"LoadBalancerName": "subnetted", "AvailabilityZones": ["cloudctl-1b"]}, "InvalidConfigurationRequest"),
        ("attach subnets to zoned", "attach_load_balancer_to_subnets", {**z, "Subnets": [b]},
         "InvalidConfigurationRequest"),
        ("attach unknown subnet", "attach_load_balancer_to_subnets",
         {"LoadBalancerName": "subnetted", "Subnets": ["subnet-0000dead"]}, "SubnetNotFound"),
        ("detach last subnet", "detach_load_balancer_from_subnets", {"LoadBalancerName": "subnetted", "Subnets": [a]},
         "InvalidConfigurationRequest"),
        ("foreign group", "apply_security_groups_to_load_balancer", {**z, "SecurityGroups": [foreign_group]},
         "InvalidSecurityGroup"),
        ("attributes unknown lb", "describe_load_balancer_attributes", ghost, "LoadBalancerNotFound"),
        ("access log on", "modify_load_balancer_attributes", {**z, "LoadBalancerAttributes": {
            "AccessLog": {"Enabled": True, "S3BucketName": "b"}}}, "InvalidConfigurationRequest"),
        ("idle 0", "modify_load_balancer_attributes", {**z, "LoadBalancerAttributes": {
            "ConnectionSettings": {"IdleTimeout": 0}}}, "ValidationError"),
        ("unknown attribute", "modify_load_balancer_attributes", {**z, "LoadBalancerAttributes": {
            "AdditionalAttributes": [{"Key": "elb.nothing", "Value": "x"}]}}, "LoadBalancerAttributeNotFound"),
        ("reserved tag", "add_tags", {"LoadBalancerNames": ["zoned"], "Tags": [{"Key": "aws:x", "Value": "v"}]},
         "ValidationError"),
        ("tags unknown lb", "add_tags", {"LoadBalancerNames": ["ghost"], "Tags": [{"Key": "k"}]},
         "LoadBalancerNotFound"),
        ("untag unknown lb", "remove_tags", {"LoadBalancerNames": ["zoned", "ghost"], "Tags": [{"Key": "k"}]},
         "LoadBalancerNotFound"),
        ("describe 21 tags", "describe_tags", {"LoadBalancerNames": [f"n{i}" for i in range(21)]}, "ValidationError"),
        ("unknown policy type", "create_load_balancer_policy", {**z, "PolicyName": "p", "PolicyTypeName": "NoType"},
         "PolicyTypeNotFound"),
        ("policy twice", "create_load_balancer_policy", {**z, "PolicyName": "sticky",
                                                         "PolicyTypeName": "LBCookieStickinessPolicyType"},
         "DuplicatePolicyName"),
        ("policy bad attribute", "create_load_balancer_policy", {
            **z, "PolicyName": "p2", "PolicyTypeName": "AppCookieStickinessPolicyType",
            "PolicyAttributes": [{"AttributeName": "Bogus", "AttributeValue": "1"}]}, "InvalidConfigurationRequest"),
        ("describe unknown policy", "describe_load_balancer_policies", {**z, "PolicyNames": ["nope"]},
         "PolicyNotFound"),
        ("delete unknown policy", "delete_load_balancer_policy", {**z, "PolicyName": "nope"}, "PolicyNotFound"),
        ("unknown policy type name", "describe_load_balancer_policy_types", {"PolicyTypeNames": ["Nope"]},
         "PolicyTypeNotFound"),
        ("lb cookie bad name", "create_lb_cookie_stickiness_policy", {**z, "PolicyName": "a b"}, "ValidationError"),
        ("app cookie empty", "create_app_cookie_stickiness_policy", {**z, "PolicyName": "app", "CookieName": ""},
         "ValidationError"),
        ("policies unknown port", "set_load_balancer_policies_of_listener", {**z, "LoadBalancerPort": 81,
                                                                             "PolicyNames": []}, "ListenerNotFound"),
        ("policies unknown policy", "set_load_balancer_policies_of_listener",
         {**z, "LoadBalancerPort": 80, "PolicyNames": ["nope"]}, "PolicyNotFound"),
        ("sticky on tcp", "set_load_balancer_policies_of_listener", {**z, "LoadBalancerPort": 9000,
                                                                     "PolicyNames": ["sticky"]},
         "InvalidConfigurationRequest"),
    ]


_STATUS = {"LoadBalancerNotFound": 400, "InvalidConfigurationRequest": 409, "ValidationError": 400}


def test_every_action_has_bad_input_cases(env: dict[str, Any]) -> None:
    from cloudctl.api.elb.actions import REGISTRY
    named = {c[1] for c in _cases(env["inst"], env["subnets"], env["foreign_group"])}
    free = {"describe_account_limits"}   # nothing in its request can be wrong
    missing = {xform_name(a) for a in REGISTRY.actions} - free - named
    assert not missing, sorted(missing)


NAMES = [c[0] for c in _cases("i", {"cloudctl-1a": "a", "cloudctl-1b": "b"}, "g")]


@pytest.mark.parametrize("what", NAMES)
def test_bad_input_is_refused_and_changes_nothing(env: dict[str, Any], what: str) -> None:
    _, op, params, code = {c[0]: c for c in _cases(env["inst"], env["subnets"], env["foreign_group"])}[what]
    probe: StateProbe = env["probe"]
    before = probe.settle()
    call: Callable[..., Any] = getattr(env["elb"], op)
    with pytest.raises(ClientError) as e:
        call(**params)
    err = e.value.response["Error"]
    assert (err["Code"], err["Type"]) == (code, "Sender"), err
    assert err["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == _STATUS.get(code, 400), e.value.response
    assert probe.state() == before, f"{what}: the state moved"


def test_unknown_parameter_is_a_validation_error(env: dict[str, Any]) -> None:
    from rawquery import SignedQuery
    from support import REGION
    srv = env["srv"]
    user = srv.create_user("raw")
    q = SignedQuery(srv.endpoint, user, REGION, "elasticloadbalancing", "2012-06-01")
    try:
        status, body = q.send("DescribeLoadBalancers", [("Bogus", "1")])
        assert status == 400 and b"<Code>ValidationError</Code>" in body and b"<ErrorResponse" in body, body
        status, body = q.send("DescribeLoadBalancers", [])
        assert status == 200 and b"<DescribeLoadBalancersResult>" in body, body
    finally:
        q.close()
