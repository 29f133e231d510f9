"""The reconciler's decisions that the API cannot set up from outside, on an in-process cloud over
libvirt's test driver: an impaired host's instances replaced after the grace period (the host's
state written as the monitor writes it for a host that stopped answering), and the two seams to
the launch-template and classic load-balancer services through small stand-ins that keep the
contract (`TemplateSource`, `BalancerMembership`); test_autoscaling_elb.py drives the real ones."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from cloudctl.config import load_config
from cloudctl.core.autoscaling.groups import GroupInput
from cloudctl.core.autoscaling.launch_configs import LaunchConfigInput
from cloudctl.core.autoscaling.model import TemplateRef
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec

from support import write_config

ZONES = ("cloudctl-1a", "cloudctl-1b")


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    # A reconciler that ticks only when told (and when kicked): the test drives it.
    # (and a monitor that polls the hosts only at start: the tests write a failed host's state themselves)
    cfg = load_config(write_config(tmp_path, model_cache, autoscaling={"tick_s": 3600},
                                   monitor={"interval_s": 3600, "grace_s": 30, "timeout_s": 30}))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def converge(cloud: Cloud) -> None:
    await cloud.autoscaling.reconciler.tick()
    await cloud.compute.idle()


async def setup(cloud: Cloud, name: str = "g", **group: object) -> tuple[Caller, list[str]]:
    caller = Caller(await cloud.users.create("owner"))
    image = next(iter(cloud.images.table.values())).id
    a = cloud.autoscaling
    await a.launch_configs.create(caller, LaunchConfigInput(name="lc", image_id=image, instance_type="t3.nano"))
    spec = {"launch_configuration": "lc", "min_size": 0, "max_size": 4, "desired": 2, "zones": ZONES, **group}
    await a.groups.create(caller, GroupInput(name=name, **spec))  # type: ignore[arg-type]
    await converge(cloud)
    return caller, members(cloud, caller, name)


def members(cloud: Cloud, caller: Caller, name: str = "g") -> list[str]:
    return sorted(m.id for m in cloud.autoscaling.members.of_group(caller.account, name))


def fail_host(cloud: Cloud, host: str) -> None:
    """What the monitor records for a host whose polls fail: its instances turn impaired."""
    h = cloud.health.hosts[host]
    h.state, h.failing_since, h.error = "error", time.time(), "connection refused"


async def test_impaired_instances_are_replaced_after_the_grace_period(cloud: Cloud) -> None:
    caller, ids = await setup(cloud, grace_period=3600)
    hosts = {cloud.compute.table.get(i).host for i in ids}   # type: ignore[union-attr]
    assert hosts == {"host-a", "host-b"}   # (one per zone)
    fail_host(cloud, "host-a")
    await converge(cloud)
    assert members(cloud, caller) == ids   # within the grace period: kept
    await cloud.autoscaling.groups.update(caller, GroupInput(name="g", grace_period=0))
    await converge(cloud)
    now = members(cloud, caller)
    on_a = [i for i in ids if cloud.compute.table.get(i).host == "host-a"]   # type: ignore[union-attr]
    assert on_a and not set(on_a) & set(now) and len(now) == 2
    acts = cloud.autoscaling.activities.of_group(caller.account, "g")
    assert any("EC2 instance status check failure" in a.cause and a.status == "Successful" for a in acts)
    assert cloud.compute.table.get(on_a[0]).state in ("shutting-down", "terminated")   # type: ignore[union-attr]


async def test_suspended_health_check_keeps_impaired_instances(cloud: Cloud) -> None:
    caller, ids = await setup(cloud)
    await cloud.autoscaling.groups.suspend(caller, "g", ["HealthCheck"], True)
    fail_host(cloud, "host-a")
    await converge(cloud)
    assert members(cloud, caller) == ids


class Balancers:
    """A stand-in for the classic ELB service's side of the seam: which instances are registered
    with which load balancer, and the health it reports."""

    def __init__(self, names: Sequence[str]) -> None:
        self.registered: dict[str, set[str]] = {n: set() for n in names}
        self.states: dict[str, str] = {}
        self.log: list[tuple[str, str, str]] = []

    def exists(self, account: str, name: str) -> bool:
        return name in self.registered

    async def register(self, account: str, name: str, instance_ids: Sequence[str]) -> None:
        self.registered[name] |= set(instance_ids)
        self.log += [("register", name, i) for i in instance_ids]

    async def deregister(self, account: str, name: str, instance_ids: Sequence[str]) -> None:
        self.registered[name] -= set(instance_ids)
        self.log += [("deregister", name, i) for i in instance_ids]

    def health(self, account: str, name: str) -> Mapping[str, str]:
        return {i: self.states.get(i, "InService") for i in self.registered[name]}


async def test_load_balancers_register_deregister_and_elb_health(cloud: Cloud) -> None:
    lbs = Balancers(["web", "api"])
    cloud.autoscaling.connect(cloud.launch_templates, lbs)
    caller, ids = await setup(cloud, load_balancers=("web",), health_check_type="ELB")
    assert lbs.registered["web"] == set(ids)
    lbs.states[ids[0]] = "OutOfService"
    await converge(cloud)
    now = members(cloud, caller)
    assert ids[0] not in now and len(now) == 2
    assert ("deregister", "web", ids[0]) in lbs.log
    assert lbs.registered["web"] == set(now)   # the replacement registered
    acts = cloud.autoscaling.activities.of_group(caller.account, "g")
    assert any("ELB system health check failure" in a.cause for a in acts)
    await cloud.autoscaling.groups.attach_balancers(caller, "g", ["api"])
    assert lbs.registered["api"] == set(now)
    await cloud.autoscaling.groups.detach_balancers(caller, "g", ["web"])
    assert lbs.registered["web"] == set()
    with pytest.raises(CloudError) as e:
        await cloud.autoscaling.groups.attach_balancers(caller, "g", ["nope"])
    assert e.value.code == "ValidationError" and "nope" in e.value.message
    await cloud.autoscaling.groups.delete(caller, "g", force=True)
    await converge(cloud)
    assert lbs.registered["api"] == set() and cloud.autoscaling.groups.get(caller.account, "g") is None


class Templates:
    """A stand-in for the launch-template service's side of the seam."""

    def __init__(self, image: str) -> None:
        self.image = image

    def launch_spec(self, account: str, template_id: str | None, name: str | None,
                    version: str | None) -> LaunchSpec:
        if name != "tmpl" and template_id != "lt-0123456789abcdef0":
            raise CloudError.not_found("InvalidLaunchTemplateName.NotFoundException",
                                       f"The specified launch template, with template name {name}, does not exist.")
        return LaunchSpec(image_id=self.image, instance_type="t3.micro" if version != "1" else "t3.small",
                          instance_tags=(("from", "template"),))


async def test_groups_launch_from_a_launch_template(cloud: Cloud) -> None:
    image = next(iter(cloud.images.table.values())).id
    cloud.autoscaling.connect(Templates(image), cloud.elb)
    caller = Caller(await cloud.users.create("owner"))
    groups = cloud.autoscaling.groups
    with pytest.raises(CloudError) as e:
        await groups.create(caller, GroupInput(name="g", template=TemplateRef(None, "nope", None), min_size=0,
                                               max_size=2, zones=ZONES))
    assert e.value.code == "ValidationError" and "does not exist" in e.value.message
    await groups.create(caller, GroupInput(name="g", template=TemplateRef(None, "tmpl", "$Latest"), min_size=2,
                                           max_size=2, zones=ZONES, tags=(("env", "prod", True),)))
    await converge(cloud)
    ids = members(cloud, caller)
    assert len(ids) == 2
    for i in ids:
        assert cloud.compute.table.get(i).instance_type == "t3.micro"   # type: ignore[union-attr]
        tags = cloud.tags.of(i)
        assert tags["from"] == "template" and tags["env"] == "prod" and tags["aws:autoscaling:groupName"] == "g"
        assert cloud.autoscaling.members.get(i).template == "\x1ftmpl\x1f$Latest"   # type: ignore[union-attr]
    # a new template version: the old instances go first on scale-in (Default policy)
    await groups.update(caller, GroupInput(name="g", template=TemplateRef(None, "tmpl", "1"), max_size=3, desired=3))
    await converge(cloud)
    new = set(members(cloud, caller)) - set(ids)
    assert [cloud.compute.table.get(i).instance_type for i in new] == ["t3.small"]   # type: ignore[union-attr]
    await groups.update(caller, GroupInput(name="g", desired=1, min_size=1))
    await converge(cloud)
    assert set(members(cloud, caller)) == new


async def test_naming_what_the_account_lacks_is_refused(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("owner"))
    for spec, words in ((GroupInput(name="g", template=TemplateRef(None, "tmpl", None), min_size=0, max_size=1,
                                    zones=ZONES), "tmpl"),
                        (GroupInput(name="g", launch_configuration=None, template=None, min_size=0, max_size=1,
                                    zones=ZONES), "LaunchConfigurationName")):
        before = cloud.store.digest()
        with pytest.raises(CloudError) as e:
            await cloud.autoscaling.groups.create(caller, spec)
        assert e.value.code == "ValidationError" and words in e.value.message
        assert cloud.store.digest() == before
