"""Opaque, stable `NextToken`s: the key to resume after, bound to the query that made it."""
from __future__ import annotations

import base64
import bisect
import hashlib
import json
from typing import Any

from .errors import CloudError


def query_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_token(after: str, fingerprint: str) -> str:
    raw = json.dumps([after, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, fingerprint: str) -> str | None:
    """The key to resume after, or None for the first page."""
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after, fp = json.loads(raw)
        if not isinstance(after, str) or fp != fingerprint:
            raise ValueError
    except (ValueError, TypeError):
        raise CloudError("InvalidPaginationToken",
                         f"The pagination token '{token[:64]}' is invalid for this request") from None
    return after


def page_size(max_results: int | None, lo: int, hi: int, name: str = "MaxResults") -> int | None:
    if max_results is None:
        return None
    if not lo <= max_results <= hi:
        raise CloudError("InvalidParameterValue",
                         f"Value ( {max_results} ) for parameter {name} is invalid. "
                         f"Expecting a value between {lo} and {hi}.")
    return max_results


def paginate(keys_sorted: list[str], after: str | None, limit: int | None,
             fingerprint: str) -> tuple[list[str], str | None]:
    """Slice sorted keys after `after`; return the page and the next token (None at the end)."""
    start = bisect.bisect_right(keys_sorted, after) if after is not None else 0
    if limit is None:
        return keys_sorted[start:], None
    page = keys_sorted[start:start + limit]
    more = start + limit < len(keys_sorted)
    return page, (encode_token(page[-1], fingerprint) if more and page else None)
