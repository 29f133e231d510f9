"""A load balancer is a member of its security groups: an instance rule naming one of them admits
the load balancer's address (in the filter the hypervisor host is given), from the moment the
load balancer joins the group until it leaves it or is deleted. In-process on `test:///`, with
real HAProxy in loopback placement."""
from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.elb.model import ListenerDef
from cloudctl.core.errors import CloudError
from cloudctl.core.sg_permissions import GroupPeer, IpRange, Permission, RuleChange
from cloudctl.drivers.hypervisor.base import FirewallRule
from cloudctl.drivers.loadbalancer.base import IngressRule

from support import write_config
from test_ec2_security_groups import applied, launch

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package)")


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    cfg = load_config(write_config(tmp_path, model_cache, terminated_visible_s=0))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def settle(cloud: Cloud) -> None:
    await cloud.compute.idle()
    await cloud.elb.plane.idle()


async def test_an_instance_rule_naming_the_balancers_group_admits_it(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    sg = cloud.security_groups
    a = (await sg.create(caller, "lb", "for the load balancer")).id
    b = (await sg.create(caller, "web", "for the instances")).id
    other = (await sg.create(caller, "other", "another")).id
    await sg.authorize(caller, RuleChange(False, b, permissions=(
        Permission("tcp", 80, 80, peers=(GroupPeer(a),)),)))
    web = await launch(cloud, caller, [b])
    assert applied(cloud, web).ingress == ()          # group A has no member yet

    lb = await cloud.elb.create(caller, "web", [ListenerDef("HTTP", 80, "HTTP", 80)], [cloud.elb.zones[0]],
                                [], [other], None, [])
    await settle(cloud)
    assert applied(cloud, web).ingress == ()          # in another group: not admitted

    await cloud.elb.apply_security_groups(caller, "web", [a, other])
    await settle(cloud)
    assert applied(cloud, web).ingress == (FirewallRule("tcp", 80, 80, (lb.address,)),)
    assert sg.member_ips(a) == [lb.address]
    # a group a load balancer is in cannot be deleted (EC2's DependencyViolation)
    assert sg.in_use_by(other) == [lb.id]
    with pytest.raises(CloudError, match="DependencyViolation"):
        await sg.delete(caller, other, None)
    # its own ingress (what a bridged proxy's filter admits): its groups' rules, peers expanded
    await sg.authorize(caller, RuleChange(False, a, permissions=(
        Permission("tcp", 80, 80, ranges=(IpRange("10.0.0.0/8"),)),
        Permission("tcp", 443, 443, peers=(GroupPeer(b),)))))
    await settle(cloud)
    row = cloud.elb.get(caller, "web")
    web_ip = cloud.compute.table.get(web).private_ip
    assert cloud.elb.ingress(row) == (IngressRule("tcp", 80, 80, ("10.0.0.0/8",)),
                                      IngressRule("tcp", 443, 443, (web_ip,)))
    # its proxy listens on loopback: its own groups are not enforced there (documented)
    assert cloud.elb.plane.spec(row).ingress is None

    await cloud.elb.apply_security_groups(caller, "web", [other])
    await settle(cloud)
    assert applied(cloud, web).ingress == ()          # it left group A

    await cloud.elb.apply_security_groups(caller, "web", [a])
    await settle(cloud)
    assert applied(cloud, web).ingress == (FirewallRule("tcp", 80, 80, (lb.address,)),)
    await cloud.elb.delete(caller, "web")
    await settle(cloud)
    assert applied(cloud, web).ingress == ()          # deleted: no longer a member
    assert sg.member_ips(a) == [] and sg.in_use_by(a) == []
    await sg.delete(caller, other, None)              # no longer in use


async def test_membership_comes_back_after_a_restart(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    caller = Caller(await c.users.create("u"))
    a = (await c.security_groups.create(caller, "lb", "l")).id
    b = (await c.security_groups.create(caller, "web", "w")).id
    await c.security_groups.authorize(caller, RuleChange(False, b, permissions=(
        Permission("tcp", 80, 80, peers=(GroupPeer(a),)),)))
    lb = await c.elb.create(caller, "web", [ListenerDef("HTTP", 80, "HTTP", 80)], [c.elb.zones[0]], [], [a], None, [])
    web = await launch(c, caller, [b])
    await c.stop()
    c2 = await Cloud.open(cfg, "http://127.0.0.1:0")   # memberships rebuilt from the journal
    try:
        await settle(c2)
        assert applied(c2, web).ingress == (FirewallRule("tcp", 80, 80, (lb.address,)),)
    finally:
        await c2.stop()
