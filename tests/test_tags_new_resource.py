"""A new resource's tags filed in one step (`Txn.put_new_tags`, `TagTable.add_new`: a launch's)
leave the table, its key/value index, the checkpoint's record of what changed, the undo log and the
journal record as a put of each tag in turn leaves them; so does `Tags.put`, whichever way it goes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.core.tags import Tags
from cloudctl.store.records import Tag, encode_changes
from cloudctl.store.store import Store, Txn
from cloudctl.store.tagtable import TagTable

text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=6)
pairs = st.lists(st.tuples(text, text), min_size=1, max_size=5, unique_by=lambda p: p[0])


def _state(t: TagTable) -> Any:
    return (list(t.by_rid.items()), {k: dict(v) for k, v in t.kv.ids.items()}, t.count, t.changes,
            None if t._before is None else dict(t._before), sorted(t.rows.items()))


def _ops(tx: Txn) -> list[Any]:
    return [(table.name, key, old, row) for table, key, old, row in tx._ops]


@settings(max_examples=150)
@given(pairs, st.lists(st.tuples(text, pairs), max_size=3), st.booleans())
def test_a_new_resource_filed_at_once_as_each_tag_in_turn(given: list[tuple[str, str]],
                                                         others: list[tuple[str, list[tuple[str, str]]]],
                                                         listing: bool) -> None:
    stores = [Store(Path("unused")), Store(Path("unused"))]
    txs = [Txn(s) for s in stores]
    for s, tx in zip(stores, txs):
        for n, (rid, tags) in enumerate(others):   # (other resources first, some holding the same tags)
            for k, v in tags:
                tx.put(Tag(f"o{n}{rid}", "instance", "acct", k, v))
        if listing:
            s.tables["tags"].listing()   # (a checkpoint under way: the table notes what changes since)
            s.tables["tags"]._before = {}
    before = [_ops(tx) for tx in txs]
    rows = [Tag("i-new", "instance", "acct", k, v) for k, v in given]
    txs[0].put_new_tags(rows)
    for r in rows:
        txs[1].put(r)
    a, b = (s.tables["tags"] for s in stores)
    assert isinstance(a, TagTable)
    assert _state(a) == _state(b)
    assert _ops(txs[0]) == _ops(txs[1]) and encode_changes(txs[0]._ops) == encode_changes(txs[1]._ops)
    assert before[0] == before[1]
    for tx in txs:
        tx._rollback()
    assert _state(a) == _state(b)
    assert "i-new" not in a.by_rid


def test_a_resource_with_tags_is_put_a_tag_at_a_time() -> None:
    s = Store(Path("unused"))
    tx = Txn(s)
    tx.put(Tag("i-1", "instance", "acct", "a", "1"))
    t = s.tables["tags"]
    assert isinstance(t, TagTable) and not t.add_new([Tag("i-1", "instance", "acct", "b", "2")])
    tx.put_new_tags([Tag("i-1", "instance", "acct", "b", "2"), Tag("i-1", "instance", "acct", "a", "3")])
    assert t.pairs_of("i-1") == (("a", "3"), ("b", "2"))
    assert [old for _, _, old, _ in tx._ops] == [None, None, Tag("i-1", "instance", "acct", "a", "1")]


@given(st.lists(st.tuples(st.sampled_from("abc"), text), min_size=1, max_size=5),
       st.lists(st.tuples(st.sampled_from("abcd"), text), max_size=3))
def test_tags_put_as_before(given: list[tuple[str, str]], first: list[tuple[str, str]]) -> None:
    """Tags.put of repeated keys, on a resource with tags or none, leaves what a put of each does."""
    s = Store(Path("unused"))
    tags = Tags(s)
    tx = Txn(s)
    if first:
        tags.put(tx, "acct", "i-1", "instance", first)
    tags.put(tx, "acct", "i-1", "instance", given)
    want: dict[str, str] = {}
    for k, v in [*first, *given]:
        want[k] = v
    assert dict(tags.pairs_of("i-1")) == want
    assert [k for k, _ in tags.pairs_of("i-1")] == list(want)
    ref = Store(Path("unused"))
    rtx = Txn(ref)
    for k, v in [*first, *given]:
        rtx.put(Tag("i-1", "instance", "acct", k, v))
    assert _state(s.tables["tags"]) == _state(ref.tables["tags"])   # type: ignore[arg-type]
    assert encode_changes(tx._ops) == encode_changes(rtx._ops)
