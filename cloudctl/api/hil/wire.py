"""HIL's wire rules: its error answer `{"type", "msg"}` with its status codes, and how a request's
arguments are read and checked (a body for everything but GET, query parameters for GET)."""
from __future__ import annotations

import math

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from ...core.baremetal.errors import (
    AuthenticationError,
    AuthorizationError,
    BadArgumentError,
    BlockedError,
    BmError,
    BusyError,
    DuplicateError,
    IllegalStateError,
    NotFoundError,
    OBMError,
    ProjectMismatchError,
    RetryLaterError,
    TooManyFailuresError,
)
from ..listener import BodyRefused
from ..refusals import clip

_STATUS: dict[type[BmError], int] = {
    NotFoundError: 404, DuplicateError: 409, BlockedError: 409, ProjectMismatchError: 409,
    IllegalStateError: 409, AuthenticationError: 401, AuthorizationError: 401, BadArgumentError: 400,
    OBMError: 502, TooManyFailuresError: 429, BusyError: 503,
}
JOURNAL_MSG = ("the controller cannot write its journal (disk full or read-only?); nothing was changed; "
               "retry later")
SERVER_MSG = "an internal error occurred; the controller logged it"
BodyModel = type[BaseModel] | None      # None: a GET, which takes no body


def answer(kind: str, msg: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"type": kind, "msg": msg}, status=status, headers=headers)


def error(e: BmError) -> web.Response:
    """A core error as HIL answers it. A missing or wrong login is HIL's AuthorizationError (401)
    like a refused call; it alone carries WWW-Authenticate."""
    headers = {"WWW-Authenticate": 'Basic realm="cloudctl"'} if isinstance(e, AuthenticationError) else None
    if isinstance(e, RetryLaterError):
        headers = {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))}
    kind = "AuthorizationError" if isinstance(e, AuthenticationError) else type(e).__name__
    return answer(kind, e.msg, _STATUS.get(type(e), 400), headers)


def refusal(e: BodyRefused) -> web.Response:
    """A body the listener refused (over the admin endpoint's 64 KiB, or too slow), HIL-style."""
    return answer(e.code, e.message, e.status)


class Invalid(Exception):
    """A request refused at the edge: HIL's `ValidationError`."""


async def arguments(request: web.Request, model: BodyModel, query: tuple[str, ...] = ()) -> BaseModel | None:
    """The route's body, checked (already read by the listener's guard, at most 64 KiB); a GET's
    arguments are in its query instead, `query` names those it takes (as HIL, which refuses
    others and empty values).

    Unknown keys are found before the model runs: pydantic would build an error for each of
    thousands of them, several times the cost of parsing the body, on the event loop."""
    raw = await request.read() if request.body_exists else b""
    if model is None:
        if raw:
            raise Invalid("GET request made with a non-empty request body")
        for key, value in request.query.items():
            if key not in query:
                takes = ", ".join(query) or "none"
                raise Invalid(f"unknown query parameter {clip(key)}; this call takes {takes}")
            if not value:
                raise Invalid(f"the query parameter {clip(key)} is empty")
            if len(request.query.getall(key)) > 1:
                raise Invalid("Parameter specified more than once")
        return None
    try:
        value = from_json(raw or b"{}")   # refuses lone surrogates and nesting past 200 levels
    except ValueError:
        raise Invalid("The request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Invalid("the body must be a JSON object")
    if model.model_config.get("extra") == "forbid":
        unknown = next((k for k in value if k not in model.model_fields), None)
        if unknown is not None:
            takes = ", ".join(model.model_fields) or "no arguments in its body"
            raise Invalid(f"unknown argument {clip(unknown)}; this call takes {takes}")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise Invalid(explain(e)) from None


def explain(e: ValidationError) -> str:
    """The first problem, in the API's words (never echoing more than a clipped key name)."""
    err = e.errors(include_url=False)[0]
    where = ".".join(clip(p) if isinstance(p, str) else str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"the argument {where} is required"
    return f"{where}: {err['msg']}"
