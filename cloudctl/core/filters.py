"""Declarative Describe* filters: `Filter.N.Name` / `Filter.N.Value.M` with `*` and `?` wildcards.

Each resource declares its filter names and how to read each from a row. Values within one
filter are OR'd, filters are AND'd, as in EC2. An unknown name is an error, never ignored:
silently ignored filters are the most reported bug in EC2 emulators.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..slim import dataclass
from .errors import CloudError
from .query import Filter

Getter = Callable[[Any], Any]
TagsOf = Callable[[Any], Mapping[str, str]]


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class ValueMatch:
    """One filter's values: exact strings in a set, wildcard patterns as one regex."""

    __slots__ = ("exact", "regex")

    def __init__(self, values: Iterable[str]) -> None:
        self.exact: set[str] = set()
        pats: list[str] = []
        for v in values:
            if "*" in v or "?" in v:
                pats.append(_translate(v))
            else:
                self.exact.add(v.replace("\\*", "*").replace("\\?", "?").replace("\\\\", "\\"))
        self.regex = re.compile("(?:" + "|".join(pats) + r")\Z", re.S) if pats else None

    @property
    def only_exact(self) -> bool:
        return self.regex is None

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(self(v) for v in value)
        s = _text(value)
        return s in self.exact or (self.regex is not None and self.regex.match(s) is not None)


def _translate(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


@dataclass(slots=True)
class Condition:
    name: str
    match: ValueMatch
    getter: Getter | None = None     # plain field
    tag_key: str | None = None       # tag:KEY
    tag_part: str | None = None      # "key" (tag-key) or "value" (tag-value)


class Matcher:
    """A compiled filter set; `tag_lookups` lets a caller start from a tag index instead of a scan."""

    def __init__(self, conditions: list[Condition], tags_of: TagsOf | None) -> None:
        self.conditions = conditions
        self._tags_of = tags_of

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def exact_values(self, name: str) -> set[str] | None:
        """The exact values of a filter with no wildcards (for an index lookup), else None."""
        for c in self.conditions:
            if c.name == name and c.match.only_exact:
                return c.match.exact
        return None

    def tag_lookups(self) -> list[tuple[str, set[str]]]:
        return [(c.tag_key, c.match.exact) for c in self.conditions
                if c.tag_key is not None and c.match.only_exact]

    def __call__(self, row: Any) -> bool:
        for c in self.conditions:
            if c.getter is not None:
                if not c.match(c.getter(row)):
                    return False
                continue
            assert self._tags_of is not None
            tags = self._tags_of(row)
            if c.tag_key is not None:
                if c.tag_key not in tags or not c.match(tags[c.tag_key]):
                    return False
            elif c.tag_part == "key":
                if not any(c.match(k) for k in tags):
                    return False
            elif not any(c.match(v) for v in tags.values()):
                return False
        return True


class FilterSet:
    """The filters one Describe action accepts."""

    def __init__(self, fields: Mapping[str, Getter], tags_of: TagsOf | None = None) -> None:
        self.fields = dict(fields)
        self.tags_of = tags_of

    def compile(self, filters: Iterable[Filter] | None) -> Matcher:
        conds: list[Condition] = []
        for f in filters or ():
            name, values = f.name, f.values
            if not name:
                raise CloudError("InvalidParameterValue", "The filter name must be specified")
            if not values:
                raise CloudError("InvalidParameterValue",
                                 f"The filter '{name}' requires at least one value")
            m = ValueMatch(values)
            if name in self.fields:
                conds.append(Condition(name, m, getter=self.fields[name]))
            elif self.tags_of is not None and name.startswith("tag:") and len(name) > 4:
                conds.append(Condition(name, m, tag_key=name[4:]))
            elif self.tags_of is not None and name in ("tag-key", "tag-value"):
                conds.append(Condition(name, m, tag_part=name[4:]))
            else:
                raise CloudError("InvalidParameterValue", f"The filter '{name}' is invalid")
        return Matcher(conds, self.tags_of)
