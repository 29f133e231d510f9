"""HIL's OBM daemon (obmd): the admin calls that hand out and revoke a node's token.

obmd serves power and console per node at `<uri>/power_on?token=...` and so on; whoever holds
the node's token may use them. The bare-metal API gets a token when a node's OBM is enabled and
redirects (307) power and console calls there, as HIL does.
"""
from __future__ import annotations

import aiohttp

from .ipmi import ObmError


async def _admin(method: str, uri: str, admin_token: str, timeout: float) -> dict[str, object]:
    """obmd's answer to an admin call on the node's token (its JSON for POST, `{}` for DELETE)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.request(method, f"{uri}/token", auth=aiohttp.BasicAuth("admin", admin_token)) as r:
                if r.status >= 300:
                    raise ObmError(f"obmd at {uri} answered {method} /token with HTTP {r.status}")
                if method == "POST":
                    body = await r.json(content_type=None)
                    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
                        raise ObmError(f"obmd at {uri} answered POST /token without a token")
                    return body
                return {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ObmError(f"obmd at {uri}: {type(e).__name__}: {e}") from None


async def new_token(uri: str, admin_token: str, timeout: float) -> str:
    """A fresh node token (obmd invalidates the previous one)."""
    return str((await _admin("POST", uri, admin_token, timeout))["token"])


async def revoke_token(uri: str, admin_token: str, timeout: float) -> None:
    await _admin("DELETE", uri, admin_token, timeout)
