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
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Union

from cloudctl.api.ec2.model import Ec2Model
from cloudctl.api.ec2.wire_order import AWS_ORDER

__all__ = ["Cached", "Leaves", "ParamError", "SerializationError", "Protocol"]

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


def _to_int(text: str, bits: int = 32) -> int:
    """botocore's `integer` is 32 bits and `long` 64, as in AWS: 2**63 is no MaxCount."""
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise ValueError
    value = int(text)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError
    return value


def _to_long(text: str) -> int:
    return _to_int(text, 64)


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
        if self._model.shapes[shape_name]["type"] == "long":
            return kind, (_to_long, "an integer")
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
                    # `KeyName=x` for `KeyName.1=x`: EC2 takes an un-indexed list of scalars as
                    # its first element (libcloud sends DescribeKeyPairs so); -1 sorts first and
                    # is no index a client can write.
                    if payload[0] in (_STRUCT, _LIST):
                        raise _unknown(key)
                    position = -1
                else:
                    index = parts[i]
                    if not (index.isascii() and index.isdigit()):
                        raise _unknown(key)
                    position = int(index)
                    i += 1
                acc = container.get(slot)
                if acc is None:
                    acc = container[slot] = {}
                    lists.append((container, slot, acc))
                container = acc
                slot = position
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


# What `_esc` would change in ASCII text: the controls and DEL (what `isprintable` refuses among
# ASCII characters) and the three characters XML escapes here.
_XML_ESCAPED = bytes(range(32)) + b"\x7f&<>"


def xml_plain(text: str) -> bool:
    """Whether `_esc` leaves `text` (a str) as it is: printable, without `&`, `<` or `>`. Long ASCII
    text (an instance's leaves joined) as its bytes with those characters deleted in one C pass
    (as `store.records.json_plain`); the rest as `_esc` checks it."""
    if len(text) >= 80 and text.isascii():
        return len(text.encode().translate(None, _XML_ESCAPED)) == len(text)
    return text.isprintable() and "&" not in text and "<" not in text and ">" not in text


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
        if type(value) is float and 0.0 <= value < _EPOCH_MAX:
            return _fmt_epoch(value)
        return _fmt_timestamp(datetime.fromtimestamp(value, _UTC))
    raise SerializationError(f"not a timestamp: {value!r}")


_EPOCH_MAX = 253402300799.0   # 9999-12-31T23:59:59Z: later ones (refused) as `datetime` says
_last_second: tuple[int, str] = (-1, "")


def _fmt_epoch(value: float) -> str:
    """`_fmt_timestamp` of seconds since the epoch (0 to `_EPOCH_MAX`) without the datetime: the
    microseconds rounded half to even from the fraction, as `datetime.fromtimestamp` rounds them,
    then cut to milliseconds as `isoformat` cuts them; the last second's text kept (a launch's
    answer writes a new launch time, and launches within a second share it)."""
    global _last_second
    frac, whole = math.modf(value)
    micro = round(frac * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return f"{last[1]}{micro // 1000:03d}Z"


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

    __slots__ = ("shape_name", "order")

    def __init__(self, shape_name: str) -> None:
        super().__init__()
        self.shape_name = shape_name
        # member -> rank where EC2's order is fixed (wire_order.AWS_ORDER); empty: the dict's order
        self.order: dict[str, int] = {}

    def ordered(self, keys: Iterable[Any]) -> list[int]:
        """The positions of `keys` in the order they are written: ranked members first, the others
        after them in the order given."""
        keys = list(keys)
        if not self.order:
            return list(range(len(keys)))
        last = len(self.order)
        return sorted(range(len(keys)), key=lambda n: self.order.get(keys[n], last + n)
                      if type(keys[n]) is str else last + n)


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
        order = AWS_ORDER.get(shape_name, ())
        unknown = [m for m in order if m not in table]
        if unknown:
            raise NotImplementedError(f"wire_order: {shape_name} has no member {unknown[0]}")
        table.order = {m: n for n, m in enumerate(order)}
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


# Rendering is done by Python functions generated (with exec) once per
# structure shape *and key order*: a handler builds its result dicts with the
# same keys in the same order every time, so the generated function unpacks
# ``value.values()`` into locals and renders each member with straight-line
# code chosen by its kind (no per-key table lookups, no kind dispatch).  The
# members are rendered in the dict's order, except that a shape with a fixed
# EC2 order (wire_order.AWS_ORDER) puts its ranked members first, in that
# order; the generic loop orders them the same way, so the bytes do not depend
# on which path ran.

_MAX_KEY_ORDERS = 32  # per shape; beyond that a generic per-member loop is used
_MEMO_SIZE = 256  # rendered small all-scalar structures remembered per key order
_MEMO_MEMBERS = 8  # structures with up to this many members are memoized
_MEMO_TYPE = {_STR: "str", _INT: "int", _BOOL: "bool"}


def _clean(var: str) -> str:
    """Source for: ``var`` is a str that needs no escaping (see _esc)."""
    return (f'type({var}) is str and {var}.isprintable() and "&" not in {var} '
            f'and "<" not in {var} and ">" not in {var}')


_last_ts: tuple[Any, str | None] = (None, None)


def _fmt_ts_memo(value: Any) -> str | None:
    """_fmt_timestamp, remembering the last datetime or float: views often repeat one (LaunchTime)."""
    global _last_ts
    last = _last_ts
    if value is last[0]:
        return last[1]
    if type(value) is datetime:
        if value.tzinfo is _UTC:  # what _fmt_timestamp gives, without the replace()
            text: str | None = value.isoformat(timespec="milliseconds")[:-6] + "Z"
        else:
            text = _fmt_timestamp(value)
        _last_ts = (value, text)
        return text
    if type(value) is float:   # (seconds since the epoch: RunInstances' views, see Leaves)
        text = _fmt_timestamp(value)
        _last_ts = (value, text)
        return text
    return _fmt_timestamp(value)


_UNSEEN = object()
_ts_texts: dict[Any, str | None] = {}


def _fmt_ts_value(value: Any) -> str | None:
    """_fmt_timestamp, remembering the last few values (equal ones, not only the same object:
    a launch's time is its instance's and its root volume's)."""
    text = _ts_texts.get(value, _UNSEEN)
    if text is _UNSEEN:
        text = _fmt_timestamp(value)
        if len(_ts_texts) >= 64:
            _ts_texts.clear()
        _ts_texts[value] = text
    return text   # type: ignore[return-value]


class _Renderers:
    """The generated render functions of one Protocol.

    A struct renderer is ``render(value, lazy=None) -> str``: the members of
    ``value`` as XML, without the structure's own tags.  Given
    ``lazy=LazyList``, if a list member holds a LazyList it returns a list of
    pieces instead: rendered members as str, each LazyList member as a
    ``(member name, LazyList)`` pair left for serialize_iter to cut into
    slices.  A list renderer is ``render(value) -> str``: the elements with
    their item tags.
    """

    def __init__(self) -> None:
        self._structs: dict[str, Callable[..., Any]] = {}
        self._lists: dict[int, tuple[_OutList, Callable[[Any], str]]] = {}
        # (shape, Cached.slot) -> (Cached.key, its rendered text); insertion-ordered, oldest
        # dropped first past _FRAGMENT_CHARS characters in all
        self._fragments: dict[tuple[str, Any], tuple[tuple[Any, ...], str]] = {}
        self._fragment_chars = 0
        # (shape, Leaves.view, Leaves.shape, the leaves' types) -> the text's function of the
        # leaves, or None where the view is rendered as usual (see `leaves`)
        self._templates: dict[tuple[Any, ...], Callable[[tuple[Any, ...]], str] | None] = {}
        # (operation, Cached.slot) -> (Cached.key, the answer's bytes up to its request id, after
        # it): whole answers kept (`answer`), insertion-ordered, oldest dropped first
        self._answers: dict[tuple[str, Any], tuple[tuple[Any, ...], bytes, bytes]] = {}
        self._answer_bytes = 0   # their bytes after the request id, in all

    def fragment(self, table: _OutStruct, element: "Cached") -> str | list[Any]:
        """The members of ``element``'s view rendered by ``table`` (as ``struct(table)(view,
        LazyList)`` renders them), reused while the objects of its key are the same ones."""
        slot = (table.shape_name, element.slot)
        fragments = self._fragments
        hit = fragments.get(slot)
        key = element.key
        if hit is not None:
            old = hit[0]
            if len(old) == len(key) and all(map(operator.is_, old, key)):
                return hit[1]
            del fragments[slot]
            self._fragment_chars -= len(hit[1])
        rendered = self.struct(table)(element.view(), LazyList)
        if type(rendered) is str:
            fragments[slot] = (key, rendered)
            self._fragment_chars += len(rendered)
            while self._fragment_chars > _FRAGMENT_CHARS and fragments:
                self._fragment_chars -= len(fragments.pop(next(iter(fragments)))[1])
        return rendered

    def answer(self, op: str, table: _OutStruct, element: "Cached", head: str, tail: str, request_id: str) -> bytes:
        """The answer to ``op`` whose result is ``element.view()`` (rendered by ``table``, which
        must hold no LazyList), its bytes after the request id kept while the objects of
        ``element.key`` are the same ones (identity, as `fragment`): the answers most asked for
        again (a DescribeInstances by one id: `describe_by_id`), one join instead of the result's
        renderers, the join around them and the encoding. `_ANSWER_BYTES` of them are kept, the
        oldest forgotten first (apart from the fragments, whose budget is the instances'
        descriptions: a describe page's)."""
        slot = (op, element.slot)
        answers = self._answers
        hit = answers.get(slot)
        key = element.key
        if hit is not None:
            old, start, rest = hit
            if len(old) == len(key) and all(map(operator.is_, old, key)):
                return b"".join((start, request_id.encode("utf-8"), rest))
            del answers[slot]
            self._answer_bytes -= len(rest)
        rendered = self.struct(table)(element.view(), LazyList)
        if type(rendered) is not str:   # (a LazyList member: not an answer of one piece)
            raise SerializationError(f"a kept {op} answer holds a member rendered in slices")
        start, rest = head.encode("utf-8"), f"</requestId>{rendered}{tail}".encode("utf-8")
        answers[slot] = (key, start, rest)
        self._answer_bytes += len(rest)
        while self._answer_bytes > _ANSWER_BYTES and answers:
            self._answer_bytes -= len(answers.pop(next(iter(answers)))[2])
        return b"".join((start, request_id.encode("utf-8"), rest))

    def leaves(self, table: _OutStruct, element: "Leaves") -> str:
        """The members of ``element.view(element.shape, element.leaves)`` rendered by ``table``,
        without making the view: the text of a view made from placeholder leaves, kept per
        (view function, shape, the leaves' types), with each placeholder's text replaced by its
        leaf's (a str escaped, an int in digits, a datetime as a timestamp, as the members'
        renderers write them). Where that cannot hold (a leaf of another type, a placeholder that
        does not show in the text, a view that does not render), or where the first element so
        rendered differs from its view's text, that key's elements are rendered as usual."""
        leaves = element.leaves
        key = (table.shape_name, element.view, element.shape, tuple(map(type, leaves)))
        templates = self._templates
        fn = templates.get(key, _UNSEEN)
        if fn is _UNSEEN:
            fn = self._template(table, element, key[3])
            if len(templates) >= _MAX_TEMPLATES:
                templates.clear()
            templates[key] = fn
            want = self.struct(table)(element.view(element.shape, leaves))
            if fn is not None and fn(leaves) != want:   # (never seen: the key decides the text's shape)
                templates[key] = None
            return want
        if fn is None:
            return self.struct(table)(element.view(element.shape, leaves))
        return fn(leaves)

    def _template(self, table: _OutStruct, element: "Leaves", types: tuple[type, ...]
                  ) -> Callable[[tuple[Any, ...]], str] | None:
        """`leaves`' function for elements of these leaf types, or None."""
        marks: dict[str, int] = {}
        placeholders: list[Any] = []
        if len(types) > 1000:
            return None
        for n, t in enumerate(types):
            if t is str:
                value: Any = f"\u27e6{n:04d}\u27e7"   # (printable, nothing to escape)
                marks[value] = n
            elif t is int:
                value = 7_300_000_000 + n
                marks[str(value)] = n
            elif t is datetime or t is float:   # (a float: seconds since the epoch, as a timestamp)
                value = datetime(1001 + n, 1, 1, tzinfo=_UTC)
                if t is float:
                    value = value.timestamp()
                marks[_fmt_timestamp(value) or ""] = n
            elif t is type(None):
                value = None
            else:
                return None
            placeholders.append(value)
        try:
            text = self.struct(table)(element.view(element.shape, tuple(placeholders)))
        except Exception:   # (the usual path renders these leaves, or refuses them, as before)
            return None
        if type(text) is not str:
            return None
        pieces: list[str] = []
        refs: list[int] = []
        at = 0
        if marks:
            for m in re.finditer("|".join(map(re.escape, marks)), text):
                pieces.append(text[at:m.start()])
                refs.append(marks[m.group()])
                at = m.end()
        pieces.append(text[at:])
        if set(refs) != set(marks.values()):
            return None
        names = [f"v{n}" for n in range(len(types))]
        strs = sorted({n for n in refs if types[n] is str})
        lines = [f"    {', '.join(names)}, = leaves" if names else "    pass"]
        if strs:
            joined = "".join("{" + names[n] + "}" for n in strs)
            lines += [f"    s = f'{joined}'",
                      "    if not _plain(s):"]
            lines += [f"        {names[n]} = _esc({names[n]})" for n in strs]
        stamps = sorted({n for n in refs if types[n] is datetime or types[n] is float})
        lines += [f"    {names[n]} = f({names[n]})" for n in stamps]
        body = " ".join(repr(p) + (f" f'{{{names[r]}}}'" if k < len(refs) else "")
                        for k, (p, r) in enumerate(zip(pieces, refs + [-1])))
        lines.append(f"    return ({body})")
        ns: dict[str, Any] = {"_esc": _esc, "f": _fmt_ts_value, "_plain": xml_plain}
        exec(compile("def render(leaves):\n" + "\n".join(lines), "<cloudctl.api.ec2.protocol template>", "exec"), ns)
        render: Callable[[tuple[Any, ...]], str] = ns["render"]
        return render

    def _kept(self, table: _OutStruct) -> Callable[[Any], str]:
        """A list element's text where it is not a dict: a `Cached` element's kept fragment (as
        in slices; unless its view holds a LazyList, a fragment of pieces: then rendered whole
        afresh), a `Leaves` element's text, any other mapping rendered as a dict is."""
        fragment, render, leaves = self.fragment, self.struct(table), self.leaves

        def kept(element: Any) -> str:
            kind = type(element)
            if kind is Cached:
                text = fragment(table, element)
                return text if type(text) is str else render(element.view())
            if kind is Leaves:
                return leaves(table, element)
            return render(element)
        return kept

    def struct(self, table: _OutStruct) -> Callable[..., Any]:
        known = self._structs.get(table.shape_name)
        if known is not None:
            return known
        orders: dict[tuple[Any, ...], Callable[..., Any]] = {}
        get = orders.get
        specialize = self._specialize

        def generic(value: Mapping[str, Any], lazy: Any = None) -> str | list[Any]:
            out: list[Any] = []
            items = list(value.items())
            for key, item in (items[n] for n in table.ordered(k for k, _ in items)):
                if item is not None:
                    if lazy is not None and type(item) is lazy:
                        entry = table.get(key)
                        if entry is not None and entry[0] == _LIST:
                            out.append((key, item))
                            continue
                    single = (key,)
                    fn = get(single)
                    if fn is None:
                        if key not in table:
                            raise SerializationError(f"{key!r} is not a member of {table.shape_name}")
                        fn = orders[single] = specialize(table, single)
                    out.append(fn({key: item}))
            if lazy is not None and any(type(p) is tuple for p in out):
                return out
            return "".join(out)

        def render(value: Mapping[str, Any], lazy: Any = None) -> str | list[Any]:
            keys = tuple(value)
            fn = get(keys)
            if fn is None:
                if len(orders) >= _MAX_KEY_ORDERS and len(keys) > 1:
                    fn = generic
                else:
                    fn = orders[keys] = specialize(table, keys)
            return fn(value, lazy)

        self._structs[table.shape_name] = render
        return render

    def list(self, spec: _OutList) -> Callable[[Any], str]:
        done = self._lists.get(id(spec))
        if done is not None:
            return done[1]
        item_kind, item_open, item_close, payload, _ = spec
        ns: dict[str, Any] = {"_esc": _esc}
        if item_kind == _STRUCT:
            ns["r"] = self.struct(payload)
            ns["k"] = self._kept(payload)   # (a Cached element's kept text, as a slice would use it; Leaves')
            body = (f"    return ''.join([{_tagged(item_open, '(r(e) if type(e) is dict else k(e))', item_close)} "
                    "for e in value if e is not None])")
        elif item_kind == _LIST:
            ns["r"] = self.list(payload)
            body = f"    return ''.join([{_tagged(item_open, 'r(e)', item_close)} for e in value if e is not None])"
        elif item_kind == _STR:
            text = f"(e if {_clean('e')} else _esc(e))"
            body = f"    return ''.join([{_tagged(item_open, text, item_close)} for e in value if e is not None])"
        else:
            ns["f"] = _fmt_ts_memo if item_kind == _TS else payload
            body = "\n".join([
                "    out = []",
                "    for e in value:",
                "        if e is not None:",
                "            t = f(e)",
                "            if t is not None:",
                f"                out.append({_tagged(item_open, 't', item_close)})",
                "    return ''.join(out)",
            ])
        render = _compile("def render(value):\n" + body, ns)
        self._lists[id(spec)] = (spec, render)  # keeps spec alive, so its id stays unique
        return render

    def _specialize(self, table: _OutStruct, keys: tuple[Any, ...]) -> Callable[..., Any]:
        """The renderer of ``table`` for dicts whose keys are exactly ``keys``, in that order."""
        ns: dict[str, Any] = {"_esc": _esc, "SerializationError": SerializationError}
        if not keys:
            return _compile("def render(value, lazy=None):\n    return ''", ns)
        names = [f"v{i}" for i in range(len(keys))]
        lines = [f"    {', '.join(names)}, = value.values()"]
        lazy_checks: list[str] = []
        pieces: list[str] = []
        piece_keys: list[Any] = []
        # The str members are checked for escaping all at once: if their
        # concatenation is clean, so is each of them (None and non-str values
        # take the _esc path regardless).
        str_vars = [names[i] for i, key in enumerate(keys)
                    if type(key) is str and key in table and table[key][0] == _STR]
        if len(str_vars) > 1:
            joined_strs = "".join("{" + v + "}" for v in str_vars)
            lines += [
                "    try:",
                f"        s = f'{joined_strs}'",
                "        ok = s.isprintable() and '&' not in s and '<' not in s and '>' not in s",
                "    except Exception:",
                "        ok = False",
            ]
            fast_str = "ok and type({v}) is str"
        else:
            fast_str = _clean("{v}")
        for i, key in enumerate(keys):
            v, p = names[i], f"p{i}"
            entry = table.get(key) if type(key) is str else None
            if entry is None:
                ns[f"m{i}"] = f"{key!r} is not a member of {table.shape_name}"
                lines += [f"    if {v} is not None:", f"        raise SerializationError(m{i})"]
                continue
            kind, open_tag, close_tag, payload = entry
            pieces.append(p)
            piece_keys.append(key)
            if kind == _STR:
                lines += [
                    f"    if {v} is None: {p} = ''",
                    f"    elif {fast_str.format(v=v)}: {p} = {_tagged(open_tag, v, close_tag)}",
                    f"    else: {p} = {_tagged(open_tag, f'_esc({v})', close_tag)}",
                ]
            elif kind == _BOOL:
                yes, no = repr(open_tag + "true" + close_tag), repr(open_tag + "false" + close_tag)
                lines.append(f"    {p} = '' if {v} is None else {yes} if {v} else {no}")
            elif kind == _INT:
                ns[f"f{i}"] = payload
                lines += [
                    f"    if {v} is None: {p} = ''",
                    f"    elif type({v}) is int: {p} = {_tagged(open_tag, v, close_tag)}",
                    f"    else: {p} = {_tagged(open_tag, f'f{i}({v})', close_tag)}",
                ]
            elif kind == _STRUCT:
                ns[f"r{i}"] = self.struct(payload)
                lines.append(f"    {p} = '' if {v} is None else {_tagged(open_tag, f'r{i}({v})', close_tag)}")
            elif kind == _LIST:
                ns[f"r{i}"] = self.list(payload)
                ns[f"e{i}"] = payload[4]
                ns[f"k{i}"] = key
                lazy_checks.append(f"type({v}) is lazy")
                lines += [
                    f"    if {v} is None: {p} = ''",
                    f"    elif lz and type({v}) is lazy: {p} = (k{i}, {v})",
                    f"    elif {v}: {p} = {_tagged(open_tag, f'r{i}({v})', close_tag)}",
                    f"    else: {p} = e{i}",
                ]
            else:
                ns[f"f{i}"] = _fmt_ts_memo if kind == _TS else payload
                lines += [
                    f"    if {v} is None: {p} = ''",
                    "    else:",
                    f"        t = f{i}({v})",
                    f"        {p} = '' if t is None else {_tagged(open_tag, 't', close_tag)}",
                ]
        pieces = [pieces[n] for n in table.ordered(piece_keys)]   # written in EC2's order where fixed
        kinds = [table[key][0] if type(key) is str and key in table else -1 for key in keys]
        if len(keys) <= _MEMO_MEMBERS and all(kind in _MEMO_TYPE for kind in kinds):
            # Small all-scalar structures (State, Placement, MetadataOptions...)
            # repeat across a listing: remember their text by value.  Exact
            # types make equal keys mean equal output (1 == 1.0 == True).
            ns["memo"] = {}
            guard = " and ".join(f"type({v}) is {_MEMO_TYPE[k]}" for v, k in zip(names, kinds))
            lines[1:1] = [
                f"    if {guard}:",
                f"        mk = ({', '.join(names)},)",
                "        hit = memo.get(mk)",
                "        if hit is not None: return hit",
                "    else:",
                "        mk = None",
            ]
            joined = "".join("{" + p + "}" for p in pieces)
            lines += [
                f"    res = f'{joined}'",
                "    if mk is not None:",
                f"        if len(memo) >= {_MEMO_SIZE}: memo.clear()",
                "        memo[mk] = res",
                "    return res",
            ]
            return _compile("def render(value, lazy=None):\n" + "\n".join(lines), ns)
        if lazy_checks:
            lines.insert(1, f"    lz = lazy is not None and ({' or '.join(lazy_checks)})")
            lines.append(f"    if lz: return [{', '.join(pieces)}]")
        joined = "".join("{" + p + "}" for p in pieces)
        lines.append(f"    return f'{joined}'" if pieces else "    return ''")
        return _compile("def render(value, lazy=None):\n" + "\n".join(lines), ns)


def _tagged(open_tag: str, expr: str, close_tag: str) -> str:
    """Source for ``open_tag + (expr) + close_tag`` (expr a str, or an exact int) as one f-string:
    one string built per element, not two concatenations' two."""
    if any(ch in open_tag + close_tag + expr for ch in "{}'\\\n"):
        return f"{open_tag!r} + str({expr}) + {close_tag!r}"
    return f"f'{open_tag}{{{expr}}}{close_tag}'"


def _compile(source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    exec(compile(source, "<cloudctl.api.ec2.protocol generated>", "exec"), namespace)
    return namespace["render"]


_FRAGMENT_CHARS = 4 << 20   # rendered fragments kept (~1,300 instances' descriptions)
_MAX_TEMPLATES = 256        # Leaves' texts kept (forgotten all at once past this)
_ANSWER_BYTES = 1 << 20     # whole answers kept (`_Renderers.answer`: ~6.5 KB each for an instance's)


class Cached:
    """A LazyList element whose rendering is kept and reused while what it shows is unchanged.

    ``key`` is a flat tuple of everything its view is made from: immutable rows (a change
    replaces the row, so the same object means the same content), and the other values the
    view reads. The kept text is reused only while each object of the key *is* the one it
    was rendered from (identity, never equality), so a change of any of them, or a key of
    another length, renders afresh. ``slot`` names the thing (an instance id); ``view()``
    makes its dict, only when it has to be rendered. Only the element's own text is kept:
    the answer around it (request id, its list's other elements) is rendered each time.
    """

    __slots__ = ("slot", "key", "view")

    def __init__(self, slot: Any, key: tuple[Any, ...], view: Callable[[], Mapping[str, Any]]) -> None:
        self.slot, self.key, self.view = slot, key, view


class Leaves:
    """A list element given as the flat values its view is made from: ``view(shape, leaves)`` is
    the mapping to render, ``shape`` (hashable) what decides its members and lists beyond the
    leaves' types (lengths, flags), ``leaves`` a tuple of str, int, float, datetime or None.

    Rendered as its view would be, byte for byte, but from a text kept per (view, shape, the
    leaves' types) with the leaves put in (`_Renderers.leaves`; a float leaf in a timestamp
    member is that many seconds since the epoch): for an answer whose elements are written once
    (RunInstances': a launched row is replaced within milliseconds), a few string operations
    instead of its view's dicts and their members' renderers."""

    __slots__ = ("shape", "leaves", "view")

    def __init__(self, shape: Any, leaves: tuple[Any, ...],
                 view: Callable[[Any, tuple[Any, ...]], Mapping[str, Any]]) -> None:
        self.shape, self.leaves, self.view = shape, leaves, view


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


def is_streamed(result: Mapping[str, Any] | Cached) -> bool:
    """Whether serialize_iter may cut ``result`` into more than one piece (a LazyList member).
    A `Cached` answer (`Protocol.serialize_whole`) is one piece."""
    return type(result) is not Cached and any(type(v) is LazyList for v in result.values())


def _iter_struct(renderers: _Renderers, table: _OutStruct, value: Mapping[str, Any], parts: list[str],
                 done: list[int], slice_items: int) -> Iterator[None]:
    """Render ``value`` into ``parts``, yielding after every `slice_items` elements of any LazyList."""
    rendered = renderers.struct(table)(value, LazyList)
    if type(rendered) is str:  # no LazyList member: one piece
        parts.append(rendered)
        return
    yield from _iter_pieces(renderers, table, rendered, parts, done, slice_items)


def _iter_pieces(renderers: _Renderers, table: _OutStruct, pieces: list[Any], parts: list[str],
                 done: list[int], slice_items: int) -> Iterator[None]:
    for piece in pieces:
        if type(piece) is str:
            parts.append(piece)
            continue
        key, item = piece  # a LazyList member
        _kind, open_tag, close_tag, spec = table[key]
        if not len(item):
            parts.append(spec[4])
            continue
        item_kind, item_open, item_close, item_payload, _ = spec
        parts.append(open_tag)
        if item_kind == _STRUCT:
            item_render = renderers.struct(item_payload)
            for element in item:
                if element is not None:
                    if type(element) is Cached:
                        rendered = renderers.fragment(item_payload, element)
                    elif type(element) is Leaves:
                        rendered = renderers.leaves(item_payload, element)
                    else:
                        rendered = item_render(element, LazyList)
                    if type(rendered) is str:
                        parts.append(item_open + rendered + item_close)
                    else:
                        parts.append(item_open)
                        yield from _iter_pieces(renderers, item_payload, rendered, parts, done, slice_items)
                        parts.append(item_close)
                done[0] += 1
                if done[0] >= slice_items:
                    done[0] = 0
                    yield
        else:
            list_render = renderers.list(spec)
            for element in item:
                parts.append(list_render((element,)))
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
        self._renderers = _Renderers()
        self._parsers: dict[str, _InStruct | None] = {}
        self._serializers: dict[str, tuple[str, _OutStruct | None, str]] = {}
        self._tails: dict[str, bytes] = {}   # op -> its answer's last bytes (is_last)
        namespace = model.xml_namespace
        # AWS (and every EC2 client in the wild) uses the trailing slash form.
        self._xmlns = namespace if namespace.endswith("/") else namespace + "/"

    def has_operation(self, op: str) -> bool:
        return op in self._model.operations

    def compile_all(self) -> None:
        """Compile every operation now, e.g. to pay the cost before serving."""
        for op in self._model.operations:
            self._parser(op)
            _head, table, _tail = self._serializer(op)
            if table is not None:
                self._renderers.struct(table)

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
                parts.append(self._renderers.struct(table)(result))
            except SerializationError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise SerializationError(f"{op}: cannot serialize result: {exc}") from exc
        parts.append(tail)
        return "".join(parts).encode("utf-8")

    def serialize_iter(self, op: str, result: Mapping[str, Any] | Cached, request_id: str,
                       slice_items: int = 100) -> Iterator[bytes]:
        """The response body in pieces, cut after every `slice_items` LazyList elements (a
        `Cached` answer: in one piece, as `serialize_whole` gives it)."""
        if type(result) is Cached:
            yield self.serialize_whole(op, result, request_id)   # type: ignore[misc]
            return
        head, table, tail = self._serializer(op)
        parts: list[str] = [head, _esc(request_id), "</requestId>"]
        if table is None:
            parts.append("<return>true</return>")
        else:
            for _ in _iter_struct(self._renderers, table, result, parts, [0], slice_items):
                yield "".join(parts).encode("utf-8")
                parts.clear()
        parts.append(tail)
        yield "".join(parts).encode("utf-8")

    def serialize_whole(self, op: str, result: Mapping[str, Any] | Cached, request_id: str) -> bytes | None:
        """`serialize_iter`'s answer in one piece, without its generator, when it is one piece:
        None where a member of ``result`` is rendered in slices (a LazyList, at any depth; then
        ask serialize_iter, which renders it again). A `Cached` result is the answer's view kept
        whole (`_Renderers.answer`): its text after the request id, reused while the objects of
        its key are the same ones."""
        head, table, tail = self._serializer(op)
        if type(result) is Cached:
            assert table is not None
            return self._renderers.answer(op, table, result, head, tail, _esc(request_id))
        if table is None:
            return f"{head}{_esc(request_id)}</requestId><return>true</return>{tail}".encode("utf-8")
        rendered = self._renderers.struct(table)(result, LazyList)
        if type(rendered) is not str:
            return None
        return f"{head}{_esc(request_id)}</requestId>{rendered}{tail}".encode("utf-8")

    def is_last(self, op: str, piece: bytes) -> bool:
        """Whether ``piece`` from serialize_iter ends the answer (the others end with an element)."""
        tail = self._tails.get(op)
        if tail is None:
            tail = self._tails[op] = self._serializer(op)[2].encode("utf-8")
        return piece.endswith(tail)

    def error(self, code: str, message: str, request_id: str) -> bytes:
        """The EC2 error document (note ``RequestID``, unlike the success body)."""
        return (
            f"{_XML_DECL}<Response><Errors><Error><Code>{_esc(code)}</Code>"
            f"<Message>{_esc(message)}</Message></Error></Errors>"
            f"<RequestID>{_esc(request_id)}</RequestID></Response>"
        ).encode("utf-8")

