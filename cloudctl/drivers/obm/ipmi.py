"""Out-of-band management over IPMI with `ipmitool` (lanplus).

The password travels in the environment (`-E` reads IPMI_PASSWORD), never on a command line
another user could read in the process list.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# `ipmitool sol activate` never exits on its own when the BMC goes away, and an orphan left by a
# crashed controller would hold the BMC's only SOL slot: it runs under `setpriv --pdeathsig KILL`
# so it dies with the controller.
_SETPRIV = shutil.which("setpriv")
# ipmitool flushes the node's output as it comes, but not its own "session operational" banner:
# unbuffered stdout shows at once that the session is up.
_STDBUF = shutil.which("stdbuf")


class ObmError(Exception):
    """The BMC refused or did not answer; the text is ipmitool's."""


class Unsupported(ObmError):
    """The BMC answered with an IPMI completion code: it does not implement the command."""


class Ipmi:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 30.0,
                 cipher_suite: int | None = None) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.timeout = timeout
        self.cipher_suite = cipher_suite

    def _argv(self, *args: str) -> list[str]:
        # An explicit cipher suite spares ipmitool its discovery, which BMCs without
        # "Get Channel Cipher Suites" answer only after a 10 s timeout.
        cipher = ["-C", str(self.cipher_suite)] if self.cipher_suite is not None else []
        return ["ipmitool", "-I", "lanplus", *cipher, "-H", self.host, "-p", str(self.port), "-U", self.user,
                "-E", "-N", "2", "-R", "2", *args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IPMI_PASSWORD": self.password}

    async def _spawn(self, argv: list[str], stdin: int) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=self._env())
        except FileNotFoundError:
            raise ObmError("ipmitool is not installed on the controller") from None

    async def _run(self, *args: str) -> str:
        proc = await self._spawn(self._argv(*args), asyncio.subprocess.DEVNULL)
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
            cls = Unsupported if " rsp=0x" in text else ObmError
            raise cls(f"{self.host}:{self.port}: {text[:300] or f'ipmitool exited {proc.returncode}'}")
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

    # -- serial over LAN ---------------------------------------------------------------------------
    async def sol_deactivate(self) -> None:
        """Free the BMC's SOL slot (a BMC allows one session); a slot already free is fine."""
        try:
            await self._run("sol", "deactivate")
        except ObmError as e:
            if "already de-activated" not in str(e):
                raise

    async def sol_active(self) -> bool:
        """Whether the BMC has SOL instance 1 active (IPMI "Get Payload Activation Status", SOL)."""
        out = await self._run("raw", "0x06", "0x4a", "0x01")
        fields = out.split()
        if len(fields) < 2:
            raise Unsupported(f"{self.host}:{self.port}: short payload status {out.strip()!r}")
        return bool(int(fields[1], 16) & 1)

    @asynccontextmanager
    async def sol_session(self) -> AsyncIterator[asyncio.subprocess.Process]:
        """A running `sol activate`: its stdout is the node's serial output, after ipmitool's banner.

        Its stdin is a pipe held open and never written (at end of input ipmitool closes the
        session). Leaving the block kills the process and frees the BMC's slot."""
        argv = self._argv("sol", "activate")
        if _STDBUF:
            argv = [_STDBUF, "-o0", *argv]
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        proc = await self._spawn(argv, asyncio.subprocess.PIPE)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            try:
                await asyncio.shield(self.sol_deactivate())
            except ObmError:
                pass
