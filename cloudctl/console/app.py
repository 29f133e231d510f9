"""The web console: an aiohttp sub-application under /console on the admin listener.

Pages are rendered on the server (Jinja2, autoescaped); htmx (vendored, see static/) swaps parts
of them and listens to Server-Sent Events for the live parts. Every page a user sees is read with
the same core calls the EC2 actions make, with a `Caller` for the signed-in user, so what a user
may see or change is decided in one place (the core), never here.

Guards, all in `_guard`: a session cookie naming a live server-side session; the page's audience
(cloud user or operator); a CSRF token on every POST; and errors turned into pages (a resource
the caller cannot see is a 404 page, like one that does not exist).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from yarl import URL

from ..api.client_certs import ClientCerts
from ..core.cloud import Cloud
from ..core.context import Caller
from ..core.errors import CloudError, ErrorKind
from ..core.throttle import Throttle, Throttled
from ..slim import dataclass
from ..store.journal import JournalError
from ..store.records import User
from .format import FILTERS, GLOBALS
from .sessions import Session, Sessions

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("cloudctl.console")

PREFIX = "/console"
COOKIE = "cloudctl_console"
PRE_COOKIE = "cloudctl_console_login"   # the sign-in form's CSRF token (double submit: no session yet)
HERE = Path(__file__).parent
Audience = Literal["public", "user", "operator", "any"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")

# No inline script, no eval: htmx is told so by its meta config (templates/base.html).
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(audience: Audience) -> Callable[[Handler], Handler]:
    """Marks a handler with who may open it (read by `_guard`)."""
    def mark(fn: Handler) -> Handler:
        fn.audience = audience  # type: ignore[attr-defined]
        return fn
    return mark


@dataclass(slots=True)
class Visit:
    """Who is asking, as `_guard` found them: the session and, for a cloud user, their Caller."""
    session: Session
    caller: Caller | None

    @property
    def user(self) -> User | None:
        return self.caller.user if self.caller else None


class Console:
    """What every console handler shares: the cloud, the templates, the sessions, the throttles."""

    def __init__(self, cloud: Cloud, admin_token: str, logins: Throttle, extras: dict[str, Any]) -> None:
        self.cloud = cloud
        self.cfg = cloud.config.console
        self.admin_token = admin_token
        self.logins = logins                                         # EC2's: one budget per access key
        self.operator_logins = Throttle(cloud.config.login_throttle)  # the admin token's
        self.sessions = Sessions(self.cfg)
        self.extras = extras    # the server's metrics and loop monitor (operator charts)
        self.closing = asyncio.Event()   # set when the server stops: live streams end at once
        self.certs = ClientCerts(cloud.config.x509)   # a verified client certificate's DN (docs/tls.md)

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        """The templates, made at the first page asked for: jinja2 (~1 MiB, 20 modules) is not
        loaded by a controller whose console nobody opens (issue 14's base RSS)."""
        import jinja2
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.globals["P"] = PREFIX
        env.filters.update(FILTERS)
        env.globals.update(GLOBALS)
        return env

    def render(self, request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
        visit: Visit | None = request.get("visit")
        flash: list[tuple[str, str]] = []
        if visit is not None:
            flash, visit.session.flash = visit.session.flash, []
        body = self.env.get_template(template).render(
            visit=visit, csrf=visit.session.csrf if visit else ctx.pop("csrf", ""), flash=flash,
            path=request.path, region=self.cloud.config.region, **ctx)
        return web.Response(text=body, content_type="text/html", charset="utf-8", status=status)

    def error_page(self, request: web.Request, status: int, title: str, message: str) -> web.Response:
        return self.render(request, "error.html", status=status, title=title, message=message)


def visit(request: web.Request) -> Visit:
    return request["visit"]


def caller(request: web.Request) -> Caller:
    c = request["visit"].caller
    assert c is not None, "a user page"
    return c


def flash(request: web.Request, message: str, level: str = "ok") -> None:
    request["visit"].session.flash.append((level, message))


def back(form: Any, default: str = PREFIX + "/") -> str:
    """Where a form sends its user after the POST: its `back` field, if it is a console page."""
    to = str(form.get("back") or "")
    return to if to.startswith(PREFIX + "/") and "//" not in to and "\\" not in to else default


def see_other(to: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(to)


def _not_found_code(e: CloudError) -> bool:
    return e.kind == ErrorKind.NOT_FOUND or e.code.endswith((".NotFound", ".Malformed", "NotFound"))


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    con: Console = request.app[CONSOLE_KEY]
    try:
        resp = await _guarded(con, request, handler)
    except web.HTTPException as e:
        resp = e
    except Throttled as e:
        resp = con.error_page(request, 429, "Too many attempts", str(e))
        resp.headers["Retry-After"] = str(max(1, round(e.retry_after_s)))
    except JournalError:
        resp = con.error_page(request, 503, "Unavailable", "the controller cannot write its journal; "
                              "nothing was changed")
    for k, v in _HEADERS.items():
        resp.headers.setdefault(k, v)
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


async def _guarded(con: Console, request: web.Request, handler: Handler) -> web.StreamResponse:
    audience: Audience | None = getattr(request.match_info.handler, "audience", None)
    if audience is None and request.path.startswith(PREFIX + "/static/"):
        audience = "public"
    if audience == "public":
        return await handler(request)
    if audience is None:   # (a route nobody marked is nobody's: refused, not served)
        return con.error_page(request, 404, "Not found", "There is no such page.")
    session = con.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        if request.headers.get("HX-Request"):   # a part of a page (htmx): the whole page goes to sign-in
            return web.Response(status=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        if request.method == "GET" and request.headers.get("Accept", "") != "text/event-stream":
            raise see_other(f"{PREFIX}/login")
        return con.error_page(request, 401, "Signed out", "Sign in again.")
    who: Caller | None = None
    if session.kind == "user":
        user = con.cloud.users.by_access_key(session.access_key)
        if user is None:   # the user was deleted: the session ends with it
            con.sessions.close(session.sid)
            raise see_other(f"{PREFIX}/login")
        who = Caller(user)
    request["visit"] = Visit(session, who)
    if audience != "any" and audience != session.kind:
        return con.error_page(request, 404, "Not found", "There is no such page.")
    if request.method == "POST":
        form = await request.post()
        given = str(form.get("csrf") or request.headers.get("X-CSRF-Token") or "")
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            return con.error_page(request, 403, "Refused", "The form's security token is missing or "
                                  "stale; reload the page and try again.")
        try:
            return await handler(request)
        except CloudError as e:   # a refused change: back to the form's page, saying why
            flash(request, f"{e.code}: {e.message}", "error")
            came_from = back({"back": URL(request.headers.get("Referer", "")).path})
            raise see_other(back(form, came_from)) from None
    try:
        return await handler(request)
    except CloudError as e:
        if _not_found_code(e):
            return con.error_page(request, 404, "Not found", e.message)
        return con.error_page(request, 400, e.code, e.message)


# -- signing in and out ---------------------------------------------------------------------------

@page("public")
async def login_form(request: web.Request) -> web.Response:
    con: Console = request.app[CONSOLE_KEY]
    token = secrets.token_urlsafe(24)
    resp = con.render(request, "login.html", csrf=token, error="", kind=request.query.get("as", "user"),
                      cert_user=_certificate_user(con, request))
    resp.set_cookie(PRE_COOKIE, token, path=PREFIX, httponly=True, samesite="Strict", secure=request.secure)
    return resp


@page("public")
async def login(request: web.Request) -> web.StreamResponse:
    """A cloud user by access key id and secret (checked as EC2 checks signatures: the key's secret,
    compared in constant time), or the operator by the admin token; both behind a login throttle."""
    con: Console = request.app[CONSOLE_KEY]
    form = await request.post()
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(str(form.get("csrf") or "").encode(), pre.encode()):
        return con.error_page(request, 403, "Refused", "The sign-in form's security token is missing or "
                              "stale; reload the page and try again.")
    kind = str(form.get("kind") or "user")
    kind = kind if kind in ("operator", "certificate") else "user"
    source = request.remote or ""
    if kind == "certificate":
        # As an unsigned EC2 request: a verified certificate alone signs in an x509-only user.
        await con.logins.admit("certificate", source)
        user = _certificate_user(con, request)
        ok = user is not None
        throttle, name, key, kind = con.logins, "certificate", user.access_key if user else "", "user"
    elif kind == "user":
        key = str(form.get("access_key_id") or "").strip()[:128]
        secret = str(form.get("secret_access_key") or "").strip()
        await con.logins.admit(key, source)
        user = con.cloud.users.by_access_key(key)
        ok = hmac.compare_digest(secret.encode(), (user.secret_key if user else "\0" * 40).encode()) \
            and user is not None
        if ok and user is not None:
            try:   # a user holding DNs presents one of them as well, as with EC2 signatures
                con.cloud.users.check_certificate(user, con.certs.dn(request))
            except CloudError:
                ok = False
        throttle, name = con.logins, key
    else:
        given = str(form.get("token") or "").strip()
        await con.operator_logins.admit("operator", source)
        ok = hmac.compare_digest(given.encode(), con.admin_token.encode())
        throttle, name, key = con.operator_logins, "operator", ""
    if not ok:
        throttle.failed(name, source)
        resp = con.render(request, "login.html", status=401, csrf=pre, kind=kind,
                          cert_user=_certificate_user(con, request), error="Those credentials were not accepted.")
        return resp
    throttle.succeeded(name, source)
    old = request.cookies.get(COOKIE)
    if old:
        con.sessions.close(old)
    session = con.sessions.open(kind, key)
    resp = web.HTTPSeeOther(f"{PREFIX}/instances" if kind == "user" else f"{PREFIX}/ops/hosts")
    resp.set_cookie(COOKIE, session.sid, path=PREFIX, httponly=True, samesite="Strict", secure=request.secure)
    resp.del_cookie(PRE_COOKIE, path=PREFIX)
    raise resp


def _certificate_user(con: Console, request: web.Request) -> User | None:
    """The x509-only user whose verified client certificate the request presents, if any."""
    dn = con.certs.dn(request)
    return con.cloud.users.certificate_login(dn) if dn else None


@page("any")
async def logout(request: web.Request) -> web.StreamResponse:
    con: Console = request.app[CONSOLE_KEY]
    con.sessions.close(visit(request).session.sid)
    resp = web.HTTPSeeOther(f"{PREFIX}/login")
    resp.del_cookie(COOKIE, path=PREFIX)
    raise resp


@page("any")
async def home(request: web.Request) -> web.StreamResponse:
    raise see_other(f"{PREFIX}/instances" if visit(request).session.kind == "user" else f"{PREFIX}/ops/hosts")


async def root(request: web.Request) -> web.StreamResponse:
    raise see_other(f"{PREFIX}/")


def console_app(cloud: Cloud, admin_token: str, logins: Throttle, extras: dict[str, Any]) -> web.Application:
    from . import live, operator_pages, service_pages, user_pages
    from .charts import Sampler, sampling
    con = Console(cloud, admin_token, logins, extras)
    app = web.Application(middlewares=[_guard])
    app[CONSOLE_KEY] = con
    sampler = Sampler(cloud, extras.get("metrics"), extras.get("monitor"))
    app[operator_pages.SAMPLER_KEY] = sampler
    app.cleanup_ctx.append(sampling(sampler))

    async def closing(app: web.Application) -> None:
        con.closing.set()
    app.on_shutdown.append(closing)
    r = app.router
    r.add_get("/", home)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_static("/static", HERE / "static", append_version=False)
    live.add_routes(r)   # (first: /instances/live before /instances/{id})
    user_pages.add_routes(r)
    service_pages.add_routes(r)
    operator_pages.add_routes(r)
    return app


def mount_console(admin_app: web.Application, cloud: Cloud, admin_token: str, logins: Throttle,
                  metrics: Any = None, monitor: Any = None) -> Throttle:
    """Serve the console under /console of the admin app; returns the operator sign-in throttle
    (for /metrics)."""
    sub = console_app(cloud, admin_token, logins, {"metrics": metrics, "monitor": monitor})
    admin_app.router.add_get(PREFIX, root)
    admin_app.add_subapp(PREFIX, sub)
    return sub[CONSOLE_KEY].operator_logins
