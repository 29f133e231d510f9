"""Classic Elastic Load Balancing on the EC2 listener, driven by the AWS CLI and boto3, served
by real HAProxy proxies in loopback placement in front of HTTP servers standing in for the
instances (elbsupport.py: the guests' addresses are loopback addresses the test binds)."""
from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from elbsupport import Backend, answers, aws, elb_client, elb_config, get, launch, public_image, refuses, wait_health
from support import Server, wait_until

LISTENER = {"Protocol": "HTTP", "LoadBalancerPort": 8000, "InstanceProtocol": "HTTP", "InstancePort": 8080}
FAST_CHECK = {"Target": "HTTP:8080/", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2}


@contextmanager
def serving(elb: Any, name: str, ids: list[str]) -> Iterator[str]:
    """A balancer on LISTENER in front of `ids`, checked fast, all of them InService: its DNSName;
    deleted afterwards."""
    dns = elb.create_load_balancer(LoadBalancerName=name, Listeners=[LISTENER],
                                   AvailabilityZones=["cloudctl-1a"])["DNSName"]
    try:
        elb.configure_health_check(LoadBalancerName=name, HealthCheck=FAST_CHECK)
        elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": i} for i in ids])
        wait_health(elb, name, {i: "InService" for i in ids})
        yield dns
    finally:
        elb.delete_load_balancer(LoadBalancerName=name)


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    return server_with(**elb_config())


@pytest.fixture(scope="module")
def users(srv: Server) -> dict[str, dict[str, str]]:
    return {"alice": srv.create_user("alice"), "bob": srv.create_user("bob")}


@pytest.fixture(scope="module")
def alice(users: dict[str, dict[str, str]]) -> dict[str, str]:
    return users["alice"]


@pytest.fixture(scope="module")
def elb(srv: Server, alice: dict[str, str]) -> Any:
    return elb_client(srv, alice)


@pytest.fixture(scope="module")
def ec2(srv: Server, alice: dict[str, str]) -> Any:
    return srv.client(alice)


@pytest.fixture(scope="module")
def web(ec2: Any) -> Iterator[list[tuple[dict[str, Any], Backend]]]:
    """Two running instances, each with an HTTP server on its address answering its id."""
    insts = launch(ec2, public_image(ec2), 2)
    backends = [(i, Backend(i["PrivateIpAddress"], 8080, i["InstanceId"])) for i in insts]
    yield backends
    for _, b in backends:
        b.close()


def _code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_aws_cli_workflow_serves_traffic_and_follows_health(srv: Server, alice: dict[str, str], elb: Any,
                                                             web: list[tuple[dict[str, Any], Backend]]) -> None:
    (a, back_a), (b, _) = web
    ids = [a["InstanceId"], b["InstanceId"]]
    made = aws(srv, alice, "elb", "create-load-balancer", "--load-balancer-name", "cli-web", "--listeners",
               "Protocol=HTTP,LoadBalancerPort=8000,InstanceProtocol=HTTP,InstancePort=8080",
               "--availability-zones", "cloudctl-1a")
    dns = made["DNSName"]
    desc = aws(srv, alice, "elb", "describe-load-balancers", "--load-balancer-names", "cli-web")
    lb = desc["LoadBalancerDescriptions"][0]
    assert (lb["DNSName"], lb["AvailabilityZones"], lb["Instances"]) == (dns, ["cloudctl-1a"], [])
    assert lb["HealthCheck"]["Target"] == "TCP:8080"   # ELB's default: the first listener's instance port
    reg = aws(srv, alice, "elb", "register-instances-with-load-balancer", "--load-balancer-name", "cli-web",
              "--instances", *ids)
    assert [i["InstanceId"] for i in reg["Instances"]] == ids
    aws(srv, alice, "elb", "configure-health-check", "--load-balancer-name", "cli-web", "--health-check",
        "Target=HTTP:8080/,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2")
    wait_health(elb, "cli-web", {i: "InService" for i in ids})
    got = answers(dns, 8000, 20)
    assert set(got) == set(ids), got                     # both instances get traffic through the proxy
    cli_health = aws(srv, alice, "elb", "describe-instance-health", "--load-balancer-name", "cli-web")
    assert {(s["InstanceId"], s["State"], s["ReasonCode"]) for s in cli_health["InstanceStates"]} == \
        {(i, "InService", "N/A") for i in ids}

    back_a.close()   # instance a's web server dies: the proxy's checks take it out
    try:
        states = wait_health(elb, "cli-web", {ids[0]: "OutOfService", ids[1]: "InService"})
        assert states[ids[0]][1:] == ("Instance", "Instance has failed at least the UnhealthyThreshold number "
                                                  "of health checks consecutively.")
        assert set(answers(dns, 8000, 10)) == {ids[1]}
    finally:
        web[0] = (a, Backend(a["PrivateIpAddress"], 8080, a["InstanceId"]))
    wait_health(elb, "cli-web", {i: "InService" for i in ids})
    aws(srv, alice, "elb", "deregister-instances-from-load-balancer", "--load-balancer-name", "cli-web",
        "--instances", ids[1])
    wait_until(lambda: set(answers(dns, 8000, 6)) == {ids[0]}, 30, "traffic to the one still registered")
    aws(srv, alice, "elb", "delete-load-balancer", "--load-balancer-name", "cli-web")
    wait_until(lambda: refuses(dns, 8000), 30, "the proxy gone with its load balancer")
    with pytest.raises(AssertionError, match="LoadBalancerNotFound"):
        aws(srv, alice, "elb", "describe-load-balancers", "--load-balancer-names", "cli-web")


def test_listener_changes_reach_the_proxy(elb: Any, web: list[tuple[dict[str, Any], Backend]]) -> None:
    ids = [i["InstanceId"] for i, _ in web]
    with serving(elb, "listeners", ids) as dns:
        wait_until(lambda: set(answers(dns, 8000, 10)) == set(ids), 30, "traffic on 8000")
        elb.create_load_balancer_listeners(LoadBalancerName="listeners", Listeners=[
            {"Protocol": "TCP", "LoadBalancerPort": 8001, "InstanceProtocol": "TCP", "InstancePort": 8080}])
        wait_until(lambda: set(answers(dns, 8001, 10)) == set(ids), 30, "traffic on the new TCP listener 8001")
        elb.delete_load_balancer_listeners(LoadBalancerName="listeners", LoadBalancerPorts=[8000])
        wait_until(lambda: refuses(dns, 8000), 30, "listener 8000 gone")
        assert set(answers(dns, 8001, 4)) <= set(ids)
        listeners = elb.describe_load_balancers(LoadBalancerNames=["listeners"])["LoadBalancerDescriptions"][0][
            "ListenerDescriptions"]
        assert [x["Listener"]["LoadBalancerPort"] for x in listeners] == [8001]


def test_stickiness_policies_are_haproxy_cookies(elb: Any, web: list[tuple[dict[str, Any], Backend]]) -> None:
    ids = [i["InstanceId"] for i, _ in web]
    with serving(elb, "sticky", ids) as dns:
        elb.create_lb_cookie_stickiness_policy(LoadBalancerName="sticky", PolicyName="lbc",
                                               CookieExpirationPeriod=300)
        elb.create_app_cookie_stickiness_policy(LoadBalancerName="sticky", PolicyName="appc", CookieName="SESS")
        elb.set_load_balancer_policies_of_listener(LoadBalancerName="sticky", LoadBalancerPort=8000,
                                                   PolicyNames=["lbc"])
        d = elb.describe_load_balancers(LoadBalancerNames=["sticky"])["LoadBalancerDescriptions"][0]
        assert d["ListenerDescriptions"][0]["PolicyNames"] == ["lbc"]
        assert d["Policies"]["LBCookieStickinessPolicies"] == [{"PolicyName": "lbc", "CookieExpirationPeriod": 300}]
        assert d["Policies"]["AppCookieStickinessPolicies"] == [{"PolicyName": "appc", "CookieName": "SESS"}]

        def cookie() -> str | None:
            try:
                status, _, headers = get(dns, 8000)
            except OSError:   # (the proxy not started yet)
                return None
            return headers.get("set-cookie") if status == 200 else None
        set_cookie = wait_until(cookie, 30, "the proxy setting its stickiness cookie")
        assert set_cookie.startswith("AWSELB=")
        pinned = set_cookie.split(";")[0]
        first = get(dns, 8000, headers={"Cookie": pinned})[1]
        assert first in ids
        assert {get(dns, 8000, headers={"Cookie": pinned})[1] for _ in range(8)} == {first}   # stuck to one

        with pytest.raises(ClientError) as e:
            elb.delete_load_balancer_policy(LoadBalancerName="sticky", PolicyName="lbc")
        assert _code(e) == "InvalidConfigurationRequest"
        elb.set_load_balancer_policies_of_listener(LoadBalancerName="sticky", LoadBalancerPort=8000, PolicyNames=[])
        elb.delete_load_balancer_policy(LoadBalancerName="sticky", PolicyName="lbc")
        wait_until(lambda: "set-cookie" not in get(dns, 8000)[2], 30, "no cookie once the policy is off")
        names = [p["PolicyName"] for p in elb.describe_load_balancer_policies(LoadBalancerName="sticky")
                 ["PolicyDescriptions"]]
        assert names == ["appc"]


def test_every_other_action_round_trips(srv: Server, elb: Any, ec2: Any) -> None:
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]}
    group = ec2.create_security_group(GroupName="lb-sg", Description="for the load balancer")["GroupId"]
    made = elb.create_load_balancer(LoadBalancerName="vpc-lb", Listeners=[LISTENER], Subnets=[subnets["cloudctl-1a"]],
                                    SecurityGroups=[group], Scheme="internal", Tags=[{"Key": "team", "Value": "web"}])
    assert re.fullmatch(r"127\.\d+\.\d+\.\d+", made["DNSName"])
    d = elb.describe_load_balancers(LoadBalancerNames=["vpc-lb"])["LoadBalancerDescriptions"][0]
    assert (d["Scheme"], d["Subnets"], d["AvailabilityZones"], d["SecurityGroups"]) == \
        ("internal", [subnets["cloudctl-1a"]], ["cloudctl-1a"], [group])
    assert d["VPCId"] == ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    assert d["SourceSecurityGroup"]["GroupName"] == "lb-sg"

    assert elb.attach_load_balancer_to_subnets(LoadBalancerName="vpc-lb", Subnets=[subnets["cloudctl-1b"]])[
        "Subnets"] == [subnets["cloudctl-1a"], subnets["cloudctl-1b"]]
    assert elb.detach_load_balancer_from_subnets(LoadBalancerName="vpc-lb", Subnets=[subnets["cloudctl-1a"]])[
        "Subnets"] == [subnets["cloudctl-1b"]]
    other = ec2.create_security_group(GroupName="lb-sg2", Description="second")["GroupId"]
    assert elb.apply_security_groups_to_load_balancer(LoadBalancerName="vpc-lb", SecurityGroups=[other])[
        "SecurityGroups"] == [other]

    attrs = elb.describe_load_balancer_attributes(LoadBalancerName="vpc-lb")["LoadBalancerAttributes"]
    assert attrs["CrossZoneLoadBalancing"] == {"Enabled": False}
    assert attrs["ConnectionSettings"] == {"IdleTimeout": 60} and attrs["AccessLog"]["Enabled"] is False
    changed = elb.modify_load_balancer_attributes(LoadBalancerName="vpc-lb", LoadBalancerAttributes={
        "CrossZoneLoadBalancing": {"Enabled": True}, "ConnectionDraining": {"Enabled": True, "Timeout": 30},
        "ConnectionSettings": {"IdleTimeout": 120}})["LoadBalancerAttributes"]
    assert changed["ConnectionDraining"] == {"Enabled": True, "Timeout": 30}
    again = elb.describe_load_balancer_attributes(LoadBalancerName="vpc-lb")["LoadBalancerAttributes"]
    assert (again["CrossZoneLoadBalancing"], again["ConnectionSettings"]) == ({"Enabled": True}, {"IdleTimeout": 120})

    elb.add_tags(LoadBalancerNames=["vpc-lb"], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "ops"}])
    elb.remove_tags(LoadBalancerNames=["vpc-lb"], Tags=[{"Key": "env"}])
    tags = elb.describe_tags(LoadBalancerNames=["vpc-lb"])["TagDescriptions"]
    assert tags == [{"LoadBalancerName": "vpc-lb", "Tags": [{"Key": "team", "Value": "ops"}]}]

    types = elb.describe_load_balancer_policy_types()["PolicyTypeDescriptions"]
    assert {t["PolicyTypeName"] for t in types} == {"AppCookieStickinessPolicyType", "LBCookieStickinessPolicyType"}
    one = elb.describe_load_balancer_policy_types(PolicyTypeNames=["AppCookieStickinessPolicyType"])
    assert one["PolicyTypeDescriptions"][0]["PolicyAttributeTypeDescriptions"][0]["AttributeName"] == "CookieName"
    elb.create_load_balancer_policy(LoadBalancerName="vpc-lb", PolicyName="generic",
                                    PolicyTypeName="LBCookieStickinessPolicyType",
                                    PolicyAttributes=[{"AttributeName": "CookieExpirationPeriod",
                                                       "AttributeValue": "60"}])
    pol = elb.describe_load_balancer_policies(LoadBalancerName="vpc-lb", PolicyNames=["generic"])
    assert pol["PolicyDescriptions"] == [{"PolicyName": "generic", "PolicyTypeName": "LBCookieStickinessPolicyType",
                                          "PolicyAttributeDescriptions": [{"AttributeName": "CookieExpirationPeriod",
                                                                           "AttributeValue": "60"}]}]
    assert elb.describe_load_balancer_policies()["PolicyDescriptions"] == []
    elb.delete_load_balancer_policy(LoadBalancerName="vpc-lb", PolicyName="generic")

    zoned = elb.create_load_balancer(LoadBalancerName="zoned", Listeners=[LISTENER], AvailabilityZones=["cloudctl-1a"])
    assert zoned["DNSName"] != made["DNSName"]
    assert elb.enable_availability_zones_for_load_balancer(LoadBalancerName="zoned", AvailabilityZones=[
        "cloudctl-1b"])["AvailabilityZones"] == ["cloudctl-1a", "cloudctl-1b"]
    assert elb.disable_availability_zones_for_load_balancer(LoadBalancerName="zoned", AvailabilityZones=[
        "cloudctl-1a"])["AvailabilityZones"] == ["cloudctl-1b"]
    hc = elb.configure_health_check(LoadBalancerName="zoned", HealthCheck={**FAST_CHECK, "Target": "http:8080/ok"})
    assert hc["HealthCheck"]["Target"] == "HTTP:8080/ok"

    page = elb.describe_load_balancers(PageSize=1)
    assert len(page["LoadBalancerDescriptions"]) == 1 and page["NextMarker"]
    rest = elb.describe_load_balancers(Marker=page["NextMarker"])["LoadBalancerDescriptions"]
    assert {x["LoadBalancerName"] for x in [*page["LoadBalancerDescriptions"], *rest]} >= {"vpc-lb", "zoned"}
    limits = {x["Name"]: x["Max"] for x in elb.describe_account_limits()["Limits"]}
    assert limits["classic-load-balancers"] == "20"

    elb.delete_load_balancer(LoadBalancerName="vpc-lb")
    elb.delete_load_balancer(LoadBalancerName="zoned")
    elb.delete_load_balancer(LoadBalancerName="zoned")   # deleting what is gone succeeds, as in ELB
    assert not [x for x in elb.describe_load_balancers()["LoadBalancerDescriptions"]
                if x["LoadBalancerName"] in ("vpc-lb", "zoned")]


def test_users_are_isolated(srv: Server, users: dict[str, dict[str, str]], elb: Any,
                            web: list[tuple[dict[str, Any], Backend]]) -> None:
    bob = elb_client(srv, users["bob"])
    elb.create_load_balancer(LoadBalancerName="mine", Listeners=[LISTENER], AvailabilityZones=["cloudctl-1a"])
    try:
        assert "mine" not in {x["LoadBalancerName"] for x in bob.describe_load_balancers()["LoadBalancerDescriptions"]}
        for call in (lambda: bob.describe_load_balancers(LoadBalancerNames=["mine"]),
                     lambda: bob.describe_instance_health(LoadBalancerName="mine"),
                     lambda: bob.describe_tags(LoadBalancerNames=["mine"]),
                     lambda: bob.register_instances_with_load_balancer(LoadBalancerName="mine", Instances=[
                         {"InstanceId": web[0][0]["InstanceId"]}])):
            with pytest.raises(ClientError) as e:
                call()
            assert _code(e) == "LoadBalancerNotFound"
        bob.create_load_balancer(LoadBalancerName="mine", Listeners=[LISTENER], AvailabilityZones=["cloudctl-1a"])
        with pytest.raises(ClientError) as e:   # alice's instance is nothing bob may register
            bob.register_instances_with_load_balancer(LoadBalancerName="mine", Instances=[
                {"InstanceId": web[0][0]["InstanceId"]}])
        assert _code(e) == "InvalidInstance"
        bob.delete_load_balancer(LoadBalancerName="mine")
        assert elb.describe_load_balancers(LoadBalancerNames=["mine"])["LoadBalancerDescriptions"][0]["Instances"] == []
    finally:
        elb.delete_load_balancer(LoadBalancerName="mine")


def test_metrics_show_each_load_balancer(srv: Server, elb: Any, web: list[tuple[dict[str, Any], Backend]]) -> None:
    ids = [i["InstanceId"] for i, _ in web]
    with serving(elb, "metered", ids) as dns:
        assert len(answers(dns, 8000, 5)) == 5

        def series() -> dict[str, float]:
            with urllib.request.urlopen(srv.admin_url + "/metrics", timeout=10) as r:
                text = r.read().decode()
            found = re.finditer(r"^(cloudctl_elb_\w+)\{([^}]*)\} (\S+)$", text, re.M)
            return {m.group(1): float(m.group(3)) for m in found
                    if f'address="{dns}"' in m.group(2) and re.search(r'load_balancer="elb-[0-9a-f]+"', m.group(2))}
        got = wait_until(lambda: (s := series()).get("cloudctl_elb_requests_total", 0) >= 5 and s, 30,
                         "the proxy's request count on /metrics")
        assert got["cloudctl_elb_healthy_hosts"] == 2 and got["cloudctl_elb_unhealthy_hosts"] == 0
        assert "cloudctl_elb_backend_errors_total" in got
