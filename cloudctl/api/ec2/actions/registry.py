"""The table of implemented EC2 actions."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller

Handler = Callable[[Cloud, Caller, dict[str, Any]], Awaitable[dict[str, Any]]]
ACTIONS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ACTIONS[name] = fn
        return fn
    return register


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def tag_list(cloud: Cloud, resource_id: str) -> list[dict[str, str]]:
    return cloud.tags.tag_list(resource_id)
