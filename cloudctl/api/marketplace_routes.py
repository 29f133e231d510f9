"""The marketplace's admin routes, registered at start with handlers loaded at their first call.

Every admin endpoint serves them (they answer "not configured" without a `marketplace:` section),
but their handlers bring the image list's models (pydantic, ~0.3 MiB with `api/marketplace.py`):
issue 14's base RSS. The routes, their methods and their order are those `api/marketplace.py`'s
handlers had when registered directly, so the answers (404, 405 and its Allow) are unchanged.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..core.cloud import Cloud
    from .marketplace import MarketplaceAdmin

# (method, path, MarketplaceAdmin's handler)
ROUTES = (
    ("get", "/v0/marketplace/published", "show"),
    ("post", "/v0/marketplace/publish", "publish"),
    ("post", "/v0/marketplace/deprecate", "deprecate"),
    ("get", "/v0/marketplace/subscriptions", "subscriptions"),
    ("post", "/v0/marketplace/subscriptions", "subscribe"),
    ("delete", "/v0/marketplace/subscriptions/{sub_id}", "remove"),
    ("post", "/v0/marketplace/subscriptions/{sub_id}/poll", "poll"),
    ("put", "/v0/marketplace/subscriptions/{sub_id}/endorsers", "endorsers"),
    ("post", "/v0/marketplace/images/{image_id}/approve", "approve"),
    ("get", "/v0/marketplace/status", "status"),
)


def add_routes(r: web.UrlDispatcher, cloud: Cloud) -> None:
    """Register ROUTES (GET ones answer HEAD too, as `add_get` does); the handlers' module is
    imported and their object built at the first request to any of them."""
    held: list[MarketplaceAdmin] = []

    def handler(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not held:
                from .marketplace import MarketplaceAdmin
                held.append(MarketplaceAdmin(cloud))
            return await getattr(held[0], name)(request)
        return handle

    for method, path, name in ROUTES:
        getattr(r, f"add_{method}")(path, handler(name))
