"""HTTP to the bare-metal API as its users send it: JSON bodies, HTTP Basic or the admin bearer token."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PREFIX = "/hil/v0"   # HIL's API on the admin endpoint (baremetal.hil_base)


def q(name: str) -> str:
    """A path segment, slashes included, percent-encoded (switch ports like `gi1/0/5`)."""
    return urllib.parse.quote(name, safe="")


class Hil:
    def __init__(self, base: str, token: str | None = None, user: str | None = None, password: str = "") -> None:
        self.base = base
        if user is not None:
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        elif token is not None:
            self.auth = f"Bearer {token}"
        else:
            self.auth = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth
        req = urllib.request.Request(self.base + PREFIX + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, (json.loads(raw) if raw else None)

    def text(self, path: str) -> tuple[int, bytes]:
        """A GET whose answer is not JSON (a node's console): status and raw body."""
        req = urllib.request.Request(self.base + PREFIX + path,
                                     headers={"Authorization": self.auth} if self.auth else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(method, path, body)
        assert status in (200, 202), f"{method} {path}: {status} {out}"
        return out

    def vlan(self, network: str) -> int:
        """The network's VLAN (HIL's `network_id` in `GET /networks`, a string)."""
        return int(self.ok("GET", "/networks")[network]["network_id"])

    def wait_op(self, op_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            st = self.ok("GET", f"/operation/{op_id}")
            if st["status"] != "pending" or time.time() > deadline:
                return st
            time.sleep(0.05)

    def connect(self, node: str, nic: str, network: str, channel: str | None = None) -> dict[str, Any]:
        body = {"network": network, **({"channel": channel} if channel else {})}
        op = self.ok("POST", f"/node/{q(node)}/nic/{q(nic)}/connect_network", body)
        return self.wait_op(op["status_id"])

    def detach(self, node: str, nic: str, network: str) -> dict[str, Any]:
        op = self.ok("POST", f"/node/{q(node)}/nic/{q(nic)}/detach_network", {"network": network})
        return self.wait_op(op["status_id"])
