"""The operator's pages: hosts and capacity, the event log, users, bare metal, marketplace, metrics.

These are what the admin REST API shows (api/admin.py), read from the same core objects and
changed through the same core calls (`Monitor.set_admin`), behind the admin token's sign-in.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.monitor import host_view
from ..core.users import LIVE_STATES
from ..store.records import Instance, MarketImage, Subscription
from .app import CONSOLE_KEY, PREFIX, Console, flash, page, see_other
from .charts import Sampler


def _con(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]


def capacity_rows(con: Console) -> list[dict[str, Any]]:
    """Used and total per instance type and zone, as `cloudctl capacity --by-zone` shows them."""
    return con.cloud.scheduler.capacity(by_zone=True)


@page("operator")
async def hosts(request: web.Request) -> web.Response:
    con = _con(request)
    m, sched = con.cloud.monitor, con.cloud.scheduler
    views = [host_view(h, m, sched) for h in m.hosts.values()]
    return con.render(request, "ops_hosts.html", hosts=views, capacity=capacity_rows(con))


@page("operator")
async def host_admin(request: web.Request) -> web.StreamResponse:
    con, name = _con(request), request.match_info["name"]
    admin = {"enable": "enabled", "disable": "disabled", "offline": "offline"}[request.match_info["admin"]]
    await con.cloud.monitor.set_admin(name, admin)
    flash(request, f"host {name}: {admin}")
    raise see_other(f"{PREFIX}/ops/hosts")


@page("operator")
async def fence_form(request: web.Request) -> web.Response:
    """Fencing restarts the host's instances elsewhere: a page of its own to confirm it on."""
    con, name = _con(request), request.match_info["name"]
    m = con.cloud.monitor
    if name not in m.hosts:
        return con.error_page(request, 404, "Not found", f"host {name} does not exist")
    return con.render(request, "ops_fence.html", h=host_view(m.hosts[name], m, con.cloud.scheduler))


@page("operator")
async def fence(request: web.Request) -> web.StreamResponse:
    con, name = _con(request), request.match_info["name"]
    moved = await con.cloud.monitor.fence(name)
    flash(request, f"host {name} fenced; restarted elsewhere: {', '.join(moved) or 'none'}")
    raise see_other(f"{PREFIX}/ops/hosts")


@page("operator")
async def events(request: web.Request) -> web.Response:
    con = _con(request)
    kind = request.query.get("kind") or None
    rows = con.cloud.events.since(None, kind, None, 200)   # the newest 200; new ones arrive live
    return con.render(request, "ops_events.html", events=list(reversed(rows)), kind=kind or "")


@page("operator")
async def users(request: web.Request) -> web.Response:
    con = _con(request)
    live: dict[str, int] = {}
    for i in con.cloud.store.table(Instance).values():
        if i.state in LIVE_STATES:
            live[i.owner] = live.get(i.owner, 0) + 1
    return con.render(request, "ops_users.html", users=con.cloud.users.list(), live=live,
                      limits=con.cloud.config.limits)


@page("operator")
async def baremetal(request: web.Request) -> web.Response:
    con = _con(request)
    site = con.cloud.baremetal.site
    return con.render(request, "ops_baremetal.html", projects=sorted(site.projects.values(), key=lambda p: p.name),
                      nodes=sorted(site.nodes.values(), key=lambda n: n.name),
                      switches=sorted(site.switches.values(), key=lambda s: s.name),
                      networks=sorted(site.networks.values(), key=lambda n: n.name),
                      ops=[o for o in site.ops.values() if o.status == "pending"])


@page("operator")
async def marketplace(request: web.Request) -> web.Response:
    con = _con(request)
    subs = sorted(con.cloud.store.table(Subscription).values(), key=lambda s: s.url)
    images = sorted(con.cloud.store.table(MarketImage).values(), key=lambda i: (i.subscription, i.title))
    progress = con.cloud.images.progress
    return con.render(request, "ops_marketplace.html", subs=subs, images=images, progress=progress,
                      enabled=con.cloud.subscriber is not None)


@page("operator")
async def metrics(request: web.Request) -> web.Response:
    con = _con(request)
    sampler: Sampler = request.app[SAMPLER_KEY]
    return con.render(request, "ops_metrics.html", charts=sampler.charts())


SAMPLER_KEY: web.AppKey[Sampler] = web.AppKey("sampler")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/ops/hosts", hosts)
    r.add_post("/ops/hosts/{name}/{admin:enable|disable|offline}", host_admin)
    r.add_get("/ops/hosts/{name}/fence", fence_form)
    r.add_post("/ops/hosts/{name}/fence", fence)
    r.add_get("/ops/events", events)
    r.add_get("/ops/users", users)
    r.add_get("/ops/baremetal", baremetal)
    r.add_get("/ops/marketplace", marketplace)
    r.add_get("/ops/metrics", metrics)
