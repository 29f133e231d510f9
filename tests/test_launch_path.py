"""What the launch path's CPU cuts must not change: a security group's member addresses, kept as
rows come and go, are what a recomputation from its members gives (and a change reaches the
filters). (libvirt's watch and timer hooks run on libvirt's own event thread now:
tests/test_libvirt_driver.py.)"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloudctl.config import InstanceType, load_config
from cloudctl.core.compute import _replaced
from cloudctl.core.scheduler import Scheduler
from cloudctl.core.security_groups import _MembersIndex
from cloudctl.store.records import Instance
from cloudctl.store.store import Store

from support import DEFAULT_CONFIG
from support.threads import racing

# -- a security group's member addresses --------------------------------------------------------------
steps = st.lists(st.tuples(st.integers(0, 9),                               # which instance
                           st.sampled_from([None, "10.0.0.1", "10.0.0.2", "10.0.0.10", "9.9.9.9"]),
                           st.sampled_from(["pending", "running", "stopped", "shutting-down", "terminated", "gone"]),
                           st.sampled_from([(), ("sg-a",), ("sg-b",), ("sg-a", "sg-b")])),
                 max_size=60)


@given(steps)
def test_group_addresses_follow_their_members(ops: list[tuple[int, str | None, str, tuple[str, ...]]]) -> None:
    """Instances put, changed and deleted in any order (two on one address, as on two networks):
    each group's sorted live addresses equal a recomputation from its members, and every change of
    them was reported with the row that made it."""
    s = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    table = s.table(Instance)
    reported: list[tuple[str, list[str]]] = []
    index = table.add_index(_MembersIndex(lambda row, moved: reported.append((row.id, list(moved)))))
    before = {g: list(index.ips(g)) for g in ("sg-a", "sg-b")}
    for n, ip, state, groups in ops:
        iid = f"i-{n}"
        reported.clear()
        if state == "gone":
            table._set(iid, None)
        else:
            table._set(iid, Instance(id=iid, owner="o", reservation_id="r", image_id="ami", instance_type="t",
                                     host="h", zone="z", state=state, launch_time=0.0, private_ip=ip,
                                     group_ids=groups))
        for g in ("sg-a", "sg-b"):
            want = sorted({i.private_ip for i in table.values()
                           if g in i.group_ids and i.private_ip and i.state not in ("shutting-down", "terminated")})
            assert index.ips(g) == want
            if want != before[g]:
                assert any(g in moved for _, moved in reported)
            before[g] = want
        assert all(rid == iid for rid, _ in reported)




# -- placement by zone ----------------------------------------------------------------------------------
hosts_st = st.lists(st.tuples(st.sampled_from(["z1", "z2", "z3"]), st.integers(0, 10), st.integers(0, 4600),
                              st.booleans(), st.one_of(st.none(), st.integers(0, 100)), st.integers(0, 110)),
                    min_size=1, max_size=12)


@given(hosts_st, st.sampled_from([None, "z1", "z2", "z3", "z9"]), st.sampled_from([0, 10, 40]))
@settings(deadline=None)
@example([("z1", 6, 0, True, None, 0)] * 3, "z1", 0)   # (room 1 a host: a cap of 2 needs two of them)
def test_a_zones_room_and_pick_are_those_of_all_hosts_filtered_by_zone(
        hosts: list[tuple[str, int, int, bool, int | None, int]], zone: str | None, disk: int) -> None:
    """The scheduler looks at the zone's hosts only: the same room and the same host (ties to the
    first in host order) as a walk over every host's `room_for`, keeping those of the zone; hosts
    over-committed (more used than offered) and with or without a disk limit among them."""
    sched = Scheduler(Store(Path("/nonexistent")), load_config(DEFAULT_CONFIG))
    t = InstanceType(vcpus=2, memory_mib=512)
    for n, (z, used_cpus, used_mem, enabled, disk_gib, used_disk) in enumerate(hosts):
        sched.add_host(f"h{n}", z, 8, 4096, 1.0, 1.0, disk_gib=disk_gib)
        h = sched.hosts[f"h{n}"]
        h.used_vcpus, h.used_memory_mib, h.enabled, h.used_disk_gib = used_cpus, used_mem, enabled, used_disk
    every = [h for h in sched.hosts.values() if zone is None or h.zone == zone]
    full = sum(h.room_for(t, disk) for h in every)
    assert sched.room(zone, t, disk) == full
    for cap in (1, 2, 7):   # (a launch of `cap` at most: the exact room below it, at least `cap` above)
        capped = sched.room(zone, t, disk, cap=cap)
        assert capped == full if full < cap else cap <= capped <= full
    rooms = sched.rooms(t, disk)
    for z in ("z1", "z2", "z3"):
        assert rooms.get(z, 0) == sum(h.room_for(t, disk) for h in sched.hosts.values() if h.zone == z)
    fits = [h for h in every if h.room_for(t, disk) >= 1]
    best = max(fits, key=lambda h: (h.memory_mib - h.used_memory_mib, h.vcpus - h.used_vcpus), default=None)
    assert sched.pick(zone, t, disk=disk) is best


# -- a state change's new row ---------------------------------------------------------------------------
updates_st = st.one_of(
    st.dictionaries(st.sampled_from(["state", "transition_reason", "state_reason_code", "private_ip", "host"]),
                    st.one_of(st.none(), st.text(max_size=5))),
    st.fixed_dictionaries({"state": st.sampled_from(["running", "terminated"])},
                          optional={"ever_ran": st.booleans(), "terminated_at": st.floats(allow_nan=False),
                                    "group_ids": st.lists(st.text(max_size=3), max_size=2)}))


@given(updates_st)
def test_a_replaced_instance_is_dataclasses_replace(updates: dict[str, object]) -> None:
    """`_set_state`'s copy is `dataclasses.replace`'s row, field for field (the normalised group
    ids included), and a name that is no field is refused with the same TypeError."""
    row = Instance(id="i-1", owner="a", reservation_id="r-1", image_id="ami-1", instance_type="t", host="h",
                   zone="z", state="pending", launch_time=1.0, group_ids=("sg-a",), ephemeral=("ephemeral0=sdb",),
                   vlan_nics=({"name": "n", "mac": "m", "vlan": 5},))
    got, want = _replaced(row, dict(updates)), replace(row, **updates)   # type: ignore[arg-type]
    assert got == want and type(got.group_ids) is tuple
    with pytest.raises(TypeError):
        _replaced(row, {**updates, "no_such_field": 1})


def _slots(row: Instance) -> list[object]:
    """What each slot of the row holds, read past the descriptors (derived fields' markers too)."""
    out = []
    for n in Instance.__slots__:
        d = Instance.__dict__[n]
        out.append(getattr(d, "_slot", d).__get__(row))
    return out


_ID = "i-0123456789abcdef0"   # (a new id's shape: its MAC and UUID are derived, kept as a marker)
copy_updates_st = st.dictionaries(
    st.sampled_from(["state", "transition_reason", "state_reason_code", "state_reason_message", "private_ip",
                     "host", "ever_ran", "terminated_at", "mac", "uuid", "kernel_id", "root_gib",
                     "disable_api_termination", "group_ids", "ephemeral", "vlan_nics", "id"]),
    st.one_of(st.none(), st.text(max_size=5), st.booleans(), st.floats(allow_nan=False), st.just(""),
              st.just("02:78:9a:bc:de:f0"), st.just("01234567-89ab-8cde-8f00-000000000000"), st.just([]),
              st.just(()), st.lists(st.text(max_size=3), max_size=2)))


@given(st.sampled_from(["i-1", _ID]), st.booleans(), copy_updates_st)
@example(_ID, False, {"id": "i-1"})   # (the id: the derived fields' markers would follow it)
@example(_ID, False, {"group_ids": ["sg-b"], "state": "running"})   # (normalised by __post_init__)
@example(_ID, True, {"kernel_id": None, "state_reason_code": "x", "mac": "02:78:9a:bc:de:f0"})
@example("i-1", False, {"ephemeral": [], "transition_reason": "t"})
def test_a_replaced_instance_holds_what_its_constructor_stores(iid: str, rare: bool,
                                                             updates: dict[str, object]) -> None:
    """`_replaced`'s copy slot by slot (the changes `__post_init__` leaves alone) stores in every
    slot what making the row again with those values stores: derived fields' markers where the
    value is the derived one, the rare fields' shared defaults when they all are."""
    row = Instance(id=iid, owner="a", reservation_id="r-1", image_id="ami-1", instance_type="t", host="h",
                   zone="z", state="pending", launch_time=1.0, group_ids=("sg-a",),
                   mac="02:78:9a:bc:de:f0", uuid="01234567-89ab-8cde-8f00-000000000000",
                   kernel_id="aki-1" if rare else None)
    try:
        want = replace(row, **updates)   # type: ignore[arg-type]
    except Exception as e:   # (a value the row refuses: the same refusal)
        with pytest.raises(type(e)):
            _replaced(row, dict(updates))
        return
    got = _replaced(row, dict(updates))
    if iid == _ID:
        assert _slots(row)[Instance.__slots__.index("mac")] == b"="   # (derived: the marker)
    assert got == want and _slots(got) == _slots(want)
    assert all(a is b for a, b in zip(_slots(got), _slots(want)) if type(a) in (bytes, type(None), bool))


def test_the_derived_fields_kept_text_is_what_they_make() -> None:
    """An instance's MAC and UUID read from the kept text are the ones made from its id, whichever
    of them was read or set first, and past the number kept."""
    from cloudctl.derived import _KEPT_MAX, _mac, _uuid
    ids = [f"i-{n:017x}" for n in range(_KEPT_MAX * 2 + 3)]
    rows = [Instance(id=i, owner="a", reservation_id="r", image_id="ami", instance_type="t", host="h", zone="z",
                     state="pending", launch_time=0.0, mac=_mac(i), uuid=_uuid(i) or "") for i in ids]
    for _ in range(2):
        for i, r in zip(ids, rows):
            assert (r.mac, r.uuid) == (_mac(i), _uuid(i))
            assert _slots(r)[Instance.__slots__.index("mac")] == b"="


def test_the_derived_fields_kept_text_is_safe_beside_other_threads() -> None:
    """Rows are made and read on other threads too (the state's load, the hosts' workers): the kept
    text must neither raise nor answer another id's text when threads switch inside it (dropping
    the oldest key one at a time raised KeyError here)."""
    from cloudctl.derived import _mac, _uuid, domain_uuid, instance_mac

    def work(t: int) -> None:
        for n in range(20_000):
            i = f"i-{t:02x}{n:015x}"
            assert (instance_mac(i), domain_uuid(i)) == (_mac(i), _uuid(i))

    errors = racing(work)
    assert errors == []


# -- a launch's tags checked ----------------------------------------------------------------------------
def _pairs_checked_one_by_one(tags: list[tuple[str | None, str]]) -> list[tuple[str, str]] | str:
    """What `Tags.validate_pairs` answered before its printable pairs skipped the text checks' calls."""
    from cloudctl.core.errors import CloudError
    from cloudctl.core.tags import _check_text
    out = []
    try:
        for key, value in tags:
            if key is None or not 1 <= len(key) <= 128:
                raise CloudError("InvalidParameterValue", "Tag keys must be between 1 and 128 characters")
            if len(value) > 256:
                raise CloudError("InvalidParameterValue", f"Tag value for key '{key}' exceeds 256 characters")
            if key.lower().startswith("aws:"):
                raise CloudError("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
            _check_text("Tag.Key", key)
            _check_text("Tag.Value", value)
            out.append((key, value))
    except CloudError as e:
        return f"{e.code}: {e.message}"
    return out


_tag_text = st.text(st.sampled_from(["a", "Z", " ", "\u00a0", "\t", "\x01", "\x7f", "\ud800", "\ufffe", "\u00e9",
                                     "\u200b", "\U0001f600", ":"]), max_size=6) | st.just("aws:x")


@given(st.lists(st.tuples(st.one_of(st.none(), _tag_text), _tag_text), max_size=4))
@example([("k", "ok"), ("k2", "\x01")])
@example([("\ud800", "v"), ("k", "\x01")])
@example([("k\u00a0", "\ufffe")])
def test_tag_pairs_are_checked_as_one_by_one(tags: list[tuple[str | None, str]]) -> None:
    """The same pairs or the same refusal (the first pair's first fault) as checking each text."""
    from cloudctl.core.errors import CloudError
    from cloudctl.core.tags import Tags
    try:
        got: list[tuple[str, str]] | str = Tags.validate_pairs(tags)
    except CloudError as e:
        got = f"{e.code}: {e.message}"
    assert got == _pairs_checked_one_by_one(tags)
