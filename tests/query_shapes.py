"""Hypothesis strategies for the values of a botocore shape (query-protocol services): requests
and answers for the protocol round-trips, requests for the fuzzing of the live endpoint."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from botocore.model import Shape
from hypothesis import strategies as st

_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


def value(shape: Shape, depth: int) -> st.SearchStrategy[Any]:
    kind = shape.type_name
    if kind == "structure":
        return struct(shape, depth)
    if kind == "list":
        if depth <= 0:
            return st.just([])
        return st.lists(value(shape.member, depth - 1), max_size=2)
    if kind == "map":
        # (an empty map writes nothing at all: at least one entry)
        return st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), value(shape.value, depth - 1),
                               min_size=1, max_size=2)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(-(2 ** 31), 2 ** 31 - 1)
    if kind == "long":
        return st.integers(-(2 ** 63), 2 ** 63 - 1)
    if kind in ("float", "double"):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind == "timestamp":
        return st.integers(0, 4_000_000_000).map(lambda s: datetime.fromtimestamp(s, timezone.utc))
    if kind == "blob":
        return st.binary(max_size=8)
    return _TEXT


def struct(shape: Shape, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    required = set(shape.required_members)
    members = {n: m for n, m in shape.members.items() if depth > 0 or n in required
               or m.type_name not in ("structure", "list", "map")}
    fixed = {n: value(m, depth - 1) for n, m in members.items() if n in required}
    optional = {n: value(m, depth - 1) for n, m in members.items() if n not in required}
    drawn = st.fixed_dictionaries(fixed, optional=optional)
    # (an empty structure writes nothing, so a required one would be missing: at least one member)
    return drawn.filter(lambda d: strip(d) != {}) if members else drawn


def strip(data: Any) -> Any:
    """What survives a trip through the wire: empty structures write nothing."""
    if isinstance(data, dict):
        out = {k: strip(v) for k, v in data.items()}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(data, list):
        return [strip(v) for v in data if strip(v) != {}]
    return data
