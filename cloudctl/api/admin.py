"""The admin REST endpoint (JSON), used by the `cloudctl` CLI. Bound to localhost and guarded
by a bearer token kept in the state directory with mode 0600."""
from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..config import AdminListen
from ..core import x509names
from ..core.cloud import Cloud
from ..core.errors import CloudError, ErrorKind
from ..core.images import CLOUD_OWNER
from ..core.monitor import host_view
from ..store.journal import JournalError
from ..store.records import Event, User
from . import listener, marketplace_routes
from .admin_elb import ElbAdmin
from .hil import HilApi, hil_refusal

TOKEN_FILE = "admin.token"
MAX_JSON = 64 * 1024   # every admin and bare-metal body is a small JSON document (image uploads aside)
_STATUS = {ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.WRONG_STATE: 409, ErrorKind.AUTH: 403,
           ErrorKind.UNAVAILABLE: 503}   # the rest (invalid, capacity, limit): 400


def ensure_token(state_dir: Path) -> str:
    """Create the admin token on first start (0600); reuse it afterwards."""
    path = state_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        return token


class NewUser(BaseModel):
    name: str


class UserDn(BaseModel):
    """A certificate subject in any spelling core/x509names.py reads, or a PEM certificate to take it from."""
    dn: str | None = None
    cert: str | None = None


class UserFlags(BaseModel):
    x509_only: bool | None = None
    ec2_only: bool | None = None


class FetchImage(BaseModel):
    url: str
    name: str
    description: str = ""
    sha256: str | None = None
    sha512: str | None = None
    type: str = "machine"
    kernel: str | None = None
    ramdisk: str | None = None


def _user_json(u: User, secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"UserName": u.name, "AccessKeyId": u.access_key, "AccountId": u.account_id,
                           "Created": u.created, "DNs": list(u.dns), "X509Only": u.x509_only,
                           "Ec2Only": u.ec2_only}
    if secret:
        out["SecretAccessKey"] = u.secret_key
    return out


Stats = Callable[[], dict[str, Any]]


class AdminApi:
    def __init__(self, cloud: Cloud, token: str, stats: Stats, cfg: AdminListen | None = None) -> None:
        self.cloud = cloud
        self.token = token
        self.stats = stats
        self.cfg = cfg or AdminListen(port=0)
        self.max_image = int(self.cfg.max_image_gib * 2**30)
        self.hil = HilApi(lambda: cloud.baremetal, token, cloud.config.baremetal.hil_base)   # (built at its first call)
        self.public_paths: set[str] = set()   # served without the token (/metrics: see api/metrics.py)
        self.public_prefixes: tuple[str, ...] = ()   # sub-apps with their own sign-in (the console)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth, self._errors], client_max_size=MAX_JSON)
        r = app.router
        r.add_get("/v0/health", self.health)
        r.add_get("/v0/users", self.list_users)
        r.add_post("/v0/users", self.create_user)
        r.add_delete("/v0/users/{name}", self.delete_user)
        r.add_get("/v0/users/{name}", self.get_user)
        r.add_patch("/v0/users/{name}", self.set_user_flags)
        r.add_post("/v0/users/{name}/dns", self.add_user_dn)
        r.add_delete("/v0/users/{name}/dns", self.remove_user_dn)
        r.add_get("/v0/capacity", self.capacity)
        r.add_get("/v0/hosts", self.hosts)
        r.add_get("/v0/hosts/{name}", self.host)
        r.add_post("/v0/hosts/{name}/{admin:enable|disable|offline}", self.host_admin)
        r.add_post("/v0/hosts/{name}/fence", self.host_fence)
        r.add_get("/v0/images", self.list_images)
        listener.streamed(app, r.add_put("/v0/images", self.import_image), self.max_image)
        r.add_post("/v0/images/fetch", self.fetch_image)
        r.add_get("/v0/images/{image_id}", self.image_status)
        r.add_get("/v0/reconcile", self.reconcile)
        r.add_get("/v0/stats", self.get_stats)
        r.add_post("/v0/checkpoint", self.checkpoint)
        r.add_get("/v0/console/{instance_id}", self.console)
        r.add_get("/v0/events", self.events)
        r.add_get("/v0/networks", self.networks)
        r.add_get("/v0/state/digest", self.state_digest)
        app.add_subapp(self.hil.base, self.hil.app())
        marketplace_routes.add_routes(r, self.cloud)   # (their handlers: at the first call)
        r.add_get("/v0/addresses", self.addresses)
        ElbAdmin(self.cloud).add_routes(r)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if self.hil.owns(request) or request.path in self.public_paths \
                or request.path.startswith(self.public_prefixes):
            # bare-metal routes take HTTP Basic users too; /metrics is public (see api/metrics.py)
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return web.json_response({"error": "Unauthorized", "message": "missing or wrong admin token"},
                                     status=401)
        return await handler(request)

    def refuse(self, request: web.Request, e: listener.BodyRefused) -> web.StreamResponse:
        """A body refused by the listener (too large or too slow), in the route's own format."""
        if self.hil.owns(request):
            return hil_refusal(e)
        return web.json_response({"error": e.code, "message": e.message}, status=e.status)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except CloudError as e:
            return web.json_response({"error": e.code, "message": e.message}, status=_STATUS.get(e.kind, 400))
        except ValidationError as e:
            return web.json_response({"error": "InvalidRequest", "message": str(e.errors()[0]["msg"])},
                                     status=400)
        except JournalError:
            return web.json_response({"error": "ServiceUnavailable", "message": "the controller cannot write "
                                      "its journal (disk full or read-only?); nothing was changed"}, status=503)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def list_users(self, request: web.Request) -> web.Response:
        return web.json_response([_user_json(u) for u in self.cloud.users.list()])

    async def create_user(self, request: web.Request) -> web.Response:
        try:
            body = NewUser.model_validate(await request.json())
        except ValueError:
            raise CloudError("InvalidRequest", 'expected a JSON body {"name": ...}') from None
        user = await self.cloud.users.create(body.name)
        return web.json_response(_user_json(user, secret=True), status=201)

    async def delete_user(self, request: web.Request) -> web.Response:
        await self.cloud.users.delete(request.match_info["name"])
        return web.json_response({"deleted": request.match_info["name"]})

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.cloud.users.table.get(request.match_info["name"])
        if user is None:
            raise CloudError.not_found("NoSuchEntity", f"user {request.match_info['name']!r} does not exist")
        return web.json_response(_user_json(user))

    async def set_user_flags(self, request: web.Request) -> web.Response:
        body = UserFlags.model_validate(await _json_body(request, '{"x509_only": bool, "ec2_only": bool}'))
        user = await self.cloud.users.set_flags(request.match_info["name"], body.x509_only, body.ec2_only)
        return web.json_response(_user_json(user))

    async def add_user_dn(self, request: web.Request) -> web.Response:
        user = await self.cloud.users.add_dn(request.match_info["name"], await _dn_of(request))
        return web.json_response(_user_json(user))

    async def remove_user_dn(self, request: web.Request) -> web.Response:
        user = await self.cloud.users.remove_dn(request.match_info["name"], await _dn_of(request))
        return web.json_response(_user_json(user))

    async def capacity(self, request: web.Request) -> web.Response:
        by_zone = request.query.get("by_zone", "") in ("1", "true", "yes")
        return web.json_response(self.cloud.scheduler.capacity(by_zone))

    async def hosts(self, request: web.Request) -> web.Response:
        m = self.cloud.monitor
        return web.json_response([host_view(h, m, self.cloud.scheduler) for h in m.hosts.values()])

    async def host(self, request: web.Request) -> web.Response:
        m, name = self.cloud.monitor, request.match_info["name"]
        if name not in m.hosts:
            raise CloudError.not_found("NoSuchEntity", f"host {name} does not exist")
        return web.json_response(host_view(m.hosts[name], m, self.cloud.scheduler))

    async def host_admin(self, request: web.Request) -> web.Response:
        admin = {"enable": "enabled", "disable": "disabled", "offline": "offline"}[request.match_info["admin"]]
        h = await self.cloud.monitor.set_admin(request.match_info["name"], admin)
        return web.json_response(host_view(h, self.cloud.monitor, self.cloud.scheduler))

    async def host_fence(self, request: web.Request) -> web.Response:
        moved = await self.cloud.monitor.fence(request.match_info["name"])
        return web.json_response({"host": request.match_info["name"], "restarted": moved})

    async def list_images(self, request: web.Request) -> web.Response:
        return web.json_response([{
            "ImageId": i.id, "Name": i.name, "Owner": i.owner, "Size": i.size, "Sha256": i.sha256,
            "Format": i.disk_format, "Public": i.public} for i in self.cloud.images.table.values()])

    async def import_image(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        if not name:
            raise CloudError("MissingParameter", "the query parameter 'name' is required")

        q = request.query
        chunks = listener.body_chunks(request, self.max_image, self.cfg.client_timeout_s)
        im = await self.cloud.images.import_stream(name, q.get("description", ""), chunks, q.get("sha256"),
                                                   q.get("type", "machine"), q.get("kernel") or None,
                                                   q.get("ramdisk") or None)
        return web.json_response({"ImageId": im.id, "Name": im.name, "Size": im.size, "Sha256": im.sha256,
                                  "Format": im.disk_format}, status=201)

    async def fetch_image(self, request: web.Request) -> web.Response:
        body = FetchImage.model_validate(await request.json())
        im = await self.cloud.images.fetch(CLOUD_OWNER, body.name, body.url, body.description, True,
                                           body.sha256, body.sha512, body.type, body.kernel, body.ramdisk)
        return web.json_response({"ImageId": im.id, "State": im.state}, status=202)

    async def image_status(self, request: web.Request) -> web.Response:
        iid = request.match_info["image_id"]
        im = self.cloud.images.table.get(iid)
        if im is None:
            raise CloudError.not_found("NoSuchEntity", f"image {iid} does not exist")
        done, total, error = self.cloud.images.progress.get(iid, (im.size, im.size, ""))
        return web.json_response({"ImageId": im.id, "Name": im.name, "State": im.state, "Size": im.size,
                                  "Sha256": im.sha256, "Format": im.disk_format, "Done": done, "Total": total,
                                  "Error": error})

    async def reconcile(self, request: web.Request) -> web.Response:
        return web.json_response(self.cloud.compute.reconcile_report)

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def checkpoint(self, request: web.Request) -> web.Response:
        await self.cloud.store.checkpoint()
        return web.json_response({"generation": self.cloud.store.gen})

    async def console(self, request: web.Request) -> web.Response:
        iid = request.match_info["instance_id"]
        inst = self.cloud.compute.table.get(iid)
        if inst is None:
            raise CloudError.not_found("NoSuchEntity", f"instance {iid} does not exist")
        data = await self.cloud.compute.console_bytes(inst, limit=None)
        return web.Response(body=data, content_type="application/octet-stream")

    async def state_digest(self, request: web.Request) -> web.Response:
        """A hash of the whole state, the count of committed changes and the background work
        still running: equal answers around a request prove it changed nothing."""
        store = self.cloud.store
        return web.json_response({"digest": store.digest(), "commits": store.commits,
                                  "pending_work": self.cloud.pending_work()})

    async def networks(self, request: web.Request) -> web.Response:
        return web.json_response(self.cloud.network.usage())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The event log; with follow=1 an NDJSON stream that stays open for new events."""
        q = request.query
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            raise CloudError("InvalidRequest", "limit must be an integer") from None
        kind, subject = q.get("kind") or None, q.get("subject") or None
        events = self.cloud.events
        if q.get("follow", "") not in ("1", "true", "yes"):
            return web.json_response([_event_json(e) for e in events.since(q.get("after"), kind, subject, limit)])
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        with events.listen() as follower:
            backlog = events.since(q.get("after"), kind, subject, limit)
            last = backlog[-1].id if backlog else q.get("after") or ""
            try:
                for ev in backlog:
                    await resp.write(_ndjson(ev))
                async for ev in follower:
                    if ev.id <= last or (kind and not (ev.kind == kind or ev.kind.startswith(kind + "."))) \
                            or (subject and ev.subject != subject):
                        continue
                    await resp.write(_ndjson(ev))
            except ConnectionResetError:
                pass   # the follower went away: how a follow ends, not an error to log
        return resp

    async def addresses(self, request: web.Request) -> web.Response:
        """Every elastic IP held, by whom and where it points, and how full the pool is."""
        names = {u.account_id: u.name for u in self.cloud.users.list()}
        eips = self.cloud.addresses
        held = sorted(eips.table.values(), key=lambda a: tuple(int(x) for x in a.public_ip.split(".")))
        return web.json_response({"pool_size": len(eips.pool), "held": len(held), "addresses": [{
            "PublicIp": a.public_ip, "AllocationId": a.allocation_id, "Owner": a.owner,
            "UserName": names.get(a.owner, ""), "InstanceId": a.instance_id or "", "PrivateIp": a.private_ip or "",
            "AssociationId": a.association_id or "", "NatUnsure": a.nat_unsure} for a in held]})


def _event_json(e: Event) -> dict[str, Any]:
    return {"id": e.id, "time": e.time, "kind": e.kind, "subject": e.subject, "message": e.message,
            "code": e.code, "data": e.data}


def _ndjson(e: Event) -> bytes:
    return (json.dumps(_event_json(e)) + "\n").encode()


async def _json_body(request: web.Request, shape: str) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise CloudError("InvalidRequest", f"expected a JSON body {shape}") from None


async def _dn_of(request: web.Request) -> str:
    """The DN a `{"dn": ...}` or `{"cert": PEM}` body names."""
    body = UserDn.model_validate(await _json_body(request, '{"dn": ...} or {"cert": PEM}'))
    if (body.dn is None) == (body.cert is None):
        raise CloudError("InvalidRequest", 'give one of "dn" and "cert"')
    if body.dn is not None:
        return body.dn
    assert body.cert is not None
    from cryptography import x509  # (loaded when first needed: issue 14)
    try:
        cert = x509.load_pem_x509_certificate(body.cert.encode())
    except ValueError:
        raise CloudError("InvalidParameterValue", "cert is not a PEM certificate") from None
    return x509names.oneline(cert.subject)
