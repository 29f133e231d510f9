"""What the launch path's speed-ups must not change: ids stay well-formed, unique and unpredictable;
the journal and checkpoint encoding of a row is byte for byte the old `json.dumps(row.to_dict())`;
indexes that hold a lone row (or a lone resource id) without a container answer as before; a tag's
key is made once, and a journal written by this code replays to the same state."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2 import form
from cloudctl.core import ids
from cloudctl.core.tags import Tags
from cloudctl.store.checkpoint import encode_row
from cloudctl.store.records import Instance, Tag
from cloudctl.store.store import MultiIndex, Store

text = st.text(max_size=12)   # any code point: non-ASCII and control characters are escaped the same way


def old_encoding(row: Any) -> str:
    return json.dumps({f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.init},
                      separators=(",", ":"))


# -- ids ----------------------------------------------------------------------------------------------
def test_ids_are_well_formed_and_unique() -> None:
    made = [ids.new_id("i") for _ in range(50_000)]   # ~6 refills of the buffer
    assert len(set(made)) == len(made)
    assert all(ids.well_formed(i, "i") for i in made)
    digits = "".join(i[2:] for i in made)
    for d in "0123456789abcdef":   # each digit ~1/16 of 850,000: a stuck or skewed source fails
        assert abs(digits.count(d) / len(digits) - 1 / 16) < 0.005
    macs = [ids.new_mac() for _ in range(1000)]
    assert len(set(macs)) == 1000 and all(re.fullmatch(r"02(:[0-9a-f]{2}){5}", m) for m in macs)
    uuids = [ids.new_uuid() for _ in range(1000)]
    assert len(set(uuids)) == 1000
    for u in uuids:
        parsed = uuid.UUID(u)
        assert str(parsed) == u and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_uuids_made_in_batches_are_version_4_random_and_unique() -> None:
    """`new_uuid`'s UUIDs, made 256 at a time from one read: each well-formed (version 4, RFC 4122
    variant), none repeated over many batches, their random digits evenly spread (a digit placed
    wrongly, or two UUIDs sharing their bytes, fails), their variant digit too."""
    made = [ids.new_uuid() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    for u in made[:3000]:
        parsed = uuid.UUID(u)
        assert str(parsed) == u and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    for at in [*range(0, 8), *range(9, 13), 15, 16, 17, *range(20, 23), *range(24, 36)]:   # (the random ones)
        column = "".join(u[at] for u in made)
        for d in "0123456789abcdef":
            assert abs(column.count(d) / len(column) - 1 / 16) < 0.012, (at, d)
    variants = "".join(u[19] for u in made)
    assert all(abs(variants.count(d) / len(variants) - 1 / 4) < 0.02 for d in "89ab")


def test_a_forked_child_does_not_reuse_the_parents_uuids() -> None:
    ids.new_uuid()   # the parent holds a partly used batch
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, " ".join(ids.new_uuid() for _ in range(20)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = set(f.read().split())
    os.waitpid(pid, 0)
    parent = {ids.new_uuid() for _ in range(20)}
    assert len(child) == 20 and not child & parent


@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=20))
def test_random_hex_gives_what_is_asked_and_never_repeats_a_stretch(sizes: list[int]) -> None:
    got = [ids.random_hex(n) for n in sizes]
    assert [len(g) for g in got] == sizes and all(re.fullmatch(r"[0-9a-f]+", g) for g in got)
    long = [g for g in got if len(g) >= 32]
    assert len(set(long)) == len(long)


def test_a_forked_child_does_not_reuse_the_parents_digits() -> None:
    ids.new_id("i")   # the parent holds a partly used buffer
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: report its next ids and leave at once
        os.close(r)
        os.write(w, " ".join(ids.new_id("i") for _ in range(20)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = set(f.read().split())
    os.waitpid(pid, 0)
    parent = {ids.new_id("i") for _ in range(20)}
    assert len(child) == 20 and not child & parent


# -- row encoding ---------------------------------------------------------------------------------------
@settings(max_examples=300)
@given(text, text, st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.one_of(st.none(), text),
       st.lists(text, max_size=3), st.booleans(),
       st.lists(st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=3), max_size=2))
def test_a_row_encodes_to_the_old_bytes(a: str, b: str, t: float, n: int, opt: str | None, groups: list[str],
                                        flag: bool, nics: list[dict[str, Any]]) -> None:
    inst = Instance(id=a, owner=b, reservation_id="r-1", image_id="ami-1", instance_type="t3.nano", host="h",
                    zone="z", state="running", launch_time=t, launch_index=n, key_name=opt, group_ids=groups,
                    disable_api_termination=flag, vlan_nics=nics)
    tag = Tag(resource_id=a, resource_type="instance", owner=b, tag_key=opt or "", value=b)
    for row in (inst, tag):
        assert encode_row(row) == old_encoding(row)
        back = type(row).from_dict(json.loads(encode_row(row)))
        if not math.isnan(t):
            assert back == row


def test_a_tag_key_is_made_once_and_not_stored() -> None:
    t = Tag("i-1", "instance", "123456789012", "Name", "web")
    assert t.key == "i-1\x1fName"
    assert "_key" not in t.to_dict() and '"_key"' not in encode_row(t)
    t2 = dataclasses.replace(t, tag_key="Role")
    assert t2.key == "i-1\x1fRole" and Tag.from_dict(t2.to_dict()) == t2


async def test_a_journal_written_now_replays_to_the_same_state(tmp_path: Path) -> None:
    s = Store(tmp_path / "state")
    await s.open()
    with s.txn() as tx:
        for i in range(5):
            tx.put(Instance(id=f"i-{i}", owner="1", reservation_id="r-1", image_id="ami-1", instance_type="t",
                            host="h", zone="z", state="pending", launch_time=1.5 + i, group_ids=("sg-1",)))
            tx.put(Tag(f"i-{i}", "instance", "1", "Name", f"n\u00e9{i}\n"))
    with s.txn() as tx:
        tx.delete(s.table(Tag).rows["i-0\x1fName"])
    await s.sync()
    digest = s.digest()
    tags_before = {k: r.key for k, r in s.table(Tag).rows.items()}
    await s.close()
    again = Store(tmp_path / "state")
    await again.open()
    assert again.digest() == digest and len(again.table(Instance)) == 5 and len(again.table(Tag)) == 4
    assert {k: r.key for k, r in again.table(Tag).rows.items()} == tags_before
    await again.close()


# -- indexes holding lone rows -----------------------------------------------------------------------
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.sampled_from("abc"), st.sampled_from("xyz")),
               max_size=60)


@given(ops)
def test_a_multi_index_answers_like_a_dict_of_dicts(steps: list[tuple[bool, int, str, str]]) -> None:
    """Put/delete tags in any order; the index by resource and the key/value index agree with a
    recomputation from the table, for every key (groups of one, of several, emptied ones)."""
    s = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    tags = Tags(s)
    table = s.table(Tag)
    by_owner = table.add_index(MultiIndex(lambda t: t.owner))
    for put, n, key, value in steps:
        rid = f"i-{n}"
        if put:
            table._set(f"{rid}\x1f{key}", Tag(rid, "instance", f"o{n % 3}", key, value))
        else:
            table._set(f"{rid}\x1f{key}", None)
    rows = list(table.rows.values())
    for n in range(8):
        rid = f"i-{n}"
        want = {t.key: t for t in rows if t.resource_id == rid}
        assert {t.key: t for t in tags.rows_of(rid)} == want
        assert tags.pairs_of(rid) == tuple((t.tag_key, t.value) for t in want.values())
        assert dict(tags.of(rid)) == {t.tag_key: t.value for t in want.values()}
    for o in ("o0", "o1", "o2"):
        want = {t.key: t for t in rows if t.owner == o}
        assert by_owner.get(o) == want
        one = by_owner.first(o)
        assert one in want.values() if want else one is None
    assert sorted(by_owner.sizes()) == sorted(n for n in (sum(t.owner == o for t in rows)
                                                           for o in ("o0", "o1", "o2")) if n)
    for key in "abc":
        for values in ({"x"}, {"y", "z"}, {"x", "y", "z"}, set()):
            assert tags.resources_with(key, values) == {t.resource_id for t in rows
                                                        if t.tag_key == key and t.value in values}


# -- the form parser ------------------------------------------------------------------------------------
def _either(fn: Any, qs: str) -> Any:
    try:
        return fn(qs)
    except UnicodeDecodeError:
        return "UnicodeDecodeError"


@settings(max_examples=500)
@given(st.lists(st.one_of(st.sampled_from(["&", "=", "+", "%", "%2", "%41", "%e9", "%C3%A9", "%ff", "%zz", "a", "."]),
                          st.text(max_size=4)), max_size=20).map("".join))
def test_the_form_fields_are_parse_qsls(qs: str) -> None:
    assert _either(form.fields, qs) == _either(
        lambda q: parse_qsl(q, keep_blank_values=True, errors="strict"), qs)
