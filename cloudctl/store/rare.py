"""Row fields that hold their default in nearly every row, kept together in one slot.

A slot is 8 bytes in every row whatever it holds: an instance row had 31 (280 B), and ten of them
(its kernel, ramdisk, root size, state reasons, termination time and protection, bare-metal NICs,
instance-store disks) are their default for a running instance launched without those options. A
row type made with `rare_fields(...)` keeps those fields in one slot `_rare`: one shared object of
the defaults when every one of them is its default, else a small tuple of their values (made for
that row: a stopped instance's reasons, a kernel given at launch). Each field stays a dataclass
field and reads as one, through a property whose getter is one C call (`attrgetter("_rare.name")`),
so readers, `dataclasses.replace`, `==`, `hash`, `repr` and the journal's and checkpoint's encoders
(which read fields by name) see the same values as before and the bytes written are the same.

"Default" is by identity (`is`): None, False, 0, "" and () are one object each in CPython, so a
value equal to the default but of another type (0 for False) is kept as given. An empty list given
for a field whose default is () is taken as (): rows make their sequences tuples anyway, and JSON
read back from disk gives lists.
"""
from __future__ import annotations

import dataclasses
from collections import namedtuple
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar

T = TypeVar("T")

RARE_SLOT = "_rare"


def rare_fields(*names: str) -> Callable[[type[T]], type[T]]:
    """A class decorator, placed above `@dataclass(frozen=True, slots=True)`: the named fields
    (each with a plain default) are kept in one slot, see the module's docstring. The class is
    made again with the fewer slots (as `dataclass(slots=True)` itself does), so anything that
    wraps a slot of it (`derive_mac`) must come after."""
    def wrap(cls: type[T]) -> type[T]:
        return _pack(cls, names)
    return wrap


def _pack(cls: Any, names: tuple[str, ...]) -> Any:
    fields = dataclasses.fields(cls)
    by_name = {f.name: f for f in fields}
    for n in names:
        f = by_name.get(n)
        if f is None or f.default is dataclasses.MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{n}: a rare field must be a field with a plain default")
    if "__slots__" not in cls.__dict__ or RARE_SLOT in by_name:
        raise TypeError(f"{cls.__name__}: rare_fields goes above @dataclass(slots=True)")
    holder = namedtuple(f"{cls.__name__}Rare", names)   # type: ignore[misc]  # noqa: PYI024
    defaults = tuple(by_name[n].default for n in names)
    none = holder(*defaults)

    d = dict(cls.__dict__)
    for f in fields:
        d.pop(f.name, None)
    d.pop("__dict__", None)
    d.pop("__weakref__", None)
    d["__slots__"] = tuple(f.name for f in fields if f.name not in names) + (RARE_SLOT,)
    d["__rare__"] = names
    d["__rare_defaults__"] = none
    new = type(cls)(cls.__name__, cls.__bases__, d)
    new.__qualname__ = cls.__qualname__
    slot = new.__dict__[RARE_SLOT]
    for k, n in enumerate(names):
        setattr(new, n, property(attrgetter(f"{RARE_SLOT}.{n}"), _setter(slot, none, k),
                                 doc=f"{n} (kept with the other rare fields)"))
    new.__init__ = _init(new, fields, names, none)
    return new


def _setter(slot: Any, none: Any, k: int) -> Callable[[Any, Any], None]:
    """`object.__setattr__(row, name, v)` (a row's `__post_init__`, copy, pickle): the row's rare
    values with this one changed, the shared defaults again if they all are."""
    def set_one(row: Any, value: Any) -> None:
        try:
            values = list(slot.__get__(row, None))
        except AttributeError:   # (not set yet)
            values = list(none)
        values[k] = () if type(value) is list and not value and none[k] == () else value
        slot.__set__(row, none if all(a is b for a, b in zip(values, none)) else type(none)(*values))
    return set_one


def default_test(names: tuple[str, ...], none: tuple[Any, ...], args: list[str]) -> str:
    """The text of an expression true when the variables `args` (the rare fields' values, in
    order) are all their defaults, the defaults named `_d0`, `_d1`, ... in the namespace."""
    parts = []
    for k, (a, default) in enumerate(zip(args, none)):
        if default == () and type(default) is tuple:
            parts.append(f"({a} is _d{k} or (type({a}) is list and not {a}))")
        else:
            parts.append(f"{a} is _d{k}")
    return " and ".join(parts) or "True"


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen dataclass with slots (its fields all plain: set by `__init__`, positional or
    keyword) the `__init__` below, which sets each field through its descriptor (no rare fields):
    rows and specs made per launch (a launch spec's 24 fields, a tag's 5...)."""
    fields = dataclasses.fields(cls)   # type: ignore[arg-type]
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__ or any(
            not f.init or f.kw_only is True for f in fields):
        raise TypeError(f"{cls.__name__}: fast_init takes a frozen dataclass with slots and plain fields")
    cls.__init__ = _init(cls, fields, (), None)   # type: ignore[misc]
    return cls


def _init(cls: Any, fields: tuple[dataclasses.Field[Any], ...], names: tuple[str, ...], none: Any) -> Any:
    """`__init__` as the dataclass's, the rare fields stored in one step, each other field through
    its descriptor's own `__set__` (what `object.__setattr__` ends in, without the name's lookup in
    the class: about half the cost of a field, and an instance row sets twenty).

    The descriptors are bound now; a field whose descriptor is replaced after the class is made
    (a derived field's: cloudctl/derived.py) must call `__init__.rebind()` then, or its `__set__`
    would be skipped."""
    params, body = [], []
    env: dict[str, Any] = {"_N": none, "_H": type(none), "MISSING": dataclasses.MISSING}
    for f in fields:
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            env[f"_dflt_{f.name}"] = f.default
            params.append(f"{f.name}=_dflt_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:   # (the rare ones have plain defaults)
            env[f"_fact_{f.name}"] = f.default_factory
            params.append(f"{f.name}=MISSING")
            body.append(f"    if {f.name} is MISSING: {f.name} = _fact_{f.name}()")
        else:
            params.append(f.name)
    rare = set(names)
    stored = [f.name for f in fields if f.name not in rare and f.init]
    for n in stored:
        body.append(f"    _s_{n}(self, {n})")
    if names:
        env.update((f"_d{k}", v) for k, v in enumerate(none))
        args = list(names)
        body.append(f"    _s_{RARE_SLOT}(self, _N if {default_test(names, none, args)} else _H({', '.join(args)}))")
        stored.append(RARE_SLOT)
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    src = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"

    def rebind() -> None:
        for n in stored:
            d = next(k.__dict__[n] for k in cls.__mro__ if n in k.__dict__)
            env[f"_s_{n}"] = d.__set__

    rebind()
    exec(src, env)   # noqa: S102  (as dataclasses makes __init__)
    fn = env.pop("__init__")
    fn.__qualname__ = f"{cls.__qualname__}.__init__"
    fn.rebind = rebind
    return fn
