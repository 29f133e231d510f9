"""The table of implemented EC2 actions: the `@action` decorator fills it, and it is the one list
of them (the EC2 model the server loads is trimmed to its names)."""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ..model import Ec2Model, ModelError

Handler = Callable[[Cloud, Caller, dict[str, Any]], Awaitable[dict[str, Any]]]
ACTIONS: dict[str, Handler] = {}
# An action's usual form read straight into what its core call takes, past `Protocol.parse`: the
# form's fields (no Action, Version or auth fields) -> (the request for `handler`, DryRun), or None:
# then the general parse and the action's own handler, which answer whatever the reader passes on.
FormReader = Callable[[dict[str, str]], "tuple[Any, bool] | None"]
FormHandler = Callable[[Cloud, Caller, Any], Awaitable[dict[str, Any]]]
FORMS: dict[str, tuple[FormReader, FormHandler]] = {}


class ActionsError(ModelError):
    """The handlers and the EC2 model disagree: the server must not start."""


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        other = ACTIONS.setdefault(name, fn)
        if other is not fn:
            raise ActionsError(f"EC2 action {name} has two handlers: {_where(other)} and {_where(fn)}")
        return fn
    return register


def form(name: str, reader: FormReader) -> Callable[[FormHandler], FormHandler]:
    """The decorated handler serves the requests of action `name` that `reader` reads (see FORMS);
    the action's `@action` handler serves the others and answers as this one does for the same
    request."""
    def register(fn: FormHandler) -> FormHandler:
        FORMS[name] = (reader, fn)
        return fn
    return register


def _where(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def check_actions(model: Ec2Model, actions: dict[str, Handler] = ACTIONS) -> None:
    """Every action has an async handler and an operation in the model, and the reverse; the
    first mismatch is an ActionsError of one line."""
    for name, fn in sorted(actions.items()):
        if name not in model.operations:
            raise ActionsError(f"EC2 action {name} ({_where(fn)}) has no operation in botocore's EC2 model")
        if not inspect.iscoroutinefunction(fn):
            raise ActionsError(f"EC2 action {name} has no handler: {_where(fn)} is not an async function")
    unhandled = sorted(set(model.operations) - set(actions))
    if unhandled:
        raise ActionsError(f"EC2 action {unhandled[0]} is in the loaded model but has no handler "
                           f"(no @action({unhandled[0]!r}))")


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def tag_list(cloud: Cloud, resource_id: str) -> list[dict[str, str]]:
    return [{"Key": t.tag_key, "Value": t.value} for t in cloud.tags.rows_of(resource_id)]
