"""The AWS `query` wire protocol (STS, IAM; AutoScaling, ELB and CloudFormation speak it too),
driven by a trimmed botocore model.

Requests are the flat form fields botocore's ``QuerySerializer`` writes (lists as
``Name.member.1``, maps as ``Name.entry.1.key``); answers are the documents its ``QueryParser``
reads: ``<XxxResponse xmlns=…><XxxResult>…</XxxResult><ResponseMetadata><RequestId>…`` and errors
as ``<ErrorResponse><Error><Type>Sender</Type><Code>…``. Unlike EC2's protocol (api/ec2/protocol.py,
compiled per shape for its hot paths) this walks the model per request.
Scalars are read and written exactly as EC2's are (the same converters and XML escaping); a long
answer is cut into slices as EC2's is (a LazyList member's elements made as they are written).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ..ec2.model import Ec2Model
from ..ec2.protocol import (
    ParamError,
    SerializationError,
    _esc,
    _fmt_timestamp,
    _to_blob,
    _to_bool,
    _to_float,
    _to_int,
    _to_long,
    _to_timestamp,
)

__all__ = ["QueryProtocol"]

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_MAX_ECHO = 256
_MAX_DEPTH = 40   # dotted parts in one field name
_SCALARS = {
    "integer": (_to_int, "an integer"), "long": (_to_long, "an integer"), "float": (_to_float, "a number"),
    "double": (_to_float, "a number"), "boolean": (_to_bool, "true or false"),
    "timestamp": (_to_timestamp, "an ISO 8601 timestamp"), "blob": (_to_blob, "base64-encoded data"),
}
_Fields = dict[tuple[str, ...], str]   # the remaining dotted parts of each field name -> its value


def _unknown(key: str) -> ParamError:
    return ParamError("UnknownParameter", f"The parameter {key} is not recognized")


class QueryProtocol:
    """Parses query-protocol requests and writes query-protocol answers for one service's model."""

    def __init__(self, model: Ec2Model, service: str) -> None:
        if model.protocol != "query":
            raise ValueError(f"{service}'s model speaks {model.protocol!r}, not 'query'")
        self.model = model
        self.service = service
        self._xmlns = model.xml_namespace

    def has_operation(self, op: str) -> bool:
        return op in self.model.operations

    # -- requests ----------------------------------------------------------------------------

    def parse(self, op: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Form fields (minus Action, Version and auth) as botocore's input dict for `op`.

        Raises ParamError (UnknownParameter, InvalidParameterValue, MissingParameter)."""
        shape = self.model.operations[op].input
        if shape is None:
            for key in params:
                raise _unknown(key)
            return {}
        fields = {tuple(k.split(".")): v for k, v in params.items()}
        for parts in fields:   # (the walk recurses per part: no model nests anywhere near this deep)
            if len(parts) > _MAX_DEPTH:
                raise _unknown(".".join(parts)[:_MAX_ECHO])
        return self._struct(shape, fields, "")

    def _struct(self, shape_name: str, fields: _Fields, prefix: str) -> dict[str, Any]:
        shape = self.model.shapes[shape_name]
        members = shape.get("members", {})
        wire_of = {ref.get("locationName", name): name for name, ref in members.items()}
        groups: dict[str, _Fields] = {}
        for parts, value in fields.items():
            if not parts or parts[0] not in wire_of:
                raise _unknown(prefix + ".".join(parts))
            groups.setdefault(parts[0], {})[parts[1:]] = value
        out: dict[str, Any] = {}
        for wire, sub in groups.items():
            name = wire_of[wire]
            out[name] = self._value(members[name]["shape"], sub, prefix + wire)
        for name in shape.get("required", ()):
            if name not in out:
                wire = members[name].get("locationName", name)
                raise ParamError("MissingParameter", f"The request must contain the parameter {prefix}{wire}")
        return out

    def _value(self, shape_name: str, fields: _Fields, key: str) -> Any:
        shape = self.model.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            if () in fields:
                raise _unknown(key)
            return self._struct(shape_name, fields, key + ".")
        if kind == "list":
            return self._list(shape, fields, key)
        if kind == "map":
            return self._map(shape, fields, key)
        if set(fields) != {()}:
            raise _unknown(key + "." + ".".join(next(p for p in fields if p)))
        raw = fields[()]
        if kind in ("string", "character"):
            return raw
        convert, expected = _SCALARS[kind]
        try:
            return convert(raw)
        except (ValueError, TypeError, OverflowError):
            shown = raw if len(raw) <= _MAX_ECHO else raw[:_MAX_ECHO] + "..."
            raise ParamError("InvalidParameterValue",
                             f"Value ({shown}) for parameter {key} is invalid. Expected {expected}.") from None

    def _indexed(self, fields: _Fields, key: str, skip: str | None) -> dict[int, _Fields]:
        """The fields of each element of a list or map, by their 1-based index."""
        items: dict[int, _Fields] = {}
        for parts, value in fields.items():
            if skip is not None:
                if not parts or parts[0] != skip:
                    raise _unknown(".".join((key, *parts)))
                parts = parts[1:]
            if not parts or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 6:
                raise _unknown(".".join((key, *parts)))
            items.setdefault(int(parts[0]), {})[parts[1:]] = value
        return items

    def _list(self, shape: Mapping[str, Any], fields: _Fields, key: str) -> list[Any]:
        if fields == {(): ""}:   # (botocore writes an empty list as `Name=`)
            return []
        item = shape["member"]
        skip = None if shape.get("flattened") else item.get("locationName", "member")
        items = self._indexed(fields, key, skip)
        at = f"{key}.{skip}" if skip else key
        return [self._value(item["shape"], items[i], f"{at}.{i}") for i in sorted(items)]

    def _map(self, shape: Mapping[str, Any], fields: _Fields, key: str) -> dict[Any, Any]:
        k_name = shape["key"].get("locationName", "key")
        v_name = shape["value"].get("locationName", "value")
        out: dict[Any, Any] = {}
        skip = None if shape.get("flattened") else "entry"
        entries = self._indexed(fields, key, skip)
        at = f"{key}.{skip}" if skip else key
        for i in sorted(entries):
            entry = entries[i]
            k_fields = {p[1:]: v for p, v in entry.items() if p[:1] == (k_name,)}
            v_fields = {p[1:]: v for p, v in entry.items() if p[:1] == (v_name,)}
            if len(k_fields) + len(v_fields) != len(entry) or not k_fields:
                raise _unknown(f"{at}.{i}")
            value = self._value(shape["value"]["shape"], v_fields, f"{at}.{i}.{v_name}") if v_fields else None
            out[self._value(shape["key"]["shape"], k_fields, f"{at}.{i}.{k_name}")] = value
        return out

    # -- answers -----------------------------------------------------------------------------

    def serialize(self, op: str, result: Mapping[str, Any], request_id: str) -> bytes:
        """The answer to `op`: `result` (botocore's output member names) in its Result element."""
        return b"".join(self.serialize_iter(op, result, request_id, sys.maxsize))

    def serialize_iter(self, op: str, result: Mapping[str, Any], request_id: str,
                       slice_items: int = 100) -> Iterator[bytes]:
        """The answer in pieces, cut after every `slice_items` list elements (a LazyList's are made
        as they are written), so the endpoint writes a long answer a slice per loop turn."""
        operation = self.model.operations[op]
        parts = [f'{_XML_DECL}<{op}Response xmlns="{self._xmlns}">']
        if operation.output is not None:
            wrapper = operation.result_wrapper or f"{op}Result"
            parts.append(f"<{wrapper}>")
            done = 0
            try:
                for text in self._struct_xml(operation.output, result):
                    if text is not None:
                        parts.append(text)
                        continue
                    done += 1
                    if done >= slice_items:
                        done = 0
                        yield "".join(parts).encode("utf-8")
                        parts.clear()
            except SerializationError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise SerializationError(f"{op}: cannot serialize result: {exc}") from exc
            parts.append(f"</{wrapper}>")
        parts.append(f"<ResponseMetadata><RequestId>{_esc(request_id)}</RequestId></ResponseMetadata>"
                     f"</{op}Response>")
        yield "".join(parts).encode("utf-8")

    def is_last(self, op: str, piece: bytes) -> bool:
        """Whether `piece` from serialize_iter ends the answer."""
        return piece.endswith(f"</{op}Response>".encode())

    # The writers yield text, and None after each list element (where an answer may be cut).

    def _struct_xml(self, shape_name: str, value: Mapping[str, Any]) -> Iterator[str | None]:
        members = self.model.shapes[shape_name].get("members", {})
        for name, item in value.items():
            ref = members.get(name)
            if ref is None:
                if item is None:
                    continue
                raise SerializationError(f"{name!r} is not a member of {shape_name}")
            if item is not None:
                yield from self._xml(ref["shape"], ref.get("locationName", name), item)

    def _xml(self, shape_name: str, tag: str, value: Any) -> Iterator[str | None]:
        shape = self.model.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            yield f"<{tag}>"
            yield from self._struct_xml(shape_name, value)
            yield f"</{tag}>"
        elif kind == "list":
            item = shape["member"]
            flat = bool(shape.get("flattened"))
            item_tag = tag if flat else item.get("locationName", "member")
            if not flat:
                yield f"<{tag}>"
            for v in value:
                if v is not None:
                    yield from self._xml(item["shape"], item_tag, v)
                    yield None
            if not flat:
                yield f"</{tag}>"
        elif kind == "map":
            k_ref, v_ref = shape["key"], shape["value"]
            k_tag, v_tag = k_ref.get("locationName", "key"), v_ref.get("locationName", "value")
            entry = tag if shape.get("flattened") else "entry"
            if entry == "entry":
                yield f"<{tag}>"
            for k, v in value.items():
                yield f"<{entry}>"
                yield from self._xml(k_ref["shape"], k_tag, k)
                yield from self._xml(v_ref["shape"], v_tag, v)
                yield f"</{entry}>"
            if entry == "entry":
                yield f"</{tag}>"
        else:
            text = self._scalar(kind, value)
            if text is not None:
                yield f"<{tag}>{text}</{tag}>"

    @staticmethod
    def _scalar(kind: str, value: Any) -> str | None:
        if kind == "timestamp":
            return _fmt_timestamp(value)
        if kind == "boolean":
            return "true" if value else "false"
        if kind in ("integer", "long"):
            if isinstance(value, bool) or int(value) != value:
                raise SerializationError(f"not an integer: {value!r}")
            return str(int(value))
        if kind in ("float", "double"):
            return repr(float(value))
        return _esc(value)

    def error(self, code: str, message: str, request_id: str, status: int = 400) -> bytes:
        """The query protocol's error document: the fault is the sender's for a 4xx."""
        fault = "Sender" if status < 500 else "Receiver"
        return (f"{_XML_DECL}<ErrorResponse xmlns=\"{self._xmlns}\"><Error><Type>{fault}</Type>"
                f"<Code>{_esc(code)}</Code><Message>{_esc(message)}</Message></Error>"
                f"<RequestId>{_esc(request_id)}</RequestId></ErrorResponse>").encode("utf-8")
