"""Values that follow from an instance's id, and row fields that keep a marker when they hold one.

An instance's MAC and its domain's UUID were 17 and 36 random characters kept in every row (~150 B
an instance with their string objects). A new instance's are now a function of its id, and a row
whose value equals that function's keeps a one-byte marker in the slot instead: reading the field
makes the value again. Every reader, `dataclasses.replace`, `==` and the journal's and checkpoint's
encoders (which read fields by name) see the full value, so what is written is byte for byte what
it was, and a row whose value is anything else (an instance made before, a test's own MAC) keeps
that value as it was given.
"""
from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

# What a slot holds when its value is the derived one: not a value any field can be given (rows
# are made from JSON and from callers' strings; this is neither, and no row compares equal to it).
_DERIVED = b"="


class DerivedField:
    """A data descriptor over one slot of a row class. `rule(row)` is the derived value, or None
    where the row has none (a setter of anything else keeps what it is given); `make(row)` is the
    same value for a row that has one, without `rule`'s checks (a read is on describes' paths). Both
    read only fields set before this one (dataclasses set them in declaration order)."""

    __slots__ = ("_slot", "_rule", "_make")

    def __init__(self, slot: Any, rule: Callable[[Any], str | None], make: Callable[[Any], str]) -> None:
        self._slot = slot          # the class's member descriptor for the slot
        self._rule = rule
        self._make = make

    def __get__(self, row: Any, owner: type | None = None) -> Any:
        if row is None:
            return self
        v = self._slot.__get__(row, owner)
        return self._make(row) if v is _DERIVED else v

    def __set__(self, row: Any, value: Any) -> None:
        if type(value) is str and value == self._rule(row):
            value = _DERIVED
        self._slot.__set__(row, value)

    def __delete__(self, row: Any) -> None:
        self._slot.__delete__(row)


def derive_field(cls: type, name: str, rule: Callable[[Any], str | None], make: Callable[[Any], str]) -> None:
    """Make the slot field `name` of the frozen dataclass `cls` derived (after the class is made)."""
    setattr(cls, name, DerivedField(cls.__dict__[name], rule, make))


def derive_mac(cls: type, id_field: str, name: str = "mac") -> None:
    """`cls`'s field `name` keeps a marker when it holds `instance_mac` of its field `id_field`."""
    of = attrgetter(id_field)
    derive_field(cls, name, lambda row: instance_mac(of(row)), lambda row: _mac(of(row)))


def derive_uuid(cls: type, id_field: str, name: str = "uuid") -> None:
    """`cls`'s field `name` keeps a marker when it holds `domain_uuid` of its field `id_field`."""
    of = attrgetter(id_field)
    derive_field(cls, name, lambda row: domain_uuid(of(row)), lambda row: _uuid(of(row)))


_HEX = frozenset("0123456789abcdef")


def _new_shape(instance_id: str) -> bool:
    """An id as `core.ids.new_id` makes them: `i-` and 17 random hex digits."""
    return len(instance_id) == 19 and instance_id.startswith("i-") and _HEX.issuperset(instance_id[2:])


def instance_mac(instance_id: str) -> str | None:
    """A new instance's MAC: locally administered unicast (02:), its id's last 40 random bits."""
    return _mac(instance_id) if _new_shape(instance_id) else None


def domain_uuid(instance_id: str) -> str | None:
    """A new instance's domain UUID: its id's 68 random bits in a version 8 (RFC 9562) UUID. Unique
    as the id is; an older instance's random (version 4) UUID never equals one."""
    return _uuid(instance_id) if _new_shape(instance_id) else None


def _mac(instance_id: str) -> str:   # (of a new-shaped id: read on describes' paths, two C calls)
    return "02:" + bytes.fromhex(instance_id[9:]).hex(":")


def _uuid(instance_id: str) -> str:
    h = instance_id
    return f"{h[2:10]}-{h[10:14]}-8{h[14:17]}-8{h[17:]}0-000000000000"
