"""The live parts, over Server-Sent Events.

A user's stream says only *that* one of their instances changed ("changed", no data); the page
then fetches its table again through the ordinary, authorized page (htmx, `hx-trigger=sse:changed`),
so no instance's details travel on the stream. The operator's stream carries the event log's new
lines, rendered (and escaped) by the same template as the page's. Every stream checks its session
at each message and at each keep-alive: a signed-out session's stream ends.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from ..store.records import Event
from .app import CONSOLE_KEY, Console, page, visit

KEEPALIVE_S = 15.0   # a comment line this often: proxies keep the stream, a gone client is noticed
COALESCE_S = 0.2     # changes this close together make one "changed"


async def _open(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n: hello\n\n")
    return resp


def _alive(con: Console, request: web.Request) -> bool:
    return con.sessions.alive(visit(request).session)


def sse(event: str, data: str = "") -> bytes:
    lines = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return f"event: {event}\n{lines}\n".encode()


async def _stream(request: web.Request, wanted: Callable[[Event], bool], render: Callable[[list[Event]], bytes],
                  coalesce: float = 0.0) -> web.StreamResponse:
    con: Console = request.app[CONSOLE_KEY]
    resp = await _open(request)
    closing = asyncio.ensure_future(con.closing.wait())
    try:
        with con.cloud.events.listen() as follower, contextlib.suppress(ConnectionResetError):
            while _alive(con, request):
                got = asyncio.ensure_future(follower.queue.get())
                done, _ = await asyncio.wait((got, closing), timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if got not in done:
                    got.cancel()
                    if closing in done:   # the server is stopping: the stream ends (the browser reconnects)
                        break
                    await resp.write(b": keep-alive\n\n")
                    continue
                batch = [got.result()]
                if coalesce:
                    await asyncio.sleep(coalesce)
                batch += list(follower.pending())
                batch = [e for e in batch if wanted(e)]
                if batch and _alive(con, request):
                    await resp.write(render(batch))
    finally:
        closing.cancel()
    return resp


@page("user")
async def instances_live(request: web.Request) -> web.StreamResponse:
    who = visit(request).caller
    assert who is not None
    account = who.account

    def mine(e: Event) -> bool:
        return e.kind.startswith("instance.") and e.data.get("owner") == account

    return await _stream(request, mine, lambda batch: sse("changed"), COALESCE_S)


@page("operator")
async def events_live(request: web.Request) -> web.StreamResponse:
    con: Console = request.app[CONSOLE_KEY]
    kind = request.query.get("kind") or ""
    row = con.env.get_template("event_row.html")

    def wanted(e: Event) -> bool:
        return not kind or e.kind == kind or e.kind.startswith(kind + ".")

    def render(batch: list[Event]) -> bytes:
        return sse("event", "".join(row.render(e=e) for e in reversed(batch)))

    return await _stream(request, wanted, render)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/instances/live", instances_live)
    r.add_get("/ops/events/live", events_live)
