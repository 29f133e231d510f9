"""Text and attribute values escaped for the XML cloudctl writes (domain, disk and filter XML).

The same output as `xml.sax.saxutils.escape` and `quoteattr` (tested against them), without
importing the `xml.sax` package (its reader and handler classes, ~0.2 MiB) into every controller
for two string functions (issue 14: base RSS)."""
from __future__ import annotations

from collections.abc import Mapping

_ATTR = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def escape(data: str, entities: Mapping[str, str] | None = None) -> str:
    """`&`, `<` and `>` as entities, then each key of `entities` as its value."""
    data = data.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
    for plain, entity in (entities or {}).items():
        data = data.replace(plain, entity)
    return data


def quoteattr(data: str) -> str:
    """An attribute value with its quotes: double ones unless the value holds a double quote and
    no single one; line breaks and tabs as character references (an attribute's parser would
    turn them into spaces)."""
    data = escape(data, _ATTR)
    if '"' not in data:
        return f'"{data}"'
    if "'" not in data:
        return f"'{data}'"
    return '"' + data.replace('"', "&quot;") + '"'
