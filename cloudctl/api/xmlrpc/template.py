"""OpenNebula templates: the `KEY = value` / `KEY = [ A = "x", B = y ]` text, or its XML form.

Both parse to {KEY: [value, ...]} where a value is a string or, for a vector attribute, a
{SUBKEY: string} dict; keys are upper-cased, as OpenNebula treats them. Repeated keys (two
DISKs) keep every value in order.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

Value = str | dict[str, str]
Template = dict[str, list[Value]]

_TOKEN = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s=\[\],"]+)|(?P<sym>[=\[\],]))''', re.S)
# OpenNebula's template lexer: a variable starts with a letter or `_`, then letters, digits, `_`, `-`, `.`
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
MAX_TEMPLATE = 256 * 1024
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class TemplateError(ValueError):
    pass


def parse(text: str) -> Template:
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(f"template larger than {MAX_TEMPLATE} bytes")
    if _CONTROL.search(text):   # shown back in XML documents, where XML 1.0 cannot carry them
        raise TemplateError("control characters are not allowed in a template")
    if text.lstrip().startswith("<"):
        return _parse_xml(text)
    return _parse_text(text)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        if text[pos] == "#":   # a comment, to the end of the line (not inside a quoted value)
            nl = text.find("\n", pos)
            pos = len(text) if nl < 0 else nl + 1
            continue
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"cannot parse the template near {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            # Inside quotes, a backslash escapes the next character (\" and \\), as in OpenNebula.
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group("str")[1:-1], flags=re.S)))
        elif m.group("word") is not None:
            out.append(("word", m.group("word")))
        else:
            out.append(("sym", m.group("sym")))


def _parse_text(text: str) -> Template:
    toks = _tokens(text)
    out: Template = {}
    i = 0

    def expect_value(j: int) -> tuple[str, int]:
        if j >= len(toks) or toks[j][0] not in ("str", "word"):
            raise TemplateError("expected a value after '='")
        return toks[j][1], j + 1

    while i < len(toks):
        kind, key = toks[i]
        if kind != "word" or i + 1 >= len(toks) or toks[i + 1] != ("sym", "=") or not _NAME.fullmatch(key):
            raise TemplateError(f"syntax error, unexpected {key!r}, expecting VARIABLE = value")
        i += 2
        if i < len(toks) and toks[i] == ("sym", "["):
            i += 1
            vec: dict[str, str] = {}
            while i < len(toks) and toks[i] != ("sym", "]"):
                if toks[i] == ("sym", ","):
                    i += 1
                    continue
                sub = toks[i]
                if sub[0] != "word" or i + 1 >= len(toks) or toks[i + 1] != ("sym", "=") \
                        or not _NAME.fullmatch(sub[1]):
                    raise TemplateError(f"expected SUBKEY = value inside {key.upper()} = [ ... ]")
                val, i = expect_value(i + 2)
                vec[sub[1].upper()] = val
            if i >= len(toks):
                raise TemplateError(f"unclosed '[' in {key.upper()}")
            i += 1
            out.setdefault(key.upper(), []).append(vec)
        else:
            val, i = expect_value(i)
            out.setdefault(key.upper(), []).append(val)
    return out


def _parse_xml(text: str) -> Template:
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise TemplateError("templates may not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise TemplateError(f"the template is not valid XML: {e}") from None
    out: Template = {}
    for child in root:
        if not _NAME.fullmatch(child.tag) or any(not _NAME.fullmatch(c.tag) for c in child):
            raise TemplateError(f"syntax error, unexpected element {child.tag!r}")
        if len(child):
            out.setdefault(child.tag.upper(), []).append({c.tag.upper(): (c.text or "") for c in child})
        else:
            out.setdefault(child.tag.upper(), []).append(child.text or "")
    return out


def scalar(t: Template, key: str) -> str | None:
    vals = [v for v in t.get(key, []) if isinstance(v, str)]
    return vals[-1] if vals else None


def vectors(t: Template, key: str) -> list[dict[str, str]]:
    return [v for v in t.get(key, []) if isinstance(v, dict)]


def to_xml(t: Template, parent: ET.Element, skip: frozenset[str] = frozenset()) -> None:
    """`t`'s attributes as children of `parent` (OpenNebula's XML form), in the order given."""
    for key, values in t.items():
        if key in skip:
            continue
        for v in values:
            el = ET.SubElement(parent, key)
            if isinstance(v, dict):
                for sub, text in v.items():
                    ET.SubElement(el, sub).text = text
            else:
                el.text = v


def to_text(t: Template) -> str:
    """`t` in OpenNebula's text syntax (what `onetemplate show` prints): it parses back to `t`."""
    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = []
    for key, values in t.items():
        for v in values:
            if isinstance(v, dict):
                lines.append(f"{key} = [ " + ", ".join(f"{k} = {q(x)}" for k, x in v.items()) + " ]")
            else:
                lines.append(f"{key} = {q(v)}")
    return "\n".join(lines) + "\n"
