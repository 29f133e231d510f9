"""HIL's REST API as its own aiohttp application, mounted under a base URL of the admin endpoint
(`baremetal.hil_base`, `/hil` by default): `GET /hil/v0/networks` is HIL's `GET /v0/networks`.

Wire format only: each route checks its arguments against its model (models.py), then
authenticates the caller and calls the core; shapes.py builds HIL's answers from the core's
views. Callers authenticate with HTTP Basic (the database users), or with the admin endpoint's
bearer token (the `cloudctl` CLI), which counts as an administrator. Every answer that is not
a success is HIL's `{"type": <name>, "msg": <text>}` (HIL's client reads `type` from any error),
whatever failed: an unknown route (404 NotFoundError), a method the route does not take (405),
a bad body or query (400 ValidationError, checked before authentication as HIL does), an
unwritable journal (503 ServiceUnavailableError), anything unexpected (500 ServerError, its
traceback logged, not sent). Failed logins back off (core.throttle): a refused one is 429
`TooManyFailuresError`, one the password checkers have no room for 503 `BusyError`, both with
Retry-After. docs/baremetal.md lists where this differs from HIL on purpose.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from ...core.baremetal.auth import ADMIN, Caller
from ...core.baremetal.errors import AuthenticationError, BmError
from ...store.journal import JournalError
from ..refusals import clip
from .wire import JOURNAL_MSG, SERVER_MSG, Invalid, answer, arguments, error

if TYPE_CHECKING:   # (the service is loaded at its first use: core/cloud.py; the models at the first call)
    from types import ModuleType

    from ...core.baremetal.headnodes import Headnodes
    from ...core.baremetal.networks import Networks
    from ...core.baremetal.obm import Obm
    from ...core.baremetal.operations import Operations
    from ...core.baremetal.service import Baremetal
    from ...core.baremetal.site import Site
    from ...core.baremetal.users import BmUsers
    from . import models as M

log = logging.getLogger("cloudctl")
MAX_JSON = 64 * 1024   # every HIL body is a small JSON document

Handler = Callable[[web.Request, Caller, Any], Awaitable[Any]]   # (request, caller, the route's body model)


def _models() -> ModuleType:
    """models.py, imported at the first call that has a body (issue 14, base RSS: its pydantic
    models' validators, with shapes.py and switch_types.py, ~0.45 MiB that a site without bare
    metal never uses; the route table names each route's model by its name)."""
    from . import models
    return models


def _shapes() -> ModuleType:
    from . import shapes
    return shapes


EXTENSIONS = ("cloudctl.audit", "cloudctl.console", "cloudctl.headnodes", "hil.ext.auth.database")


class HilApi:
    def __init__(self, bm: Callable[[], Baremetal], admin_token: str, base: str = "/hil") -> None:
        """`bm`: the bare-metal service, asked for at each request (the cloud builds it at the first)."""
        self._bm = bm
        self.token = admin_token
        self.base = base

    @property
    def bm(self) -> Baremetal:
        return self._bm()

    def owns(self, request: web.Request) -> bool:
        """True for requests under the base URL: this API authenticates and answers them itself."""
        return request.path == self.base or request.path.startswith(self.base + "/")

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

    async def _guarded(self, request: web.Request, model: str | None, fn: Handler, query: tuple[str, ...] = ()) -> Any:
        """fn's result, or the error's answer in HIL's shape; `model`: the name of the body's model
        in models.py (None: a GET, which takes no body)."""
        try:
            body = await arguments(request, None if model is None else getattr(_models(), model), query)
            caller = await self._caller(request)
            return await fn(request, caller, body)
        except Invalid as e:
            return answer("ValidationError", str(e), 400)
        except BmError as e:
            return error(e)
        except JournalError as e:
            log.error("HIL API: %s %s: %s", request.method, clip(request.path, 200), e)
            return answer("ServiceUnavailableError", JOURNAL_MSG, 503)
        except Exception:
            log.exception("HIL API: %s %s failed", request.method, clip(request.path, 200))
            return answer("ServerError", SERVER_MSG, 500)

    def _wrap(self, fn: Handler, model: str | None, status: int = 200,
              query: tuple[str, ...] = ()) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def respond(request: web.Request, caller: Caller, body: Any) -> web.StreamResponse:
            result = await fn(request, caller, body)
            if isinstance(result, web.StreamResponse):   # a redirect, or text
                return result
            if result is None:
                return web.Response(status=status)
            return web.json_response(result, status=status)   # (inside the guard: it may fail too)

        async def handler(request: web.Request) -> web.StreamResponse:
            return cast(web.StreamResponse, await self._guarded(request, model, respond, query))
        return handler

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Routing's own failures in HIL's shape too (aiohttp answers them in text otherwise)."""
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as e:
            takes = sorted(e.allowed_methods)
            return answer("MethodNotAllowedError", f"{request.method} is not allowed on this URL; it takes "
                          f"{', '.join(takes)}", 405, {"Allow": ",".join(takes)})
        except web.HTTPNotFound:
            return answer("NotFoundError", f"no such API call: {request.method} {clip(request.path, 200)}", 404)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return answer("ServerError" if e.status >= 500 else "ValidationError", e.reason, e.status)
        except Exception:
            log.exception("HIL API: %s %s failed", request.method, clip(request.path, 200))
            return answer("ServerError", SERVER_MSG, 500)

    def _redirect_or(self, node: str, path: str, c: Caller, local: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        """HIL answers an obmd node's power and console calls with 307 to its obmd; others run here."""
        target = self.bm.obm.obmd_target(c, node, path)
        if target is not None:
            async def redirect() -> web.Response:
                return web.Response(status=307, headers={"Location": target})
            return redirect()
        return local()

    async def _show_console(self, request: web.Request) -> web.StreamResponse:
        """The node's captured console output; with follow=1 it stays open and streams new output
        until the capture stops or the client goes away. An obmd node's: a redirect to its obmd."""
        node = request.match_info["node"]
        follow = request.query.get("follow", "") in ("1", "true", "yes")

        async def start(q: web.Request, c: Caller, b: None) -> Any:
            if (target := self.bm.obm.obmd_target(c, node, "/console")) is not None:
                return web.Response(status=307, headers={"Location": target})
            if not follow:
                data = await self.bm.console.show(c, node)
                return web.Response(body=data, content_type="text/plain", charset="utf-8")
            return await self.bm.console.follow(c, node)

        result = await self._guarded(request, None, start, ("follow",))
        if isinstance(result, web.Response):   # the text, a redirect, or an error
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

    def app(self) -> web.Application:
        """Routes at HIL's paths (`/v0/...`): the admin endpoint mounts it at `self.base`, the
        `hil` listener serves it at its root."""
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_JSON)
        self.add_routes(app)
        return app

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        # The service and its parts are looked up at each call: the cloud builds it at the first one.
        def bm() -> Baremetal:
            return self.bm

        def site() -> Site:
            return self.bm.site

        def net() -> Networks:
            return self.bm.networks

        def ops() -> Operations:
            return self.bm.ops

        def users() -> BmUsers:
            return self.bm.users

        def obm() -> Obm:
            return self.bm.obm

        def hns() -> Headnodes:
            return self.bm.headnodes


        def add(method: str, path: str, fn: Handler, model: str = "Body", status: int = 200,
                query: tuple[str, ...] = ()) -> None:
            """A route; the model named `model` (models.py) checks its body (a GET takes none, and
            the `query` parameters named)."""
            get = method == "GET"
            r.add_route(method, "/v0" + path, self._wrap(fn, None if get else model, status, query))

        def m(req: web.Request, key: str) -> str:
            return req.match_info[key]

        # projects
        add("GET", "/projects", lambda q, c, b: _ret(site().list_projects(c)))
        add("PUT", "/project/{project}", lambda q, c, b: site().create_project(c, m(q, "project")))
        add("DELETE", "/project/{project}", lambda q, c, b: site().delete_project(c, m(q, "project")))
        add("POST", "/project/{project}/connect_node",
            lambda q, c, b: site().connect_node(c, m(q, "project"), b.node), "NodeRef")
        add("POST", "/project/{project}/detach_node",
            lambda q, c, b: bm().detach_node(c, m(q, "project"), b.node), "NodeRef")
        add("GET", "/project/{project}/nodes", lambda q, c, b: _ret(site().project_nodes(c, m(q, "project"))))
        add("GET", "/project/{project}/networks",
            lambda q, c, b: _ret(net().project_networks(c, m(q, "project"))))

        # nodes, NICs, metadata, OBM
        async def node_register(q: web.Request, c: Caller, b: M.RegisterNode) -> None:
            if b.obm is not None and b.obmd is not None:
                raise Invalid("give obm (HIL v0.3) or obmd (HIL after v0.4), not both")
            spec: dict[str, Any] | None = None
            if b.obmd is not None:
                spec = {"type": "obmd", "uri": b.obmd.uri, "admin_token": b.obmd.admin_token}
            elif b.obm:   # (`{}`: no OBM, as `null`)
                spec = dict(b.obm)
                uris = {_models().IPMI_URI: "ipmi", _models().MOCK_URI: "mock"}
                spec["type"] = uris.get(spec.get("type"), spec.get("type"))
            await site().register_node(c, m(q, "node"), spec, b.metadata)

        add("GET", "/nodes/{which}", lambda q, c, b: _ret(site().list_nodes(c, m(q, "which"))))
        add("PUT", "/node/{node}", node_register, "RegisterNode")
        add("DELETE", "/node/{node}", lambda q, c, b: bm().delete_node(c, m(q, "node")))
        add("GET", "/node/{node}", lambda q, c, b: _ret(_shapes().node(site().show_node(c, m(q, "node")), c)))
        add("PUT", "/node/{node}/nic/{nic}",
            lambda q, c, b: site().register_nic(c, m(q, "node"), m(q, "nic"), b.macaddr), "RegisterNic")
        add("DELETE", "/node/{node}/nic/{nic}", lambda q, c, b: site().delete_nic(c, m(q, "node"), m(q, "nic")))
        add("PUT", "/node/{node}/metadata/{label}",
            lambda q, c, b: site().set_metadata(c, m(q, "node"), m(q, "label"), b.value), "MetadataValue")
        add("DELETE", "/node/{node}/metadata/{label}",
            lambda q, c, b: site().delete_metadata(c, m(q, "node"), m(q, "label")))
        add("PUT", "/node/{node}/obm", lambda q, c, b: obm().set_enabled(c, m(q, "node"), b.enabled), "ObmEnabled")
        for action in ("on", "off"):
            add("POST", f"/node/{{node}}/power_{action}", lambda q, c, b, a=action: self._redirect_or(
                m(q, "node"), f"/power_{a}", c, lambda: obm().power(c, m(q, "node"), a)))
        add("POST", "/node/{node}/power_cycle", lambda q, c, b: self._redirect_or(
            m(q, "node"), "/power_cycle", c, lambda: obm().power(c, m(q, "node"), "cycle", b.force)), "PowerCycle")

        async def power_status(q: web.Request, c: Caller, b: None) -> Any:
            return {"power_status": await obm().status(c, m(q, "node"))}

        add("GET", "/node/{node}/power_status",
            lambda q, c, b: self._redirect_or(m(q, "node"), "/power_status", c, lambda: power_status(q, c, b)))
        add("PUT", "/node/{node}/boot_device", lambda q, c, b: self._redirect_or(
            m(q, "node"), "/boot_device", c, lambda: obm().bootdev(c, m(q, "node"), b.bootdev)), "BootDevice")
        # serial console (HIL v0.3's start/stop_console, show_console); GET is text, not JSON
        add("PUT", "/node/{node}/console", lambda q, c, b: bm().console.enable(c, m(q, "node")))
        add("DELETE", "/node/{node}/console", lambda q, c, b: bm().console.disable(c, m(q, "node")))
        add("GET", "/node/{node}/console_status", lambda q, c, b: _ret(bm().console.status(c, m(q, "node"))))
        r.add_route("GET", "/v0/node/{node}/console", self._show_console)

        async def connect_network(q: web.Request, c: Caller, b: M.ConnectNetwork) -> Any:
            op = await ops().connect(c, m(q, "node"), m(q, "nic"), b.network, b.channel)
            return {"status_id": op.id}

        async def detach_network(q: web.Request, c: Caller, b: M.NetworkRef) -> Any:
            op = await ops().detach(c, m(q, "node"), m(q, "nic"), b.network)
            return {"status_id": op.id}

        add("POST", "/node/{node}/nic/{nic}/connect_network", connect_network, "ConnectNetwork", 202)
        add("POST", "/node/{node}/nic/{nic}/detach_network", detach_network, "NetworkRef", 202)

        # networks
        async def network_create(q: web.Request, c: Caller, b: M.CreateNetwork) -> None:
            await net().create(c, m(q, "network"), b.owner, b.access, b.net_id)

        add("GET", "/networks", lambda q, c, b: _ret(_shapes().networks(net().list(c))))
        add("PUT", "/network/{network}", network_create, "CreateNetwork")
        add("DELETE", "/network/{network}", lambda q, c, b: net().delete(c, m(q, "network")))
        add("GET", "/network/{network}", lambda q, c, b: _ret(_shapes().network(net().show(c, m(q, "network")))))
        add("GET", "/network/{network}/attachments", lambda q, c, b: _ret(_shapes().attachments(
            net().attachments(c, m(q, "network"), q.query.get("project")))), query=("project",))
        add("PUT", "/network/{network}/access/{project}",
            lambda q, c, b: net().grant(c, m(q, "network"), m(q, "project")))
        add("DELETE", "/network/{network}/access/{project}",
            lambda q, c, b: net().revoke(c, m(q, "network"), m(q, "project")))

        # switches and ports (port names may hold slashes, sent percent-encoded or not)
        async def switch_register(q: web.Request, c: Caller, b: M.RegisterSwitch) -> None:
            from .switch_types import family_options
            family, options = family_options(b.type, {k: v for k, v in b.model_dump().items() if k != "type"})
            await site().register_switch(c, m(q, "switch"), family, options)

        add("GET", "/switches", lambda q, c, b: _ret(site().list_switches(c)))
        add("PUT", "/switch/{switch}", switch_register, "RegisterSwitch")
        add("DELETE", "/switch/{switch}", lambda q, c, b: bm().delete_switch(c, m(q, "switch")))
        add("GET", "/switch/{switch}", lambda q, c, b: _ret(_shapes().switch(site().show_switch(c, m(q, "switch")))))

        async def audit(q: web.Request, c: Caller, b: M.Audit) -> Any:
            c.require_admin()
            which = [m(q, "switch")] if "switch" in q.match_info else None
            return await ops().audit(which, b.repair)

        add("POST", "/switches/audit", audit, "Audit")
        add("POST", "/switch/{switch}/audit", audit, "Audit")

        async def revert(q: web.Request, c: Caller, b: M.Body) -> Any:
            return {"status_id": (await ops().revert(c, m(q, "switch"), m(q, "port"))).id}

        add("POST", "/switch/{switch}/port/{port:.+}/connect_nic",
            lambda q, c, b: site().connect_nic(c, m(q, "switch"), m(q, "port"), b.node, b.nic), "CableNic")
        add("POST", "/switch/{switch}/port/{port:.+}/detach_nic",
            lambda q, c, b: site().detach_nic(c, m(q, "switch"), m(q, "port")))
        add("POST", "/switch/{switch}/port/{port:.+}/revert", revert)
        add("PUT", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: site().register_port(c, m(q, "switch"), m(q, "port")))
        add("DELETE", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: site().delete_port(c, m(q, "switch"), m(q, "port")))
        add("GET", "/switch/{switch}/port/{port:.+}",
            lambda q, c, b: _ret(_shapes().port(site().show_port(c, m(q, "switch"), m(q, "port")))))

        # headnodes (a project's VMs on its networks)
        add("PUT", "/headnode/{hn}", lambda q, c, b: _none(hns().create(
            c, m(q, "hn"), b.project, b.base_img, b.instance_type, b.user_data)), "CreateHeadnode")
        add("DELETE", "/headnode/{hn}", lambda q, c, b: hns().delete(c, m(q, "hn")))
        add("GET", "/headnode/{hn}", lambda q, c, b: _ret(hns().show(c, m(q, "hn"))))
        add("POST", "/headnode/{hn}/start", lambda q, c, b: hns().start(c, m(q, "hn")))
        add("POST", "/headnode/{hn}/stop", lambda q, c, b: hns().stop(c, m(q, "hn")))
        add("PUT", "/headnode/{hn}/hnic/{hnic}", lambda q, c, b: hns().create_hnic(c, m(q, "hn"), m(q, "hnic")))
        add("DELETE", "/headnode/{hn}/hnic/{hnic}", lambda q, c, b: hns().delete_hnic(c, m(q, "hn"), m(q, "hnic")))
        add("POST", "/headnode/{hn}/hnic/{hnic}/connect_network",
            lambda q, c, b: hns().connect_network(c, m(q, "hn"), m(q, "hnic"), b.network), "NetworkRef")
        add("POST", "/headnode/{hn}/hnic/{hnic}/detach_network",
            lambda q, c, b: hns().detach_network(c, m(q, "hn"), m(q, "hnic"), b.network), "NetworkRef")
        add("GET", "/project/{project}/headnodes", lambda q, c, b: _ret(hns().project_headnodes(c, m(q, "project"))))
        add("GET", "/headnode_images/", lambda q, c, b: _ret(hns().image_names(c)))

        # networking actions (HIL's shape) and cloudctl's fuller view of the same operations
        add("GET", "/networking_action/{id}",
            lambda q, c, b: _ret(_shapes().networking_action(ops().show(c, m(q, "id")))))
        add("GET", "/operation/{id}", lambda q, c, b: _ret(_shapes().operation(ops().show(c, m(q, "id")))))

        async def extensions(q: web.Request, c: Caller, b: None) -> list[str]:
            c.require_admin()
            return sorted(EXTENSIONS)

        add("GET", "/active_extensions", extensions)

        # users (HIL's database auth extension)
        add("GET", "/auth/basic/users", lambda q, c, b: _ret(_shapes().users(users().list(c))))
        add("PUT", "/auth/basic/user/{user}",
            lambda q, c, b: users().create(c, m(q, "user"), b.password, b.is_admin), "CreateUser")
        add("DELETE", "/auth/basic/user/{user}", lambda q, c, b: users().delete(c, m(q, "user")))
        add("PATCH", "/auth/basic/user/{user}", lambda q, c, b: users().set_admin(c, m(q, "user"), b.is_admin),
            "SetAdmin")
        add("POST", "/auth/basic/user/{user}/add_project",
            lambda q, c, b: users().add_project(c, m(q, "user"), b.project), "ProjectRef")
        add("POST", "/auth/basic/user/{user}/remove_project",
            lambda q, c, b: users().remove_project(c, m(q, "user"), b.project), "ProjectRef")


async def _ret(value: Any) -> Any:
    return value


async def _none(call: Awaitable[Any]) -> None:
    await call
