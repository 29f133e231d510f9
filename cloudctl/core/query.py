"""What a Describe call selects, in the core's own terms: ids, filters, one page.

Front ends turn their wire format into a `Query` (EC2's: `api/ec2/requests.py`); the core compiles
its filters against the resource's `FilterSet` and pages with `pagination`. The fingerprint binds
a `NextToken` to the query that made it, so a token cannot resume a different selection.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..slim import dataclass
from .errors import CloudError
from .pagination import decode_token, page_size, paginate, query_fingerprint


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

    def page(self, lo: int, hi: int, kind: str, *extra: object, not_with_ids: str | None = None) -> Page:
        """The page this query asks for: MaxResults checked against `lo`..`hi`; with `not_with_ids`
        (the error's message), ids and MaxResults together are refused; the page token checked."""
        limit = page_size(self.max_results, lo, hi)
        if not_with_ids is not None and self.ids and limit is not None:
            raise CloudError("InvalidParameterCombination", not_with_ids)
        # Only a page token needs the fingerprint (hashing it is ~5% of a DescribeInstances by id).
        fp = self.fingerprint(kind, *extra) if limit is not None or self.next_token is not None else ""
        return Page(limit, fp, decode_token(self.next_token, fp))


def filter_key(filters: Iterable[Filter]) -> list[list[object]]:
    return [[f.name, list(f.values)] for f in filters]


@dataclass(frozen=True, slots=True)
class Page:
    """Where one page of a Describe starts and how long it is, bound to the query's fingerprint."""
    limit: int | None
    fingerprint: str
    after: str | None

    def of(self, keys_sorted: list[str]) -> tuple[list[str], str | None]:
        """This page of the sorted keys, and the token of the next one (None at the end)."""
        return paginate(keys_sorted, self.after, self.limit, self.fingerprint)
