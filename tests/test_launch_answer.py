"""RunInstances' answer (`launch_view`: views rendered afresh, whole when small) and a small
describe's (`small_reservation_view`: kept fragments, whole) are byte for byte the text the
describe's sliced path (`reservation_view`: kept fragments, slices) gives the same rows."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudctl.api.ec2.actions.instances import (
    WHOLE_DESCRIBE,
    WHOLE_LAUNCH,
    instance_from,
    instance_leaves,
    instance_view,
    launch_view,
    reservation_view,
    small_reservation_view,
)
from cloudctl.api.ec2.model import OPERATIONS, load_model
from cloudctl.api.ec2.protocol import LazyList, Leaves, Protocol, SerializationError
from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.instance_facts import InstanceFacts, facts_of
from cloudctl.core.launch import LaunchSpec
from cloudctl.store.records import Address, Instance, Reservation

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


def _variants(f: InstanceFacts) -> list[InstanceFacts]:
    """`f` and what else an instance's description may show: an Elastic IP or a launch's address,
    a key, a kernel, a state reason, no network interface (terminated, no subnet), text to escape,
    no tags, several volumes (one kept at termination), several groups, no MAC."""
    i = f.inst
    eip = Address(public_ip="192.0.2.7", allocation_id="eipalloc-1", owner=i.owner, allocated=1.0,
                  association_id="eipassoc-1", instance_id=i.id, private_ip=i.private_ip)
    vol = f.volumes[0]
    data = replace(vol, id="vol-2", device="/dev/sdf", attach_time=None, delete_on_termination=False)
    out = [f, f._replace(address=eip), f._replace(address=replace(eip, launch=True)),
           f._replace(inst=replace(i, key_name="k<1>", kernel_id="aki-1", client_token="tok")),
           f._replace(inst=replace(i, state="stopped", state_reason_code="Client.UserInitiatedShutdown",
                                   state_reason_message="by <user> & co", transition_reason="user (2026)")),
           f._replace(inst=replace(i, state="terminated", private_ip=None), volumes=()),
           f._replace(subnet=None), f._replace(tags=()),
           f._replace(tags=(("a&b", "<c>"), ("\r", "\x01"), ("k", ""))),
           f._replace(volumes=(vol, data)), f._replace(groups=f.groups * 3),
           f._replace(inst=replace(i, mac=None, launch_index=7, launch_time=1.5e9, root_device=None))]
    return out


async def test_a_launch_answers_instances_are_rendered_from_their_leaves(cloud: Cloud, tmp_path: Path) -> None:
    """Each instance of a launch's answer is a `Leaves` element: its text from a template kept
    per shape, byte for byte its view's, whatever it shows (each variant rendered twice: the
    template made, then reused with other values of the same shape)."""
    proto, res, insts = await _launched(cloud, tmp_path, 2)
    facts = facts_of(cloud, insts)
    ours = launch_view(cloud, res, facts)
    assert all(type(e) is Leaves for e in ours["Instances"])
    want = b"".join(proto.serialize_iter("RunInstances", reservation_view(cloud, res, facts), "req-1"))
    assert b"".join(proto.serialize_iter("RunInstances", ours, "req-1")) == want
    assert any(fn is not None for fn in proto._renderers._templates.values())   # (not the fallback)
    other = facts[1]._replace(tags=(("Name", "plain"), ("env", "x>y")))   # (same shape, another text)
    for f in [*_variants(facts[0]), *_variants(other)]:
        view = {"ReservationId": res.id, "OwnerId": res.owner, "Groups": [], "Instances": [instance_view(cloud, f)]}
        leaves = {**view, "Instances": [Leaves(*instance_leaves(cloud, f), instance_from)]}
        assert proto.serialize("RunInstances", leaves, "r") == proto.serialize("RunInstances", view, "r")
    assert sum(fn is not None for fn in proto._renderers._templates.values()) >= 10
    await cloud.compute.idle()


def _small_view(shape: tuple[str, ...], leaves: tuple[object, ...]) -> dict[str, object]:
    """A view of an Instance built from its leaves as `instance_from` is: members named by `shape`."""
    view: dict[str, object] = dict(zip(shape, leaves))
    if "Upper" in shape:   # (a view that does not put a leaf in as is)
        view["InstanceId"] = str(view.pop("Upper")).upper()
    return view


@pytest.mark.parametrize("shape, leaves", [
    (("InstanceId", "LaunchTime", "AmiLaunchIndex"), ("i-1", 1.5e9, 3)),
    (("InstanceId", "LaunchTime", "KeyName"), ("a&b", 1796660067.9421136, None)),
    (("Upper",), ("i-abc",)),                                   # a leaf changed by the view
    (("InstanceId", "EbsOptimized"), ("i-1", True)),            # a bool: not a leaf a template takes
    (("InstanceId", "LaunchTime"), ("i-1", "2026-01-02T03:04:05.000Z")),   # a str where a timestamp is
    (("InstanceId", "LaunchTime"), ("i-1", 1500000000)),        # an int where a timestamp is
    (("InstanceId", "AmiLaunchIndex"), ("i-1", 2.0)),           # a float where an int is
    (("InstanceId", "InstanceType"), ("i-1", "\u27e60000\u27e7")),   # a leaf that looks like a placeholder
])
def test_a_leaves_element_is_rendered_as_its_view(tmp_path: Path, model_cache: Path,
                                                  shape: tuple[str, ...], leaves: tuple[object, ...]) -> None:
    """`Leaves` renders as its view would, whatever the leaves: through a kept template where it
    holds, else as the view (twice each: the template made and checked, then used; then with
    other values of the same types)."""
    proto = Protocol(load_model(OPERATIONS, tmp_path / "model"))

    def text(instance: object) -> bytes | str:
        try:
            return proto.serialize("RunInstances", {"ReservationId": "r-1", "OwnerId": "1", "Groups": [],
                                                    "Instances": [instance]}, "q")
        except SerializationError as e:   # (refused alike: a str that is no timestamp)
            return type(e).__name__

    def both(values: tuple[object, ...]) -> tuple[bytes | str, bytes | str]:
        return text(Leaves(shape, values, _small_view)), text(_small_view(shape, values))
    for values in (leaves, leaves, tuple(v + "<x>" if type(v) is str else v for v in leaves)):
        ours, want = both(values)
        assert ours == want
