"""The load balancers' seam for the cloud's own services (AutoScaling): `cloud.elb.exists`,
`register`, `deregister` and `health`, in process over a real HAProxy, with an HTTP server on the
instance's (loopback) address standing in for the guest; and instance state reaching the proxy."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.elb.model import HealthCheckDef, ListenerDef
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec

from elbsupport import Backend, elb_config
from support import write_config


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    cfg = load_config(write_config(tmp_path, model_cache, **elb_config()))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def until(pred: Any, timeout: float = 60.0) -> Any:
    """Poll `pred` on the loop (the supervision rounds run meanwhile)."""
    for _ in range(int(timeout / 0.05)):
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def launch(cloud: Cloud, caller: Caller, n: int) -> list[Any]:
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(caller, LaunchSpec(image.id, n, n, instance_type="t3.nano",
                                                          zone="cloudctl-1a"))
    await cloud.compute.idle()
    return [cloud.compute.table.get(i.id) for i in insts]


async def test_the_autoscaling_seam(cloud: Cloud) -> None:
    alice, bob = Caller(await cloud.users.create("alice")), Caller(await cloud.users.create("bob"))
    mine, theirs = (await launch(cloud, alice, 2)), (await launch(cloud, bob, 1))
    await cloud.elb.create(alice, "group-lb", [ListenerDef.of("HTTP", 8000, "HTTP", 8080)], ["cloudctl-1a"], [], [],
                           None, [])
    await cloud.elb.configure_health_check(alice, "group-lb", HealthCheckDef("HTTP:8080/", 5, 2, 2, 2))
    elb = cloud.elb
    assert elb.exists(alice.account, "group-lb") and not elb.exists(bob.account, "group-lb")
    assert not elb.exists(alice.account, "nope")

    await elb.register(alice.account, "group-lb", [mine[0].id, theirs[0].id, "i-0000000000000dead"])
    assert elb.get(alice, "group-lb").instances == (mine[0].id,)   # another account's and a gone one: skipped
    assert elb.health(alice.account, "group-lb") == {mine[0].id: "Unknown"}   # not judged yet
    web = Backend(mine[0].private_ip, 8080, mine[0].id)
    try:
        await until(lambda: elb.health(alice.account, "group-lb") == {mine[0].id: "InService"})
        await elb.register(alice.account, "group-lb", [mine[1].id])   # no server there: it fails its checks
        await until(lambda: elb.health(alice.account, "group-lb") == {mine[0].id: "InService",
                                                                      mine[1].id: "OutOfService"})
        await cloud.compute.stop(alice, [mine[0].id])
        await cloud.compute.idle()
        state = await until(lambda: [h for h in elb.instance_health(alice, "group-lb", [mine[0].id])
                                     if h.state == "OutOfService"])
        assert (state[0].reason, state[0].description) == ("Instance", "Instance is in stopped state.")
        spec = await until(lambda: elb.plane.applied.get(elb.get(alice, "group-lb").id))
        await until(lambda: [b.name for b in elb.plane.applied[spec.name].backends] == [mine[1].id])
    finally:
        web.close()
    await elb.deregister(alice.account, "group-lb", [mine[0].id, mine[1].id])
    assert elb.health(alice.account, "group-lb") == {}
    await elb.deregister(alice.account, "gone-lb", [mine[0].id])   # a load balancer gone meanwhile: no error
    with pytest.raises(CloudError) as e:
        await elb.register(bob.account, "group-lb", [theirs[0].id])
    assert e.value.code == "LoadBalancerNotFound"
    with pytest.raises(CloudError):
        elb.health(bob.account, "group-lb")
