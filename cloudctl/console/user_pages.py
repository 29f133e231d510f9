"""A cloud user's pages: instances, launch, key pairs, security groups, volumes, addresses, images.

Each handler reads the form, makes the core call an EC2 action makes for the same thing, with
the signed-in user's Caller, and renders or redirects. Refusals (CloudError) are the core's own:
the guard in app.py turns them into a message on the form's page, or a 404 page.
"""
from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from ..core.addresses import Association
from ..core.context import Caller
from ..core.errors import CloudError
from ..core.instance_facts import describe_page
from ..core.launch import LaunchSpec
from ..core.query import Filter, Query
from ..core.sg_permissions import IpRange, Permission, RuleChange
from ..core.tags import Tags
from ..core.volumes import VolumeRequest
from ..store.records import Instance
from .app import CONSOLE_KEY, PREFIX, Console, back, caller, flash, page, see_other

MAX_COUNT = 20   # instances one launch form may ask for


def _con(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]


def _int(form: Any, key: str, default: int | None = None, lo: int = 0, hi: int = 1 << 31) -> int | None:
    raw = str(form.get(key) or "").strip()
    if not raw:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise CloudError("InvalidParameterValue", f"{key} must be a whole number") from None
    if not lo <= n <= hi:
        raise CloudError("InvalidParameterValue", f"{key} must be between {lo} and {hi}")
    return n


def _text(form: Any, key: str) -> str:
    return str(form.get(key) or "").strip()


# -- instances ------------------------------------------------------------------------------------

async def instance_rows(request: web.Request) -> dict[str, Any]:
    """One page of the caller's instances (DescribeInstances' page, facts read at one moment)."""
    con = _con(request)
    state = request.query.get("state", "")
    filters = (Filter("instance-state-name", (state,)),) if state else ()
    q = Query(filters=filters, max_results=con.cfg.page_size, next_token=request.query.get("page") or None)
    page_, token = await describe_page(con.cloud, caller(request), q)
    rows = [f for _, facts in page_ for f in facts]
    return {"rows": rows, "next_page": token, "state": state, "this_page": request.query.get("page", "")}


@page("user")
async def instances(request: web.Request) -> web.Response:
    return _con(request).render(request, "instances.html", **await instance_rows(request))


@page("user")
async def instances_table(request: web.Request) -> web.Response:
    """The table alone: what the live page fetches again when one of its instances changed."""
    return _con(request).render(request, "instances_table.html", **await instance_rows(request))


async def _instance_facts(request: web.Request) -> Any:
    con = _con(request)
    page_, _ = await describe_page(con.cloud, caller(request), Query(ids=(request.match_info["id"],)))
    return page_[0][1][0]


@page("user")
async def instance(request: web.Request) -> web.Response:
    con = _con(request)
    f = await _instance_facts(request)
    user_data = ""
    if f.inst.user_data:
        try:
            user_data = base64.b64decode(f.inst.user_data).decode("utf-8", "replace")
        except ValueError:
            user_data = f.inst.user_data
    return con.render(request, "instance.html", f=f, user_data=user_data)


@page("user")
async def instance_action(request: web.Request) -> web.StreamResponse:
    con, iid, action = _con(request), request.match_info["id"], request.match_info["action"]
    ids, who = [iid], caller(request)
    compute = con.cloud.compute
    if action == "terminate":
        await compute.terminate(who, ids)
    elif action == "stop":
        await compute.stop(who, ids)
    elif action == "start":
        await compute.start(who, ids)
    else:
        await compute.reboot(who, ids)
    flash(request, f"{action} {iid}: requested")
    raise see_other(back(await request.post(), f"{PREFIX}/instances/{iid}"))


@page("user")
async def instance_tag(request: web.Request) -> web.StreamResponse:
    con, iid, form = _con(request), request.match_info["id"], await request.post()
    key = str(form.get("key") or "")
    if form.get("delete"):
        await con.cloud.tags.delete(caller(request), [iid], [(key, None)])
    else:
        await con.cloud.tags.create(caller(request), [iid], Tags.validate_pairs([(key, str(form.get("value") or ""))]))
    raise see_other(back(form, f"{PREFIX}/instances/{iid}"))


@page("user")
async def console_output(request: web.Request) -> web.Response:
    con = _con(request)
    inst, data = await con.cloud.compute.console_output(caller(request), request.match_info["id"])
    return con.render(request, "console_output.html", inst=inst, text=data.decode("utf-8", "replace"))


@page("user")
async def launch_form(request: web.Request) -> web.Response:
    con, who = _con(request), caller(request)
    images, _ = con.cloud.images.describe(who, Query())
    groups, _ = await con.cloud.security_groups.describe(who, Query())
    keys = con.cloud.keypairs.describe(who, Query())
    subnets, _ = con.cloud.network.describe_subnets(who, Query())
    return con.render(request, "launch.html", images=[i for i in images if i.image_type == "machine"],
                      types=list(con.cloud.config.instance_types), zones=con.cloud.config.zones, groups=groups,
                      keys=keys, subnets=subnets, max_count=MAX_COUNT)


@page("user")
async def launch(request: web.Request) -> web.StreamResponse:
    con, form = _con(request), await request.post()
    count = _int(form, "count", 1, 1, MAX_COUNT) or 1
    name = _text(form, "name")
    user_data = str(form.get("user_data") or "")
    spec = LaunchSpec(
        image_id=_text(form, "image_id"), min_count=count, max_count=count,
        instance_type=_text(form, "instance_type") or None, zone=_text(form, "zone") or None,
        subnet_id=_text(form, "subnet_id") or None,
        key_name=_text(form, "key_name") or None, group_ids=tuple(str(g) for g in form.getall("group_id", [])),
        user_data=base64.b64encode(user_data.encode()).decode() if user_data else None,
        instance_tags=tuple(Tags.validate_pairs([("Name", name)])) if name else ())
    _, insts = await con.cloud.compute.run(caller(request), spec)
    flash(request, f"launched {', '.join(i.id for i in insts)}")
    raise see_other(f"{PREFIX}/instances")


def _instances(con: Console, who: Caller, *states: str) -> list[Instance]:
    """The caller's instances in these states (for a form's choice of instance)."""
    groups, _ = con.cloud.compute.describe(who, Query(filters=(Filter("instance-state-name", states),)))
    return [i for _, insts in groups for i in insts]


# -- key pairs ------------------------------------------------------------------------------------

@page("user")
async def keypairs(request: web.Request) -> web.Response:
    con = _con(request)
    return con.render(request, "keypairs.html", keys=con.cloud.keypairs.describe(caller(request), Query()))


@page("user")
async def keypair_create(request: web.Request) -> web.StreamResponse:
    """The private key is the answer to the POST, as a download: it is never kept, nor shown again."""
    con, form = _con(request), await request.post()
    kp, private = await con.cloud.keypairs.create(caller(request), _text(form, "name"), _text(form, "key_type") or None,
                                                  None, ())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in kp.name)[:64] or "key"
    return web.Response(body=private.encode(), content_type="application/x-pem-file", headers={
        "Content-Disposition": f'attachment; filename="{safe}.pem"', "Cache-Control": "no-store"})


@page("user")
async def keypair_delete(request: web.Request) -> web.StreamResponse:
    con = _con(request)
    await con.cloud.keypairs.delete(caller(request), request.match_info["name"], None)
    flash(request, f"deleted key pair {request.match_info['name']}")
    raise see_other(f"{PREFIX}/keypairs")


# -- security groups ------------------------------------------------------------------------------

@page("user")
async def groups(request: web.Request) -> web.Response:
    con = _con(request)
    found, _ = await con.cloud.security_groups.describe(caller(request), Query())
    return con.render(request, "groups.html", groups=found)


@page("user")
async def group(request: web.Request) -> web.Response:
    con, who, gid = _con(request), caller(request), request.match_info["id"]
    found, _ = await con.cloud.security_groups.describe(who, Query(ids=(gid,)))
    rules, _ = con.cloud.security_groups.describe_rules(who, Query(filters=(Filter("group-id", (gid,)),)))
    return con.render(request, "group.html", g=found[0], rules=rules)


@page("user")
async def group_create(request: web.Request) -> web.StreamResponse:
    con, form = _con(request), await request.post()
    g = await con.cloud.security_groups.create(caller(request), _text(form, "name"), _text(form, "description"))
    raise see_other(f"{PREFIX}/security-groups/{g.id}")


@page("user")
async def group_delete(request: web.Request) -> web.StreamResponse:
    con = _con(request)
    await con.cloud.security_groups.delete(caller(request), request.match_info["id"], None)
    flash(request, f"deleted {request.match_info['id']}")
    raise see_other(f"{PREFIX}/security-groups")


@page("user")
async def rule_add(request: web.Request) -> web.StreamResponse:
    con, gid, form = _con(request), request.match_info["id"], await request.post()
    proto = _text(form, "protocol") or "tcp"
    perm = Permission(proto, _int(form, "from_port", None, -1, 65535), _int(form, "to_port", None, -1, 65535),
                      ranges=(IpRange(_text(form, "cidr") or "0.0.0.0/0"),))
    await con.cloud.security_groups.authorize(caller(request), RuleChange(form.get("egress") == "1", gid,
                                                                         permissions=(perm,)))
    raise see_other(f"{PREFIX}/security-groups/{gid}")


@page("user")
async def rule_delete(request: web.Request) -> web.StreamResponse:
    con, gid, form = _con(request), request.match_info["id"], await request.post()
    change = RuleChange(form.get("egress") == "1", gid, rule_ids=(request.match_info["rule"],))
    await con.cloud.security_groups.revoke(caller(request), change)
    raise see_other(f"{PREFIX}/security-groups/{gid}")


# -- volumes --------------------------------------------------------------------------------------

@page("user")
async def volumes(request: web.Request) -> web.Response:
    con, who = _con(request), caller(request)
    vols, _ = con.cloud.volumes.describe(who, Query())
    return con.render(request, "volumes.html", volumes=vols, zones=con.cloud.config.zones,
                      instances=_instances(con, who, "running", "stopped"))


@page("user")
async def volume_create(request: web.Request) -> web.StreamResponse:
    con, form = _con(request), await request.post()
    v = await con.cloud.volumes.create(caller(request), VolumeRequest(zone=_text(form, "zone") or None,
                                                                      size=_int(form, "size", None, 1, 16384)))
    flash(request, f"created {v.id}")
    raise see_other(f"{PREFIX}/volumes")


@page("user")
async def volume_action(request: web.Request) -> web.StreamResponse:
    con, vid, form, who = _con(request), request.match_info["id"], await request.post(), caller(request)
    action = request.match_info["action"]
    if action == "attach":
        await con.cloud.volumes.attach(who, vid, _text(form, "instance_id"), _text(form, "device"))
    elif action == "detach":
        await con.cloud.volumes.detach(who, vid, None, None, False)
    else:
        await con.cloud.volumes.delete(who, vid)
    flash(request, f"{action} {vid}: requested")
    raise see_other(back(form, f"{PREFIX}/volumes"))


# -- elastic IPs ----------------------------------------------------------------------------------

@page("user")
async def addresses(request: web.Request) -> web.Response:
    con, who = _con(request), caller(request)
    rows = con.cloud.addresses.describe(who, Query())
    return con.render(request, "addresses.html", addresses=rows,
                      instances=[i.id for i in _instances(con, who, "running")])


@page("user")
async def address_action(request: web.Request) -> web.StreamResponse:
    con, form, who = _con(request), await request.post(), caller(request)
    action, alloc = request.match_info["action"], _text(form, "allocation_id") or None
    eips = con.cloud.addresses
    if action == "allocate":
        a = await eips.allocate(who, "vpc")
        flash(request, f"allocated {a.public_ip}")
    elif action == "associate":
        await eips.associate(who, Association(allocation_id=alloc, instance_id=_text(form, "instance_id")))
    elif action == "disassociate":
        await eips.disassociate(who, _text(form, "association_id") or None, None)
    else:
        await eips.release(who, alloc, None)
    raise see_other(f"{PREFIX}/addresses")


# -- images ---------------------------------------------------------------------------------------

@page("user")
async def images(request: web.Request) -> web.Response:
    con = _con(request)
    found, _ = con.cloud.images.describe(caller(request), Query())
    return con.render(request, "images.html", images=found, progress=con.cloud.images.progress)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/instances", instances)
    r.add_get("/instances/table", instances_table)
    r.add_get("/instances/new", launch_form)
    r.add_post("/instances", launch)
    r.add_get("/instances/{id}", instance)
    r.add_post("/instances/{id}/{action:stop|start|reboot|terminate}", instance_action)
    r.add_post("/instances/{id}/tags", instance_tag)
    r.add_get("/instances/{id}/console", console_output)
    r.add_get("/keypairs", keypairs)
    r.add_post("/keypairs", keypair_create)
    r.add_post("/keypairs/{name}/delete", keypair_delete)
    r.add_get("/security-groups", groups)
    r.add_post("/security-groups", group_create)
    r.add_get("/security-groups/{id}", group)
    r.add_post("/security-groups/{id}/delete", group_delete)
    r.add_post("/security-groups/{id}/rules", rule_add)
    r.add_post("/security-groups/{id}/rules/{rule}/delete", rule_delete)
    r.add_get("/volumes", volumes)
    r.add_post("/volumes", volume_create)
    r.add_post("/volumes/{id}/{action:attach|detach|delete}", volume_action)
    r.add_get("/addresses", addresses)
    r.add_post("/addresses/{action:allocate|associate|disassociate|release}", address_action)
    r.add_get("/images", images)
