"""Rows with rare fields (store/rare.py) or derived ones (cloudctl/derived.py) are written by
an encoder that reads their slots (`records._slot_encoder`) when the rare fields hold their
shared defaults and the derived ones the marker, by the general one otherwise: either way the
text is `json.dumps` of the row's fields, compact, as every journal was written. And an instance
state change's event made from one kept data map is the row `Events.add` made."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloudctl.core import events as events_mod
from cloudctl.derived import MARKER, domain_uuid, instance_mac
from cloudctl.store import frozen, records
from cloudctl.store.records import Event, Instance, Volume, encode_row

from support.threads import racing

hex17 = st.text("0123456789abcdef", min_size=17, max_size=17)
plain = st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'), max_size=12)
awkward = st.text(max_size=6)
text = st.one_of(plain, awkward)
maybe = st.one_of(st.none(), text)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1796670272.6460822]))
groups = st.lists(plain, max_size=3).map(tuple)


def _want(row: Any) -> str:
    return json.dumps(row.to_dict(), separators=(",", ":"))


def _slot_plans(cls: type) -> dict[Any, Any]:
    enc = records._ROW_ENCODERS.get(cls) or records._row_encoder(cls)
    return enc.__globals__["plans"]   # type: ignore[no-any-return]   (the slot encoder's own plans)


@given(hex17, text, text, maybe, maybe, floats, st.integers(-2 ** 70, 2 ** 70), maybe, st.booleans(), groups,
       st.booleans(), st.booleans(), st.sampled_from([None, "aki-1", 'q"uote']))
def test_an_instance_row_is_written_as_json_dumps(digits: str, owner: str, state: str, key_name: str | None,
                                                 private_ip: str | None, launch_time: float, index: int,
                                                 root_device: str | None, ever_ran: bool, group_ids: tuple[str, ...],
                                                 own_mac: bool, own_uuid: bool, kernel_id: str | None) -> None:
    iid = f"i-{digits}"
    row = Instance(id=iid, owner=owner, reservation_id="r-1", image_id="ami-1", instance_type="t3.nano",
                   host="h0", zone="z", state=state, launch_time=launch_time, launch_index=index,
                   key_name=key_name, private_ip=private_ip, root_device=root_device, ever_ran=ever_ran,
                   group_ids=group_ids, kernel_id=kernel_id,
                   mac="02:00:00:00:00:01" if own_mac else instance_mac(iid),
                   uuid="00000000-0000-4000-8000-000000000000" if own_uuid else domain_uuid(iid) or "")
    enc = records._ROW_ENCODERS.get(Instance) or records._row_encoder(Instance)
    assert enc(row) == _want(row) and enc(row) == _want(row) and encode_row(row) == _want(row)


def test_the_slot_encoder_writes_a_launched_instance() -> None:
    """A row as a launch makes it (derived MAC and UUID, rare fields at their defaults) goes the
    slot encoder's way (a plan made for its shape); its state change's copy too; one with a rare
    field set, or a MAC of its own, goes the general way, and all are written as before."""
    iid = "i-0123456789abcdef0"
    row = Instance(id=iid, owner="o", reservation_id="r-1", image_id="ami-1", instance_type="t3.nano",
                   host="h0", zone="z", state="pending", launch_time=1796670272.6460822,
                   mac=instance_mac(iid), uuid=domain_uuid(iid) or "", group_ids=("sg-1",))
    assert object.__getattribute__(row, "_rare") is Instance.__rare_defaults__   # type: ignore[attr-defined]
    assert Instance.__dict__["mac"]._slot.__get__(row) is MARKER
    plans = _slot_plans(Instance)
    plans.clear()
    enc = records._ROW_ENCODERS[Instance]
    assert enc(row) == _want(row)
    assert len(plans) == 1
    for changed in (dataclasses.replace(row, state="running", ever_ran=True),
                    dataclasses.replace(row, state_reason_code="Server.InternalError"),
                    dataclasses.replace(row, mac="02:aa:bb:cc:dd:ee"),
                    dataclasses.replace(row, uuid=""),
                    dataclasses.replace(row, owner='q"uote'),
                    dataclasses.replace(row, launch_time=float("inf"))):
        assert enc(changed) == _want(changed) == encode_row(changed)
    assert len(plans) == 1   # (one shape: the others took the general way, or the plan gave way)


@given(text, st.integers(0, 2 ** 40), floats, maybe, st.sampled_from([None, 100, 3000]), maybe, st.booleans())
def test_a_volume_row_is_written_as_json_dumps(owner: str, size: int, created: float, instance_id: str | None,
                                              iops: int | None, message: str | None, delete: bool) -> None:
    row = Volume(id="vol-1", owner=owner, zone="z", size=size, volume_type="gp2", state="in-use", created=created,
                 iops=iops, instance_id=instance_id, state_message=message, delete_on_termination=delete)
    enc = records._ROW_ENCODERS.get(Volume) or records._row_encoder(Volume)
    assert enc(row) == _want(row) and encode_row(row) == _want(row)


class _Tx:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def put(self, row: Any) -> None:
        self.rows.append(row)


def test_a_state_change_event_from_a_kept_map_is_the_row_add_makes(tmp_path: Any) -> None:
    from cloudctl.store.store import Store
    events = events_mod.Events(Store(tmp_path))
    tx = _Tx()
    for n in range(events_mod._STATE_DATA_MAX * 2 + 3):   # (past the number kept: cleared, made again)
        owner, host, state = f"o{n % 5}", f"h{n % 300}", ("running", "stopped")[n % 2]
        a = events.add(tx, "instance.state", "i-1", "pending -> running", None, owner=owner, host=host, state=state)
        data = events_mod.state_data(owner, host, state)
        assert events_mod.state_data(owner, host, state) is data
        b = events.record(tx, "instance.state", "i-1", "pending -> running", None, data)
        assert type(b.data) is frozen.FrozenMap and b.data == a.data == {"owner": owner, "host": host, "state": state}
        assert b.data is a.data   # (one shared map for both)
        assert b.message is a.message
        assert dataclasses.replace(b, id=a.id, time=a.time) == a
        enc = records._ROW_ENCODERS.get(Event) or records._row_encoder(Event)
        assert enc(b) == _want(b) and enc(a) == _want(a)
    assert [r.id for r in tx.rows] == sorted(r.id for r in tx.rows)


def test_shared_maps_given_again_and_past_the_number_kept() -> None:
    """A map `shared_map` gave is given back as is; an equal new one is the kept one; maps of other
    value types (1, 1.0, True) stay apart, past the number kept by identity too."""
    for n in range(frozen._MAPS_BY_ID_MAX * 2 + 7):
        kept = frozen.shared_map(frozen.freeze({"k": f"v{n % 11}"}))
        again = frozen.shared_map(frozen.freeze({"k": f"v{n % 11}"}))
        assert again is kept and frozen.shared_map(kept) is kept
        for one in (1, 1.0, True):
            m = frozen.freeze({"k": one})
            assert frozen.shared_map(m) is m


def test_floats_written_from_threads_past_the_number_kept() -> None:
    """Floats' kept text is forgotten all at once when full: rows written on several threads at once
    (a checkpoint's worker beside the loop) raise nothing and are written as json.dumps."""
    def write(k: int) -> None:
        for n in range(3000):
            row = Event(f"{n:012d}", 1796670272.25 + k * 10_000 + n / 7, "k", "s", "m")
            enc = records._ROW_ENCODERS.get(Event) or records._row_encoder(Event)
            assert enc(row) == _want(row)

    errors = racing(write)
    assert not errors, errors[:1]
