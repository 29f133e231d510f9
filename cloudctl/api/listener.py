"""What every HTTP listener enforces on what clients send, whatever the API behind it.

- Header timeout: a connection that has not sent a whole request's headers within
  `client_timeout_s` of connecting (or of its previous answer) is closed. This is aiohttp's
  keep-alive timer, which runs from the connection's start and is only reset by an answer.
- Body timeout and size: a request's body is read here, before any handler runs, and must
  arrive within `client_timeout_s` and fit the application's `client_max_size`; a declared
  Content-Length over the limit is refused at once, unread, and a chunked body is cut as it
  passes the limit. Routes that stream their body (image uploads) are marked with `streamed`
  and read it through `body_chunks`, which bounds its size and the wait for each piece.
  Refusals (408, 413) are answered in the API's own format and close the connection.
- Connection cap: past `max_connections` open connections, a new one is answered
  `503` at once and closed, without reading its request.

Answers are never timed: a slow or endless answer (an event or console stream) is the
server's doing, not the client's.

TLS (api/tls.py) is the address's: a `Bound` given an SSL context serves TLS only, its
handshake bounded by `client_timeout_s` like a request's headers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import AbstractRoute

from ..config import Listen

log = logging.getLogger("cloudctl")


class BodyRefused(Exception):
    """A request body too large (413) or too slow (408); answered in the API's own format."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @classmethod
    def too_large(cls, limit: int) -> "BodyRefused":
        return cls(413, "RequestEntityTooLarge", f"the request body exceeds {limit} bytes")

    @classmethod
    def too_slow(cls) -> "BodyRefused":
        return cls(408, "RequestTimeout", "the request body was not received in time")

    LOST = "IncompleteBody"

    @classmethod
    def lost(cls) -> "BodyRefused":
        """The client left mid-body: nobody reads the answer, but it is a refusal, not a fault."""
        return cls(400, cls.LOST, "the connection was lost before the request's end")


Refuse = Callable[[web.Request, BodyRefused], web.StreamResponse]
STREAMED = web.AppKey("streamed_bodies", dict[AbstractRoute, int])   # route -> its own body limit


def plain_refusal(request: web.Request, e: BodyRefused) -> web.StreamResponse:
    """For APIs whose errors are plain HTTP (metadata, marketplace, XML-RPC's transport errors)."""
    return web.Response(status=e.status, text=e.message + "\n")


def streamed(app: web.Application, route: AbstractRoute, limit: int) -> None:
    """Let `route` read its own body (with `body_chunks`), up to `limit` bytes."""
    app.setdefault(STREAMED, {})[route] = limit


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DIRECT = web.AppKey("direct_handlers", dict[str, Handler])   # method -> its handler, on every path
DIRECT_LIMITS = web.AppKey("direct_limits", dict[str, int])   # method -> its body limit


def direct(app: web.Application, method: str, handler: Handler, limit: int) -> None:
    """Serve `method` on every path with `handler`, which reads its own body (as a `streamed`
    route) up to `limit` bytes. The app's routes must say the same (`start` may serve the app
    without this): when served by `start`, such a request goes to `handler` straight from the
    connection, past the router, the middlewares and the guard's generic part (about a tenth
    of a small request's cost), with the same checks and refusals."""
    app.setdefault(DIRECT, {})[method] = handler
    app.setdefault(DIRECT_LIMITS, {})[method] = limit


async def body_chunks(request: web.Request, limit: int, idle_s: float) -> AsyncIterator[bytes]:
    """A streamed body, piece by piece: refused past `limit` bytes, or when the client sends
    nothing for `idle_s` (a large upload may take long, but it must keep moving)."""
    total = 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await request.content.read(1 << 20)
        except TimeoutError:
            raise BodyRefused.too_slow() from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise BodyRefused.too_large(limit)
        yield chunk


def _guard(limit: int, timeout_s: float, refuse: Refuse) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            own = request.app.get(STREAMED, {}).get(request.match_info.route)
            cap = limit if own is None else own
            _declared_within(request, cap)
            if own is None and request.body_exists:
                try:
                    async with asyncio.timeout(timeout_s):
                        await request.read()   # kept by the request: handlers read it again for free
                except TimeoutError:
                    raise BodyRefused.too_slow() from None
                except web.HTTPRequestEntityTooLarge:
                    raise BodyRefused.too_large(cap) from None
                except ConnectionResetError:   # (aiohttp's "Connection lost" mid-body)
                    raise BodyRefused.lost() from None
            return await handler(request)
        except BodyRefused as e:
            return _refused(refuse, request, e)
    return guard


def _declared_within(request: web.BaseRequest, cap: int) -> None:
    """A declared length over `cap` is refused before a byte of the body is read."""
    if request.content_length is not None and request.content_length > cap:
        raise BodyRefused.too_large(cap)


def _refused(refuse: Refuse, request: web.Request, e: BodyRefused) -> web.StreamResponse:
    resp = refuse(request, e)
    resp.force_close()   # the rest of the body may still be on the wire
    return resp


def _dispatch(app: web.Application, refuse: Refuse) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The server's handler for an app with `direct` methods: those go to their handler with the
    guard's checks for a streamed route (a declared length over the limit refused unread, a
    BodyRefused answered by `refuse` on a connection that closes); the rest, and a request that
    says Expect (the router's expect handler answers it first), go through the app as usual."""
    handlers, limits = app[DIRECT], app[DIRECT_LIMITS]
    routed = app._handle

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        handler = handlers.get(request.method)
        req = cast(web.Request, request)   # (made by the app's request factory)
        if handler is None or hdrs.EXPECT in request.headers:
            return await routed(req)
        try:
            _declared_within(request, limits[request.method])
            return await handler(req)
        except BodyRefused as e:
            return _refused(refuse, req, e)
    return dispatch


class _Counted(web.RequestHandler):
    """aiohttp's connection handler, giving its slot back when the connection ends."""

    def __init__(self, release: Callable[[], None], *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._release = release

    def connection_lost(self, exc: BaseException | None) -> None:
        release, self._release = self._release, _nothing
        release()
        super().connection_lost(exc)


def _nothing() -> None:
    pass


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n")


class _Refused(asyncio.Protocol):
    """A connection over the cap: told so, closed, its request never read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        tr.write(_BUSY)
        tr.close()


class Bound:
    """An API's address, bound before the cloud is built, so that what is built knows the real
    port (`port: 0` in tests) and a port in use fails the start before the state is opened. It does
    not listen yet: connections are refused until an app is served on it (`start`)."""

    def __init__(self, cfg: Listen, tls: ssl.SSLContext | None = None) -> None:
        self.cfg = cfg
        self.tls = tls
        self.server: asyncio.AbstractServer | None = None
        self.port = cfg.port
        self._accept: Callable[[], asyncio.BaseProtocol] = _Refused   # replaced by the site that serves

    async def bind(self) -> None:
        loop = asyncio.get_running_loop()
        tls_kw: dict[str, Any] = {} if self.tls is None else {
            "ssl": self.tls, "ssl_handshake_timeout": self.cfg.client_timeout_s}
        self.server = await loop.create_server(lambda: self._accept(), self.cfg.listen, self.cfg.port,
                                               reuse_address=True, backlog=BACKLOG, start_serving=False, **tls_kw)
        self.port = self.server.sockets[0].getsockname()[1]

    async def serve(self, accept: Callable[[], asyncio.BaseProtocol]) -> asyncio.AbstractServer:
        assert self.server is not None, "bind first"
        self._accept = accept
        await self.server.start_serving()
        return self.server

    def close(self) -> None:
        """Let the address go (a no-op once closed, or for a site's server, which its runner closes)."""
        if self.server is not None:
            self.server.close()


BACKLOG = 128   # aiohttp's default


class _CappedSite(web.BaseSite):
    """A site on a `Bound` address whose protocol factory hands out at most `cap` connections at a time."""

    def __init__(self, runner: web.AppRunner, bound: Bound, handler_kw: dict[str, Any]) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self.cap, self.open, self.refused = bound.cfg.max_connections, 0, 0
        self._bound = bound
        self._handler_kw = handler_kw

    @property
    def name(self) -> str:
        scheme = "https" if self._bound.tls is not None else "http"
        return f"{scheme}://{self._bound.cfg.listen}:{self._bound.port}"

    def _release(self) -> None:
        self.open -= 1

    def _accept(self) -> asyncio.BaseProtocol:
        if self.open >= self.cap:
            self.refused += 1
            return _Refused()
        self.open += 1
        server = self._runner.server
        assert server is not None
        return _Counted(self._release, server, loop=asyncio.get_running_loop(), **self._handler_kw)

    async def start(self) -> None:
        await web.BaseSite.start(self)   # registers the site with its runner, which closes its server
        self._server = await self._bound.serve(self._accept)


class Listener:
    """One API on one address: its runner, site and bound port."""

    def __init__(self, runner: web.AppRunner, site: _CappedSite, port: int) -> None:
        self.runner, self.site, self.port = runner, site, port

    async def stop(self) -> None:
        await self.runner.cleanup()


def write_ports(state_dir: Path, listeners: Mapping[str, Listener]) -> Path:
    """Write `ports.json` ({name: bound port}) once every listener is up, so a supervisor or a
    test that configured `port: 0` reads the real ports instead of parsing the banner. Written
    whole under a temporary name, then renamed: a reader never sees half of it. Private (0600)
    like every file in the state dir."""
    path = state_dir / "ports.json"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({name: ln.port for name, ln in listeners.items()}) + "\n")
    os.replace(tmp, path)
    return path


async def start(app: web.Application, bound: Bound, refuse: Refuse = plain_refusal) -> Listener:
    """Serve `app` on `bound` as its config says, with the guards above; `refuse` renders a refused body."""
    cfg = bound.cfg
    limit: int = app._client_max_size   # aiohttp keeps it private; each API states it once, there
    app.middlewares.insert(0, _guard(limit, cfg.client_timeout_s, refuse))
    # keepalive_timeout also closes connections that never finish sending a request's headers.
    # Lingering: after an answer given before the body was read (a refusal), the rest is drained
    # and dropped for this long, so the client reads the answer before the connection closes.
    handler_kw: dict[str, Any] = {"access_log": None, "keepalive_timeout": cfg.client_timeout_s,
                                  "lingering_time": min(2.0, cfg.client_timeout_s)}
    runner = web.AppRunner(app, handle_signals=False, **handler_kw)
    await runner.setup()
    if app.get(DIRECT):
        assert runner.server is not None
        runner.server.request_handler = _dispatch(app, refuse)   # (read by each connection as it opens)
    site = _CappedSite(runner, bound, handler_kw)
    try:
        await site.start()
    except BaseException:   # e.g. it cannot listen: nothing of this listener is left behind
        await runner.cleanup()
        bound.close()
        raise
    return Listener(runner, site, bound.port)


def make_room(caps: list[int], spare: int = 1024) -> None:
    """Raise the open-file limit so the listeners' caps, not the process's limit, are what
    refuses connections (a common default soft limit is 1024 for the whole process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sum(caps) + spare
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("open files limited to %d (hard limit); the listeners' max_connections add up "
                        "to %d: connections may be refused for want of descriptors first", new, sum(caps))
