"""Rows from their decoded JSON at load, the repeated strings shared, each row made by one function.

A load builds every row of the state (369,010 at 50,000 instances) from the dict JSON decoding gives.
Two costs dominated once the dict was there:
- Setting the fields of a frozen dataclass: its `__init__`, and `object.__setattr__` called per field
  from C (`map`), go through the slot wrapper (an argument tuple, its parsing, the type's lookup of the
  attribute): ~0.2 µs a field on this box, 31 for an instance. A subclass that adds nothing but plain
  attribute setting (`_loading_class`) lets `o.name = v` be the interpreter's direct slot store; the
  object made is then given the row's own class (same layout: `__slots__ = ()`), so what is kept is a
  row of the row type, as the constructor makes it, and its `__post_init__` runs as `__init__`'s would.
- The sharing of repeated strings, a Python loop over a row's fields; it is now straight lines of the
  same function, generated once per row type (`_source`), as `dataclasses` makes `__init__`.
"""
from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

from .rare import RARE_SLOT, default_test
from .records import Row

# A field whose values, at load, were this many different strings is not shared (ids, addresses).
SHARE_DISTINCT = 4096
# How many rows of a type are made between two looks at the size of its fields' dicts of values.
SHARE_CHECK = 256

_FIELDS: dict[type[Row], tuple[tuple[str, ...], frozenset[str], Callable[[dict[str, Any]], tuple[Any, ...]], int]] = {}
_LOADING: dict[type[Row], type] = {}

Maker = Callable[[Any], Row]


def _loading_class(row_type: type[Row]) -> type | None:
    """`row_type` with plain attribute setting (see the module's docstring), or None where a row
    cannot be made that way: a type without slots, or with fields `__init__` does not take."""
    if row_type in _LOADING:
        return _LOADING[row_type]
    fit = hasattr(row_type, "__slots__") and all(f.init for f in dataclasses.fields(row_type))   # type: ignore[arg-type]
    # (`__delattr__` too: with the frozen one inherited, the type's setter stays the slow generic one.)
    twin = type(f"_Loading{row_type.__name__}", (row_type,), {
        "__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__}) if fit else None
    _LOADING[row_type] = twin   # type: ignore[assignment]
    return twin


def _source(names: tuple[str, ...], shared: dict[int, str], direct: bool, post: bool,
            rare: tuple[str, ...] = (), rare_defaults: tuple[Any, ...] = ()) -> str:
    """The text of `make(values)`: each value, shared through `shared[i]`'s function when it is a
    string, set on a new object of the loading class (`direct`) or passed to the row's constructor.
    A row type's rare fields (store/rare.py) are set in one step, as its constructor sets them."""
    v = [f"v{i}" for i in range(len(names))]
    out = [f"def make(values):\n    {', '.join(v)}, = values"]
    vals = [f"({s}({x}, {x}) if type({x}) is str else {x})" if (s := shared.get(i)) else x for i, x in enumerate(v)]
    if not direct:
        out.append(f"    return _T({', '.join(vals)})")
        return "\n".join(out) + "\n"
    out.append("    o = _new(_W)")
    out += [f"    o.{n} = {x}" for n, x in zip(names, vals) if n not in rare]
    if rare:
        at = {n: i for i, n in enumerate(names)}
        args = [v[at[n]] for n in rare]
        out += [f"    {v[at[n]]} = {vals[at[n]]}" for n in rare if at[n] in shared]   # (shared as the others)
        out.append(f"    o.{RARE_SLOT} = _N if {default_test(rare, rare_defaults, args)} else _H({', '.join(args)})")
    out.append("    o.__class__ = _T")
    if post:
        out.append("    _post(o)")
    out.append("    return o")
    return "\n".join(out) + "\n"


def maker(row_type: type[Row], names: tuple[str, ...],
          shared: dict[int, Callable[[str, str], str]] | None = None, direct: bool = True) -> Maker:
    """A function making `row_type(*values)` from the values of its fields in order (`names`), the
    string at position i passed through `shared[i](s, s)` (a dict's `setdefault`: one object of
    each text) first. `direct=False`, or a type `_loading_class` cannot take: by the constructor."""
    shared = shared or {}
    twin = _loading_class(row_type) if direct else None
    post = getattr(row_type, "__post_init__", None)
    rare: tuple[str, ...] = getattr(row_type, "__rare__", ())
    none = getattr(row_type, "__rare_defaults__", ())
    if twin is not None and not set(rare) <= set(names):
        twin = None   # (names without a rare field: by the constructor, which knows its default)
    env: dict[str, Any] = {"_new": object.__new__, "_W": twin, "_T": row_type, "_post": post,
                           "_N": none, "_H": type(none)}
    env.update((f"_s{i}", fn) for i, fn in shared.items())
    env.update((f"_d{k}", d) for k, d in enumerate(none))
    exec(_source(names, {i: f"_s{i}" for i in shared}, twin is not None, post is not None,   # noqa: S102
                 rare, tuple(none)), env)
    # (Taken out of its globals: left there, function and globals were a cycle that outlived the load,
    # and with them the load's dicts of shared values, ~8 MiB at 50,000 instances: `gc.freeze` after
    # the load keeps whatever the collector has not freed by then.)
    return env.pop("make")   # type: ignore[no-any-return]


def _values_of(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values of a row's fields from its dict, in the fields' order (KeyError: one is missing)."""
    if len(names) == 1:
        one = names[0]
        return lambda d: (d[one],)
    return operator.itemgetter(*names)   # type: ignore[return-value]


class _Plan:
    """How one row type's rows are made in this load: its maker, the dicts sharing its fields."""

    __slots__ = ("make", "direct", "memos", "canon_at", "left")

    def __init__(self, memos: dict[int, dict[str, str]], canon_at: tuple[int, ...]) -> None:
        self.make: Maker   # (set by RowBuilder._plan)
        self.direct = True            # rows made by the loading class (else by the constructor)
        self.memos = memos            # position -> the field's values seen (dropped past SHARE_DISTINCT)
        self.canon_at = canon_at      # positions shared through the load's one dict, whatever their number
        self.left = SHARE_CHECK


class RowBuilder:
    """Rows from their decoded dicts, for one load, with the strings that repeat shared.

    Decoded JSON makes a new string for every value: at 50,000 instances the loaded state held
    ~100 MiB of copies of a few values each (an owner, a zone, a state, a tag's key), where the
    running controller that wrote it held one object each. Each field's strings are shared through
    a dict of the values seen, until the field proves to be an id (more than `SHARE_DISTINCT`
    values, looked at every `SHARE_CHECK` rows): from then on its values are taken as they are, and
    that dict is dropped. Keys, key fields and the fields naming other rows (`Row.repeated`) are
    shared through one dict for the whole load whatever their number (`share`)."""

    def __init__(self) -> None:
        self._plans: dict[type[Row], _Plan] = {}
        # Keys, and the fields that name them or repeat across tables (`Row.repeated`, the key
        # field): one object for every row of the load, however many distinct values (an
        # instance's id is its table's key, its row's field, its volume's and its tags' reference).
        self._canon: dict[str, str] = {}
        #: `share(text, text)`: the one object of this text for the load (a table's key: its dict and
        #: its row share it). The dict's own method: the load's loops call it per row.
        self.share: Callable[[str, str], str] = self._canon.setdefault

    def _maker(self, row_type: type[Row], names: tuple[str, ...], plan: _Plan) -> Maker:
        share: dict[int, Callable[[str, str], str]] = {i: self._canon.setdefault for i in plan.canon_at}
        share.update((i, m.setdefault) for i, m in plan.memos.items())
        return maker(row_type, names, share, plan.direct)

    def _plan(self, row_type: type[Row], names: tuple[str, ...], values: list[Any]) -> _Plan:
        wide = {*row_type.repeated, row_type.key_field}
        at = tuple(i for i, n in enumerate(names) if n in wide)
        plan = _Plan({i: {} for i in range(len(names)) if i not in at}, at)
        plan.make = self._maker(row_type, names, plan)
        # (Checked on the first row: the direct maker must give what the constructor gives, or is not used.)
        try:
            same = plan.make(list(values)) == row_type(*values)
        except TypeError:   # (a class the object's class cannot be set to)
            same = False
        if not same:
            plan.direct = False
            plan.make = self._maker(row_type, names, plan)
        self._plans[row_type] = plan
        return plan

    def _drop_ids(self, row_type: type[Row], names: tuple[str, ...], plan: _Plan) -> None:
        """Stop sharing the fields that proved to be ids (their dicts dropped, the maker remade)."""
        plan.left = SHARE_CHECK
        ids = [i for i, m in plan.memos.items() if len(m) > SHARE_DISTINCT]
        if ids:
            for i in ids:
                del plan.memos[i]
            plan.make = self._maker(row_type, names, plan)

    def build(self, row_type: type[Row], d: dict[str, Any]) -> Row:
        """`row_type.from_dict(d)`, the fast way when the keys allow it.

        The writer encodes a row's fields in their order (`encode_row`): then the values are
        passed by position. By keyword, each of an instance's 31 names was looked up among the
        parameters by string comparison (the decoded keys are not the interned parameter names):
        building the row took about twice as long. Other keys that are all fields go by keyword;
        unknown ones take `from_dict`'s per-key filter (a newer writer's fields)."""
        got = _FIELDS.get(row_type)
        if got is None:
            fs = dataclasses.fields(row_type)   # type: ignore[arg-type]
            names = tuple(f.name for f in fs if f.init)
            got = _FIELDS[row_type] = (names, frozenset(f.name for f in fs), _values_of(names), len(names))
        try:
            values = got[2](d) if len(d) == got[3] else None
        except KeyError:
            values = None
        if values is None:
            return row_type(**d) if got[1].issuperset(d) else row_type.from_dict(d)
        plan = self._plans.get(row_type)
        if plan is None:
            plan = self._plan(row_type, got[0], list(values))
        plan.left -= 1
        if not plan.left:
            self._drop_ids(row_type, got[0], plan)
        return plan.make(values)
