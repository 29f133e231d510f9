"""A user's read-only pages of the other served services: AutoScaling groups, load balancers with
their instances' health, CloudFormation stacks with their events. Each reads through the core call
its service's Describe action makes, with the user's Caller (names are the caller's own)."""
from __future__ import annotations

from aiohttp import web

from ..core.errors import CloudError
from .app import CONSOLE_KEY, Console, caller, page


def _con(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]


@page("user")
async def scaling_groups(request: web.Request) -> web.Response:
    con = _con(request)
    groups, _ = con.cloud.autoscaling.groups.describe(caller(request), [], {}, None, None)
    members = {g.name: sorted(con.cloud.autoscaling.members.of_group(g.owner, g.name), key=lambda m: m.id)
               for g in groups}
    return con.render(request, "scaling_groups.html", groups=groups, members=members)


@page("user")
async def load_balancers(request: web.Request) -> web.Response:
    con, who = _con(request), caller(request)
    lbs, _ = con.cloud.elb.describe(who, [], None, None)
    health = {lb.name: con.cloud.elb.instance_health(who, lb.name, []) for lb in lbs}
    return con.render(request, "load_balancers.html", lbs=lbs, health=health)


@page("user")
async def stacks(request: web.Request) -> web.Response:
    con = _con(request)
    mine = [s for s in con.cloud.cloudformation.stacks.of_owner(caller(request).account)
            if s.status != "DELETE_COMPLETE"]
    return con.render(request, "stacks.html", stacks=mine)


@page("user")
async def stack(request: web.Request) -> web.Response:
    con = _con(request)
    try:
        s = con.cloud.cloudformation.stacks.find(caller(request).account, request.match_info["name"])
    except CloudError as e:   # (CloudFormation says ValidationError, as AWS does; a page is not found)
        raise CloudError.not_found(e.code, e.message) from None
    events = sorted(con.cloud.cloudformation.stacks.events_of(s.id), key=lambda e: e.seq, reverse=True)
    return con.render(request, "stack.html", s=s, events=events)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/scaling-groups", scaling_groups)
    r.add_get("/load-balancers", load_balancers)
    r.add_get("/stacks", stacks)
    r.add_get("/stacks/{name}", stack)
