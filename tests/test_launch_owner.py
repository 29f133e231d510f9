"""`LaunchSpec.owner`: whom a launch is for. A caller launches only for its own account; the cloud's
own services (HIL headnodes, later AutoScaling and CloudFormation) launch for the account they name,
with that account's key pairs, groups and quotas, and its ClientTokens."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError, ErrorKind
from cloudctl.core.launch import LaunchSpec

from support import write_config


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


def spec(cloud: Cloud, **extra: object) -> LaunchSpec:
    image = next(iter(cloud.images.table.values()))
    return LaunchSpec(image.id, instance_type="t3.nano", **extra)  # type: ignore[arg-type]


async def test_a_user_launches_only_for_itself(cloud: Cloud) -> None:
    alice, bob = Caller(await cloud.users.create("alice")), Caller(await cloud.users.create("bob"))
    _, (mine,) = await cloud.compute.run(alice, spec(cloud, owner=alice.account))
    assert mine.owner == alice.account
    with pytest.raises(CloudError) as e:
        await cloud.compute.run(alice, spec(cloud, owner=bob.account))
    assert (e.value.kind, e.value.code) == (ErrorKind.AUTH, "UnauthorizedOperation")
    assert {i.owner for i in cloud.compute.table.values()} == {alice.account}


async def test_a_cloud_service_launches_for_the_account_it_names(cloud: Cloud) -> None:
    bob = Caller(await cloud.users.create("bob"))
    service = Caller.service("autoscaling")
    # the owner's own key pair: the launch acts as bob, not as the service
    await cloud.keypairs.create(bob, "bobs-key", None, None)
    res, (inst,) = await cloud.compute.run(service, spec(cloud, owner=bob.account, key_name="bobs-key",
                                                         client_token="t1"))
    assert (inst.owner, res.owner, inst.key_name) == (bob.account, bob.account, "bobs-key")
    # the token is bob's: his own retry of the same launch (naming no owner) is the same reservation
    again, _ = await cloud.compute.run(bob, spec(cloud, key_name="bobs-key", client_token="t1"))
    assert again.id == res.id
    with pytest.raises(CloudError) as e:
        await cloud.compute.run(service, spec(cloud, owner=bob.account, client_token="t1"))
    assert e.value.code == "IdempotentParameterMismatch"


@pytest.mark.parametrize("owner, kind, code", [
    (None, ErrorKind.INVALID, "InvalidParameterValue"),          # a service owns nothing itself
    ("123456789012", ErrorKind.NOT_FOUND, "InvalidUserID.NotFound"),
])
async def test_a_service_launch_needs_a_real_owner(cloud: Cloud, owner: str | None, kind: ErrorKind,
                                                   code: str) -> None:
    with pytest.raises(CloudError) as e:
        await cloud.compute.run(Caller.service("autoscaling"), spec(cloud, owner=owner))
    assert (e.value.kind, e.value.code) == (kind, code)
    assert len(cloud.compute.table) == 0 and len(cloud.compute.reservations) == 0


def test_the_owner_is_not_part_of_the_request_hash() -> None:
    assert LaunchSpec("ami-1").request_hash() == LaunchSpec("ami-1", owner="123456789012").request_hash()
