"""One long-lived SSH session per switch.

An exec channel per command costs ~120 ms (a login shell per command); one shell kept open and
fed line by line costs well under a millisecond, so drivers stream commands into it. The session
reconnects lazily: any transport error closes it and raises `SwitchUnreachable`, and the next
command opens a fresh one.
"""
from __future__ import annotations

import asyncio
import secrets
import shlex

import asyncssh

from .base import SwitchError, SwitchUnreachable


class ShellSession:
    def __init__(self, host: str, port: int, username: str, host_key: str, password: str | None = None,
                 client_key: str | None = None, timeout: float = 30.0) -> None:
        self.host, self.port, self.username = host, port, username
        self.password, self.client_key = password, client_key
        where = host if port == 22 else f"[{host}]:{port}"
        self.known_hosts = asyncssh.import_known_hosts(f"{where} {host_key}\n")
        self.timeout = timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[str] | None = None
        self._lock = asyncio.Lock()
        self._marker = "__cloudctl_" + secrets.token_hex(8)
        self.connects = 0

    async def _open(self) -> asyncssh.SSHClientProcess[str]:
        if self._proc is not None:
            return self._proc
        try:
            self._conn = await asyncio.wait_for(asyncssh.connect(
                self.host, self.port, username=self.username, password=self.password,
                client_keys=[self.client_key] if self.client_key else None, known_hosts=self.known_hosts,
                agent_path=None, config=None), self.timeout)
            self._proc = await self._conn.create_process("sh", encoding="utf-8")
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            await self.close()
            raise SwitchUnreachable(f"ssh {self.username}@{self.host}:{self.port}: {e or type(e).__name__}") from None
        self.connects += 1
        return self._proc

    async def run(self, argv: list[str]) -> tuple[int, str]:
        """Run one command (arguments quoted for the remote shell); its exit status and output."""
        async with self._lock:
            proc = await self._open()
            # `$?` is expanded before printf runs: the command's status.
            line = f"{shlex.join(argv)} </dev/null 2>&1; printf '\\n%s %d\\n' {self._marker} $?\n"
            out: list[str] = []
            try:
                proc.stdin.write(line)
                while True:
                    got = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
                    if not got:
                        raise SwitchUnreachable(f"{self.host}: the session closed")
                    if got.startswith(self._marker + " "):
                        status = int(got.split()[1])
                        break
                    out.append(got)
            except (OSError, asyncssh.Error, asyncio.TimeoutError, SwitchUnreachable) as e:
                await self.close()
                if isinstance(e, SwitchUnreachable):
                    raise
                raise SwitchUnreachable(f"{self.host}: {e or type(e).__name__}") from None
            text = "".join(out)
            return status, text[:-1] if text.endswith("\n") else text

    async def check(self, argv: list[str]) -> str:
        status, text = await self.run(argv)
        if status != 0:
            raise SwitchError(f"{argv[0]} exited {status}: {text.strip()[:500]}")
        return text

    async def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        await close_session(proc, conn)


async def close_session(proc: asyncssh.SSHClientProcess[str] | None, conn: asyncssh.SSHClientConnection | None) -> None:
    """End a shell process and its connection, waiting a little for a clean close."""
    if proc is not None:
        proc.close()
    if conn is not None:
        conn.close()
        try:
            await asyncio.wait_for(conn.wait_closed(), 5)
        except (asyncio.TimeoutError, OSError, asyncssh.Error):
            pass
