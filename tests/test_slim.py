"""`cloudctl.slim.dataclass` behaves as `dataclasses.dataclass` (equality, hash, repr, frozen
assignment, pickling, `replace`), with the generated methods' code shared between classes and
nothing of a slotted class as written kept (issue 14: base RSS, docs/scaling.md perf-base7)."""
from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cloudctl import slim
from cloudctl.store.records import ROW_TYPES, Instance


def family(dec: Any) -> dict[str, type]:
    """The same classes made by `dec`: every option the generated methods depend on."""
    @dec(frozen=True, slots=True)
    class Row:
        x: int
        y: str = "a"
        z: float = dataclasses.field(default=0.0, compare=False, repr=False)
        h: int = dataclasses.field(default=0, hash=False)
        c: ClassVar[int] = 3

    @dec(frozen=True, slots=True)
    class Child(Row):
        w: int = 0

    @dec(frozen=True)
    class Plain:
        v: Any = None

    @dec
    class Mutable:
        a: int
        b: list[int] = dataclasses.field(default_factory=list)

    @dec(frozen=True, slots=True)
    class One:
        only: str

    @dec(frozen=True)
    class Empty:
        pass

    @dec(eq=False, repr=False, frozen=True)
    class Own:
        k: int

        def __repr__(self) -> str:
            return "mine"

    @dec(unsafe_hash=True)
    class Hashed:
        n: int
    return {c.__name__: c for c in (Row, Child, Plain, Mutable, One, Empty, Own, Hashed)}


def outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except Exception as e:   # (the type and the message are what is compared)
        return (type(e).__name__, str(e))


def observed(k: dict[str, type]) -> list[Any]:
    row, child = k["Row"](1, "b", 2.0, 7), k["Child"](1, "b", 3.0, 8, 5)
    plain = k["Plain"]([])
    plain.v.append(plain)                   # (a repr that meets itself)
    mutable = k["Mutable"](1)
    out: list[Any] = [repr(row), repr(child), repr(plain), repr(mutable), repr(k["One"]("q")),
                      repr(k["Empty"]()), repr(k["Own"](1)), repr(k["Hashed"](4))]
    out += [row == k["Row"](1, "b", 9.0, 9), row == k["Row"](2), row == child, row != k["Row"](1, "b"),
            child == k["Child"](1, "b", 0.0, 0, 5), k["Empty"]() == k["Empty"](), row == (1, "b"),
            k["Own"](1) == k["Own"](1), mutable == k["Mutable"](1), k["One"]("q") == k["One"]("q")]
    out += [hash(row) == hash((1, "b")), hash(child) == hash((1, "b", 5)), hash(k["One"]("q")) == hash(("q",)),
            hash(k["Empty"]()) == hash(()), hash(k["Plain"](None)) == hash((None,)),
            hash(k["Hashed"](4)) == hash((4,)), k["Mutable"].__hash__ is None]
    for obj in (row, child, plain, k["Empty"]()):
        for name in ("x", "v", "other"):
            out.append(outcome(lambda: setattr(obj, name, 1)))
            out.append(outcome(lambda: delattr(obj, name)))
    out += [copy.deepcopy(child) == child, copy.copy(row) == row,
            repr(dataclasses.replace(row, x=5)), dataclasses.astuple(child),
            [f.name for f in dataclasses.fields(child)],
            {n: c.__eq__.__qualname__ for n, c in k.items()}, {n: c.__repr__.__qualname__ for n, c in k.items()}]
    return out


def test_same_behaviour_as_dataclasses() -> None:
    assert observed(family(slim.dataclass)) == observed(family(dataclasses.dataclass))


def test_the_generated_code_is_one_object_for_every_row_type() -> None:
    for name in ("__eq__", "__hash__", "__repr__", "__setattr__", "__delattr__"):
        assert len({getattr(t, name).__code__ for t in ROW_TYPES}) == 1, name
    i = Instance(id="i-1", owner="u", reservation_id="r-1", image_id="ami-1", instance_type="t", host="h",
                 zone="z", state="running", launch_time=1.5)
    assert i == dataclasses.replace(i) and hash(i) == hash(dataclasses.replace(i))
    assert pickle.loads(pickle.dumps(i)) == i and i != dataclasses.replace(i, state="stopped")
    with pytest.raises(dataclasses.FrozenInstanceError):
        i.state = "stopped"   # type: ignore[misc]


def test_a_slotted_class_as_written_is_not_kept() -> None:
    written: list[weakref.ref[type]] = []

    def keep(cls: type) -> type:
        written.append(weakref.ref(cls))
        return cls

    made = []
    for dec in (dataclasses.dataclass, slim.dataclass):
        @dec(frozen=True, slots=True)
        @keep
        class Row:
            x: int
        made.append(Row)
    gc.collect()
    assert written[0]() is not None   # (dataclasses' own pair keeps it, in Python 3.11)
    assert written[1]() is None


def test_serve_collects_the_cli_parsers_before_the_load_freezes_them() -> None:
    """The CLI's argparse parsers are cycles: `serve` collects them before the state's load
    freezes everything alive (`gc.freeze`), which kept them (~0.4 MiB) for the server's life."""
    script = """
import argparse, gc, sys
import cloudctl.server, uvloop
from cloudctl.cli import main
def run(coro):
    coro.close()
    print(sum(isinstance(o, argparse.ArgumentParser) for o in gc.get_objects()))
uvloop.run = run
gc.disable()   # (no collection by chance between the parse and serve's own)
main(["serve", "--config", "config/cloudctl.yaml"])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "0"
