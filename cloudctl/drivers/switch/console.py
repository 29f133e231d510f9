"""An interactive switch CLI over one long-lived asyncssh shell: prompts, enable mode, paging
off, and errors recognized in the replies (`% Invalid input…` on real switches).

Commands are sent one line at a time and the reply is everything up to the next prompt, so the
session always knows which mode it is in. A broken session raises `SwitchUnreachable` and is
reopened on the next command.
"""
from __future__ import annotations

import asyncio
import re

import asyncssh

from .base import SwitchError, SwitchUnreachable
from .ssh import close_session

_PROMPT = re.compile(r"(?:^|[\r\n])([A-Za-z0-9._-]+)(\([A-Za-z0-9/._-]+\))?([>#]) ?$")
_MORE = re.compile(r"--More--|More: <space>")
_ERRORS = ("% Invalid", "% Incomplete", "% Ambiguous", "% Unknown", "% Unrecognized", "% Error",
           "No such command", "Invalid input")


class ConsoleSession:
    def __init__(self, host: str, port: int, username: str, password: str | None, host_key: str,
                 enable_password: str = "", paging_off: str = "terminal length 0", timeout: float = 30.0) -> None:
        self.host, self.port, self.username, self.password = host, port, username, password
        where = host if port == 22 else f"[{host}]:{port}"
        self.known_hosts = asyncssh.import_known_hosts(f"{where} {host_key}\n")
        self.enable_password = enable_password
        self.paging_off = paging_off
        self.timeout = timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[str] | None = None
        self._lock = asyncio.Lock()
        self.mode = ""            # "", "(config)", "(config-if)", ...
        self.connects = 0

    async def _read_prompt(self, proc: asyncssh.SSHClientProcess[str], also: re.Pattern[str] | None = None) -> str:
        buf = ""
        while True:
            chunk = await asyncio.wait_for(proc.stdout.read(65536), self.timeout)
            if not chunk:
                raise SwitchUnreachable(f"{self.host}: the session closed")
            buf += chunk
            if _MORE.search(buf[-40:]):
                proc.stdin.write(" ")
                buf = _MORE.sub("", buf)
                continue
            if also is not None and also.search(buf[-40:]):
                return buf
            m = _PROMPT.search(buf)
            if m and m.end() == len(buf):
                self.mode = (m.group(2) or "") + m.group(3)
                return buf[:m.start()]

    async def _open(self) -> asyncssh.SSHClientProcess[str]:
        if self._proc is not None:
            return self._proc
        try:
            self._conn = await asyncio.wait_for(asyncssh.connect(
                self.host, self.port, username=self.username, password=self.password, client_keys=None,
                known_hosts=self.known_hosts, agent_path=None, config=None), self.timeout)
            proc = await self._conn.create_process(term_type="vt100", term_size=(200, 50), encoding="utf-8")
            self._proc = proc
            await self._read_prompt(proc)
            if self.mode.endswith(">"):
                proc.stdin.write("enable\n")
                out = await self._read_prompt(proc, re.compile(r"[Pp]assword: ?$"))
                if out.rstrip().lower().endswith("password:"):
                    proc.stdin.write(self.enable_password + "\n")
                    await self._read_prompt(proc)
                if not self.mode.endswith("#"):
                    raise SwitchError(f"{self.host}: enable mode refused")
            if self.paging_off:
                proc.stdin.write(self.paging_off + "\n")
                await self._read_prompt(proc)
        except (OSError, asyncssh.Error, asyncio.TimeoutError, SwitchUnreachable) as e:
            await self.close()
            raise SwitchUnreachable(f"ssh {self.username}@{self.host}:{self.port}: {e or type(e).__name__}") from None
        except SwitchError:
            await self.close()
            raise
        self.connects += 1
        return proc

    async def send(self, lines: list[str]) -> str:
        """Send lines in order; the replies, joined. Stops at the first line the switch rejects."""
        async with self._lock:
            proc = await self._open()
            replies = []
            for line in lines:
                if "\n" in line or "\r" in line:
                    raise SwitchError("a command line cannot contain a line break")
                try:
                    proc.stdin.write(line + "\n")
                    reply = await self._read_prompt(proc)
                    while line.strip() and line.strip() not in reply.split("\n", 1)[0]:
                        reply = await self._read_prompt(proc)   # a stray prompt, not this reply
                except (OSError, asyncssh.Error, asyncio.TimeoutError, SwitchUnreachable) as e:
                    await self.close()
                    raise SwitchUnreachable(f"{self.host}: {e or type(e).__name__}") from None
                # The echo of the command comes first; the switch's answer follows it.
                answer = reply.split("\n", 1)[1] if "\n" in reply else ""
                if any(marker in answer for marker in _ERRORS):
                    await self._reset(proc)
                    raise SwitchError(f"{self.host}: {line!r} refused: {answer.strip()[:300]}")
                replies.append(answer)
            return "".join(replies)

    async def confirm(self, line: str, question: re.Pattern[str], answer: str) -> str:
        """A command that asks before acting (`copy … (y/n)`): answer it, then read to the prompt."""
        async with self._lock:
            proc = await self._open()
            try:
                proc.stdin.write(line + "\n")
                out = await self._read_prompt(proc, question)
                if question.search(out[-40:]):
                    proc.stdin.write(answer)     # a single key: these questions read one
                    out += await self._read_prompt(proc)
            except (OSError, asyncssh.Error, asyncio.TimeoutError, SwitchUnreachable) as e:
                await self.close()
                raise SwitchUnreachable(f"{self.host}: {e or type(e).__name__}") from None
            if any(marker in out for marker in _ERRORS) or "Not Saved" in out:
                raise SwitchError(f"{self.host}: {line!r} failed: {out.strip()[:300]}")
            return out

    async def _reset(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        """Back to the enable prompt after an error, so the next command starts clean."""
        for _ in range(4):
            if self.mode == "#":
                return
            proc.stdin.write("exit\n")
            await self._read_prompt(proc)

    async def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self.mode = ""
        await close_session(proc, conn)
