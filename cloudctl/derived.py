"""Values that follow from an instance's id, and row fields that keep a marker when they hold one.

An instance's MAC and its domain's UUID were 17 and 36 random characters kept in every row (~150 B
an instance with their string objects). A new instance's are now a function of its id, and a row
whose value equals that function's keeps one shared marker object in the slot instead: reading the
field makes the value again. Every reader, `dataclasses.replace`, `==` and the journal's and
checkpoint's encoders (which read fields by name) see the full value, so what is written is byte for
byte what it was, and a row whose value is anything else (an instance made before, a test's own MAC)
keeps that value as it was given.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# What a slot holds when its value is the derived one: not a value any field can be given (rows
# are made from JSON and from callers' strings; this is neither, and no row compares equal to it).
_DERIVED = b"="


class DerivedField:
    """A data descriptor over one slot of a row class: the slot keeps the marker when the value
    given equals `make(key)`, `key` being the row's field whose member descriptor is `key_slot`
    (set before this one: dataclasses set fields in declaration order). `make` never raises and
    may give a value for any key (None where it has none): only a value equal to what it gives is
    replaced by the marker, so nothing is lost whatever the key. One C call for the key and one
    Python call for `make` each way: a replay makes a row per instance record."""

    __slots__ = ("_slot", "_key", "_make")

    def __init__(self, slot: Any, key_slot: Any, make: Callable[[str], str | None]) -> None:
        self._slot = slot          # the class's member descriptor for the slot
        self._key = key_slot
        self._make = make

    def __get__(self, row: Any, owner: type | None = None) -> Any:
        if row is None:
            return self
        v = self._slot.__get__(row, owner)
        return self._make(self._key.__get__(row, owner)) if v is _DERIVED else v

    def __set__(self, row: Any, value: Any) -> None:
        if type(value) is str and value == self._make(self._key.__get__(row, None)):
            value = _DERIVED
        self._slot.__set__(row, value)

    def __delete__(self, row: Any) -> None:
        self._slot.__delete__(row)


def derive_field(cls: type, name: str, key: str, make: Callable[[str], str | None]) -> None:
    """Make the slot field `name` of the frozen dataclass `cls` derived from its field `key` (after
    the class is made; `key` must come first among the fields)."""
    setattr(cls, name, DerivedField(cls.__dict__[name], cls.__dict__[key], make))


def derive_mac(cls: type, id_field: str, name: str = "mac") -> None:
    """`cls`'s field `name` keeps a marker when it holds the MAC its field `id_field` gives."""
    derive_field(cls, name, id_field, _mac)


def derive_uuid(cls: type, id_field: str, name: str = "uuid") -> None:
    """`cls`'s field `name` keeps a marker when it holds the domain UUID its field `id_field` gives."""
    derive_field(cls, name, id_field, _uuid)


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


def _mac(instance_id: str) -> str | None:
    """`instance_mac` without its check of the digits (any 19 characters give a value)."""
    i = instance_id
    return f"02:{i[9:11]}:{i[11:13]}:{i[13:15]}:{i[15:17]}:{i[17:]}" if len(i) == 19 else None


def _uuid(instance_id: str) -> str | None:
    """`domain_uuid` without its check of the digits."""
    i = instance_id
    return f"{i[2:10]}-{i[10:14]}-8{i[14:17]}-8{i[17:]}0-000000000000" if len(i) == 19 else None
