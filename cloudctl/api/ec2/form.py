"""The EC2 Query form body, looked at cheaply before authentication and parsed in steps after.

An unauthenticated client can send 4 MiB of form fields; parsing them all (urllib's parse_qsl)
costs ~140 ms for 100,000 short fields and over a second for one field of percent-escapes, all
in one turn of the event loop. So before the signature is checked, the body's separators are
only counted and it is searched for its auth fields, piece by piece as it arrives (FormScan);
the parse itself runs in steps of a few KiB, between which the caller yields to the loop.
"""
from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from urllib.parse import unquote, unquote_plus, unquote_to_bytes

__all__ = ["MAX_PARAMS", "FormScan", "param_count", "parse_steps"]

# At most this many parameters per request, query and body together. RunInstances with every
# option set, or a DescribeInstances listing 1,000 ids with a few filters, is well under 2,000.
MAX_PARAMS = 10_000
STEP_CHARS = 8 * 1024           # parsed per step: ~0.5 ms for plain fields, ~3 ms if all %-escapes
_AUTH_VALUE_MAX = 1024          # longer auth values are bogus; they are cut before decoding
_FIELD_HEAD = _AUTH_VALUE_MAX + 128

# A literal first byte ('&'): the regex engine skips to each separator at C speed.
_AUTH_FIELD = re.compile(rb"&(AWSAccessKeyId|Signature|SignatureMethod|SignatureVersion|Timestamp|Expires"
                         rb"|X-Amz-[A-Za-z0-9-]{1,64})=([^&]*)")


def param_count(query: str, body_separators: int | None) -> int:
    """How many parameters the query and a form body with that many '&' hold at most (empty
    fields included); None: no form body."""
    n = query.count("&") + 1 if query else 0
    return n if body_separators is None else n + body_separators + 1


class FormScan:
    """A form body's '&' count and its literally written auth fields, taken chunk by chunk as
    the body arrives: no pass over the whole body at once, nothing parsed.

    Only literally written names are found (clients never percent-encode the letters of a
    parameter name); the authoritative check runs on the parsed form afterwards, so a name
    written with escapes can make a request fail, never pass. Of each field only its first
    _FIELD_HEAD bytes are kept across chunks: enough for a name and a value cut to
    _AUTH_VALUE_MAX.
    """

    def __init__(self) -> None:
        self.separators = 0
        self._fields: dict[str, str] = {}
        self._tail = b"&"   # the field in progress, '&' first (the body's first field has none)

    def feed(self, chunk: bytes) -> None:
        self.separators += chunk.count(b"&")
        data = self._tail + chunk
        last = data.rfind(b"&")
        if last > 0:   # the fields before it are complete
            self._collect(data[:last])
        self._tail = data[last:last + _FIELD_HEAD] if last >= 0 else data[:_FIELD_HEAD]

    def auth_fields(self) -> dict[str, str]:
        """The auth fields found (the last of each name wins, as in the parsed form)."""
        self._collect(self._tail)
        self._tail = b""
        return self._fields

    def _collect(self, data: bytes) -> None:
        for m in _AUTH_FIELD.finditer(data):
            raw = m.group(2)[:_AUTH_VALUE_MAX].decode("utf-8", "replace")
            self._fields[m.group(1).decode("ascii")] = unquote_plus(raw)


def parse_steps(body: bytes, out: list[tuple[str, str]]) -> Iterator[None]:
    """``parse_qsl(body.decode(), keep_blank_values=True, errors="strict")`` into ``out``,
    yielding after every STEP_CHARS or so of input; raises UnicodeDecodeError as it would."""
    text = body.decode()
    pos, end = 0, len(text)
    while pos < end:
        stop = text.find("&", pos + STEP_CHARS)
        if stop < 0:
            stop = end
        if stop - pos <= 2 * STEP_CHARS:
            out.extend(_fields(text[pos:stop]))
        else:   # the piece ends in a long field: the short ones before it, then it in steps
            cut = text.rfind("&", pos, pos + STEP_CHARS) + 1 or pos
            out.extend(_fields(text[pos:cut]))
            yield
            name, _, value = text[cut:stop].partition("=")   # (no '=': the value is blank)
            decoded_name = yield from _unquote_steps(name)
            decoded_value = yield from _unquote_steps(value)
            out.append((decoded_name, decoded_value))
        pos = stop + 1
        if pos < end:   # (nothing left: no step to take turns with)
            yield


def _fields(piece: str) -> list[tuple[str, str]]:
    return fields(piece)


def fields(qs: str) -> list[tuple[str, str]]:
    """``parse_qsl(qs, keep_blank_values=True, errors="strict")``, the same pairs, without its two
    function calls per name and per value for the plain ones (most: ``InstanceId.1=i-...``):
    only a name or value holding an escape goes through ``unquote``. (A RunInstances form spent
    ~0.1 ms in parse_qsl.) A form with no escape at all (`+` or `%`: the usual RunInstances
    form) is split by one comprehension of C calls, about a third of the loop's cost a field."""
    if "%" not in qs and "+" not in qs:
        return [field.partition("=")[::2] for field in qs.split("&") if field]  # type: ignore[misc]
    out: list[tuple[str, str]] = []
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name, errors="strict")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value, errors="strict")
        out.append((name, value))
    return out


def _unquote_steps(text: str) -> Generator[None, None, str]:
    """``unquote(text.replace("+", " "), errors="strict")`` in steps of STEP_CHARS.

    The bytes of all steps are decoded at once: a multi-byte character written as escapes may
    straddle a step. Literal characters are whole UTF-8 sequences, so this accepts and returns
    exactly what unquote does.
    """
    if "%" not in text:
        return text.replace("+", " ")
    parts: list[bytes] = []
    pos, end = 0, len(text)
    while pos < end:
        cut = min(pos + STEP_CHARS, end)
        if cut < end:   # never inside an escape: cut just before a '%' (never a hex digit) or
            hole = text.rfind("%", max(pos, cut - 2), cut)   # 3 or more characters after one
            if hole == pos:
                cut = min(pos + 3, end)
                hole = text.rfind("%", pos + 1, cut)
            if hole > pos:
                cut = hole
        parts.append(unquote_to_bytes(text[pos:cut].replace("+", " ")))
        pos = cut
        yield
    return b"".join(parts).decode("utf-8", "strict")
