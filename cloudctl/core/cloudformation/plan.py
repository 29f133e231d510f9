"""The engine's view of a template (template.py, the other half's module): parse, bind, and the
few facts of a bound template the engine asks for. One place to adapt if that interface moves."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from .intrinsics import Pseudo, Resolver
from .template import MAX_BODY, Bound, Output, Template, TemplateError

__all__ = ["MAX_BODY", "TemplateError", "Template", "parse", "bind", "pseudo", "levels", "type_of", "retain",
           "properties", "outputs", "description", "walk"]


def parse(body: str, types: Collection[str], max_bytes: int = MAX_BODY) -> Template:
    return Template.parse(body, types, max_bytes)


def pseudo(region: str, account: str, name: str, sid: str, services: Any) -> Pseudo:
    return Pseudo(region=region, account_id=account, stack_name=name, stack_id=sid,
                  azs=tuple(services.config.zones) if services is not None else ())


def bind(tpl: Template, params: Mapping[str, str], p: Pseudo) -> Bound:
    return tpl.bind(dict(params), p)


def no_echo(tpl: Template) -> tuple[str, ...]:
    """The parameters whose values are never shown back (NoEcho)."""
    return tuple(name for name, d in tpl.parameters.items() if d.no_echo)


def levels(b: Bound) -> list[list[str]]:
    return b.levels()


async def walk(b: Bound, one: Callable[[str], Awaitable[bool]]) -> list[str]:
    """`one` on every resource in dependency order, each level's at once; stops after the first
    level where any failed and returns those (none: all went)."""
    for level in b.levels():
        oks = await asyncio.gather(*(one(lg) for lg in level))
        failed = [lg for lg, ok in zip(level, oks) if not ok]
        if failed:
            return failed
    return []


def type_of(b: Bound, logical: str) -> str:
    return b.template.resources[logical].type


def retain(b: Bound, logical: str) -> bool:
    return b.template.resources[logical].deletion_policy == "Retain"


def properties(b: Bound, logical: str, r: Resolver) -> dict[str, Any]:
    return b.properties(logical, r)


def outputs(b: Bound, r: Resolver) -> list[dict[str, Any]]:
    return [_output(o) for o in b.outputs(r)]


def _output(o: Output) -> dict[str, Any]:
    return {"key": o.key, "value": o.value, "description": o.description or "", "export": o.export_name}


def description(tpl: Template) -> str:
    return tpl.description or ""
