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

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

# What a slot holds when its value is the derived one: not a value any field can be given (rows
# are made from JSON and from callers' strings; this is neither, and no row compares equal to it).
_DERIVED = b"="
MARKER = _DERIVED   # (for encoders that read a derived field's slot itself)


class DerivedField(ABC):
    """A data descriptor over one slot of a row class: the slot keeps the marker when the value
    given equals what `make` gives for the row's key field (`key_slot` is that field's member
    descriptor; it is set before this one, dataclasses setting fields in declaration order).
    `make` is deterministic and may give a value for any key: only a value equal to what it gives is
    replaced by the marker, so nothing is lost whatever the key. A read of a marked slot calls
    `marked_text`'s function, kept in a slot (a read of a derived MAC is on describes' paths, a
    row is made per instance record replayed)."""

    __slots__ = ("_slot", "_key", "_marked")

    def __init__(self, slot: Any, key_slot: Any) -> None:
        self._slot = slot          # the class's member descriptor for the slot
        self._key = key_slot
        self._marked = self.marked_text()

    @abstractmethod
    def make(self, key: str) -> str | None:
        """The field's value for this key (None: none follows from it)."""

    def marked_text(self) -> Callable[[str], str]:
        """The function giving a marked row's value from its key (what `__get__` calls when the
        slot holds the marker): for encoders that read the slot itself (store/records.py)."""
        return self.make   # type: ignore[return-value]   (a marked key's value is never None)

    def __get__(self, row: Any, owner: type | None = None) -> Any:
        if row is None:
            return self
        v = self._slot.__get__(row, owner)
        return self._marked(self._key.__get__(row, owner)) if v is _DERIVED else v

    def __set__(self, row: Any, value: Any) -> None:
        if type(value) is str and value == self.make(self._key.__get__(row, None)):
            value = _DERIVED
        self._slot.__set__(row, value)

    def __delete__(self, row: Any) -> None:
        self._slot.__delete__(row)


class _MacField(DerivedField):
    """`02:` and the key's last 10 characters read as hex (see `instance_mac`)."""

    __slots__ = ()

    def make(self, key: str) -> str | None:   # (`_mac`, its text kept)
        try:
            return _mac_text(key) if len(key) == 19 else None
        except ValueError:   # (not hex: no derived MAC)
            return None

    def marked_text(self) -> Callable[[str], str]:
        return _mac_text   # (a marked key is hex)


# The derived text of the last few keys read or set (a launch's instance: its MAC and UUID are read
# by each of its rows' encodings, the copy of its row, its domain and its answer). A value made
# costs ~0.5-0.9 us of Python (slices, an f-string, `bytes.fromhex`); a look-up, ~30 ns.
_KEPT_MAX = 128
_MACS: dict[str, str] = {}
_UUIDS: dict[str, str] = {}


def _kept(made: dict[str, str], key: str, text: str) -> str:
    """`text`, kept as `key`'s in `made` (all forgotten when `_KEPT_MAX` are kept). Rows are read
    and made on other threads too (the state's load, the hosts' workers): a clear is one C call,
    where dropping the oldest key (an iterator, then a delete) could meet another thread's insert
    between the two and raise."""
    if len(made) >= _KEPT_MAX:
        made.clear()
    made[key] = text
    return text


def _mac_text(key: str) -> str:
    """`02:` and the hex key's last 10 characters as bytes, kept (ValueError: not hex)."""
    return _MACS.get(key) or _kept(_MACS, key, "02:" + bytes.fromhex(key[9:]).hex(":"))


def _uuid_text(i: str) -> str:
    """A 19-character key's version 8 UUID (see `domain_uuid`), kept."""
    return _UUIDS.get(i) or _kept(_UUIDS, i, f"{i[2:10]}-{i[10:14]}-8{i[14:17]}-8{i[17:]}0-000000000000")


class _UuidField(DerivedField):
    """The key's characters in a version 8 UUID (see `domain_uuid`)."""

    __slots__ = ()

    def make(self, key: str) -> str | None:   # (`_uuid`, its text kept: a launch reads or sets it ~6 times)
        return _uuid_text(key) if len(key) == 19 else None

    def marked_text(self) -> Callable[[str], str]:
        return _uuid_text   # (a marked key is 19 characters)


def _install(cls: type, name: str, field: DerivedField) -> None:
    """`field` as the class's descriptor for `name`; an `__init__` that bound the slot's own setter
    (store/rare.py's) binds this one instead."""
    setattr(cls, name, field)
    rebind = getattr(cls.__init__, "rebind", None)
    if rebind is not None:
        rebind()


def derive_mac(cls: type, id_field: str, name: str = "mac") -> None:
    """`cls`'s field `name` keeps a marker when it holds the MAC its field `id_field` gives (after the
    class is made; `id_field` must come first among the fields)."""
    _install(cls, name, _MacField(cls.__dict__[name], cls.__dict__[id_field]))


def derive_uuid(cls: type, id_field: str, name: str = "uuid") -> None:
    """`cls`'s field `name` keeps a marker when it holds the domain UUID its field `id_field` gives."""
    _install(cls, name, _UuidField(cls.__dict__[name], cls.__dict__[id_field]))


_HEX = frozenset("0123456789abcdef")


def _new_shape(instance_id: str) -> bool:
    """An id as `core.ids.new_id` makes them: `i-` and 17 random hex digits."""
    return len(instance_id) == 19 and instance_id.startswith("i-") and _HEX.issuperset(instance_id[2:])


def derived_or_none(instance_id: str) -> Any:
    """What a new instance row's MAC and UUID fields are given so that they keep the marker: the
    marker itself when the id is one they derive from (what `instance_mac` and `domain_uuid` would
    give, set through the fields' descriptors, ends as the marker too: a launch skipped making both
    texts and comparing them again, ~10k instructions), None when it is not (then the caller makes
    random ones). A field given the marker stores it as it is (`DerivedField.__set__` replaces only
    a str)."""
    return _DERIVED if _new_shape(instance_id) else None


def instance_mac(instance_id: str) -> str | None:
    """A new instance's MAC: locally administered unicast (02:), its id's last 40 random bits."""
    if not _new_shape(instance_id):
        return None
    return _mac_text(instance_id)


def domain_uuid(instance_id: str) -> str | None:
    """A new instance's domain UUID: its id's 68 random bits in a version 8 (RFC 9562) UUID. Unique
    as the id is; an older instance's random (version 4) UUID never equals one."""
    if not _new_shape(instance_id):
        return None
    return _uuid_text(instance_id)   # (kept: the row made with it compares it again, see `_UuidField`)


def _mac(instance_id: str) -> str | None:
    """`instance_mac` without its check of the id's shape: any id whose last 10 characters are hex."""
    try:
        return "02:" + bytes.fromhex(instance_id[9:]).hex(":") if len(instance_id) == 19 else None
    except ValueError:
        return None


def _uuid(instance_id: str) -> str | None:
    """`domain_uuid` without its check of the digits."""
    i = instance_id
    return f"{i[2:10]}-{i[10:14]}-8{i[14:17]}-8{i[17:]}0-000000000000" if len(i) == 19 else None
