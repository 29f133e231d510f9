"""Groups of ids read through the table (store/idgroups.py): an owner's and a host's instances, an
owner's volumes and a security group's members are held as sorted lists of the rows' own id
objects, not as a dict of rows per group, and readers see the same rows by id as before."""
from __future__ import annotations

from pathlib import Path

import pytest

from cloudctl.core.security_groups import _MembersIndex
from cloudctl.store.idgroups import IdGroups
from cloudctl.store.records import Instance
from cloudctl.store.store import Store, Txn


def inst(n: int, owner: str = "a", host: str = "h1", state: str = "running", groups: tuple[str, ...] = ()) -> Instance:
    return Instance(id=f"i-{n:05x}", owner=owner, reservation_id="r", image_id="ami", instance_type="t",
                    host=host, zone="z", state=state, launch_time=0.0, private_ip=f"10.0.0.{n}", group_ids=groups)


def world() -> tuple[Store, IdGroups[Instance]]:
    store = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    table = store.table(Instance)
    return store, table.add_index(IdGroups(table, lambda i: i.owner))


def test_a_group_is_the_rows_own_ids_in_order_and_its_view_gives_the_tables_rows() -> None:
    store, ix = world()
    table = store.table(Instance)
    rows = [inst(n, owner="a" if n % 3 else "b") for n in (7, 3, 11, 1, 9, 4)]
    for r in rows:
        table._set(r.key, r)
    g = ix._groups["a"]
    assert type(g) is list and g == sorted(r.id for r in rows if r.owner == "a")
    assert all(any(pk is r.id for r in rows) for pk in g), "the group holds the rows' own id objects"
    mine = ix.get("a")
    assert len(mine) == 4 and list(mine) == g
    assert {k: v for k, v in mine.items()} == {r.id: r for r in rows if r.owner == "a"}
    other = next(r for r in rows if r.owner == "b")
    assert other.id not in mine and mine.get(other.id) is None   # in the table, not in this group
    with pytest.raises(KeyError):
        mine[other.id]
    assert "i-nope" not in mine and ix.get("nobody") == {} and ix.rows("nobody") == () and ix.first("nobody") is None


def test_a_change_keeps_the_group_and_the_view_is_live() -> None:
    store, ix = world()
    table = store.table(Instance)
    for n in range(5):
        table._set(f"i-{n:05x}", inst(n))
    mine = ix.get("a")
    before = list(ix._groups["a"])
    stopped = inst(2, state="stopped")
    table._set(stopped.key, stopped)
    assert ix._groups["a"] == before and mine[stopped.id] is stopped   # the row read through the table
    moved = inst(3, owner="b")
    table._set(moved.key, moved)
    assert moved.id not in mine and len(mine) == 4 and ix.get("b")[moved.id] is moved
    it = iter(mine)   # iteration is over a snapshot of the keys: the table may change meanwhile
    table._set(f"i-{0:05x}", None)
    assert len(list(it)) == 4 and len(mine) == 3


def test_a_rolled_back_transaction_leaves_the_groups_as_they_were() -> None:
    store, ix = world()
    table = store.table(Instance)
    for n in range(3):
        table._set(f"i-{n:05x}", inst(n))
    before = {k: list(g) for k, g in ix._groups.items()}
    tx = Txn(store)
    tx.put(inst(9, owner="c"))
    tx.put(inst(1, owner="b"))
    tx.delete(table.get(f"i-{0:05x}"))
    assert set(ix._groups) == {"a", "b", "c"}
    tx._rollback()
    assert {k: list(g) for k, g in ix._groups.items()} == before


def test_an_index_added_over_a_filled_table_equals_one_filled_row_by_row() -> None:
    store, ix = world()
    table = store.table(Instance)
    for n in (5, 2, 8, 1, 6, 3):
        r = inst(n, owner="ab"[n % 2], host=f"h{n % 3}")
        table._set(r.key, r)
    late = table.add_index(IdGroups(table, lambda i: i.owner))
    assert late._groups == ix._groups
    by_host = table.add_index(IdGroups(table, lambda i: i.host))
    assert {h: list(by_host.get(h)) for h in by_host._groups} == {
        h: sorted(r.id for r in table.values() if r.host == h) for h in ("h0", "h1", "h2")}


def test_security_group_members_are_ids_and_a_state_change_touches_none() -> None:
    store = Store(Path("/nonexistent"))
    table = store.table(Instance)
    told: list[tuple[str, list[str]]] = []
    members = table.add_index(_MembersIndex(lambda row, moved: told.append((row.id, moved))))
    for n in (4, 2, 6):
        r = inst(n, groups=("sg-1", "sg-2") if n != 6 else ("sg-2",))
        table._set(r.key, r)
    assert members.get("sg-1") == [f"i-{2:05x}", f"i-{4:05x}"]
    assert members.get("sg-2") == sorted(f"i-{n:05x}" for n in (2, 4, 6))
    held = members.get("sg-2")
    table._set(f"i-{4:05x}", inst(4, state="stopped", groups=("sg-1", "sg-2")))
    assert members.get("sg-2") is held and held == sorted(f"i-{n:05x}" for n in (2, 4, 6))
    table._set(f"i-{2:05x}", None)
    assert members.get("sg-1") == [f"i-{4:05x}"] and members.get("nothing") == []
