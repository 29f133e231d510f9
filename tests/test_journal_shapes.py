"""A journal record's rows are written by plans kept per row shape (the types of its values):
whatever values a row holds, in whatever mix, and whichever plan or fallback writes it, the text
is `json.dumps` of the row's fields, compact, as every journal was written."""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloudctl.store import records
from cloudctl.store.records import ROW_TYPES, Instance, Tag, Volume, encode_changes, encode_row


class _Text(str):
    pass


class _Num(enum.IntEnum):
    ONE = 1


plain = st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'), max_size=12)
awkward = st.text(max_size=8)   # (quotes, backslashes, control and non-ASCII characters among them)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1796670272.6460822]))
scalars = st.one_of(plain, awkward, st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), floats,
                    st.builds(_Text, plain), st.just(_Num.ONE))
values = st.one_of(scalars, st.tuples(), st.lists(plain, max_size=3).map(tuple),
                   st.lists(st.tuples(plain, plain), max_size=2).map(tuple),
                   st.dictionaries(plain, scalars, max_size=2))


def _made(cls: type, given: list[Any]) -> Any:
    """A row of `cls` whose fields hold `given` (in turn), set after it is made, as a decoded
    journal may hold anything (a field whose setter refuses a value keeps its own)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    row = cls(**{f.name: "x" for f in fields
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
    for f, v in zip(fields, given * (len(fields) // max(len(given), 1) + 1)):
        try:
            object.__setattr__(row, f.name, v)
        except (AttributeError, TypeError, ValueError):
            pass
    return row


def _want(row: Any) -> str:
    return json.dumps(row.to_dict(), separators=(",", ":"))


@given(st.sampled_from([Instance, Volume, Tag, *ROW_TYPES]), st.lists(values, min_size=1, max_size=12))
def test_a_row_of_any_shape_is_written_as_json_dumps(cls: type, given: list[Any]) -> None:
    row = _made(cls, given)
    assert encode_row(row) == _want(row)
    enc = records._ROW_ENCODERS.get(cls) or records._row_encoder(cls)
    assert enc(row) == _want(row)
    assert enc(row) == _want(row)   # (again: the shape's plan kept, the floats' text kept)


_MIX: tuple[Any, ...] = (
    "plain", None, 0.0, True, (), -0.0, 7, 'quo"te', ("a", "b"), 1.5, False, _Text("t\x01"), float("nan"), -1.5,
    2 ** 70, _Num.ONE, {"k": 0.0}, float("-inf"), "caf\u00e9", (("k", "v"),), 0, "", -0.0, 1796670272.6460822)


def test_rows_of_mixed_values_in_every_order() -> None:
    """Every row type with its fields given `_MIX`'s values from each starting point (so each row
    is of another shape, plain or not), each written twice: the floats' kept text (0.0 then -0.0
    for one field), the shapes' kept plans."""
    for cls in ROW_TYPES:
        for start in range(len(_MIX)):
            row = _made(cls, list(_MIX[start:] + _MIX[:start]))
            enc = records._ROW_ENCODERS.get(cls) or records._row_encoder(cls)
            assert enc(row) == _want(row) and enc(row) == _want(row)


def test_one_shape_plain_then_with_text_to_escape_then_plain() -> None:
    """The plan of a shape is the same for text that needs escaping: that row takes the field
    encoder, and the next plain one the plan again."""
    base = _made(Tag, ["a", "b", "c", "d", "e"])
    rows = [dataclasses.replace(base, value=v) for v in ("plain", 'quo"te', "tab\t", "caf\u00e9", "\x7f", "again")]
    for row in rows:
        assert encode_changes([(type("T", (), {"name": "tags"})(), row.key, None, row)]) == \
            json.dumps([["p", "tags", row.key, row.to_dict()]], separators=(",", ":"))


def test_rows_of_more_shapes_than_are_kept() -> None:
    """Beyond `_PLANS_MAX` shapes of one type, rows are still written right (by the field encoder)."""
    got = []
    for n in range(records._PLANS_MAX + 20):
        shape = [("s" if n >> k & 1 else None) for k in range(7)]
        row = _made(Volume, ["v", "o", "z", 5, "gp2", "in-use", 1.5, *shape])
        got.append((encode_row(row), _want(row)))
    assert all(a == b for a, b in got)


def test_maps_and_tuples_written_again_are_written_as_json_dumps() -> None:
    """A map or a tuple of strings written again (its text kept by identity) is written as it
    was, and an equal one of other types (1 against 1.0 and True) as its own, past the number
    kept too."""
    from cloudctl.store.frozen import FrozenMap, freeze, shared, shared_map
    rows = []
    for n in range(records._BY_ID_MAX * 2 + 5):
        for one in (1, 1.0, True, "1"):
            data = shared_map(freeze({"owner": f"o{n % 7}", "v": one}))
            rows.append(_made(Instance, [f"i-{n}", shared((f"sg-{n % 5}", "sg-x")), data]))
            rows.append(dataclasses.replace(rows[-1]))
    for _ in range(2):
        for r in rows:
            assert encode_row(r) == _want(r)
    m = FrozenMap({"a": 1})
    t = ("a", "b")
    assert records._kept_text(m) == '{"a":1}' and records._kept_text(t) == '["a","b"]'
    assert records._kept_text(FrozenMap({"a": 1.0})) == '{"a":1.0}'
    assert records._kept_text(m) == '{"a":1}' and records._kept_text(("a", 2)) == '["a",2]'
