"""The marketplace over HTTP: the public read-only listener (signed list, image files) and the
admin routes behind the bearer token (publish, subscribe, approve, status)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from ..core.cloud import Cloud
from ..core.errors import CloudError
from ..core.marketplace import imagelist
from ..store.records import MarketImage, PublishedList, Subscription

if TYPE_CHECKING:   # (the core's marketplace is loaded when configured: core/cloud.py)
    from ..core.marketplace.publisher import Publisher
    from ..core.marketplace.subscriber import Subscriber


def public_app(cloud: Cloud) -> web.Application:
    """Served to anyone: subscribers hold no admin token, and everything here is signed or hashed."""

    def publisher() -> Publisher:
        if cloud.publisher is None:
            raise web.HTTPNotFound(text="this cloud publishes no image list\n")
        return cloud.publisher

    async def imagelist_(request: web.Request) -> web.Response:
        pub = publisher()
        cur = pub.current
        if request.match_info["list_id"] != pub.list_id or cur is None:
            raise web.HTTPNotFound(text="no such image list\n")
        etag = f'"{cur.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=cur.signed.encode(), content_type="application/octet-stream",
                            headers={"Cache-Control": "no-cache", "ETag": etag})

    async def image_file(request: web.Request) -> web.StreamResponse:
        pub = publisher()
        im = pub.ami_of(request.match_info["image_uuid"])
        if im is None:
            raise web.HTTPNotFound(text="no such image in the published list\n")
        return web.FileResponse(cloud.images.path_of(im))   # serves Range requests (resume)

    async def metadata(request: web.Request) -> web.Response:
        """StratusLab-style queries: latest entry per (identifier, e-mail), filtered by status."""
        pub = publisher()
        m, q = request.match_info, request.query
        try:
            rows = pub.metadata.query(m.get("identifier") or q.get("identifier"), m.get("email") or q.get("email"),
                                      q.get("status", "valid"), q.get("created"))
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        from ..core.marketplace.stratuslab import entries_xml, entry_json
        if _wants_xml(request):
            return web.Response(body=entries_xml(rows), content_type="application/xml", charset="utf-8")
        return web.json_response([entry_json(e, pub.public_url) for e in rows])

    async def metadata_entry(request: web.Request) -> web.Response:
        pub = publisher()
        m = request.match_info
        entry = pub.metadata.table.get(f"{m['identifier']}/{m['email']}/{m['created']}")
        if entry is None:
            raise web.HTTPNotFound(text="no such metadata entry\n")
        return web.Response(body=entry.signed.encode(), content_type="application/octet-stream")

    app = web.Application(client_max_size=4096)   # read-only: its clients have nothing to send
    r = app.router
    r.add_get("/imagelist/{list_id}", imagelist_)
    r.add_get("/images/{image_uuid}", image_file)
    r.add_get("/metadata", metadata)
    r.add_get("/metadata/{identifier}", metadata)
    r.add_get("/metadata/{identifier}/{email}", metadata)
    r.add_get("/metadata/{identifier}/{email}/{created}", metadata_entry)
    return app


def _wants_xml(request: web.Request) -> bool:
    """XML if asked for (`Accept` preferring it, or StratusLab's `?media=xml`); JSON otherwise."""
    media = request.query.get("media", "").lower()
    if media in ("xml", "json"):
        return media == "xml"
    best = ("", -1.0)
    for i, item in enumerate(request.headers.get("Accept", "").split(",")):
        kind, *params = (p.strip() for p in item.split(";"))
        q = next((float(p[2:]) for p in params if p.startswith("q=") and _is_float(p[2:])), 1.0) - i * 1e-6
        if kind in ("application/xml", "text/xml", "application/rdf+xml", "application/json") and q > best[1]:
            best = (kind, q)
    return best[0] not in ("", "application/json")


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class PublishBody(BaseModel):
    images: list[str] = []


class DeprecateBody(BaseModel):
    image: str
    reason: str


class SubscribeBody(BaseModel):
    url: str
    identifier: str
    endorsers: list[list[str]]
    trust: str
    policy: str = "accept"
    interval_s: float = 3600


class EndorsersBody(BaseModel):
    endorsers: list[list[str]]


def _published(pub: Publisher, cur: PublishedList | None) -> dict[str, Any]:
    if cur is None:
        return {"ListId": pub.list_id, "Url": pub.list_url, "Version": None, "Images": []}
    return {"ListId": pub.list_id, "Url": pub.list_url, "Version": cur.version,
            "Created": imagelist.fmt_time(cur.created), "Expires": imagelist.fmt_time(cur.expires),
            "Images": [{"ImageId": a, "Identifier": pub.image_uuid(a), "Sha512": cur.sha512.get(a),
                        "Url": pub.image_url(a)} for a in cur.image_ids],
            "Deprecated": [{"ImageId": a, "Reason": r} for a, r in cur.deprecated.items()]}


def _sub(s: Subscription) -> dict[str, Any]:
    return {"Id": s.id, "Url": s.url, "Identifier": s.identifier, "Endorsers": s.endorsers, "Trust": s.trust,
            "Policy": s.policy, "IntervalS": s.interval_s, "Version": s.version,
            "Expires": imagelist.fmt_time(s.list_expires) if s.list_expires else None, "Title": s.title,
            "LastResult": s.last_result, "LastMessage": s.last_message}


class MarketplaceAdmin:
    """The admin routes' handlers (registered by `api/marketplace_routes.py`, which loads this module
    at their first call)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def _pub(self) -> Publisher:
        if self.cloud.publisher is None:
            raise CloudError("InvalidRequest", "publishing is not configured (marketplace.publish)")
        return self.cloud.publisher

    def _subs(self) -> Subscriber:
        if self.cloud.subscriber is None:
            raise CloudError("InvalidRequest", "the marketplace is not configured (marketplace:)")
        return self.cloud.subscriber

    async def show(self, request: web.Request) -> web.Response:
        pub = self._pub()
        return web.json_response(_published(pub, pub.current))

    async def publish(self, request: web.Request) -> web.Response:
        body = PublishBody.model_validate(await _json(request))
        pub = self._pub()
        return web.json_response(_published(pub, await pub.publish(body.images)))

    async def deprecate(self, request: web.Request) -> web.Response:
        body = DeprecateBody.model_validate(await _json(request))
        pub = self._pub()
        return web.json_response(_published(pub, await pub.deprecate(body.image, body.reason)))

    async def subscriptions(self, request: web.Request) -> web.Response:
        return web.json_response([_sub(s) for s in self._subs().subs.values()])

    async def subscribe(self, request: web.Request) -> web.Response:
        b = SubscribeBody.model_validate(await _json(request))
        sub = await self._subs().subscribe(b.url, b.identifier, b.endorsers, b.trust, b.policy, b.interval_s)
        return web.json_response(_sub(sub), status=201)

    async def remove(self, request: web.Request) -> web.Response:
        await self._subs().remove(request.match_info["sub_id"])
        return web.json_response({"removed": request.match_info["sub_id"]})

    async def poll(self, request: web.Request) -> web.Response:
        subs = self._subs()
        subs.get(request.match_info["sub_id"])
        return web.json_response(await subs.poll(request.match_info["sub_id"]))

    async def endorsers(self, request: web.Request) -> web.Response:
        b = EndorsersBody.model_validate(await _json(request))
        return web.json_response(_sub(await self._subs().set_endorsers(request.match_info["sub_id"], b.endorsers)))

    async def approve(self, request: web.Request) -> web.Response:
        row = await self._subs().approve(request.match_info["image_id"])
        return web.json_response({"ImageId": row.id, "State": row.state})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response([_image_status(row, done, total) for row, done, total in self._subs().status()])


def _image_status(row: MarketImage, done: int, total: int) -> dict[str, Any]:
    return {"ImageId": row.id, "Subscription": row.subscription, "Identifier": row.identifier,
            "Title": row.title, "State": row.state, "Size": row.size, "Done": done, "Total": total,
            "Sha512": row.sha512, "ListVersion": row.list_version, "Expires": row.expires,
            "Reason": row.reason, "Attempts": row.attempts}


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise CloudError("InvalidRequest", "expected a JSON body") from None
