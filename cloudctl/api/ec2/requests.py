"""EC2 wire parameters shared by many actions, as the core's types.

Each action module turns its own parameters into core calls; what many of them share — a Describe
call's ids, filters and page, and TagSpecifications — is read here once, so every action refuses
the same wire mistakes with the same EC2 error.
"""
from __future__ import annotations

from typing import Any

from ...core.errors import CloudError
from ...core.query import Filter, Query
from ...core.tags import Tags

Pair = tuple[str, str]


def filters(req: dict[str, Any]) -> tuple[Filter, ...]:
    """`Filter.N.Name` / `Filter.N.Value.M` as Filters (the names are checked by the core)."""
    return tuple(Filter(f.get("Name") or "", tuple(f.get("Values") or ())) for f in req.get("Filters") or ())


def query(req: dict[str, Any], ids_key: str | None = None) -> Query:
    """A Describe call's selection; `ids_key` names its id list parameter (`InstanceIds`, ...)."""
    ids = tuple(req.get(ids_key) or ()) if ids_key else ()
    return Query(ids=ids, filters=filters(req), max_results=req.get("MaxResults"),
                 next_token=req.get("NextToken"))


def tag_specs(req: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, tuple[Pair, ...]]:
    """TagSpecifications → {resource type: ((key, value), ...)}; a type the action cannot tag is
    refused, and so is a tag the core would refuse (checked here so the error comes first, as in EC2)."""
    out: dict[str, list[Pair]] = {}
    for spec in req.get("TagSpecifications") or ():
        rtype = spec.get("ResourceType")
        if rtype not in allowed:
            raise CloudError("InvalidParameterValue",
                             f"'{rtype}' is not a valid taggable resource type for this operation")
        out.setdefault(rtype, []).extend(pairs(spec.get("Tags")))
    return {k: tuple(v) for k, v in out.items()}


def pairs(tags: list[dict[str, Any]] | None) -> list[Pair]:
    """EC2's `[{"Key", "Value"}]` as checked (key, value) pairs."""
    return Tags.validate_pairs([(t.get("Key"), t.get("Value") or "") for t in tags or ()])


def tags_for(req: dict[str, Any], rtype: str, allowed: tuple[str, ...] | None = None) -> tuple[Pair, ...]:
    """The pairs TagSpecifications give one resource type (an action making one kind of resource)."""
    return tag_specs(req, allowed or (rtype,)).get(rtype, ())
