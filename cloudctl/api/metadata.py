"""The EC2 instance metadata service over HTTP (IMDSv1 and v2), as guests reach it at
169.254.169.254. Who is asking is the TCP source address; `core/metadata.py` says what that
instance is told, this module only maps paths, headers and status codes."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from ..core.cloud import Cloud
from ..core.metadata import VERSIONS, Dir, InstanceMetadata, known_version, token_ttl
from ..store.records import Instance

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_PATH = "/latest/api/token"
SERVICE = web.AppKey("metadata_service", InstanceMetadata)


def metadata_app(cloud: Cloud, *, service: InstanceMetadata | None = None,
                 require_token: bool = False) -> web.Application:
    """The application to bind where guests reach it. `require_token` is EC2's
    `HttpTokens=required` (IMDSv2 only); the default, optional, also serves IMDSv1."""
    svc = service or InstanceMetadata.for_cloud(cloud)
    # Requests are tiny; a guest has no reason to send a body.
    app = web.Application(client_max_size=4096)
    app[SERVICE] = svc
    handler = _Handler(svc, require_token)
    app.router.add_route("*", "/{path:.*}", handler.handle)
    return app


class _Handler:
    def __init__(self, svc: InstanceMetadata, require_token: bool) -> None:
        self.svc = svc
        self.require_token = require_token

    async def handle(self, request: web.Request) -> web.StreamResponse:
        inst = self.svc.by_private_ip(request.remote or "")
        if inst is None:
            return _text(404, "Not Found")
        path = request.path
        if path == TOKEN_PATH:
            if request.method != "PUT":
                return _text(405, "Method Not Allowed", Allow="PUT")
            return self._token(request, inst)
        if request.method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed", Allow="GET, HEAD")
        token = request.headers.get(TOKEN_HEADER)
        if token is not None or self.require_token:
            if not token or not self.svc.token_valid(token, inst):
                return _text(401, "Unauthorized")
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _text(200, "\n".join(VERSIONS))
        if not known_version(parts[0]):
            return _text(404, "Not Found")
        node = self.svc.tree(inst).walk(parts[1:])
        if node is None:
            return _text(404, "Not Found")
        return _render(node)

    def _token(self, request: web.Request, inst: Instance) -> web.Response:
        # A forwarded PUT means something on the instance is proxying for another party
        # (a container, an open proxy): EC2 refuses those so tokens stay on the instance.
        if "X-Forwarded-For" in request.headers:
            return _text(403, "Forbidden")
        ttl = token_ttl(request.headers.get(TTL_HEADER))
        if ttl is None:
            return _text(400, "Bad Request")
        return web.Response(text=self.svc.mint_token(inst, ttl), content_type="text/plain",
                            headers={TTL_HEADER: str(ttl)})


def _render(node: Any) -> web.Response:
    if isinstance(node, Dir):
        lines = [node.labels.get(k) or k + ("/" if isinstance(v, Dir) else "") for k, v in sorted(node.entries.items())]
        return _text(200, "\n".join(lines))
    if isinstance(node, bytes):
        return web.Response(body=node, content_type="application/octet-stream")
    if isinstance(node, dict):
        return _text(200, json.dumps(node, indent=2, default=_json_value))
    return _text(200, str(node))


def _json_value(v: Any) -> str:
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"cannot render {type(v).__name__} in a metadata document")


def _text(status: int, body: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", headers=headers or None)
