"""cloudctl/xmltext.py writes what xml.sax.saxutils wrote before it (domain, disk, filter XML)."""
from __future__ import annotations

import random
from xml.sax.saxutils import escape as sax_escape
from xml.sax.saxutils import quoteattr as sax_quoteattr

from cloudctl.xmltext import escape, quoteattr

SPECIAL = "&<>\"'\n\r\t ;#x"


def samples() -> list[str]:
    rnd = random.Random(14)
    out = ["", "plain", "a&b", "<disk>", "it's", 'say "hi"', "both ' and \"", "line\nbreak\r\ttab", "&amp;"]
    for _ in range(2000):
        out.append("".join(rnd.choice(SPECIAL + "ab\u00e9\u4e2d") for _ in range(rnd.randrange(12))))
    return out


def test_escape_is_saxutils_escape() -> None:
    for s in samples():
        assert escape(s) == sax_escape(s)
        assert escape(s, {"'": "&apos;"}) == sax_escape(s, {"'": "&apos;"})


def test_quoteattr_is_saxutils_quoteattr() -> None:
    for s in samples():
        assert quoteattr(s) == sax_quoteattr(s)
