"""The EC2 Query wire protocol, driven by the trimmed service model.

Requests arrive as flat form fields (``Filter.1.Value.2=x``) that botocore's
``EC2Serializer`` and friends produce from the model; responses are the XML
that botocore's ``EC2QueryParser`` reads back.  Both directions are compiled
once per shape into plain dict/tuple tables so the per-request cost is a few
dict lookups per field rather than a walk over the model.

Deliberately stdlib-only: the server must never import botocore (see
:mod:`cloudctl.api.ec2.model`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Union

from cloudctl.api.ec2.model import Ec2Model

__all__ = ["ParamError", "SerializationError", "Protocol"]

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Shape kinds, shared by the request and response compilers.
_STR, _STRUCT, _LIST, _BOOL, _INT, _FLOAT, _TS, _BLOB = range(8)
_KIND_OF_TYPE = {
    "string": _STR,
    "character": _STR,
    "structure": _STRUCT,
    "list": _LIST,
    "boolean": _BOOL,
    "integer": _INT,
    "long": _INT,
    "double": _FLOAT,
    "float": _FLOAT,
    "timestamp": _TS,
    "blob": _BLOB,
}

_UTC = timezone.utc
_MAX_ECHO = 256  # longest parameter value quoted back in an error message


class ParamError(Exception):
    """A request parameter problem, reported to the client as an EC2 error (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SerializationError(ValueError):
    """A handler returned a result that does not fit the output shape (a server bug)."""


# ---------------------------------------------------------------------------
# Model helpers


def _trait(model: Ec2Model, ref: Mapping[str, Any], key: str) -> Any:
    """A member trait as botocore resolves it: the reference overrides the shape."""
    if key in ref:
        return ref[key]
    return model.shapes[ref["shape"]].get(key)


def _kind(model: Ec2Model, shape_name: str) -> int:
    shape = model.shapes[shape_name]
    type_name = shape["type"]
    if type_name not in _KIND_OF_TYPE:
        # Maps, unions and documents do not occur in the EC2 model; fail at
        # compile time rather than produce something botocore cannot read.
        raise NotImplementedError(f"EC2 shape {shape_name} has unsupported type {type_name}")
    if shape.get("flattened"):
        raise NotImplementedError(f"EC2 shape {shape_name} is flattened")
    return _KIND_OF_TYPE[type_name]


# ---------------------------------------------------------------------------
# Request side: flat form fields -> botocore-shaped input dict


def _to_int(text: str) -> int:
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError
    return int(text)


def _to_float(text: str) -> float:
    if "_" in text or text != text.strip():
        raise ValueError
    return float(text)


def _to_bool(text: str) -> bool:
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise ValueError


def _to_timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return value


def _to_blob(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# kind -> (converter, what the error message says was expected)
_CONVERTERS: dict[int, tuple[Callable[[str], Any], str]] = {
    _INT: (_to_int, "an integer"),
    _FLOAT: (_to_float, "a number"),
    _BOOL: (_to_bool, "true or false"),
    _TS: (_to_timestamp, "an ISO 8601 timestamp"),
    _BLOB: (_to_blob, "base64-encoded data"),
}

# A member entry: (member name, kind, payload).  Payload is the converter
# (None for strings) for scalars, an _InStruct for structures and an
# (item kind, item payload) pair for lists.
_InEntry = tuple[str, int, Any]


class _InStruct:
    """Compiled request structure: wire name -> member entry, plus required members."""

    __slots__ = ("members", "required")

    def __init__(self) -> None:
        self.members: dict[str, _InEntry] = {}
        self.required: tuple[tuple[str, str], ...] = ()


class _RequestCompiler:
    def __init__(self, model: Ec2Model) -> None:
        self._model = model
        self._structs: dict[str, _InStruct] = {}

    def struct(self, shape_name: str) -> _InStruct:
        done = self._structs.get(shape_name)
        if done is not None:
            return done
        spec = self._structs[shape_name] = _InStruct()  # registered first: recursion-safe
        model = self._model
        shape = model.shapes[shape_name]
        wire_of: dict[str, str] = {}
        for member, ref in shape.get("members", {}).items():
            wire = self._wire_name(ref, member)
            if wire in spec.members:
                raise NotImplementedError(f"{shape_name}: members {spec.members[wire][0]} and {member} share {wire}")
            kind, payload = self._payload(ref["shape"])
            spec.members[wire] = (member, kind, payload)
            wire_of[member] = wire
        spec.required = tuple((m, wire_of[m]) for m in shape.get("required", ()))
        return spec

    def _wire_name(self, ref: Mapping[str, Any], member: str) -> str:
        # Mirrors EC2Serializer._get_serialized_name: queryName, else the
        # capitalised locationName, else the member name.
        query_name = _trait(self._model, ref, "queryName")
        if query_name:
            return str(query_name)
        location = _trait(self._model, ref, "locationName")
        if location:
            return location[0].upper() + location[1:]
        return member

    def _payload(self, shape_name: str) -> tuple[int, Any]:
        kind = _kind(self._model, shape_name)
        if kind == _STRUCT:
            return kind, self.struct(shape_name)
        if kind == _LIST:
            return kind, self._payload(self._model.shapes[shape_name]["member"]["shape"])
        if kind == _STR:
            return kind, None
        return kind, _CONVERTERS[kind]


def _unknown(key: str) -> ParamError:
    return ParamError("UnknownParameter", f"The parameter {key} is not recognized")


def _parse_struct(root: _InStruct, params: Mapping[str, str]) -> dict[str, Any]:
    """Walk each key down the compiled tree, building the nested result in place.

    Lists are collected as {index: value} dicts while walking (so gaps and
    out-of-order indices cost nothing) and turned into lists, sorted by
    integer index, once every key has been placed.
    """
    result: dict[str, Any] = {}
    lists: list[tuple[dict[Any, Any], Any, dict[int, Any]]] = []
    nested_required: list[tuple[dict[str, Any], _InStruct, str]] = []
    for key, raw in params.items():
        parts = key.split(".")
        last = len(parts)
        members = root.members
        container: dict[Any, Any] = result
        i = 0
        while True:
            entry = members.get(parts[i])
            if entry is None:
                raise _unknown(key)
            name, kind, payload = entry
            slot: Any = name
            i += 1
            while kind == _LIST:
                if i == last:
                    raise _unknown(key)
                index = parts[i]
                if not (index.isascii() and index.isdigit()):
                    raise _unknown(key)
                acc = container.get(slot)
                if acc is None:
                    acc = container[slot] = {}
                    lists.append((container, slot, acc))
                container = acc
                slot = int(index)
                i += 1
                kind, payload = payload
            if kind == _STRUCT:
                if i == last:
                    raise _unknown(key)
                sub = container.get(slot)
                if sub is None:
                    sub = container[slot] = {}
                    if payload.required:
                        nested_required.append((sub, payload, ".".join(parts[:i])))
                container = sub
                members = payload.members
                continue
            if i != last:
                raise _unknown(key)
            if payload is None:
                container[slot] = raw
            else:
                convert, expected = payload
                try:
                    container[slot] = convert(raw)
                except (ValueError, TypeError, OverflowError):
                    shown = raw if len(raw) <= _MAX_ECHO else raw[:_MAX_ECHO] + "..."
                    raise ParamError(
                        "InvalidParameterValue",
                        f"Value ({shown}) for parameter {key} is invalid. Expected {expected}.",
                    ) from None
            break
    # Children were created after their parents, so converting in reverse
    # order finishes every inner list before the outer one copies it.
    for container, slot, acc in reversed(lists):
        container[slot] = [acc[k] for k in sorted(acc)]
    for member, wire in root.required:
        if member not in result:
            raise ParamError("MissingParameter", f"The request must contain the parameter {wire}")
    for sub, spec, prefix in nested_required:
        for member, wire in spec.required:
            if member not in sub:
                raise ParamError("MissingParameter", f"The request must contain the parameter {prefix}.{wire}")
    return result


# ---------------------------------------------------------------------------
# Response side: result dict -> EC2 XML

_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}


def _escape_match(match: re.Match[str]) -> str:
    # Characters XML 1.0 cannot carry at all (not even as references) become
    # U+FFFD so a stray control byte in, say, console output can never break
    # the document.
    return _ESCAPES.get(match.group(), "\ufffd")


def _esc(text: Any) -> str:
    if type(text) is not str:
        # str.__str__ yields the plain value of str subclasses such as
        # (str, Enum) members, whose str() would be "Class.MEMBER".
        text = str.__str__(text) if isinstance(text, str) else str(text)
    # isprintable() is a fast C check that rules out every character XML
    # rejects, so the common case is three substring tests and no regex.
    if text.isprintable() and "&" not in text and "<" not in text and ">" not in text:
        return text
    return _NEEDS_ESCAPE.sub(_escape_match, text)


_TS_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z", re.ASCII)


def _fmt_timestamp(value: Any) -> str | None:
    """EC2's ``YYYY-MM-DDTHH:MM:SS.mmmZ``; None (omit the element) for ''."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            if value.utcoffset():
                value = value.astimezone(_UTC)
            value = value.replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, str):
        if not value:
            return None
        if _TS_CANONICAL.match(value):
            return value
        try:
            return _fmt_timestamp(datetime.fromisoformat(value))
        except ValueError:
            raise SerializationError(f"not an ISO 8601 timestamp: {value!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt_timestamp(datetime.fromtimestamp(value, _UTC))
    raise SerializationError(f"not a timestamp: {value!r}")


def _fmt_bool(value: Any) -> str:
    return "true" if value else "false"


def _fmt_int(value: Any) -> str:
    if type(value) is int:
        return str(value)
    if isinstance(value, bool) or int(value) != value:
        raise SerializationError(f"not an integer: {value!r}")
    return str(int(value))


def _fmt_float(value: Any) -> str:
    return repr(float(value))


def _fmt_blob(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return base64.b64encode(value).decode("ascii")


_FORMATTERS: dict[int, Callable[[Any], str | None]] = {
    _STR: _esc,
    _BOOL: _fmt_bool,
    _INT: _fmt_int,
    _FLOAT: _fmt_float,
    _TS: _fmt_timestamp,
    _BLOB: _fmt_blob,
}


class _OutStruct(dict[str, tuple[int, str, str, Any]]):
    """Compiled response structure: member name -> (kind, open tag, close tag, payload).

    Payload is the nested _OutStruct for structures, an _OutList for lists
    and the formatter for scalars.
    """

    __slots__ = ("shape_name",)

    def __init__(self, shape_name: str) -> None:
        super().__init__()
        self.shape_name = shape_name


# (item kind, item open tag, item close tag, item payload, empty-list element)
_OutList = tuple[int, str, str, Any, str]
_OutPayload = Union[_OutStruct, _OutList, Callable[[Any], Union[str, None]]]


class _ResponseCompiler:
    def __init__(self, model: Ec2Model) -> None:
        self._model = model
        self._structs: dict[str, _OutStruct] = {}

    def struct(self, shape_name: str) -> _OutStruct:
        done = self._structs.get(shape_name)
        if done is not None:
            return done
        table = self._structs[shape_name] = _OutStruct(shape_name)
        for member, ref in self._model.shapes[shape_name].get("members", {}).items():
            # botocore's parser looks members up by locationName, else by
            # member name (EbsBlockDevice has a few without locationName).
            tag = _trait(self._model, ref, "locationName") or member
            kind, payload = self._payload(ref["shape"], tag)
            table[member] = (kind, f"<{tag}>", f"</{tag}>", payload)
        return table

    def _payload(self, shape_name: str, tag: str) -> tuple[int, _OutPayload]:
        kind = _kind(self._model, shape_name)
        if kind == _STRUCT:
            return kind, self.struct(shape_name)
        if kind == _LIST:
            item_ref = self._model.shapes[shape_name]["member"]
            # EC2 wraps every list element; botocore ignores the element name,
            # AWS uses "item" nearly everywhere, so that is the default.
            item_tag = _trait(self._model, item_ref, "locationName") or "item"
            item_kind, item_payload = self._payload(item_ref["shape"], item_tag)
            return kind, (item_kind, f"<{item_tag}>", f"</{item_tag}>", item_payload, f"<{tag}/>")
        return kind, _FORMATTERS[kind]


def _write_struct(table: _OutStruct, value: Mapping[str, Any], out: Callable[[str], None]) -> None:
    for key, item in value.items():
        if item is None:
            continue
        try:
            kind, open_tag, close_tag, payload = table[key]
        except KeyError:
            raise SerializationError(f"{key!r} is not a member of {table.shape_name}") from None
        if kind == _STR:
            if type(item) is not str or not (
                item.isprintable() and "&" not in item and "<" not in item and ">" not in item
            ):
                item = _esc(item)
            out(open_tag + item + close_tag)
        elif kind == _STRUCT:
            out(open_tag)
            _write_struct(payload, item, out)
            out(close_tag)
        elif kind == _LIST:
            if item:
                out(open_tag)
                _write_list(payload, item, out)
                out(close_tag)
            else:
                out(payload[4])
        elif kind == _BOOL:
            out(open_tag + ("true" if item else "false") + close_tag)
        elif kind == _INT and type(item) is int:
            out(open_tag + str(item) + close_tag)
        else:
            text = payload(item)
            if text is not None:
                out(open_tag + text + close_tag)


def _write_list(spec: _OutList, value: Any, out: Callable[[str], None]) -> None:
    kind, open_tag, close_tag, payload, _ = spec
    if kind == _STRUCT:
        for element in value:
            if element is not None:
                out(open_tag)
                _write_struct(payload, element, out)
                out(close_tag)
    elif kind == _LIST:
        for element in value:
            if element is not None:
                out(open_tag)
                _write_list(payload, element, out)
                out(close_tag)
    else:
        for element in value:
            if element is not None:
                text = payload(element)
                if text is not None:
                    out(open_tag + text + close_tag)


class LazyList:
    """A list member whose elements are made while the response is written.

    A large answer (DescribeInstances over thousands of instances) is then rendered in slices,
    between which the event loop runs, and its element views never exist all at once.
    """

    __slots__ = ("_items", "_length")

    def __init__(self, items: Iterable[Any], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)


def _iter_struct(table: _OutStruct, value: Mapping[str, Any], parts: list[str],
                 done: list[int], slice_items: int) -> Iterator[None]:
    """Like _write_struct, but yields after every `slice_items` elements of any LazyList."""
    for key, item in value.items():
        if type(item) is not LazyList:
            _write_struct(table, {key: item}, parts.append)
            continue
        try:
            _kind, open_tag, close_tag, spec = table[key]
        except KeyError:
            raise SerializationError(f"{key!r} is not a member of {table.shape_name}") from None
        if not len(item):
            parts.append(spec[4])
            continue
        item_kind, item_open, item_close, item_payload, _ = spec
        parts.append(open_tag)
        for element in item:
            if item_kind == _STRUCT and any(type(v) is LazyList for v in element.values()):
                parts.append(item_open)
                yield from _iter_struct(item_payload, element, parts, done, slice_items)
                parts.append(item_close)
            else:
                _write_list(spec, (element,), parts.append)
            done[0] += 1
            if done[0] >= slice_items:
                done[0] = 0
                yield
        parts.append(close_tag)


# ---------------------------------------------------------------------------


class Protocol:
    """Parses EC2 Query requests and renders EC2 XML responses for one model.

    Per-operation tables are compiled on first use and shared between
    operations that use the same shapes.
    """

    def __init__(self, model: Ec2Model) -> None:
        self._model = model
        self._requests = _RequestCompiler(model)
        self._responses = _ResponseCompiler(model)
        self._parsers: dict[str, _InStruct | None] = {}
        self._serializers: dict[str, tuple[str, _OutStruct | None, str]] = {}
        namespace = model.xml_namespace
        # AWS (and every EC2 client in the wild) uses the trailing slash form.
        self._xmlns = namespace if namespace.endswith("/") else namespace + "/"

    def has_operation(self, op: str) -> bool:
        return op in self._model.operations

    def compile_all(self) -> None:
        """Compile every operation now, e.g. to pay the cost before serving."""
        for op in self._model.operations:
            self._parser(op)
            self._serializer(op)

    def _parser(self, op: str) -> _InStruct | None:
        try:
            return self._parsers[op]
        except KeyError:
            pass
        operation = self._model.operations.get(op)
        if operation is None:
            raise ParamError("InvalidAction", f"The action {op} is not valid for this web service.")
        spec = self._requests.struct(operation.input) if operation.input else None
        self._parsers[op] = spec
        return spec

    def _serializer(self, op: str) -> tuple[str, _OutStruct | None, str]:
        try:
            return self._serializers[op]
        except KeyError:
            pass
        operation = self._model.operations[op]
        table = self._responses.struct(operation.output) if operation.output else None
        head = f'{_XML_DECL}<{op}Response xmlns="{self._xmlns}"><requestId>'
        compiled = (head, table, f"</{op}Response>")
        self._serializers[op] = compiled
        return compiled

    def parse(self, op: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Turn form fields (minus Action, Version and auth) into a botocore-style input dict.

        Raises ParamError (UnknownParameter, InvalidParameterValue,
        MissingParameter, InvalidAction).
        """
        spec = self._parser(op)
        if spec is None:
            for key in params:
                raise _unknown(key)
            return {}
        return _parse_struct(spec, params)

    def serialize(self, op: str, result: Mapping[str, Any], request_id: str) -> bytes:
        """Render ``result`` (member names as in botocore's output) as the EC2 response body.

        Raises SerializationError if ``result`` holds a key the output shape
        lacks or a value of the wrong kind; that is a bug in the handler.
        """
        head, table, tail = self._serializer(op)
        parts: list[str] = [head, _esc(request_id), "</requestId>"]
        if table is None:
            parts.append("<return>true</return>")
        else:
            try:
                _write_struct(table, result, parts.append)
            except SerializationError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise SerializationError(f"{op}: cannot serialize result: {exc}") from exc
        parts.append(tail)
        return "".join(parts).encode("utf-8")

    def serialize_iter(self, op: str, result: Mapping[str, Any], request_id: str,
                       slice_items: int = 100) -> Iterator[bytes]:
        """The response body in pieces, cut after every `slice_items` LazyList elements."""
        head, table, tail = self._serializer(op)
        parts: list[str] = [head, _esc(request_id), "</requestId>"]
        if table is None:
            parts.append("<return>true</return>")
        else:
            for _ in _iter_struct(table, result, parts, [0], slice_items):
                yield "".join(parts).encode("utf-8")
                parts.clear()
        parts.append(tail)
        yield "".join(parts).encode("utf-8")

    def error(self, code: str, message: str, request_id: str) -> bytes:
        """The EC2 error document (note ``RequestID``, unlike the success body)."""
        return (
            f"{_XML_DECL}<Response><Errors><Error><Code>{_esc(code)}</Code>"
            f"<Message>{_esc(message)}</Message></Error></Errors>"
            f"<RequestID>{_esc(request_id)}</RequestID></Response>"
        ).encode("utf-8")

