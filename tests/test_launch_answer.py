"""RunInstances' answer (`launch_view`: views rendered afresh, whole when small) and a small
describe's (`small_reservation_view`: kept fragments, whole) are byte for byte the text the
describe's sliced path (`reservation_view`: kept fragments, slices) gives the same rows."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudctl.api.ec2.actions.instances import (
    WHOLE_DESCRIBE,
    WHOLE_LAUNCH,
    launch_view,
    reservation_view,
    small_reservation_view,
)
from cloudctl.api.ec2.model import OPERATIONS, load_model
from cloudctl.api.ec2.protocol import LazyList, Protocol
from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.instance_facts import facts_of
from cloudctl.core.launch import LaunchSpec
from cloudctl.store.records import Instance, Reservation

from support import write_config


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


async def _launched(cloud: Cloud, tmp_path: Path, n: int) -> tuple[Protocol, Reservation, list[Instance]]:
    """The EC2 protocol, and `n` instances launched by a new user with a tag to escape."""
    proto = Protocol(load_model(OPERATIONS, tmp_path / "model"))
    caller = Caller(await cloud.users.create("u"))
    image = next(iter(cloud.images.table.values()))
    res, insts = await cloud.compute.run(caller, LaunchSpec(
        image.id, n, n, instance_type="t3.nano", instance_tags=(("Name", "a<b&c"), ("env", "prod"))))
    return proto, res, insts


@pytest.mark.parametrize("n", [1, WHOLE_LAUNCH + 1])
async def test_a_launch_answer_is_the_describe_paths_text(cloud: Cloud, tmp_path: Path, n: int) -> None:
    proto, res, insts = await _launched(cloud, tmp_path, n)
    facts = facts_of(cloud, insts)   # (read once: both render the same moment's rows)
    ours = launch_view(cloud, res, facts)
    assert (type(ours["Instances"]) is LazyList) == (n > WHOLE_LAUNCH)

    def text(view: dict[str, object]) -> bytes:
        return b"".join(proto.serialize_iter("RunInstances", view, "req-1", slice_items=5))
    want = text(reservation_view(cloud, res, facts))
    assert text(ours) == want
    assert text(launch_view(cloud, res, facts)) == want   # (and again, with the describe's text kept)
    assert want.count(b"<instanceId>") == n and b"a&lt;b&amp;c" in want
    await cloud.compute.idle()


@pytest.mark.parametrize("n", [1, 3])
async def test_a_small_describe_answer_is_the_sliced_paths_text(cloud: Cloud, tmp_path: Path, n: int) -> None:
    proto, res, insts = await _launched(cloud, tmp_path, n)
    facts = facts_of(cloud, insts)
    assert n <= WHOLE_DESCRIBE

    def sliced() -> bytes:
        return b"".join(proto.serialize_iter("DescribeInstances", {"Reservations": LazyList(
            iter([reservation_view(cloud, res, facts)]), 1), "NextToken": None}, "req-1", slice_items=2))

    def whole() -> list[bytes]:
        return list(proto.serialize_iter("DescribeInstances", {"Reservations": [
            small_reservation_view(cloud, res, facts)], "NextToken": None}, "req-1", slice_items=2))
    first = whole()   # (rendered afresh: nothing kept yet)
    want = sliced()   # (from the kept texts)
    assert first == [want] and whole() == [want]   # one piece, the same bytes, kept or not
    assert want.count(b"<instanceId>") == n and b"a&lt;b&amp;c" in want
    await cloud.compute.idle()
