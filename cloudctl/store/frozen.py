"""A read-only mapping for the fields of rows that hold key/value data.

Rows are shared by reference: the store's tables, a transaction's undo list and a checkpoint being
encoded on a worker thread all hold the same objects, so a row must not change once made. A
`FrozenMap` is a `dict` whose mutators raise: reads run at dict speed, `json.dumps` writes it as the
plain object it always was (journal and checkpoint formats do not change), and `{**m, k: v}` or
`dict(m)` make the changed copy a new row is built from. It is hashable, so a row holding one is too.
"""
from __future__ import annotations

from typing import Any, NoReturn


class FrozenMap(dict[str, Any]):
    """A dict that cannot change after it is made; nested dicts and lists in it are frozen too."""

    __slots__ = ("_hash",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        dict.__init__(self, *args, **kwargs)
        for k, v in dict.items(self):   # values change in place, keys do not: safe while iterating
            if type(v) not in _FLAT:
                dict.__setitem__(self, k, freeze(v))

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a stored row's mapping cannot change: build a new row with a changed copy")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        try:
            return self._hash   # type: ignore[no-any-return]
        except AttributeError:
            self._hash = hash(frozenset(self.items()))
            return self._hash

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        """Copied and pickled as its contents (dict's default would refill it item by item)."""
        return FrozenMap, (dict(self),)

    def __repr__(self) -> str:
        return f"FrozenMap({dict.__repr__(self)})"


EMPTY = FrozenMap()
# Values that are immutable as they are (a FrozenMap's are frozen already).
_FLAT = frozenset({str, int, float, bool, type(None), bytes, FrozenMap})


def freeze(v: Any) -> Any:
    """`v` with every dict in it a FrozenMap and every list a tuple (other values as they are)."""
    t = type(v)
    if t is FrozenMap:
        return v
    if t is dict or isinstance(v, dict):
        if not v:
            return EMPTY
        if _FLAT.issuperset(map(type, v.values())):   # the common case, without a Python loop:
            m = dict.__new__(FrozenMap)                # FrozenMap's own __init__ would check them again
            dict.__init__(m, v)
            return m
        return FrozenMap(v)
    if t is list or t is tuple:
        return tuple(freeze(x) for x in v)
    return v



# Values many rows hold equal copies of (an instance's security groups, an event's data and message):
# one object each, shared by reference. A row's values are immutable, so sharing changes nothing but
# memory (~300 B per instance in the scale bench at 5,000). Only strings, tuples of strings and maps of
# strings to strings are shared: for those, equal means the same JSON (1 == True == 1.0 would not; nor
# would two maps with their keys in another order, hence the map's key is its items in order).
# Bounded: when full it is emptied and refilled, which loses some sharing and never correctness.
SHARED_MAX = 8192
_shared: dict[Any, Any] = {}
_STR = {str}


def _keep(key: Any, v: Any) -> Any:
    got = _shared.get(key)
    if got is not None:
        return got
    if len(_shared) >= SHARED_MAX:
        _shared.clear()
    _shared[key] = v
    return v


def shared(v: str | tuple[str, ...]) -> Any:
    """An equal string (or tuple of strings) another row holds already, or `v` (then kept for the next)."""
    if type(v) is tuple:
        if set(map(type, v)) != _STR:   # (one C pass: tuples of other values are not shared)
            return v
        return _keep(("t", v), v)
    return _keep(v, v) if type(v) is str else v


# The maps `shared_map` gave lately, by identity (each kept with its object, so its id is not reused
# while kept): a map made once and given again (an instance's state change's {owner, host, state},
# core/events.py `state_data`) is known without its items' tuple, hash and comparison (~8k
# instructions a row event). Cleared when full, as `_shared` is: one C call, safe beside other threads.
_MAPS_BY_ID: dict[int, FrozenMap] = {}
_MAPS_BY_ID_MAX = 256


def shared_map(m: FrozenMap) -> FrozenMap:
    """`shared` for a map whose values are all strings (an event's {owner, host, state})."""
    if _MAPS_BY_ID.get(id(m)) is m:   # (given lately: it is the shared one)
        return m
    if not _STR.issuperset(map(type, dict.values(m))):   # (one C pass, no generator)
        return m
    items = tuple(dict.items(m))
    got: FrozenMap = _keep(("m", items), m)
    if len(_MAPS_BY_ID) >= _MAPS_BY_ID_MAX:
        _MAPS_BY_ID.clear()
    _MAPS_BY_ID[id(got)] = got
    return got
