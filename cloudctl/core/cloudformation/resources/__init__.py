"""Resource handlers: one small module per family, each a thin call into the cloud's own service
for that resource, acting for the stack's owner. A handler's `create` is idempotent on the names
and tokens `Ctx` derives from the stack and logical ids, so a create resumed after a crash adopts
what the interrupted one made instead of making it twice; `delete` treats "already gone" as done."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import field
from typing import Any, ClassVar

from ....slim import dataclass
from ...context import Caller
from ...errors import CloudError

STACK_NAME, LOGICAL_ID, STACK_ID = "aws:cloudformation:stack-name", "aws:cloudformation:logical-id", \
    "aws:cloudformation:stack-id"
POLL_S = 0.2


class Failed(Exception):
    """The resource cannot be made or removed; the message goes to the event's reason."""


@dataclass(frozen=True, slots=True)
class Made:
    physical: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Ctx:
    """What a handler knows of the resource it works on."""
    services: Any                 # the Cloud (its services by attribute)
    caller: Caller                # the stack's owner
    owner: str
    stack_id: str
    stack_name: str
    logical: str
    attributes: Mapping[str, str] = field(default_factory=dict)   # as made (for delete)
    generation: int = 0           # the stack update making it (a replacement's own name and token)

    @property
    def digest(self) -> str:
        key = f"{self.stack_id}|{self.logical}" + (f"|{self.generation}" if self.generation else "")
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def token(self) -> str:
        """A ClientToken: the same for every attempt at this resource of this stack (and update)."""
        return "cfn-" + self.digest[:32]

    def name(self, limit: int = 255) -> str:
        """A physical name as CloudFormation makes one: stack-logical-SUFFIX, deterministic here."""
        suffix = self.digest[:12].upper()
        head = f"{self.stack_name}-{self.logical}"[: max(1, limit - len(suffix) - 1)]
        return f"{head}-{suffix}"

    @property
    def system_tags(self) -> tuple[tuple[str, str], ...]:
        return ((STACK_NAME, self.stack_name), (LOGICAL_ID, self.logical), (STACK_ID, self.stack_id))


class Handler:
    """One resource type. `attributes` are the Fn::GetAtt names it reports."""
    type: ClassVar[str]
    attributes: ClassVar[frozenset[str]] = frozenset()

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        raise NotImplementedError

    async def delete(self, ctx: Ctx, physical: str) -> None:
        raise NotImplementedError


HANDLERS: dict[str, Handler] = {}


def handler(cls: type[Handler]) -> type[Handler]:
    HANDLERS[cls.type] = cls()
    return cls


def need(props: Mapping[str, Any], name: str) -> Any:
    if props.get(name) in (None, ""):
        raise Failed(f"Property {name} cannot be empty.")
    return props[name]


def as_int(props: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    v = props.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except (TypeError, ValueError):
        raise Failed(f"Value of property {name} must be of type Integer") from None


def as_bool(v: Any) -> bool | None:
    if v is None:
        return None
    return v if isinstance(v, bool) else str(v).lower() == "true"


async def until(check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str) -> None:
    """Poll `check` until true; Failed naming `what` after `timeout_s` (a resource that never settles)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if loop.time() > end:
            raise Failed(f"{what} did not stabilize within {timeout_s:g} seconds")
        await asyncio.sleep(POLL_S)


def gone(e: CloudError) -> bool:
    """A refusal saying the thing is not there (a delete already done)."""
    return e.code.endswith(".NotFound") or "not found" in e.message.lower() or "does not exist" in e.message


def load_all() -> None:
    from . import addresses, autoscaling, balancing, ec2, keys, storage, templates, updaters, waits  # noqa: F401
