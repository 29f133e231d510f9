"""The administrator's view of the load balancers on the admin listener (bearer token):
`GET /v0/load-balancers` (every load balancer, its owner, address and proxy state) and
`GET /v0/load-balancers/{id}/stats`, the proxy's own statistics page, relayed from the unix
socket it serves it on when `elb.stats_page` is on. Users never reach either."""
from __future__ import annotations

import os

import aiohttp
from aiohttp import web

from ..core.cloud import Cloud
from ..core.errors import CloudError


class ElbAdmin:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v0/load-balancers", self.list)
        r.add_get("/v0/load-balancers/{lb_id}/stats", self.stats_page)

    async def list(self, request: web.Request) -> web.Response:
        names = {u.account_id: u.name for u in self.cloud.users.list()}
        rows = self.cloud.elb.report()
        for row in rows:
            row["user"] = names.get(row["owner"], "")
        return web.json_response({"load_balancers": rows, "orphans_removed": self.cloud.elb.plane.orphans_removed,
                                  "restarts": self.cloud.elb.plane.restarts})

    async def stats_page(self, request: web.Request) -> web.Response:
        lb_id = request.match_info["lb_id"]
        sock = self.cloud.elb.stats_page_socket(lb_id)
        if sock is None:
            raise CloudError.not_found("NotFound", f"no statistics page for {lb_id} (unknown, or elb.stats_page "
                                       "is off)")
        query = request.query_string
        # Through the folder's descriptor: a deep state directory would pass the 108-byte socket limit.
        try:
            fd = os.open(sock.parent, os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            raise CloudError.unavailable("ServiceUnavailable", f"the proxy of {lb_id} has no folder: {e}") from None
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=f"/proc/self/fd/{fd}/{sock.name}"),
                                             timeout=aiohttp.ClientTimeout(total=10)) as s:
                async with s.get("http://proxy/" + (f"?{query}" if query else "")) as resp:
                    body = await resp.read()
                    return web.Response(body=body, status=resp.status,
                                        content_type=resp.content_type or "text/html")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise CloudError.unavailable("ServiceUnavailable", f"the proxy of {lb_id} does not answer: {e}") from None
        finally:
            os.close(fd)
