"""Out-of-band management over IPMI with `ipmitool` (lanplus).

The password travels in the environment (`-E` reads IPMI_PASSWORD), never on a command line
another user could read in the process list.
"""
from __future__ import annotations

import asyncio
import os


class ObmError(Exception):
    """The BMC refused or did not answer; the text is ipmitool's."""


class Ipmi:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 30.0) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.timeout = timeout

    async def _run(self, *args: str) -> str:
        argv = ["ipmitool", "-I", "lanplus", "-H", self.host, "-p", str(self.port), "-U", self.user, "-E",
                "-N", "2", "-R", "2", *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env={**os.environ, "IPMI_PASSWORD": self.password})
        except FileNotFoundError:
            raise ObmError("ipmitool is not installed on the controller") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise ObmError(f"{self.host}:{self.port}: no answer within {self.timeout:.0f} s") from None
        except asyncio.CancelledError:
            proc.kill()   # an abandoned ipmitool must not act later on its own
            await proc.wait()
            raise
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip()
            raise ObmError(f"{self.host}:{self.port}: {text[:300] or f'ipmitool exited {proc.returncode}'}")
        return out.decode(errors="replace")

    async def power_status(self) -> str:
        """"on" or "off"."""
        out = await self._run("chassis", "power", "status")
        return "on" if out.strip().lower().endswith("on") else "off"

    async def power_is_off(self) -> bool:
        """True only when the BMC positively says off (fencing must not guess)."""
        out = await self._run("chassis", "power", "status")
        return out.strip().lower().endswith("off")

    async def power_on(self) -> None:
        await self._run("chassis", "power", "on")

    async def power_off(self) -> None:
        await self._run("chassis", "power", "off")

    async def power_cycle(self, force: bool = False) -> None:
        """Reboot into PXE (HIL's contract): a node that is off is simply powered on."""
        await self._run("chassis", "bootdev", "pxe")
        if await self.power_status() == "off":
            await self.power_on()
        else:
            await self._run("chassis", "power", "reset" if force else "cycle")

    async def set_bootdev(self, dev: str) -> None:
        await self._run("chassis", "bootdev", dev)
