"""Validation of the labels users choose (they reach switch commands and log lines)."""
from __future__ import annotations

import re

from .errors import BadArgumentError

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def label(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise BadArgumentError(f"{kind} name {value!r} must be 1-64 letters, digits or ._@- "
                               f"and start with a letter or digit")
    return value


def macaddr(value: object) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise BadArgumentError(f"MAC address {value!r} must look like 52:54:00:12:34:56")
    return value.lower()
