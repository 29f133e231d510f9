"""`dataclass` with the generated comparison, hash, repr and frozen-assignment methods sharing code.

`dataclasses.dataclass` compiles each class's `__eq__`, `__hash__`, `__repr__` and (frozen)
`__setattr__`/`__delattr__` from source text of its own: a code object, a function and their names
and constants per method per class, ~5.5 KiB a frozen class, ~0.6 MiB for cloudctl's ~105 classes
loaded at every start (issue 14: base RSS; docs/scaling.md, perf-base7). Those five differ between
classes only by the field names they read, so here each is a closure over the class's names, the
code one object for all classes. `__init__` (defaults, factories, `__post_init__`) stays generated.

Same behaviour as the generated methods (Python 3.11's, checked against them in
tests/test_slim.py): `==` compares the fields with `compare=True` as one tuple when both sides are
of the same class, else NotImplemented; `hash` is the hash of the tuple of the hashed fields;
`repr` is `QualName(a=1, b='x')` with `...` for an object already being repr'd on this thread;
assigning or deleting a field of a frozen row raises `FrozenInstanceError` with the same message.
A method is replaced only where dataclasses generated it (a class's own, or one it left out, stays).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from operator import attrgetter
from threading import get_ident
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

FrozenInstanceError = dataclasses.FrozenInstanceError
GENERATED = "<string>"   # (the file name dataclasses compiles its methods under)
# The methods made here are Python 3.11's (3.13's `__eq__`, for one, tests identity first): on any
# other version dataclasses' own are kept.
SHARED = sys.version_info[:2] == (3, 11)


def _none(obj: Any) -> tuple[()]:
    return ()


def _one(get: Callable[[Any], Any]) -> Callable[[Any], tuple[Any]]:
    return lambda obj: (get(obj),)


def _reader(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """One call that reads the named attributes as a tuple (attrgetter's C loop from two names on)."""
    if not names:
        return _none
    if len(names) == 1:
        return _one(attrgetter(names[0]))
    return attrgetter(*names)   # type: ignore[return-value]


def _eq(get: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return get(self) == get(other)
        return NotImplemented
    return __eq__


def _hash(get: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(get(self))
    return __hash__


def _repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    running: set[tuple[int, int]] = set()   # (dataclasses' reprlib-like guard, one per class as there)
    get = _reader(names)
    text = "(" + ", ".join(f"{name}=%s" for name in names) + ")"   # (no % in an identifier)

    def __repr__(self: Any) -> str:
        key = id(self), get_ident()
        if key in running:
            return "..."
        running.add(key)
        try:
            return self.__class__.__qualname__ + text % tuple(map(repr, get(self)))
        finally:
            running.discard(key)
    return __repr__


def _frozen(cls: type, names: tuple[str, ...]) -> tuple[Callable[..., None], Callable[..., None]]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)
    return __setattr__, __delattr__


class _Written:
    """Stands in for a slotted dataclass as written (see `share_methods`): nothing is an instance of it."""


def _generated(cls: type, name: str) -> Any:
    """The class's own method `name` if dataclasses generated it (for `__repr__`: the function its
    recursion guard wraps), else None."""
    fn = cls.__dict__.get(name)
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    return fn if code is not None and code.co_filename == GENERATED and code.co_name == name else None


def _closed_over(fn: Any, name: str) -> Any:
    """What a generated method's closure calls `name` (KeyError if it has none)."""
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    return cells[name].cell_contents


def share_methods(cls: type[T]) -> type[T]:
    """Replace the dataclass `cls`'s generated `__eq__`, `__hash__`, `__repr__`, `__setattr__` and
    `__delattr__` by closures of shared code that do the same (see the module's docstring)."""
    if not SHARED:
        return cls
    fields = dataclasses.fields(cls)   # type: ignore[arg-type]
    made: dict[str, Any] = {}
    if _generated(cls, "__eq__"):
        made["__eq__"] = _eq(_reader(tuple(f.name for f in fields if f.compare)))
    if _generated(cls, "__hash__"):
        made["__hash__"] = _hash(_reader(tuple(f.name for f in fields
                                               if (f.compare if f.hash is None else f.hash))))
    if _generated(cls, "__repr__"):
        made["__repr__"] = _repr(tuple(f.name for f in fields if f.repr))
    setter, deleter = _generated(cls, "__setattr__"), _generated(cls, "__delattr__")
    if setter and deleter:
        try:
            owner = _closed_over(setter, "cls")
        except (KeyError, ValueError):
            owner = None
        if isinstance(owner, type) and owner is _closed_over(deleter, "cls"):
            # Under slots=True, Python 3.11's pair tests `type(self)` against the class as written, not
            # the one dataclasses made again with slots, which no object is an instance of: a field
            # is refused, any other name fails in `super()` (TypeError). `_Written` stands in for
            # that class, which is then garbage (~3 KiB a class) instead of kept by the closure.
            stand_in = owner if issubclass(cls, owner) else _Written
            made["__setattr__"], made["__delattr__"] = _frozen(stand_in, tuple(f.name for f in fields))
    for name, fn in made.items():
        fn.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, fn)
    return cls


@overload
def dataclass(cls: type[T], /) -> type[T]: ...
@overload
def dataclass(cls: None = None, /, **kw: Any) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field,))   # (type checkers: a dataclass decorator)
def dataclass(cls: Any = None, /, **kw: Any) -> Any:
    """`dataclasses.dataclass`, same arguments and result, with `share_methods` applied."""
    def wrap(c: type[T]) -> type[T]:
        return share_methods(dataclasses.dataclass(c, **kw))
    return wrap if cls is None else wrap(cls)
