"""One long-lived SSH session per switch.

An exec channel per command costs ~120 ms (a login shell per command); one shell kept open and
fed line by line costs well under a millisecond, so drivers stream commands into it. The session
reconnects lazily: a connection that cannot be made, or a session closed before any reply to a
command (an idle session the host dropped), raises `SwitchUnreachable` (the caller retries on a
fresh one). A command whose end marker does not come within the per-command timeout, or a
session closed in the middle of a reply, raises `SwitchError` saying what was expected and what
came.
"""
from __future__ import annotations

import asyncio
import secrets
import shlex

import asyncssh

from .base import SwitchError, SwitchUnreachable


def got(buf: str) -> str:
    """What came instead of the expected answer, for an error message: its tail, or nothing."""
    tail = buf.strip()
    if not tail:
        return "got nothing"
    return f"got {tail[-200:]!r}" if len(tail) <= 200 else f"got {len(tail)} characters ending {tail[-200:]!r}"


class ShellSession:
    def __init__(self, host: str, port: int, username: str, host_key: str, password: str | None = None,
                 client_key: str | None = None, timeout: float = 5.0) -> None:
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
        except (OSError, asyncssh.Error, TimeoutError) as e:
            await self.close()
            raise SwitchUnreachable(f"ssh {self.username}@{self.host}:{self.port}: {str(e) or type(e).__name__}") \
                from None
        self.connects += 1
        return self._proc

    async def run(self, argv: list[str]) -> tuple[int, str]:
        """Run one command (arguments quoted for the remote shell); its exit status and output."""
        async with self._lock:
            proc = await self._open()
            # `$?` is expanded before printf runs: the command's status.
            line = f"{shlex.join(argv)} </dev/null 2>&1; printf '\\n%s %d\\n' {self._marker} $?\n"
            expected = f"the end of {argv[0]!r} (a shell's status line)"
            out: list[str] = []
            size = 0
            try:
                proc.stdin.write(line)
                async with asyncio.timeout(self.timeout):
                    while True:
                        text = await proc.stdout.readline()
                        if not text:
                            why = f"{self.host}: expected {expected}, but the session closed; {got(''.join(out))}"
                            raise SwitchUnreachable(why) if not out else SwitchError(why)
                        if text.startswith(self._marker + " "):
                            status = int(text.split()[1])
                            break
                        out.append(text)
                        size += len(text)
                        if size > 8 << 20:
                            raise SwitchError(f"{self.host}: expected {expected}; got more than 8 MiB without it")
            except TimeoutError:
                await self.close()
                raise SwitchError(f"{self.host}: expected {expected} within {self.timeout:g}s; "
                                  f"{got(''.join(out))}") from None
            except (OSError, asyncssh.Error) as e:
                await self.close()
                why = f"{self.host}: expected {expected}, but the session closed ({str(e) or type(e).__name__})"
                raise (SwitchUnreachable(why) if not out else SwitchError(why)) from None
            except SwitchError:
                await self.close()
                raise
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
