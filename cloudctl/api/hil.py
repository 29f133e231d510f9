"""The bare-metal REST API with HIL's names and URLs (JSON), mounted on the admin endpoint.

Wire format only: each route checks its body against its model (api/hil_models.py), then
authenticates the caller and calls the core. Callers authenticate with HTTP Basic (the database
users), or with the admin endpoint's bearer token (the `cloudctl` CLI), which counts as an
administrator. Every answer that is not a success is HIL's `{"type": <name>, "msg": <text>}`
with its status codes (HIL's client reads `type` from any error): a bad body, or a GET's query
parameter it does not take, is 400 `ValidationError` (checked before authentication, as HIL
does), an unwritable journal 503 `ServiceUnavailableError`, anything unexpected 500
`ServerError` (its traceback is logged, not sent).
Deliberate differences: an authenticated caller who is not allowed gets 403 (HIL
answered 401 for both), and HIL's `GET /v0/networks` is `GET /v0/bm/networks` (the admin
endpoint's `/v0/networks` lists the instances' networks). Failed logins back off
(core.throttle): a refused one is 429 `TooManyFailuresError`, a login the password checkers
have no room for is 503 `BusyError`, both with Retry-After.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from ..core.baremetal import Baremetal
from ..core.baremetal.auth import ADMIN, Caller
from ..core.baremetal.errors import (
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
from ..store.journal import JournalError
from . import hil_models as M
from .listener import BodyRefused
from .refusals import clip

log = logging.getLogger("cloudctl")

_STATUS: dict[type[BmError], int] = {
    NotFoundError: 404, DuplicateError: 409, BlockedError: 409, ProjectMismatchError: 409,
    IllegalStateError: 409, AuthenticationError: 401, AuthorizationError: 403, BadArgumentError: 400,
    OBMError: 502, TooManyFailuresError: 429, BusyError: 503,
}
JOURNAL_MSG = ("the controller cannot write its journal (disk full or read-only?); nothing was changed; "
               "retry later")
SERVER_MSG = "an internal error occurred; the controller logged it"

Handler = Callable[[web.Request, Caller, Any], Awaitable[Any]]   # (request, caller, the route's body model)
BodyModel = type[BaseModel] | None                               # None: a GET, which takes no body


def _answer(kind: str, msg: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"type": kind, "msg": msg}, status=status, headers=headers)


def _error(e: BmError) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="cloudctl"'} if isinstance(e, AuthenticationError) else None
    if isinstance(e, RetryLaterError):
        headers = {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))}
    return _answer(type(e).__name__, e.msg, _STATUS.get(type(e), 400), headers)


def hil_refusal(e: BodyRefused) -> web.Response:
    """A body the listener refused (over the admin endpoint's 64 KiB, or too slow), HIL-style."""
    return _answer(e.code, e.message, e.status)


class _Invalid(Exception):
    """A request refused at the edge: HIL's `ValidationError`."""


async def _body(request: web.Request, model: BodyModel, query: tuple[str, ...] = ()) -> BaseModel | None:
    """The route's body, checked (already read by the listener's guard, at most 64 KiB); a GET's
    arguments are in its query instead, `query` names those it takes (as HIL, which refuses
    others and empty values).

    Unknown keys are found before the model runs: pydantic would build an error for each of
    thousands of them, several times the cost of parsing the body, on the event loop."""
    raw = await request.read() if request.body_exists else b""
    if model is None:
        if raw:
            raise _Invalid("a GET request takes no body")
        for key, value in request.query.items():
            if key not in query:
                takes = ", ".join(query) or "none"
                raise _Invalid(f"unknown query parameter {clip(key)}; this call takes {takes}")
            if not value:
                raise _Invalid(f"the query parameter {clip(key)} is empty")
        return None
    try:
        value = from_json(raw or b"{}")   # refuses lone surrogates and nesting past 200 levels
    except ValueError:
        raise _Invalid("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _Invalid("the body must be a JSON object")
    if model.model_config.get("extra") == "forbid":
        unknown = next((k for k in value if k not in model.model_fields), None)
        if unknown is not None:
            takes = ", ".join(model.model_fields) or "no arguments in its body"
            raise _Invalid(f"unknown argument {clip(unknown)}; this call takes {takes}")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise _Invalid(_explain(e)) from None


def _explain(e: ValidationError) -> str:
    """The first problem, in the API's words (never echoing more than a clipped key name)."""
    err = e.errors(include_url=False)[0]
    where = ".".join(clip(p) if isinstance(p, str) else str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"the argument {where} is required"
    return f"{where}: {err['msg']}"


class HilApi:
    def __init__(self, bm: Baremetal, admin_token: str) -> None:
        self.bm = bm
        self.token = admin_token
        self._routes: set[AbstractRoute] = set()

    def owns(self, request: web.Request) -> bool:
        """True for this API's routes, which authenticate callers themselves."""
        return request.match_info.route in self._routes

    async def _caller(self, request: web.Request) -> Caller:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            if hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                return ADMIN
            raise AuthenticationError("wrong admin token")
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationError("malformed Basic credentials") from None
            return await self.bm.users.authenticate(user, pw, request.remote or "")
        return await self.bm.users.authenticate(None, None)

    async def _guarded(self, request: web.Request, model: BodyModel, fn: Handler, query: tuple[str, ...] = ()) -> Any:
        """fn's result, or the error's answer in HIL's shape: nothing escapes in another shape
        (HIL's client fails on an error without `type`)."""
        try:
            body = await _body(request, model, query)
            caller = await self._caller(request)
            return await fn(request, caller, body)
        except _Invalid as e:
            return _answer("ValidationError", str(e), 400)
        except BmError as e:
            return _error(e)
        except JournalError as e:
            log.error("bare-metal API: %s %s: %s", request.method, clip(request.path, 200), e)
            return _answer("ServiceUnavailableError", JOURNAL_MSG, 503)
        except Exception:
            log.exception("bare-metal API: %s %s failed", request.method, clip(request.path, 200))
            return _answer("ServerError", SERVER_MSG, 500)

    def _wrap(self, fn: Handler, model: BodyModel, status: int = 200,
              query: tuple[str, ...] = ()) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request, caller: Caller, body: Any) -> web.Response:
            result = await fn(request, caller, body)
            if result is None:
                return web.Response(status=status)
            return web.json_response(result, status=status)   # (inside the guard: it may fail too)

        async def handler(request: web.Request) -> web.Response:
            return cast(web.Response, await self._guarded(request, model, answer, query))
        return handler

    async def _show_console(self, request: web.Request) -> web.StreamResponse:
        """The node's captured console output; with follow=1 it stays open and streams new output
        until the capture stops or the client goes away."""
        node = request.match_info["node"]
        follow = request.query.get("follow", "") in ("1", "true", "yes")

        async def start(q: web.Request, c: Caller, b: None) -> Any:
            if not follow:
                data = await self.bm.console.show(c, node)
                return web.Response(body=data, content_type="text/plain", charset="utf-8")
            return await self.bm.console.follow(c, node)

        result = await self._guarded(request, None, start, ("follow",))
        if isinstance(result, web.Response):   # the text, or an error
            return result
        data, q, out = result
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
            await resp.prepare(request)
            await resp.write(data)
            while (chunk := await q.get()) is not None:
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            out.unfollow(q)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        bm, net, ops, users = self.bm, self.bm.networks, self.bm.ops, self.bm.users
        site = bm.site

        def add(method: str, path: str, fn: Handler, model: type[BaseModel] = M.Body, status: int = 200,
                query: tuple[str, ...] = ()) -> None:
            """A route; `model` checks its body (a GET takes none, and the `query` parameters named)."""
            get = method == "GET"
            self._routes.add(r.add_route(method, "/v0" + path, self._wrap(fn, None if get else model, status, query)))

        def m(req: web.Request, key: str) -> str:
            return req.match_info[key]

        # projects
        add("GET", "/projects", lambda q, c, b: _ret(site.list_projects(c)))
        add("PUT", "/project/{project}", lambda q, c, b: site.create_project(c, m(q, "project")))
        add("DELETE", "/project/{project}", lambda q, c, b: site.delete_project(c, m(q, "project")))
        add("POST", "/project/{project}/connect_node",
            lambda q, c, b: site.connect_node(c, m(q, "project"), b.node), M.NodeRef)
        add("POST", "/project/{project}/detach_node",
            lambda q, c, b: bm.detach_node(c, m(q, "project"), b.node), M.NodeRef)
        add("GET", "/project/{project}/nodes", lambda q, c, b: _ret(site.project_nodes(c, m(q, "project"))))
        add("GET", "/project/{project}/networks",
            lambda q, c, b: _ret(net.project_networks(c, m(q, "project"))))
        # nodes and NICs
        add("GET", "/nodes/{which}", lambda q, c, b: _ret(site.list_nodes(c, m(q, "which"))))
        add("PUT", "/node/{node}", lambda q, c, b: site.register_node(c, m(q, "node"), b.obm), M.RegisterNode)
        add("DELETE", "/node/{node}", lambda q, c, b: bm.delete_node(c, m(q, "node")))
        add("GET", "/node/{node}", lambda q, c, b: _ret(site.show_node(c, m(q, "node"))))
        add("PUT", "/node/{node}/nic/{nic}",
            lambda q, c, b: site.register_nic(c, m(q, "node"), m(q, "nic"), b.macaddr), M.RegisterNic)
        for action in ("on", "off"):
            add("POST", f"/node/{{node}}/power_{action}", lambda q, c, b, a=action: bm.obm.power(c, m(q, "node"), a))
        add("POST", "/node/{node}/power_cycle",
            lambda q, c, b: bm.obm.power(c, m(q, "node"), "cycle", b.force), M.PowerCycle)
        add("GET", "/node/{node}/power_status", lambda q, c, b: bm.obm.status(c, m(q, "node")))
        add("PUT", "/node/{node}/boot_device",
            lambda q, c, b: bm.obm.bootdev(c, m(q, "node"), b.bootdev), M.BootDevice)
        add("DELETE", "/node/{node}/nic/{nic}", lambda q, c, b: site.delete_nic(c, m(q, "node"), m(q, "nic")))
        # serial console (HIL v0.1's start/stop_console, show_console); GET is text, not JSON
        add("PUT", "/node/{node}/console", lambda q, c, b: bm.console.enable(c, m(q, "node")))
        add("DELETE", "/node/{node}/console", lambda q, c, b: bm.console.disable(c, m(q, "node")))
        add("GET", "/node/{node}/console_status", lambda q, c, b: _ret(bm.console.status(c, m(q, "node"))))
        self._routes.add(r.add_route("GET", "/v0/node/{node}/console", self._show_console))

        async def connect_network(q: web.Request, c: Caller, b: M.ConnectNetwork) -> Any:
            op = await ops.connect(c, m(q, "node"), m(q, "nic"), b.network, b.channel)
            return {"status_id": op.id}

        async def detach_network(q: web.Request, c: Caller, b: M.NetworkRef) -> Any:
            op = await ops.detach(c, m(q, "node"), m(q, "nic"), b.network)
            return {"status_id": op.id}

        add("POST", "/node/{node}/nic/{nic}/connect_network", connect_network, M.ConnectNetwork, 202)
        add("POST", "/node/{node}/nic/{nic}/detach_network", detach_network, M.NetworkRef, 202)
        # networks
        # HIL's list_networks is GET /networks; on this endpoint that lists the instances' networks.
        add("GET", "/bm/networks", lambda q, c, b: _ret(net.list(c)))

        async def network_create(q: web.Request, c: Caller, b: M.CreateNetwork) -> Any:
            n = await net.create(c, m(q, "network"), b.owner, b.access, b.net_id)
            return {"name": n.name, "net_id": n.vlan}

        add("PUT", "/network/{network}", network_create, M.CreateNetwork)
        add("DELETE", "/network/{network}", lambda q, c, b: net.delete(c, m(q, "network")))
        add("GET", "/network/{network}", lambda q, c, b: _ret(net.show(c, m(q, "network"))))
        add("GET", "/network/{network}/attachments",
            lambda q, c, b: _ret(net.attachments(c, m(q, "network"), q.query.get("project"))), query=("project",))
        add("PUT", "/network/{network}/access/{project}",
            lambda q, c, b: net.grant(c, m(q, "network"), m(q, "project")))
        add("DELETE", "/network/{network}/access/{project}",
            lambda q, c, b: net.revoke(c, m(q, "network"), m(q, "project")))
        # switches and ports (port names may hold slashes, sent percent-encoded)
        add("GET", "/switches", lambda q, c, b: _ret(site.list_switches(c)))
        add("PUT", "/switch/{switch}", lambda q, c, b: site.register_switch(c, m(q, "switch"), b.model_dump()),
            M.RegisterSwitch)
        add("DELETE", "/switch/{switch}", lambda q, c, b: bm.delete_switch(c, m(q, "switch")))
        add("GET", "/switch/{switch}", lambda q, c, b: _ret(site.show_switch(c, m(q, "switch"))))

        async def audit(q: web.Request, c: Caller, b: M.Audit) -> Any:
            c.require_admin()
            which = [m(q, "switch")] if "switch" in q.match_info else None
            return await ops.audit(which, b.repair)

        add("POST", "/switches/audit", audit, M.Audit)
        add("POST", "/switch/{switch}/audit", audit, M.Audit)

        async def revert(q: web.Request, c: Caller, b: M.Body) -> Any:
            return {"status_id": (await ops.revert(c, m(q, "switch"), m(q, "port"))).id}

        add("POST", "/switch/{switch}/port/{port:.+}/connect_nic",
            lambda q, c, b: site.connect_nic(c, m(q, "switch"), m(q, "port"), b.node, b.nic), M.CableNic)
        add("POST", "/switch/{switch}/port/{port:.+}/detach_nic",
            lambda q, c, b: site.detach_nic(c, m(q, "switch"), m(q, "port")))
        add("POST", "/switch/{switch}/port/{port:.+}/revert", revert, status=202)
        add("PUT", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: site.register_port(c, m(q, "switch"), m(q, "port")))
        add("DELETE", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: site.delete_port(c, m(q, "switch"), m(q, "port")))
        add("GET", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: _ret(site.show_port(c, m(q, "switch"), m(q, "port"))))
        # headnodes (a project's VMs on its networks)
        hns = bm.headnodes
        add("PUT", "/headnode/{hn}", lambda q, c, b: _none(hns.create(
            c, m(q, "hn"), b.project, b.base_img, b.instance_type, b.user_data)), M.CreateHeadnode)
        add("DELETE", "/headnode/{hn}", lambda q, c, b: hns.delete(c, m(q, "hn")))
        add("GET", "/headnode/{hn}", lambda q, c, b: _ret(hns.show(c, m(q, "hn"))))
        add("POST", "/headnode/{hn}/start", lambda q, c, b: hns.start(c, m(q, "hn")))
        add("POST", "/headnode/{hn}/stop", lambda q, c, b: hns.stop(c, m(q, "hn")))
        add("PUT", "/headnode/{hn}/hnic/{hnic}", lambda q, c, b: hns.create_hnic(c, m(q, "hn"), m(q, "hnic")))
        add("DELETE", "/headnode/{hn}/hnic/{hnic}", lambda q, c, b: hns.delete_hnic(c, m(q, "hn"), m(q, "hnic")))
        add("POST", "/headnode/{hn}/hnic/{hnic}/connect_network",
            lambda q, c, b: hns.connect_network(c, m(q, "hn"), m(q, "hnic"), b.network), M.NetworkRef)
        add("POST", "/headnode/{hn}/hnic/{hnic}/detach_network",
            lambda q, c, b: hns.detach_network(c, m(q, "hn"), m(q, "hnic"), b.network), M.NetworkRef)
        add("GET", "/project/{project}/headnodes", lambda q, c, b: _ret(hns.project_headnodes(c, m(q, "project"))))
        add("GET", "/headnode_images/", lambda q, c, b: _ret(hns.image_names(c)))
        # operations
        add("GET", "/operation/{id}", lambda q, c, b: _ret(ops.show(c, m(q, "id"))))
        add("GET", "/networking_action/{id}", lambda q, c, b: _ret(ops.show(c, m(q, "id"))))
        # users (HIL's database auth extension)
        add("GET", "/auth/basic/users", lambda q, c, b: _ret(users.list(c)))
        add("PUT", "/auth/basic/user/{user}",
            lambda q, c, b: users.create(c, m(q, "user"), b.password, b.is_admin), M.CreateUser)
        add("DELETE", "/auth/basic/user/{user}", lambda q, c, b: users.delete(c, m(q, "user")))
        add("PATCH", "/auth/basic/user/{user}", lambda q, c, b: users.set_admin(c, m(q, "user"), b.is_admin),
            M.SetAdmin)
        add("POST", "/auth/basic/user/{user}/add_project",
            lambda q, c, b: users.add_project(c, m(q, "user"), b.project), M.ProjectRef)
        add("POST", "/auth/basic/user/{user}/remove_project",
            lambda q, c, b: users.remove_project(c, m(q, "user"), b.project), M.ProjectRef)


async def _ret(value: Any) -> Any:
    return value


async def _none(call: Awaitable[Any]) -> None:
    await call
