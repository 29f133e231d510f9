"""Fencing through the host's BMC over IPMI (as pacemaker's fence_ipmilan): power off, then
read the power status until the BMC says off."""
from __future__ import annotations

import asyncio
import time

from ..obm.ipmi import Ipmi, ObmError
from .base import FenceAgent, FenceError

POLL_S = 1.0


class IpmiFence(FenceAgent):
    kind = "ipmi"

    def __init__(self, host: str, port: int, user: str, password: str, timeout_s: float) -> None:
        self.bmc, self.port, self.timeout_s = host, port, timeout_s
        self.ipmi = Ipmi(host, port, user, password, timeout=timeout_s)

    async def fence(self, host: str) -> str:
        deadline = time.monotonic() + self.timeout_s
        try:
            await self.ipmi.power_off()
            while True:
                self.ipmi.timeout = max(1.0, deadline - time.monotonic())
                if await self.ipmi.power_is_off():
                    return f"BMC {self.bmc}:{self.port} reports power off"
                if time.monotonic() >= deadline:
                    raise FenceError(f"BMC {self.bmc}:{self.port} still reports power on "
                                     f"{self.timeout_s:g} s after power off")
                await asyncio.sleep(POLL_S)
        except ObmError as e:
            raise FenceError(f"IPMI: {e}") from None
        finally:
            self.ipmi.timeout = self.timeout_s

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "bmc": f"{self.bmc}:{self.port}", "timeout_s": self.timeout_s}
