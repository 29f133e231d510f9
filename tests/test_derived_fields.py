"""An instance's MAC and domain UUID follow from its id (cloudctl/derived.py): rows keep a marker, not the
strings, yet every reader and the journal see the values, and state written before loads as it was.

`tests/data/state-before-derived-fields/` was written by main's store before the change: a checkpoint
(a new-shaped id with a random MAC and v4 UUID, an id of the old 8-digit shape, an instance from
before MACs and UUIDs, and one whose MAC and UUID happen to be what its id derives) and a journal
after it (a state change, one more instance); `expected.json` holds that store's digest and values."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from cloudctl.derived import domain_uuid, instance_mac
from cloudctl.drivers.hypervisor.base import FirewallSpec
from cloudctl.drivers.hypervisor.nwfilter import nwfilter_xml
from cloudctl.store.records import Instance, encode_row
from cloudctl.store.store import Store

BEFORE = Path(__file__).parent / "data" / "state-before-derived-fields"
NEW = "i-0123456789abcdef0"


def instance(iid: str = NEW, **kw: Any) -> Instance:
    base: dict[str, Any] = dict(id=iid, owner="111122223333", reservation_id="r-1", image_id="ami-1",
                                instance_type="m1.small", host="h1", zone="z", state="pending", launch_time=1.5)
    return Instance(**{**base, **kw})


def stored(row: Instance, name: str) -> Any:
    """What the row's slot itself holds (the class attribute is the descriptor)."""
    return getattr(Instance, name)._slot.__get__(row, Instance)


def test_a_new_instance_reads_and_writes_its_derived_mac_and_uuid() -> None:
    mac, uuid = instance_mac(NEW), domain_uuid(NEW)
    assert (mac, uuid) == ("02:78:9a:bc:de:f0", "01234567-89ab-8cde-8f00-000000000000")
    row = instance(mac=mac, uuid=uuid)
    assert (row.mac, row.uuid) == (mac, uuid)
    assert type(stored(row, "mac")) is not str and type(stored(row, "uuid")) is not str   # not kept per row
    text = encode_row(row)
    assert f'"mac":"{mac}","uuid":"{uuid}"' in text   # the journal's bytes, as before
    again = Instance.from_dict(json.loads(text))
    assert again == row and hash(again) == hash(row) and encode_row(again) == text
    moved = dataclasses.replace(row, state="running")
    assert (moved.mac, moved.uuid, moved.state) == (mac, uuid, "running")
    assert "02:78:9a:bc:de:f0" in repr(row)


def test_other_values_are_kept_as_given() -> None:
    row = instance(mac="02:aa:bb:cc:dd:ee", uuid="6f1c2b7e-3d4a-4b8c-9e0f-1a2b3c4d5e6f")
    assert (row.mac, row.uuid) == ("02:aa:bb:cc:dd:ee", "6f1c2b7e-3d4a-4b8c-9e0f-1a2b3c4d5e6f")
    bare = instance(mac=None, uuid="")
    assert (bare.mac, bare.uuid) == (None, "")
    assert '"mac":null,"uuid":""' in encode_row(bare)
    old = instance("i-1234abcd", mac="02:00:11:22:33:44")
    assert old.mac == "02:00:11:22:33:44" and instance_mac("i-1234abcd") is None
    assert instance_mac("i-0123456789abcdefg") is None and domain_uuid("I-0123456789ABCDEF0") is None
    assert instance(mac=instance_mac(NEW)) != instance(mac="02:78:9a:bc:de:f1")
    odd = instance("i-zzzzzzzzzzzzzzzzz", mac="02:zz:zz:zz:zz:zz", uuid="zzzzzzzz-zzzz-8zzz-8zz0-000000000000")
    assert (odd.mac, odd.uuid) == ("02:zz:zz:zz:zz:zz", "zzzzzzzz-zzzz-8zzz-8zz0-000000000000")   # any id: as given
    upper = instance("i-0123456789ABCDEF0", mac="02:78:9a:bc:de:f0", uuid="")
    assert (upper.mac, upper.uuid) == ("02:78:9a:bc:de:f0", "")   # read back as given, marked or not


async def test_state_written_before_loads_and_answers_as_it_was(tmp_path: Path) -> None:
    shutil.copytree(BEFORE, tmp_path / "state")
    expected = json.loads((BEFORE / "expected.json").read_text())
    s = Store(tmp_path / "state")
    await s.open()
    assert s.digest() == expected["digest"]   # every row encodes as main's store wrote it
    got = {i.id: [i.mac, i.uuid, i.state] for i in s.table(Instance).values()}
    assert got == expected["instances"]
    coincident = s.table(Instance).get("i-fedcba98765432100")
    assert type(stored(coincident, "mac")) is not str   # equal to its derived value: not kept either
    await s.started()
    await s.checkpoint()   # written from the marked rows, read back: the same state
    await s.close()
    again = Store(tmp_path / "state")
    await again.open()
    assert again.digest() == expected["digest"]
    assert {i.id: [i.mac, i.uuid, i.state] for i in again.table(Instance).values()} == expected["instances"]
    await again.close()


def test_a_firewall_spec_names_its_domain_and_keeps_no_mac_of_its_own() -> None:
    """The spec the security groups keep per instance (and a simulated host too) holds its MAC as
    the row does, and the filter a real host gets still says it."""
    mac = instance_mac(NEW)
    spec = FirewallSpec(NEW, mac, "10.0.0.5", (), ())   # type: ignore[arg-type]
    assert spec.mac == mac and type(FirewallSpec.mac._slot.__get__(spec, FirewallSpec)) is not str  # type: ignore[attr-defined]
    assert f'srcmacaddr="{mac}"' in nwfilter_xml("cloudctl-" + NEW, spec)
    other = FirewallSpec(NEW, "02:aa:bb:cc:dd:ee", "10.0.0.5", (), ())
    assert other.mac == "02:aa:bb:cc:dd:ee" and other != spec


def test_a_launch_giving_the_marker_makes_the_row_the_texts_make() -> None:
    """`derived_or_none` (what a launch gives a new instance's MAC and UUID): the same slots as the
    derived texts given, the same reads and encoding; None for an id they do not derive from."""
    from cloudctl.derived import derived_or_none
    from cloudctl.store.records import _field_names
    slots = [n for k in Instance.__mro__ for n in k.__dict__.get("__slots__", ())]
    for iid in (NEW, "i-00000000000000000", "i-fffffffffffffffff"):
        given = derived_or_none(iid)
        assert given is not None
        a = instance(iid, mac=given, uuid=given)
        b = instance(iid, mac=instance_mac(iid), uuid=domain_uuid(iid))
        member = {n: (Instance.__dict__[n]._slot if hasattr(Instance.__dict__[n], "_slot") else Instance.__dict__[n])
                  for n in slots}
        assert [member[n].__get__(a) for n in slots] == [member[n].__get__(b) for n in slots]
        assert a == b and a.mac == instance_mac(iid) and a.uuid == domain_uuid(iid)
        assert encode_row(a) == encode_row(b) and [getattr(a, n) for n in _field_names(Instance)] == \
            [getattr(b, n) for n in _field_names(Instance)]
    for iid in ("i-1234", "i-0123456789ABCDEF0", "vol-0123456789abcdef0x", "i-0123456789abcdefg"):
        assert derived_or_none(iid) is None
