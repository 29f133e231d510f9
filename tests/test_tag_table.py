"""The tags table packs each resource's tags in one tuple (store/tagtable.py): it must answer as the
table of one row per tag did, load state written by the store before it, and list a checkpoint as of
its rotation.

`tests/data/state-tags-per-row/` was written by main's store before the change (a checkpoint with
tags interleaved across resources, one resource with two owners, an `aws:` tag, and a journal after
it that overwrites, deletes and adds tags); `expected.json` holds that store's digest and tags."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.core.tags import Tags
from cloudctl.store.records import Instance, Tag, Volume
from cloudctl.store.store import Store
from cloudctl.store.tagtable import TagTable

BEFORE = Path(__file__).parent / "data" / "state-tags-per-row"


async def test_tags_written_one_row_each_load_and_answer_as_before(tmp_path: Path) -> None:
    shutil.copytree(BEFORE, tmp_path / "state")
    expected = json.loads((BEFORE / "expected.json").read_text())
    s = Store(tmp_path / "state")
    await s.open()
    tags = Tags(s)
    assert s.digest() == expected["digest"]   # every row, as main's store held them
    assert sorted([t.key, t.owner, t.resource_type, t.value] for t in s.table(Tag).values()) == expected["tags"]
    assert dict(tags.of("i-00000000000000000")) == {"Name": "web-0", "env": "prod", "aws:autoscaling:groupName": "g1"}
    assert tags.pairs_of("i-00000000000000002") == (("env", "prod"), ("team", "t-1"))
    assert tags.resources_with("env", {"prod"}) == {"i-00000000000000000", "i-00000000000000002"}
    assert tags.resources_with("Name", {"web-0", "prod"}) == {
        "i-00000000000000000", "key-00000000000000001", "sg-00000000000000001"}
    assert [(t.owner, t.tag_key) for t in tags.rows_of("vol-00000000000000001")] == [("444455556666", "b")]
    await s.started()
    await s.checkpoint()   # written by the packed table, read back: the same state
    await s.close()
    again = Store(tmp_path / "state")
    await again.open()
    assert again.digest() == expected["digest"]
    await again.close()


def tag(rid: int, key: str, value: str, owner: str = "o1") -> Tag:
    rtype = "instance" if rid < 3 else "volume"
    return Tag(f"{'i' if rid < 3 else 'vol'}-{rid:017x}", rtype, owner, key, value)


steps = st.lists(st.tuples(st.sampled_from(["put", "delete", "snapshot"]), st.integers(0, 4),
                           st.sampled_from(["Name", "env", "k3", "aws:x"]), st.sampled_from(["a", "b", ""]),
                           st.sampled_from(["o1", "o1", "o2"])), max_size=80)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_the_packed_table_answers_like_a_dict_of_rows(ops: list[tuple[str, int, str, str, str]]) -> None:
    """Any puts and deletes (owners mixed on one resource too): the rows, their count, each
    resource's tags in order, the key/value index, and a listing begun mid-way (as a checkpoint's)."""
    table = TagTable()
    model: dict[str, Tag] = {}
    listing: dict[str, Tag] | None = None
    for op, rid, key, value, owner in ops:
        row = tag(rid, key, value, owner)
        if op == "snapshot":
            if listing is None:
                table._before = {}
                listing = dict(model)
            continue
        if op == "put":
            assert table._set(row.key, row) == model.get(row.key)
            model[row.key] = row
        else:
            assert table._set(row.key, None) == model.pop(row.key, None)
        assert dict(table.rows) == model and len(table) == len(model)
        assert all((k in table.rows) and table.get(k) == r for k, r in model.items())
        for n in range(5):
            rid_s = tag(n, "", "").resource_id
            mine = [r for r in model.values() if r.resource_id == rid_s]
            assert {r.key: r for r in table.rows_of(rid_s)} == {r.key: r for r in mine}
            assert dict(table.pairs_of(rid_s)) == {r.tag_key: r.value for r in mine}
        for k in ("Name", "env", "k3", "aws:x"):
            for v in ("a", "b", ""):
                assert table.kv.holding(k, {v}) == {r.resource_id for r in model.values()
                                                    if r.tag_key == k and r.value == v}
    if listing is not None:
        n, rows = table.listing()
        got = list(rows)
        assert len({r.key for r in got}) == len(got)   # each tag once
        assert {r.key: r for r in got} == listing       # as it was when the listing began
        assert table._before is None


async def test_a_resources_tags_are_one_tuple_of_shared_strings(tmp_path: Path) -> None:
    """Three tags on each of two instances, put by two requests: one entry each, no rows kept, and
    the owner, type, tag keys and a value both carry are one object for both, as put and after a
    restart (decoded from JSON, each was its own copy)."""
    s = Store(tmp_path)
    await s.open()
    tags = Tags(s)
    for i in range(2):
        pairs = [(json.loads(json.dumps(k)), json.loads(json.dumps(v)))   # (new strings, as a request parses them)
                 for k, v in (("Name", f"web-{i}"), ("env", "prod"), ("team", "t1"))]
        with s.txn() as tx:
            tags.put(tx, json.loads('"111122223333"'), f"i-{i:017x}", "instance", pairs)
    await s.sync()
    await s.close()
    again = Store(tmp_path)
    await again.open()
    for store in (s, again):
        table = store.tables["tags"]
        assert isinstance(table, TagTable) and len(table) == 6 and len(table.by_rid) == 2
        a, b = table.by_rid.values()
        assert type(a) is tuple and not any(isinstance(x, Tag) for x in a)
        assert a[1] is b[1] and a[2] is b[2]                       # owner, type
        assert a[3] is b[3] and a[5] is b[5] and a[7] is b[7]      # the keys
        assert a[6] == "prod" and a[6] is b[6] and a[8] is b[8]    # the values both hold
    await again.close()


async def test_a_load_shares_ids_and_repeated_values_between_rows(tmp_path: Path) -> None:
    """After a restart the instance's id is one object for its table key, its row, its tags and
    its volume; and the owner and zone one object for every row holding them."""
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        for i in range(2):
            iid = f"i-{i:017x}"
            tx.put(Instance(id=iid, owner="111122223333", reservation_id="r-1", image_id="ami-1",
                            instance_type="t3.nano", host="h", zone="z-1a", state="running", launch_time=1.0))
            tx.put(Volume(id=f"vol-{i:017x}", owner="111122223333", zone="z-1a", size=8, volume_type="gp2",
                          state="in-use", created=1.0, instance_id=iid))
            tx.put(Tag(iid, "instance", "111122223333", "Name", "x"))
    await s.started()
    await s.checkpoint()
    with s.txn() as tx:   # and from the journal: a changed row keeps the objects
        inst = s.table(Instance).get("i-00000000000000001")
        assert inst is not None
        tx.put(dataclasses.replace(inst, state="stopped"))
    await s.sync()
    await s.close()
    again = Store(tmp_path)
    await again.open()
    insts = again.table(Instance)
    for i in range(2):
        iid = f"i-{i:017x}"
        key = next(k for k in insts.rows if k == iid)
        inst, vol = insts.rows[iid], again.table(Volume).get(f"vol-{i:017x}")
        assert vol is not None and inst.id is key and vol.instance_id is key
        assert again.tables["tags"].by_rid[iid][0] is key
    a, b = insts.values()
    assert b.state == "stopped" and a.owner is b.owner and a.zone is b.zone and a.zone is vol.zone
    await again.close()


async def test_a_resources_tag_version_changes_exactly_when_its_tags_do(tmp_path: Path) -> None:
    """Rows made as read are new objects each time; a cache keyed by identity keys on this."""
    s = Store(tmp_path)
    await s.open()
    tags = Tags(s)
    assert tags.version_of("i-1") is None
    with s.txn() as tx:
        tags.put(tx, "1", "i-1", "instance", [("Name", "a")])
        tags.put(tx, "1", "i-2", "instance", [("Name", "b")])
    v1 = tags.version_of("i-1")
    assert v1 is not None and tags.version_of("i-1") is v1 and tags.rows_of("i-1")[0] is not tags.rows_of("i-1")[0]
    with s.txn() as tx:
        tags.put(tx, "1", "i-2", "instance", [("env", "x")])   # another resource: i-1's stays
    assert tags.version_of("i-1") is v1
    with s.txn() as tx:
        tags.put(tx, "1", "i-1", "instance", [("Name", "a")])   # the same value put again: a new version
    assert tags.version_of("i-1") is not v1 and tags.of("i-1") == {"Name": "a"}
    await s.close()
