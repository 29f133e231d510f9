"""Rows keep their rarely set fields in one slot (cloudctl/store/rare.py): smaller rows, yet every
reader, comparison, copy and the bytes written are what a row with a slot per field gives, and a
load from disk (store/rowbuild.py's makers) makes the same rows as the constructor."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudctl.store.rare import rare_fields
from cloudctl.store.records import Instance, Volume, encode_row
from cloudctl.store.rowbuild import RowBuilder, maker
from cloudctl.store.store import Store

IID = "i-0123456789abcdef0"


def instance(iid: str = IID, **kw: Any) -> Instance:
    base: dict[str, Any] = dict(id=iid, owner="111122223333", reservation_id="r-1", image_id="ami-1",
                                instance_type="m1.small", host="h1", zone="z", state="running", launch_time=1.5,
                                private_ip="10.0.0.5", group_ids=("sg-1",), ever_ran=True, root_device="/dev/sda1")
    return Instance(**{**base, **kw})


def plain(cls: type) -> type:
    """The same fields and defaults as `cls`, a slot each (what the rows were before)."""
    specs = [(f.name, f.type, dataclasses.field(default=f.default)) if f.default is not dataclasses.MISSING
             else (f.name, f.type) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", specs, frozen=True, slots=True)


RARE = dict(state_reason_code="Client.UserInitiatedShutdown", state_reason_message="Client.UserInitiatedShutdown: x",
            transition_reason="User initiated (2026-12-07 10:00:00 GMT)", disable_api_termination=True,
            terminated_at=9.5, kernel_id="aki-1", ramdisk_id="ari-1", root_gib=20,
            ephemeral=("ephemeral0=/dev/sdb",))


@pytest.mark.parametrize("row_type", [Instance, Volume])
def test_rows_with_every_rare_field_default_share_one_object_and_are_smaller(row_type: type) -> None:
    assert len(row_type.__slots__) < len(dataclasses.fields(row_type))
    twin = plain(row_type)
    if row_type is Instance:
        a, b = instance(), instance("i-0123456789abcdef1")
        values = {f.name: getattr(a, f.name) for f in dataclasses.fields(Instance)}
    else:
        a, b = (Volume(id=v, owner="o", zone="z", size=8, volume_type="gp3", state="in-use", created=1.0)
                for v in ("vol-1", "vol-2"))
        values = {f.name: getattr(a, f.name) for f in dataclasses.fields(Volume)}
    assert a._rare is b._rare   # type: ignore[attr-defined]
    assert sys.getsizeof(a) < sys.getsizeof(twin(**values))


def test_an_instance_reads_writes_and_compares_as_a_row_with_a_slot_per_field() -> None:
    Twin = plain(Instance)
    for kw in ({}, RARE, {"kernel_id": "aki-1"}, {"ephemeral": ["ephemeral0=/dev/sdb"]},
               {"disable_api_termination": 0, "transition_reason": "x"}, {"vlan_nics": [{"name": "e", "vlan": 5}]}):
        row = instance(**kw)
        values = {f.name: getattr(row, f.name) for f in dataclasses.fields(Instance)}
        for name, given in kw.items():
            v = getattr(row, name)
            assert v == (tuple(given) if type(given) is list else given) or name == "vlan_nics"
            assert type(v) is not list   # sequences become tuples, as before
        if "disable_api_termination" in kw:
            # (0 equals False, the default, but is not it: kept as given)
            assert type(row.disable_api_termination) is type(kw["disable_api_termination"])
        assert encode_row(row) == encode_row(Twin(**values))   # the journal's bytes
        again = Instance.from_dict(json.loads(encode_row(row)))
        assert again == row and hash(again) == hash(row)
        for same in (copy.copy(row), copy.deepcopy(row), pickle.loads(pickle.dumps(row))):
            assert same == row and encode_row(same) == encode_row(row)
        assert repr(row).replace("Instance(", "") == repr(Twin(**values)).replace("PlainInstance(", "")
    row = instance(**RARE)
    back = dataclasses.replace(row, **{k: Instance.__dataclass_fields__[k].default for k in RARE})
    assert back == instance() and back._rare is instance()._rare   # type: ignore[attr-defined]
    assert dataclasses.replace(row, state="stopped").kernel_id == "aki-1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.kernel_id = "aki-2"   # type: ignore[misc]


def test_rare_fields_need_a_plain_default_and_a_slotted_dataclass() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class NoDefault:
        a: str
        b: int = 0

    with pytest.raises(TypeError):
        rare_fields("a")(NoDefault)

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        b: int = 0

    with pytest.raises(TypeError):
        rare_fields("b")(NoSlots)


def test_the_loads_maker_makes_the_constructors_rows() -> None:
    """A load builds rows without the constructor (store/rowbuild.py): from JSON, where tuples are
    lists and an empty one is `[]`, the rows and their shared defaults are the constructor's."""
    for kw in ({}, RARE, {"ephemeral": ("ephemeral0=/dev/sdb",)}):
        row = instance(**kw)
        d = json.loads(encode_row(row))
        names = tuple(d)
        made = maker(Instance, names)(d.values())
        assert type(made) is Instance and made == row and encode_row(made) == encode_row(row)
        assert (made._rare is Instance.__rare_defaults__) == (not kw)   # type: ignore[attr-defined]
        assert made.ephemeral == row.ephemeral and type(made.ephemeral) is tuple
        built = RowBuilder()
        for _ in range(3):   # (the first row checks the maker against the constructor)
            assert built.build(Instance, dict(d)) == row


async def test_rows_with_rare_values_survive_the_journal_and_a_checkpoint(tmp_path: Path) -> None:
    rows = [instance(), instance("i-0123456789abcdef1", **RARE), instance("i-0123456789abcdef2", kernel_id="aki-1")]
    vol = Volume(id="vol-1", owner="o", zone="z", size=8, volume_type="gp3", state="error", created=1.0,
                 iops=3000, state_message="no space")
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        for r in (*rows, vol):
            tx.put(r)
    await s.sync()
    digest = s.digest()
    await s.close()
    for checkpoint in (False, True):
        s = Store(tmp_path)
        await s.open()
        assert s.digest() == digest
        assert [s.table(Instance).get(r.id) for r in rows] == rows and s.table(Volume).get("vol-1") == vol
        assert s.table(Instance).get(rows[0].id)._rare is Instance.__rare_defaults__   # type: ignore[union-attr]
        if checkpoint:
            await s.started()
            await s.checkpoint()
        await s.close()


BEFORE = Path(__file__).parent / "data" / "state-before-rare-fields"


async def test_state_written_before_loads_as_it_was(tmp_path: Path) -> None:
    """`tests/data/state-before-rare-fields/` was written by main's store before this change: a
    checkpoint (instances stopped, terminated, with a kernel, ramdisk, root size, instance-store disk
    and a bare-metal NIC, one with every rare field default; a volume in error with its options) and
    a journal after it (a state change, one more instance); `expected.json` holds that store's digest
    and the rare fields' values."""
    shutil.copytree(BEFORE, tmp_path / "state")
    expected = json.loads((BEFORE / "expected.json").read_text())

    def rare(s: Store) -> tuple[dict[str, Any], dict[str, Any]]:
        def plain(v: Any) -> Any:
            return json.loads(json.dumps(v))
        return ({i.id: {f: plain(getattr(i, f)) for f in Instance.__rare__} for i in s.table(Instance).values()},   # type: ignore[attr-defined]
                {v.id: {f: getattr(v, f) for f in Volume.__rare__} for v in s.table(Volume).values()})   # type: ignore[attr-defined]

    s = Store(tmp_path / "state")
    await s.open()
    assert s.digest() == expected["digest"]   # every row encodes as main's store wrote it
    assert rare(s) == (expected["instances"], expected["volumes"])
    assert s.table(Instance).get("i-0123456789abcdef4")._rare is not Instance.__rare_defaults__   # type: ignore[union-attr]
    assert s.table(Volume).get("vol-1")._rare is Volume.__rare_defaults__   # type: ignore[union-attr]
    await s.started()
    await s.checkpoint()   # written from the packed rows, read back: the same state
    await s.close()
    again = Store(tmp_path / "state")
    await again.open()
    assert again.digest() == expected["digest"] and rare(again) == (expected["instances"], expected["volumes"])
    await again.close()


def test_a_class_whose_field_is_derived_after_it_is_made() -> None:
    """`__init__` sets each field through its descriptor, bound when the class is made: a field made
    derived after the class (as derive_mac does to Instance) is bound again and keeps its marker,
    and the signature is the dataclass's."""
    import inspect

    from cloudctl.derived import _DERIVED, derive_mac

    @rare_fields("note")
    @dataclasses.dataclass(frozen=True, slots=True)
    class Nic:
        name: str
        mac: str | None = None
        note: str = ""

    def params(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    want = params(plain(Nic))
    assert params(Nic) == want
    derive_mac(Nic, "name")
    first = Nic("i-0123456789abcdef0", "02:78:9a:bc:de:f0")
    assert params(Nic) == want
    for row in (first, Nic("i-0123456789abcdef0", mac="02:78:9a:bc:de:f0"),
                Nic(name="i-0123456789abcdef0", mac="02:78:9a:bc:de:f0", note="")):
        assert Nic.__dict__["mac"]._slot.__get__(row) is _DERIVED   # (the marker kept, not the text)
        assert (row.name, row.mac, row.note) == ("i-0123456789abcdef0", "02:78:9a:bc:de:f0", "")
    other = Nic("i-0123456789abcdef0", "02:00:00:00:00:01", note="n")
    assert (other.mac, other.note) == ("02:00:00:00:00:01", "n")
    with pytest.raises(TypeError):
        Nic()   # type: ignore[call-arg]


def _as_dataclass_makes_it(cls: type, values: dict[str, Any]) -> Any:
    """What the dataclass's own `__init__` does: each field by `object.__setattr__`, then `__post_init__`."""
    row = object.__new__(cls)
    for name, v in values.items():
        object.__setattr__(row, name, v)
    post = getattr(row, "__post_init__", None)
    if post is not None:
        post()
    return row


def _slots(row: Any) -> list[Any]:
    return [k.__dict__[n].__get__(row) if hasattr(k.__dict__[n], "__get__") else None
            for k in type(row).__mro__ for n in k.__dict__.get("__slots__", ())]


def test_every_row_type_and_the_launch_spec_made_as_the_dataclass_makes_them() -> None:
    """`fast_init`'s `__init__` (every row type, the launch spec) stores what the dataclass's
    stored, slot for slot, by keyword, by position and with defaults, lists given for tuples."""
    from cloudctl.core.launch import LaunchSpec
    from cloudctl.store.records import ROW_TYPES

    for cls in (*ROW_TYPES, LaunchSpec):
        fields = [f for f in dataclasses.fields(cls) if f.init]
        for variant in range(3):
            values: dict[str, Any] = {}
            for n, f in enumerate(fields):
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    values[f.name] = f"v{n}"
                elif variant == 1:
                    d = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                    values[f.name] = ["a", "b"] if d == () else ("w" if isinstance(d, str) else d)
                elif variant == 2:
                    values[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            want = _as_dataclass_makes_it(cls, {f.name: values.get(f.name, f.default) for f in fields
                                                if f.name in values or f.default is not dataclasses.MISSING})
            by_kw = cls(**values)
            by_pos = cls(*(values[f.name] if f.name in values else f.default for f in fields))
            for row in (by_kw, by_pos):
                assert row == want and _slots(row) == _slots(want), (cls.__name__, variant)
