"""Build the trimmed wire model of EC2 (or another Query service) from botocore's service definition.

Run as a child process (``python -m cloudctl.api.ec2.model_build [--service NAME] OUT OP...``)
so that the ~40 MiB botocore costs to load never lands in the server process;
the server only ever reads the small JSON written here.

This module deliberately imports nothing from cloudctl so it works no matter
what the package ``__init__`` files pull in.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Bump when the layout of the written JSON changes; model.py hashes it into
#: the cache file name so stale caches are never read.
FORMAT_VERSION = 3   # 2: operations carry resultWrapper; the service's other operation names;
                     # 3: each shape is its own JSON text (the server parses one when first asked for it)

# Only the traits the wire protocol needs survive; documentation, enums,
# min/max etc. would only cost memory in the server.
_SHAPE_KEYS = (
    "type",
    "required",
    "locationName",
    "queryName",
    "flattened",
    "timestampFormat",
    "xmlNamespace",
    "xmlAttribute",
    "sensitive",
    "idempotencyToken",
)
_REF_KEYS = (
    "shape",
    "locationName",
    "queryName",
    "flattened",
    "timestampFormat",
    "xmlNamespace",
    "xmlAttribute",
    "idempotencyToken",
)


def service_title(service: str) -> str:
    """How messages name a service: EC2, STS, IAM; longer names as botocore spells them."""
    return service.upper() if len(service) <= 3 else service


def _trim_ref(ref: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ref[k] for k in _REF_KEYS if k in ref}


def _trim_shape(shape: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: shape[k] for k in _SHAPE_KEYS if k in shape}
    if "members" in shape:
        out["members"] = {name: _trim_ref(ref) for name, ref in shape["members"].items()}
    for key in ("member", "key", "value"):
        if key in shape:
            out[key] = _trim_ref(shape[key])
    return out


def _reachable(shapes: Mapping[str, Mapping[str, Any]], roots: Iterable[str]) -> list[str]:
    """Shape names reachable from ``roots``, so unrelated shapes are dropped."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        for ref in shape.get("members", {}).values():
            stack.append(ref["shape"])
        for key in ("member", "key", "value"):
            if key in shape:
                stack.append(shape[key]["shape"])
    return sorted(seen)


def build(service: Mapping[str, Any], operations: Iterable[str], botocore_version: str) -> dict[str, Any]:
    """Trim a raw botocore service description to ``operations``.

    Raises KeyError naming the first operation the model does not define.
    """
    all_ops = service["operations"]
    shapes = service["shapes"]
    ops: dict[str, dict[str, str | None]] = {}
    roots: list[str] = []
    for name in sorted(set(operations)):
        if name not in all_ops:
            raise KeyError(name)
        op = all_ops[name]
        input_name = op.get("input", {}).get("shape")
        output_name = op.get("output", {}).get("shape")
        ops[name] = {"input": input_name, "output": output_name}
        wrapper = op.get("output", {}).get("resultWrapper")
        if wrapper:   # (the query protocol's <XxxResult>)
            ops[name]["resultWrapper"] = wrapper
        roots.extend(n for n in (input_name, output_name) if n)
    meta = service["metadata"]
    return {
        "format": FORMAT_VERSION,
        "botocore_version": botocore_version,
        "metadata": {
            "apiVersion": meta["apiVersion"],
            "xmlNamespace": meta["xmlNamespace"],
            "protocol": meta.get("protocol", "ec2"),
        },
        "operations": ops,
        # the names alone, so a request for one cloudctl does not serve is told so, not "invalid"
        "unsupported": sorted(set(all_ops) - set(ops)),
        "shapes": {name: json.dumps(_trim_shape(shapes[name]), separators=(",", ":"), sort_keys=True)
                   for name in _reachable(shapes, roots)},
    }


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write so a concurrent or crashed build never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 is needlessly private for a cache
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"), sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service_name = "ec2"
    if args[:1] == ["--service"] and len(args) > 1:
        service_name, args = args[1], args[2:]
    if len(args) < 2:
        print("usage: python -m cloudctl.api.ec2.model_build [--service NAME] OUT_PATH OPERATION...",
              file=sys.stderr)
        return 2
    out_path, operations = Path(args[0]), args[1:]

    import botocore
    import botocore.model
    import botocore.session

    session = botocore.session.get_session()
    # get_service_data is what get_service_model wraps; it hands back the raw
    # (handler-patched) description, which is exactly what we want to trim.
    service = session.get_service_data(service_name)
    model = botocore.model.ServiceModel(service, service_name=service_name)
    expected = "ec2" if service_name == "ec2" else "query"   # (cloudctl serves Query APIs only)
    if model.metadata.get("protocol") != expected:
        print(f"unexpected {service_title(service_name)} protocol {model.metadata.get('protocol')!r}", file=sys.stderr)
        return 1
    try:
        data = build(service, operations, botocore.__version__)
    except KeyError as exc:
        print(f"operation {exc.args[0]} is not in botocore's {service_title(service_name)} model", file=sys.stderr)
        return 1
    write_atomic(out_path, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
