"""Power control of nodes through their OBM: allowed to the node's project and the admin.

An IPMI node is driven here; a mock node (HIL's test OBM) accepts every call and does nothing;
an obmd node's calls are handed to its obmd (`obmd_target`: the API redirects the client there,
with the node's token, as HIL does), only while its OBM is enabled.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...drivers.obm import obmd
from ...drivers.obm.ipmi import Ipmi, ObmError
from .auth import Caller
from .errors import BadArgumentError, BlockedError, OBMError, ProjectMismatchError
from .site import Site

BOOT_DEVICES = ("pxe", "disk", "none")


def ipmi_of(o: dict[str, Any], timeout: float) -> Ipmi:
    """The node's BMC from its OBM record with the password opened (`site.secrets.obm(node)`)."""
    return Ipmi(o["host"], o["port"], o["user"], o["password"], timeout, o.get("cipher_suite"))


class Obm:
    def __init__(self, site: Site, timeout: float) -> None:
        self.site = site
        self.timeout = timeout

    def _obm(self, caller: Caller, node: str) -> dict[str, Any]:
        n = self.site.node(node)
        self.site.require_node_access(caller, n)
        if not n.obm:
            raise ProjectMismatchError(f"node {node!r} has no OBM registered")
        return dict(n.obm)

    def obmd_target(self, caller: Caller, node: str, path: str) -> str | None:
        """For an obmd node, the URL (with the node's token) a call on `path` is redirected to;
        None for a node whose OBM is driven here."""
        o = self._obm(caller, node)
        if o["type"] != "obmd":
            return None
        n = self.site.node(node)
        if not n.obm_enabled:
            raise BlockedError("OBM is not enabled")
        token = self.site.secrets.obm(n)["node_token"]
        return f"{o['uri']}{path}?token={quote(token, safe='')}"

    def _bmc(self, caller: Caller, node: str) -> Ipmi | None:
        """The BMC to drive, or None for a mock OBM."""
        o = self._obm(caller, node)
        if o["type"] == "mock":
            return None
        if o["type"] != "ipmi":
            raise BadArgumentError(f"node {node!r}: its OBM ({o['type']}) is not driven by this controller")
        return ipmi_of(self.site.secrets.obm(self.site.node(node)), self.timeout)

    async def power(self, caller: Caller, node: str, action: str, force: Any = False) -> None:
        bmc = self._bmc(caller, node)
        if bmc is None:
            return
        try:
            if action == "on":
                await bmc.power_on()
            elif action == "off":
                await bmc.power_off()
            else:
                await bmc.power_cycle(bool(force))
        except ObmError as e:
            raise OBMError(str(e)) from None

    async def status(self, caller: Caller, node: str) -> str:
        bmc = self._bmc(caller, node)
        if bmc is None:
            return "Mock Status"
        try:
            return await bmc.power_status()
        except ObmError as e:
            raise OBMError(str(e)) from None

    async def bootdev(self, caller: Caller, node: str, dev: Any) -> None:
        if dev not in BOOT_DEVICES:
            raise BadArgumentError(f"bootdev must be one of: {', '.join(BOOT_DEVICES)}")
        bmc = self._bmc(caller, node)
        if bmc is None:
            return
        try:
            await bmc.set_bootdev(dev)
        except ObmError as e:
            raise OBMError(str(e)) from None

    async def set_enabled(self, caller: Caller, node: str, enabled: bool) -> None:
        """HIL's node_enable_disable_obm: for an obmd node, get (or revoke) its token from obmd."""
        n = self.site.node(node)
        self.site.require_node_access(caller, n)
        token = None
        if n.obm.get("type") == "obmd":
            opened = self.site.secrets.obm(n)
            try:
                if enabled:
                    token = await obmd.new_token(opened["uri"], opened["admin_token"], self.timeout)
                else:
                    await obmd.revoke_token(opened["uri"], opened["admin_token"], self.timeout)
            except ObmError as e:
                raise OBMError(str(e)) from None
        await self.site.set_obm_enabled(caller, node, enabled, token)
