"""Row fields whose usual value follows from the row's key: not kept when it does, made on read.

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
