"""Indexes updated in place (`Index.update`: only what a changed key or amount moves) must end exactly
as indexes built from scratch over the same rows would be, after any sequence of puts, changes,
deletes and rolled-back transactions; and the rows they hold must be the table's current row objects."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.config import InstanceType
from cloudctl.core.scheduler import HostCapacity, _Usage
from cloudctl.core.security_groups import _MembersIndex
from cloudctl.store.idgroups import IdGroups
from cloudctl.store.records import Instance, Tag
from cloudctl.store.store import CountIndex, MultiIndex, Store, SumIndex, Txn

# "big" has an instance-store disk: its instances' host disk is counted too.
TYPES = {"small": InstanceType(vcpus=1, memory_mib=512),
         "big": InstanceType(vcpus=4, memory_mib=4096, ephemeral_gib=10)}


def instance(n: int, owner: str, host: str, state: str, ip: str | None, groups: tuple[str, ...],
             itype: str, at: float) -> Instance:
    return Instance(id=f"i-{n}", owner=owner, reservation_id="r", image_id="ami", instance_type=itype,
                    host=host, zone="z", state=state, launch_time=at, private_ip=ip, group_ids=groups,
                    ephemeral=("ephemeral0=/dev/sdb",) if itype == "big" else ())


inst_op = st.tuples(st.just("inst"), st.integers(0, 11),                     # 12 rows: groups of > 8 (dicts)
                    st.sampled_from(["a", "b", "none"]), st.sampled_from(["h1", "h2", "gone-host"]),
                    st.sampled_from(["pending", "running", "stopped", "shutting-down", "terminated", "delete"]),
                    st.sampled_from([None, "10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                    st.sampled_from([(), ("sg-a",), ("sg-b",), ("sg-a", "sg-b")]),
                    st.sampled_from(["small", "big"]), st.sampled_from([0.0, 1.0]))
tag_op = st.tuples(st.just("tag"), st.integers(0, 3), st.sampled_from(["Name", "env", "k3"]),
                   st.sampled_from(["x", "y", "z", "delete"]))
txns = st.lists(st.tuples(st.booleans(), st.lists(st.one_of(inst_op, tag_op), min_size=1, max_size=6)), max_size=40)


class World:
    """An instance and a tag table with one index of each kind the store and the core modules have."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.insts = store.table(Instance)
        self.tags = store.table(Tag)
        self.reported: list[str] = []
        self.hosts = {h: HostCapacity(h, "z", 100, 100_000) for h in ("h1", "h2")}
        self.ix = self.build()

    def build(self, fresh_hosts: dict[str, HostCapacity] | None = None) -> dict[str, Any]:
        """The indexes, added to the tables (which files every current row): from scratch when `fresh_hosts`."""
        hosts = self.hosts if fresh_hosts is None else fresh_hosts
        made = {
            "by_owner": MultiIndex(lambda i: None if i.owner == "none" else i.owner),
            "by_ip": MultiIndex(lambda i: i.private_ip if i.state != "terminated" else None),
            "by_host": IdGroups(self.insts, lambda i: None if i.host == "gone-host" else i.host),
            "usage": SumIndex(lambda i: None if i.owner == "none" else i.owner, lambda i: TYPES[i.instance_type].vcpus),
            "by_state": CountIndex(lambda i: i.state),
            "members": _MembersIndex(lambda row, moved: self.reported.append(row.id)),
            "sched": _Usage(SimpleNamespace(hosts=hosts, types=TYPES)),   # type: ignore[arg-type]
        }
        for ix in made.values():
            self.insts.add_index(ix)
        return made   # (the tags table keeps its own index: store/tagtable.py)

    def apply(self, tx: Txn, op: tuple[Any, ...]) -> None:
        if op[0] == "inst":
            _, n, owner, host, state, ip, groups, itype, at = op
            old = self.insts.get(f"i-{n}")
            self.reported.clear()
            if state == "delete":
                if old is not None:
                    tx.delete(old)
                    assert old.id in self.reported   # the members index reacts to every change
                return
            tx.put(instance(n, owner, host, state, ip, groups, itype, at))
            assert f"i-{n}" in self.reported
        else:
            _, n, key, value = op
            row = Tag(resource_id=f"i-{n}", resource_type="instance", owner="a", tag_key=key, value=value)
            if value == "delete":
                old = self.tags.get(row.key)
                if old is not None:
                    tx.delete(old)
            else:
                tx.put(row)


def multi(ix: MultiIndex[Any], table: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Group -> row key -> the row's identity; every row held is the table's current object."""
    out: dict[str, dict[str, int]] = {}
    for k in ix._groups:
        rows = ix.rows(k)
        assert rows, "an empty group is kept"
        assert dict(ix.get(k)) == {r.key: r for r in rows}
        for r in rows:
            assert table[r.key] is r, "an index holds a replaced row object"
        out[k] = {r.key: id(r) for r in rows}
    return out


def id_groups(ix: IdGroups[Any], table: dict[str, Any]) -> dict[str, list[str]]:
    """Group -> its keys, in order; what a reader sees through `get` and `rows` is the table's rows."""
    out: dict[str, list[str]] = {}
    for k, g in ix._groups.items():
        assert g, "an empty group is kept"
        assert g == sorted(set(g)), "a group's keys out of order or twice"
        view = ix.get(k)
        assert len(view) == len(g) and list(view) == g
        assert [r.key for r in ix.rows(k)] == g
        for pk in g:
            assert view[pk] is table[pk] and pk in view
        out[k] = list(g)
    for pk, row in table.items():   # every row whose key names a group is in it
        k = ix._key(row)
        assert k is None or pk in ix._groups.get(k, ())
    return out


def state(w: World, ix: dict[str, Any], hosts: dict[str, HostCapacity]) -> dict[str, Any]:
    rows, tags = w.insts.rows, w.tags.rows
    members = ix["members"]
    for g in members.members.values():
        assert g == sorted(set(g)) and all(k in rows for k in g)
    return {
        "by_owner": multi(ix["by_owner"], rows), "by_ip": multi(ix["by_ip"], rows),
        "by_host": id_groups(ix["by_host"], rows),
        "tags": dict(tags), "tag_count": len(w.tags),
        # each resource's packed entry, its tags' order aside (a rollback puts a deleted tag back last)
        "tag_entries": {rid: (e[:3], sorted(e[3:], key=str) if e[1] is None else sorted(zip(e[3::2], e[4::2])))
                        for rid, e in w.tags.by_rid.items()},
        "usage": dict(ix["usage"].totals), "by_state": dict(ix["by_state"].counts),
        "members": {g: list(m) for g, m in members.members.items()},
        "member_extra": members.extra, "member_ips": members.sorted,
        "sched": {h: (c.used_vcpus, c.used_memory_mib, c.instances, c.used_disk_gib) for h, c in hosts.items()},
        "by_kv": {k: {v: {ids} if isinstance(ids, str) else set(ids) for v, ids in vals.items()}
                  for k, vals in w.tags.kv.ids.items()},
    }


def rebuilt(w: World) -> dict[str, Any]:
    fresh = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    fresh.tables["instances"].rows = dict(w.insts.rows)   # the same row objects, filed from scratch
    for key, row in w.tags.rows.items():   # the tags, put again in the table's order
        fresh.tables["tags"]._set(key, row)
    other = World.__new__(World)
    other.store, other.insts, other.tags, other.reported = fresh, fresh.table(Instance), fresh.table(Tag), []
    hosts = {h: HostCapacity(h, "z", 100, 100_000) for h in ("h1", "h2")}
    other.hosts = hosts
    ix = other.build()
    return state(other, ix, hosts)


@settings(max_examples=200, deadline=None)
@given(txns)
def test_indexes_after_puts_deletes_and_rollbacks_equal_indexes_built_from_scratch(
        steps: list[tuple[bool, list[tuple[Any, ...]]]]) -> None:
    store = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    w = World(store)
    for roll_back, ops in steps:
        before_rows = {name: dict(t.rows) for name, t in store.tables.items() if name in ("instances", "tags")}
        before = state(w, w.ix, w.hosts)
        tx = Txn(store)
        for op in ops:
            w.apply(tx, op)
            assert state(w, w.ix, w.hosts) == rebuilt(w)
        if roll_back:
            tx._rollback()
            after_rows = {name: dict(t.rows) for name, t in store.tables.items() if name in ("instances", "tags")}
            assert after_rows == before_rows and all(   # (tag rows are made as read: equal, not the same)
                after_rows["instances"][k] is r for k, r in before_rows["instances"].items())
            assert state(w, w.ix, w.hosts) == before
        assert state(w, w.ix, w.hosts) == rebuilt(w)


def test_a_change_no_index_keys_on_keeps_the_rows_place_in_its_group() -> None:
    """A state change replaces the row where it is (as a reload from a checkpoint files it), and
    the group's answer holds the new row."""
    store = Store(Path("/nonexistent"))
    table = store.table(Instance)
    ix: MultiIndex[Instance] = table.add_index(MultiIndex(lambda i: i.owner))
    rows = [instance(n, "a", "h1", "pending", None, (), "small", 0.0) for n in range(3)]
    for r in rows:
        table._set(r.key, r)
    running = instance(0, "a", "h1", "running", None, (), "small", 0.0)
    table._set(running.key, running)
    assert [r.id for r in ix.rows("a")] == ["i-0", "i-1", "i-2"]
    assert ix.rows("a")[0] is running and ix.get("a")["i-0"].state == "running"
