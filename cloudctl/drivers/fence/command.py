"""Fencing by an admin's program (a PDU outlet, a cloud provider's API): `argv... HOST`, run
without a shell in its own process group; exit status 0 means the host is off."""
from __future__ import annotations

import asyncio
import os
import signal

from .base import FenceAgent, FenceError


class CommandFence(FenceAgent):
    kind = "command"

    def __init__(self, argv: list[str], timeout_s: float) -> None:
        self.argv, self.timeout_s = list(argv), timeout_s

    async def fence(self, host: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, host, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise FenceError(f"{self.argv[0]}: cannot run: {e.strerror}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as e:
            _kill_group(proc.pid)
            await proc.wait()
            if isinstance(e, asyncio.CancelledError):
                raise
            raise FenceError(f"{self.argv[0]}: no answer within {self.timeout_s:g} s (killed)") from None
        text = out.decode(errors="replace").strip()
        last = text.splitlines()[-1][:300] if text else ""
        if proc.returncode != 0:
            raise FenceError(f"{self.argv[0]} exited {proc.returncode}" + (f": {last}" if last else ""))
        return f"{self.argv[0]} exited 0" + (f": {last}" if last else "")

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "argv": self.argv, "timeout_s": self.timeout_s}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
