"""The trimmed EC2 service model the server runs on.

Loading botocore's full EC2 model costs ~40 MiB of RSS, far too much for the
server's budget, so the server never imports botocore: a child process
(:mod:`cloudctl.api.ec2.model_build`) writes the few shapes cloudctl needs to
a JSON cache, keyed by botocore version and operation set, and this module
only reads that file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from cloudctl.api.ec2.model_build import FORMAT_VERSION, service_title

from ...slim import dataclass

# OPERATIONS is provided lazily by the module-level __getattr__ below, which pyflakes cannot see.
__all__ = ["OPERATIONS", "Ec2Model", "Operation", "ModelError", "load_model", "cache_path"]  # noqa: F822

# The package root (the directory holding ``cloudctl``), so the builder child
# can import us even when cloudctl is run from a source tree, not installed.
_SRC_ROOT = Path(__file__).resolve().parents[3]


class ModelError(RuntimeError):
    """The trimmed model could not be built or read."""


def __getattr__(name: str) -> tuple[str, ...]:
    """`OPERATIONS`, the operations cloudctl implements: the names in the `@action` registry
    (api/ec2/actions), read on first use so this module stays free of the core."""
    if name == "OPERATIONS":
        from cloudctl.api.ec2.actions import ACTIONS
        return tuple(ACTIONS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Shapes(Mapping[str, Any]):
    """The model's shapes by name, each kept as its JSON text until first asked for, then as the
    parsed dict (issue 14, base RSS: the EC2 model's 887 shapes are ~1.1 MiB of dicts against
    ~0.3 MiB of text, and the protocols read a shape only to compile an operation's tables, or,
    for the query services, while parsing their requests). A read-only mapping of the whole model:
    every view, copy and comparison sees every shape, parsed as it is reached."""

    __slots__ = ("_text", "parsed")

    def __init__(self, text: Mapping[str, str]) -> None:
        self._text = text
        self.parsed: dict[str, Any] = {}   # the shapes asked for so far

    def __getitem__(self, name: str) -> Any:
        try:
            return self.parsed[name]
        except KeyError:
            shape = self.parsed[name] = json.loads(self._text[name])
            return shape

    def __contains__(self, name: object) -> bool:
        return name in self._text

    def __iter__(self) -> Iterator[str]:
        return iter(self._text)

    def __len__(self) -> int:
        return len(self._text)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    input: str | None
    output: str | None
    result_wrapper: str | None = None   # the query protocol's <XxxResult> element


@dataclass(frozen=True, slots=True)
class Ec2Model:
    """Just what the wire protocol needs: operations and raw shape dicts.

    Shapes keep botocore's JSON layout (``type``, ``members`` with
    ``locationName``/``queryName``/``shape``, list ``member``, ``required``).
    """

    api_version: str
    xml_namespace: str
    botocore_version: str
    operations: Mapping[str, Operation]
    shapes: Mapping[str, Mapping[str, Any]]
    protocol: str = "ec2"
    unsupported: frozenset[str] = frozenset()   # the service's operations cloudctl does not serve

    def operation(self, name: str) -> Operation:
        return self.operations[name]

    def shape(self, name: str) -> Mapping[str, Any]:
        return self.shapes[name]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ec2Model:
        meta = data["metadata"]
        ops = {
            name: Operation(name, spec.get("input"), spec.get("output"), spec.get("resultWrapper"))
            for name, spec in data["operations"].items()
        }
        return cls(
            api_version=meta["apiVersion"],
            xml_namespace=meta["xmlNamespace"],
            botocore_version=data["botocore_version"],
            operations=ops,
            shapes=Shapes(data["shapes"]),
            protocol=meta.get("protocol", "ec2"),
            unsupported=frozenset(data.get("unsupported", ())),
        )


def _botocore_version() -> str:
    try:
        return importlib.metadata.version("botocore")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError("botocore is not installed; it is needed once to build the EC2 model") from exc


def cache_path(operations: Collection[str], cache_dir: Path, service: str = "ec2") -> Path:
    """Cache file for this service, botocore version and operation set."""
    ops = sorted(set(operations))
    digest = hashlib.sha256(f"{FORMAT_VERSION}\n{','.join(ops)}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{service}-model-{_botocore_version()}-{digest}.json"


def _read(path: Path, operations: Collection[str]) -> Ec2Model | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or corrupt: rebuild
    if data.get("format") != FORMAT_VERSION or set(data.get("operations", ())) != set(operations):
        return None
    return Ec2Model.from_json(data)


def _build(path: Path, operations: Collection[str], service: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SRC_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "cloudctl.api.ec2.model_build", "--service", service, str(path),
           *sorted(set(operations))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ModelError(f"building the {service_title(service)} model failed ({proc.returncode}): "
                         f"{proc.stderr.strip()}")


def load_model(operations: Collection[str], cache_dir: Path, service: str = "ec2") -> Ec2Model:
    """Load the trimmed model of `service` (botocore's name), building it in a child process if
    not cached.

    Blocks (for about a second on a cold cache); call it at start-up before
    the event loop serves requests.
    """
    ops = sorted(set(operations))
    if not ops:
        raise ValueError("no operations requested")
    path = cache_path(ops, cache_dir, service)
    model = _read(path, ops)
    if model is None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        _build(path, ops, service)
        model = _read(path, ops)
        if model is None:
            raise ModelError(f"the {service_title(service)} model builder did not produce a usable {path}")
    return model
