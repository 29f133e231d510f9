"""`add_many` (what `Table.add_index` files a table's rows with at start) must leave an index exactly
as `add` of each row in the same order would: the same groups, counts and totals, in the same order
(a group's tuple, the dicts' keys), whatever the rows' keys repeat, whether the index held rows
already, and for a row type whose primary key is not one field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.store.idgroups import IdGroups
from cloudctl.store.records import Instance, Tag
from cloudctl.store.store import CountIndex, MultiIndex, Store, SumIndex


def instance(n: int, owner: str, host: str, state: str) -> Instance:
    return Instance(id=f"i-{n}", owner=owner, reservation_id="r", image_id="ami", instance_type="small",
                    host=host, zone="z", state=state, launch_time=float(n))


def tag(n: int, key: str, owner: str) -> Tag:
    return Tag(resource_id=f"i-{n}", resource_type="instance", owner=owner, tag_key=key, value=str(n))


# 14 ids over 3 owners: groups of more than MultiIndex.SMALL rows (dicts) and an id given twice.
inst = st.builds(instance, st.integers(0, 13), st.sampled_from(["a", "b", "c", "none"]),
                 st.sampled_from(["h1", "h2"]), st.sampled_from(["running", "stopped", "terminated"]))
tags = st.builds(tag, st.integers(0, 3), st.sampled_from(["Name", "env"]), st.sampled_from(["a", "b", "none"]))


def owner(r: Any) -> str | None:
    return None if r.owner == "none" else r.owner


def makers(table: Any) -> list[Any]:
    return [lambda: MultiIndex(owner), lambda: CountIndex(owner), lambda: SumIndex(owner, lambda r: len(r.key)),
            lambda: IdGroups(table, owner)]


def state(ix: Any) -> Any:
    """Everything the index holds, in its order."""
    if isinstance(ix, MultiIndex):
        return [(k, list(g.items()) if type(g) is dict else g) for k, g in ix._groups.items()]
    if isinstance(ix, CountIndex):
        return list(ix.counts.items())
    if isinstance(ix, SumIndex):
        return list(ix.totals.items())
    return [(k, list(g)) for k, g in ix._groups.items()]


def one_by_one(ix: Any, rows: list[Any]) -> None:
    """`add` of each row (`IdGroups.add` files a key in order, `add_many` sorts: the same groups)."""
    for r in rows:
        ix.add(r)


@settings(max_examples=300, deadline=None)
@given(st.lists(inst, max_size=30), st.lists(inst, max_size=10), st.lists(tags, max_size=20),
       st.lists(tags, max_size=6))
def test_add_many_leaves_what_adding_each_row_leaves(before: list[Instance], rows: list[Instance],
                                                     tag_before: list[Tag], tag_rows: list[Tag]) -> None:
    store = Store(Path("/nonexistent"))   # (tables only: never opened)
    for table, first, then in ((store.table(Instance), before, rows), (store.tables["tags"], tag_before, tag_rows)):
        for make in makers(table):
            many, each = make(), make()
            for ix in (many, each):   # what the index held already, added one by one to both
                one_by_one(ix, first)
            many.add_many(iter(then))
            one_by_one(each, then)
            assert state(many) == state(each), type(many).__name__
            if isinstance(many, IdGroups):   # a group is its rows' primary keys, sorted, each once
                for k, g in many._groups.items():
                    assert g == sorted({r.key for r in [*first, *then] if owner(r) == k})


def test_an_id_groups_group_of_one_added_twice_holds_it_once() -> None:
    store = Store(Path("/nonexistent"))
    table = store.table(Instance)
    ix = IdGroups(table, owner)
    ix.add_many([instance(2, "a", "h1", "running"), instance(1, "a", "h1", "running"),
                 instance(2, "a", "h2", "stopped")])
    assert ix._groups == {"a": ["i-1", "i-2"]}
