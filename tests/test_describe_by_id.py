"""DescribeInstances by one id read at once (`by_id_form`, `describe_by_id`) answers as the general
path (`Protocol.parse`, `describe_instances`) does: the same bytes, the same refusals."""
from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.api.ec2.actions.instances import by_id_form, describe_by_id, describe_instances
from cloudctl.api.ec2.actions.registry import FORMS
from cloudctl.api.ec2.model import OPERATIONS, load_model
from cloudctl.api.ec2.protocol import Protocol
from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.errors import CloudError
from cloudctl.core.launch import LaunchSpec

from support import write_config


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


@pytest.mark.parametrize("params, read", [
    ({"InstanceId.1": "i-0123456789abcdef0"}, ("i-0123456789abcdef0", False)),
    ({"InstanceId.1": "nonsense"}, ("nonsense", False)),   # (refused by the describe, as the general path's)
    ({"InstanceId.1": ""}, None),
    ({"InstanceId.2": "i-0123456789abcdef0"}, None),
    ({"InstanceId.1": "i-0123456789abcdef0", "InstanceId.2": "i-0123456789abcdef1"}, None),
    ({"InstanceId.1": "i-0123456789abcdef0", "DryRun": "true"}, None),
    ({"InstanceId.1": "i-0123456789abcdef0", "MaxResults": "5"}, None),
    ({"InstanceId.1": "i-0123456789abcdef0", "Filter.1.Name": "tag:a"}, None),
    ({}, None),
])
def test_only_the_one_id_form_is_read_at_once(params: dict[str, str], read: Any) -> None:
    assert by_id_form(params) == read
    assert FORMS["DescribeInstances"] == (by_id_form, describe_by_id)


async def _outcome(proto: Protocol, call: Any) -> bytes | tuple[str, str]:
    try:
        result = await call
    except CloudError as e:
        return e.code, e.message
    return b"".join(proto.serialize_iter("DescribeInstances", result, "req-1", slice_items=20))


async def test_the_answer_and_the_refusals_are_the_general_paths(cloud: Cloud, tmp_path: Path) -> None:
    proto = Protocol(load_model(OPERATIONS, tmp_path / "model"))
    owner, other = Caller(await cloud.users.create("u")), Caller(await cloud.users.create("v"))
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(owner, LaunchSpec(
        image.id, 3, 3, instance_type="t3.nano", instance_tags=(("Name", "a<b&c"), ("env", "prod"))))
    _, theirs = await cloud.compute.run(other, LaunchSpec(image.id, 1, 1, instance_type="t3.nano"))
    await cloud.compute.idle()
    await cloud.compute.terminate(owner, [insts[2].id])
    await cloud.compute.idle()
    ids = [i.id for i in insts] + [theirs[0].id, "i-0123456789abcdef0", "i-xyz", "nonsense", "vol-0123456789abcdef0"]
    seen = 0
    for iid in ids:
        for caller in (owner, other):
            read = by_id_form({"InstanceId.1": iid})
            assert read is not None
            quick = await _outcome(proto, describe_by_id(cloud, caller, read[0]))
            general = await _outcome(proto, describe_instances(
                cloud, caller, proto.parse("DescribeInstances", {"InstanceId.1": iid})))
            assert quick == general, iid
            seen += isinstance(quick, bytes)
    assert seen == 4   # (the owner's three, the other's one: the rest refused)
    # A dry run is never read at once; its general answer stays the refusal it was.
    dry = Caller(owner.user, dry_run=True)
    assert by_id_form({"InstanceId.1": insts[0].id, "DryRun": "true"}) is None
    assert await _outcome(proto, describe_instances(cloud, dry, {"InstanceIds": [insts[0].id]})) == \
        ("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")


async def test_a_kept_answer_follows_every_change(cloud: Cloud, tmp_path: Path) -> None:
    """`describe_by_id`'s answer is kept whole (`Protocol.serialize_whole`): asked again it is the
    kept text, and after a change (tags, state) the general path's again, for each request id."""
    proto = Protocol(load_model(OPERATIONS, tmp_path / "model"))
    owner = Caller(await cloud.users.create("u"))
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(owner, LaunchSpec(image.id, 1, 1, instance_type="t3.nano",
                                                         instance_tags=(("Name", "a"),)))
    await cloud.compute.idle()
    iid = insts[0].id
    kept = proto._renderers._answers   # noqa: SLF001

    async def same(request_id: str) -> bytes:
        read = by_id_form({"InstanceId.1": iid})
        assert read is not None
        quick = proto.serialize_whole("DescribeInstances", await describe_by_id(cloud, owner, read[0]), request_id)
        general = b"".join(proto.serialize_iter("DescribeInstances", await describe_instances(
            cloud, owner, proto.parse("DescribeInstances", {"InstanceId.1": iid})), request_id, slice_items=20))
        assert quick == general
        return quick

    first = await same("req-1")
    entry = kept[("DescribeInstances", iid)]
    assert await same("req-2") == first.replace(b"req-1", b"req-2")
    assert kept[("DescribeInstances", iid)] is entry   # (reused, not rendered again)
    changes = [lambda: cloud.tags.create(owner, [iid], [("env", "prod & <test>")]),
               lambda: cloud.compute.stop(owner, [iid]),
               lambda: cloud.compute.start(owner, [iid]),
               lambda: cloud.compute.terminate(owner, [iid])]
    seen = {first}
    for change in changes:
        await change()
        await cloud.compute.idle()
        out = await same("req-1")
        assert kept[("DescribeInstances", iid)] is not entry   # (rendered again: its rows were replaced)
        entry = kept[("DescribeInstances", iid)]
        seen.add(out)
    assert len(seen) == 4   # (started again, it reads as it did before its stop)
    assert b"prod &amp; &lt;test&gt;" in out and b"<name>terminated</name>" in out


async def test_a_reservation_shown_otherwise_keys_the_kept_answer_by_its_row(cloud: Cloud, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation row whose owner is not its instance's (not written so by the controller, but
    readable) is shown as it is, and its row keys the kept answer: the general path's bytes."""
    proto = Protocol(load_model(OPERATIONS, tmp_path / "model"))
    owner = Caller(await cloud.users.create("u"))
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(owner, LaunchSpec(image.id, 1, 1, instance_type="t3.nano"))
    await cloud.compute.idle()
    iid = insts[0].id
    table = cloud.compute.reservations
    real, shown = table.get, {}
    monkeypatch.setattr(table, "get",
                        lambda rid: shown.setdefault(rid, dataclasses.replace(real(rid), owner="123456789012")))

    async def both() -> tuple[bytes, bytes]:
        quick = proto.serialize_whole("DescribeInstances", await describe_by_id(cloud, owner, iid), "req-1")
        general = b"".join(proto.serialize_iter("DescribeInstances", await describe_instances(
            cloud, owner, proto.parse("DescribeInstances", {"InstanceId.1": iid})), "req-1"))
        return quick, general

    quick, general = await both()
    assert quick == general and b"<ownerId>123456789012</ownerId>" in quick
    entry = proto._renderers._answers[("DescribeInstances", iid)]   # noqa: SLF001
    assert entry[0][0] is shown[insts[0].reservation_id]
    assert await both() == (quick, general) and proto._renderers._answers[("DescribeInstances", iid)] is entry  # noqa: SLF001
