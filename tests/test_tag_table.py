"""The tags table packs each resource's tags in one tuple (store/tagtable.py): it must answer as the
table of one row per tag did, load state written by the store before it, and list a checkpoint as of
its rotation.

`tests/data/state-tags-per-row/` was written by main's store before the change (a checkpoint with
tags interleaved across resources, one resource with two owners, an `aws:` tag, and a journal after
it that overwrites, deletes and adds tags); `expected.json` holds that store's digest and tags."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.core.tags import Tags
from cloudctl.store.records import Tag, encode_row
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


def test_a_resources_tags_are_one_tuple_of_shared_strings() -> None:
    """Three tags on each of two instances: one entry each, no rows kept, and the owner, type and
    tag key strings are one object for both (decoded from JSON, each was its own copy)."""
    table = TagTable()
    for i in range(2):
        for k, v in (("Name", f"web-{i}"), ("env", "prod"), ("team", "t1")):
            row = Tag.from_dict(json.loads(encode_row(Tag(f"i-{i:017x}", "instance", "111122223333", k, v))))
            table._set(row.key, row)
    assert len(table) == 6 and len(table.by_rid) == 2
    a, b = table.by_rid.values()
    assert type(a) is tuple and not any(isinstance(x, Tag) for x in a)
    assert a[1] is b[1] and a[2] is b[2] and a[3] is b[3]   # owner, type, first key
    assert a[6] is b[6]   # "prod": a value another resource holds already, held once
