"""Rows' key/value fields are read-only for real (a checkpoint encodes stored rows on a worker
thread while the loop runs), and state written while they were plain dicts loads and encodes the same.

`tests/data/state-before-frozen-maps/` was written by the store before FrozenMap existed: a
checkpoint (instance NICs, event data, OBM, switch options) and the journal after it (headnode
hnics, a published list's digests)."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudctl.store import checkpoint as ckpt
from cloudctl.store.frozen import FrozenMap
from cloudctl.store.records import (
    ROW_TYPES,
    BmHeadnode,
    BmNode,
    BmSwitch,
    Event,
    Instance,
    PublishedList,
)
from cloudctl.store.store import Store

BEFORE = Path(__file__).parent / "data" / "state-before-frozen-maps"


async def old_state(tmp_path: Path) -> Store:
    shutil.copytree(BEFORE, tmp_path / "state")
    s = Store(tmp_path / "state")
    await s.open()
    return s


async def test_state_written_with_plain_dicts_loads_read_only(tmp_path: Path) -> None:
    s = await old_state(tmp_path)
    inst = s.table(Instance).get("i-1")
    event = s.table(Event).get("000000000001")
    node, switch = s.table(BmNode).get("n1"), s.table(BmSwitch).get("sw1")
    hn, pub = s.table(BmHeadnode).get("hn1"), s.table(PublishedList).get("list-1")
    assert inst.vlan_nics == ({"name": "eth1", "mac": "52:54:00:00:00:01", "vlan": 7},)
    assert event.data == {"owner": "123456789012", "hosts": ("h1", "h2"), "nested": {"a": 1}}
    assert node.obm["password"] == "p" and switch.options == {"ovsdb": "unix:/x", "dummy_vlan": 4000}
    assert hn.hnics["eth0"]["network"] == "net1"
    assert (pub.sha512, pub.sha1, pub.deprecated) == ({"ami-1": "ab"}, {"ami-1": "cd"}, {"ami-2": "old"})
    attempts: list[Callable[[], Any]] = [
        lambda: inst.vlan_nics[0].__setitem__("vlan", 8),
        lambda: event.data["nested"].update(a=2),
        lambda: event.data.pop("owner"),
        lambda: node.obm.__setitem__("password", "leaked"),
        lambda: switch.options.setdefault("token", "t"),
        lambda: hn.hnics["eth0"].__setitem__("network", None),
        lambda: hn.hnics.__delitem__("eth0"),
        lambda: pub.sha512.clear(),
        lambda: pub.deprecated.popitem(),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match="cannot change"):
            attempt()
    with pytest.raises(TypeError):
        event.data |= {"x": 1}          # type: ignore[operator]   # in place on the row's own map
    assert event.data == {"owner": "123456789012", "hosts": ("h1", "h2"), "nested": {"a": 1}}
    assert hn.hnics["eth0"]["network"] == "net1" and node.obm["password"] == "p"
    assert {hash(r) for r in (inst, event, node, switch, hn, pub)}   # hashable, as frozen rows should be
    await s.close()


# Fields added to a record since the old files were written: an old row gains them, with their
# defaults, at the end (the dataclass's order), and nothing else changes.
ADDED = {"bm_nodes": {"metadata": {}, "obm_enabled": False}}


def _with_new_fields(line: str) -> str:
    table, key, row = json.loads(line)
    for k, v in ADDED.get(table, {}).items():
        row.setdefault(k, v)
    return json.dumps([table, key, row], separators=(",", ":"))


async def test_the_encoding_is_unchanged(tmp_path: Path) -> None:
    """Rows loaded from the old files encode to the very bytes the old code wrote."""
    s = await old_state(tmp_path)
    lines = [ln for ln in (BEFORE / "checkpoint.00000002").read_text().splitlines()[1:-1]]
    journal_ops = json.loads((BEFORE / "journal.00000002").read_text().splitlines()[1].split(" ", 1)[1])
    lines += [json.dumps([op[1], op[2], op[3]], separators=(",", ":")) for op in journal_ops]
    lines = [_with_new_fields(ln) for ln in lines]
    await s.checkpoint()
    now = (tmp_path / "state" / f"checkpoint.{s.gen:08d}").read_text().splitlines()[1:-1]
    # Fields rows gained since the old files were written encode after the old ones, at their defaults.
    for added in (',"ephemeral":[]',):
        now = [ln.replace(added, "") if ln.startswith('["instances",') else ln for ln in now]
    assert sorted(now) == sorted(lines)
    assert len(list(ckpt.read_checkpoint(tmp_path / "state" / f"checkpoint.{s.gen:08d}"))) == 6
    await s.close()


def test_a_changed_copy_makes_a_new_row() -> None:
    hn = BmHeadnode(name="hn", project="p", image_id="ami-1", created=1.0, hnics={"e0": {"mac": "m", "network": None}})
    moved = dataclasses.replace(hn, hnics={**hn.hnics, "e0": {**hn.hnics["e0"], "network": "n"}})
    assert type(moved.hnics) is FrozenMap and type(moved.hnics["e0"]) is FrozenMap
    assert (hn.hnics["e0"]["network"], moved.hnics["e0"]["network"]) == (None, "n")
    for same in (copy.copy(hn.hnics), copy.deepcopy(hn.hnics), pickle.loads(pickle.dumps(hn.hnics))):
        assert same == hn.hnics and type(same) is FrozenMap
    assert BmNode(name="a").obm is BmNode(name="b").obm   # the shared empty default cannot be changed


def test_no_row_field_is_a_mutable_container() -> None:
    """A new field must not bring back a dict, list or set a caller could change in place."""
    for t in ROW_TYPES:
        loose = [f"{f.name}: {f.type}" for f in dataclasses.fields(t)
                 if any(k in str(f.type) for k in ("dict[", "list[", "set[", "Dict[", "List["))]
        assert not loose, f"{t.__name__}: {loose} (use Mapping/tuple, frozen in __post_init__)"
