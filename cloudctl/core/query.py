"""What a Describe call selects, in the core's own terms: ids, filters, one page.

Front ends turn their wire format into a `Query` (EC2's: `api/ec2/requests.py`); the core compiles
its filters against the resource's `FilterSet` and pages with `pagination`. The fingerprint binds
a `NextToken` to the query that made it, so a token cannot resume a different selection.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .pagination import query_fingerprint


@dataclass(frozen=True, slots=True)
class Filter:
    """One filter: a name and the values it may match (OR'd; `*` and `?` are wildcards)."""
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """A Describe selection. Empty `ids` means "all of the caller's"; filters are AND'd."""
    ids: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    max_results: int | None = None
    next_token: str | None = None

    def fingerprint(self, kind: str, *extra: object) -> str:
        """Binds a page token to this selection (not to the page size, which may change between pages)."""
        return query_fingerprint(kind, list(self.ids), filter_key(self.filters), *extra)


def filter_key(filters: Iterable[Filter]) -> list[list[object]]:
    return [[f.name, list(f.values)] for f in filters]
