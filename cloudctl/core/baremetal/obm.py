"""Power control of nodes through their OBM (IPMI): allowed to the node's project and the admin."""
from __future__ import annotations

from typing import Any

from ...drivers.obm.ipmi import Ipmi, ObmError
from .auth import Caller
from .errors import BadArgumentError, OBMError, ProjectMismatchError
from .site import Site

BOOT_DEVICES = ("pxe", "disk", "none")


def ipmi_of(o: dict[str, Any], timeout: float) -> Ipmi:
    """The node's BMC from its OBM record with the password opened (`site.secrets.obm(node)`)."""
    return Ipmi(o["host"], o["port"], o["user"], o["password"], timeout, o.get("cipher_suite"))


class Obm:
    def __init__(self, site: Site, timeout: float) -> None:
        self.site = site
        self.timeout = timeout

    def _bmc(self, caller: Caller, node: str) -> Ipmi:
        n = self.site.node(node)
        self.site.require_node_access(caller, n)
        if not n.obm:
            raise ProjectMismatchError(f"node {node!r} has no OBM registered")
        return ipmi_of(self.site.secrets.obm(n), self.timeout)

    async def power(self, caller: Caller, node: str, action: str, force: Any = False) -> None:
        bmc = self._bmc(caller, node)
        try:
            if action == "on":
                await bmc.power_on()
            elif action == "off":
                await bmc.power_off()
            else:
                await bmc.power_cycle(bool(force))
        except ObmError as e:
            raise OBMError(str(e)) from None

    async def status(self, caller: Caller, node: str) -> dict[str, str]:
        try:
            return {"power_status": await self._bmc(caller, node).power_status()}
        except ObmError as e:
            raise OBMError(str(e)) from None

    async def bootdev(self, caller: Caller, node: str, dev: Any) -> None:
        if dev not in BOOT_DEVICES:
            raise BadArgumentError(f"bootdev must be one of: {', '.join(BOOT_DEVICES)}")
        try:
            await self._bmc(caller, node).set_bootdev(dev)
        except ObmError as e:
            raise OBMError(str(e)) from None
