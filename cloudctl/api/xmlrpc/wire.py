"""XML-RPC on the wire: a methodCall read with bounded work, answers and faults written.

Anyone who can reach the listener can send a body, before any credential is checked, so the work a
body can cause is bounded: its size (`MAX_BODY_BYTES`, the app's `client_max_size`, which the
listener enforces while it reads the body within the client timeout: see api/listener.py), its
number of elements and its nesting (counted while parsing, which stops at the first excess), and
the parse itself is incremental, a few KiB per step, so it never holds the event loop for long.
Values are converted to Python only when asked (`value()`), so the caller can check the session
string, the first parameter, before converting the rest.

Limits: the largest call of the subset served is `one.vm.allocate`, whose template carries at most
16 KiB of user data (RunInstances' limit); XML escaping can grow that to 80 KiB (`&` -> `&amp;`),
so 256 KiB leaves room to spare. No served method takes an array or a struct: a call has a dozen
elements, and 2,048 elements nested 20 deep leave room for OpenNebula's clients' habits.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp_xmlrpc.common import py2xml, schema, xml2py
from lxml import etree

from ...slim import dataclass
from ..refusals import clip

MAX_BODY_BYTES = 256 * 1024
MAX_ELEMENTS = 2048
MAX_DEPTH = 20
_STEP = 8 * 1024   # bytes parsed per step; each step costs well under a millisecond

# The fault codes of the XML-RPC interoperability spec (the ones aiohttp-xmlrpc answered with).
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601


class Refused(Exception):
    """A call refused before it reached a method: answered with a fault, logged as `reason`."""

    def __init__(self, reason: str, code: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message
        self.detail = detail        # for the log line; already bounded


@dataclass(frozen=True, slots=True)
class MethodCall:
    method: str
    params: list[Any]   # the params' <value> elements, not converted yet


OVERSIZE = f"the request is larger than {MAX_BODY_BYTES} bytes"


async def read_call(request: web.Request) -> MethodCall:
    """Parse the body of `request` as a methodCall, within the limits above.

    The listener (api/listener.py) has already read the body within the client timeout and the
    app's `client_max_size` (`MAX_BODY_BYTES`); what is bounded here is the parse.
    """
    if "xml" not in request.headers.get("Content-Type", ""):
        raise Refused("invalid", INVALID_REQUEST, "the request body must be XML (Content-Type: text/xml)")
    body = await request.read()   # (already read: no I/O)
    parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True,
                                 huge_tree=False, remove_comments=True, remove_pis=True)
    elements = depth = 0
    try:
        for i in range(0, len(body), _STEP):
            if i:
                await asyncio.sleep(0)   # let other requests run between steps
            parser.feed(body[i:i + _STEP])
            for event, _ in parser.read_events():
                if event == "end":
                    depth -= 1
                    continue
                elements += 1
                depth += 1
                if elements > MAX_ELEMENTS:
                    raise Refused("too_many_elements", INVALID_REQUEST,
                                  f"the request has more than {MAX_ELEMENTS} XML elements")
                if depth > MAX_DEPTH:
                    raise Refused("too_deep", INVALID_REQUEST,
                                  f"the request nests XML elements more than {MAX_DEPTH} deep")
        root = parser.close()
    except etree.XMLSyntaxError as e:
        why = _short(str(e))
        raise Refused("malformed", PARSE_ERROR, f"the request is not well-formed XML: {why}", why) from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise Refused("invalid", INVALID_REQUEST, "a DOCTYPE is not accepted in XML-RPC")
    if root.tag != "methodCall" or not schema.validate(root):
        raise Refused("invalid", INVALID_REQUEST, "the request is not an XML-RPC methodCall")
    return MethodCall(root.findtext("methodName") or "", root.findall("params/param/value"))


def value(el: Any) -> Any:
    """One <value> element as Python (aiohttp-xmlrpc's conversion, as before)."""
    try:
        return xml2py(el)
    except (ValueError, TypeError) as e:
        why = _short(str(e))
        raise Refused("malformed", INVALID_REQUEST, f"a parameter has an invalid value: {why}", why) from None


def string(el: Any) -> str | None:
    """A <value> element's string, or None if it holds anything else (left unconverted)."""
    kids = list(el)
    if not kids:
        return str(value(el))
    if len(kids) == 1 and kids[0].tag == "string":
        return str(value(el))
    return None


def answer(result: Any) -> bytes:
    return _document(etree.Element("params"), result, param=True)


def fault(code: int, message: str) -> bytes:
    return _document(etree.Element("fault"), {"faultCode": code, "faultString": message}, param=False)


def _document(container: Any, result: Any, param: bool) -> bytes:
    response = etree.Element("methodResponse")
    v = etree.Element("value")
    v.append(py2xml(result))
    if param:
        p = etree.SubElement(container, "param")
        p.append(v)
    else:
        container.append(v)
    response.append(container)
    return bytes(etree.tostring(response, xml_declaration=True, encoding="utf-8"))


def _short(text: str) -> str:
    return clip(text, 120)
