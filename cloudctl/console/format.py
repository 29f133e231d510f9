"""Template filters: how times, sizes and shares are written on the pages."""
from __future__ import annotations

import time
from typing import Any


def when(t: float | None) -> str:
    """An epoch time as UTC, to the second ("" for none)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else ""


def percent(used: float, total: float) -> int:
    """A share as a whole percentage for a bar's width (0 for an empty total)."""
    return round(100 * used / total) if total else 0


def gib(n: int | None) -> str:
    return f"{(n or 0) / 2**30:.2f} GiB"


FILTERS: dict[str, Any] = {"when": when, "gib": gib}
GLOBALS: dict[str, Any] = {"percent": percent}
