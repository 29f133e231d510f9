"""An interactive switch CLI over one long-lived asyncssh shell: prompts, enable mode, paging
off, and errors recognized in the replies (`% Invalid input…` on real switches).

Commands are sent one line at a time and the reply is everything up to the next prompt, so the
session always knows which mode it is in. Every wait has a deadline (the driver's per-command
timeout), and a switch that does not answer as expected ends the call with what was expected and
what came instead:

- the TCP/SSH connection cannot be made, or a session reused from an earlier call turns out to
  be closed before its first reply: `SwitchUnreachable` (the caller reconnects and retries);
- no prompt before the deadline (a chatty or mute switch, a CLI of another family), or the
  switch closing the session in the middle of a conversation: `SwitchError` with the tail of
  what came. Retrying would only repeat it, so the operation fails at once.
"""
from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import asyncssh
from pydantic import Field

from .base import DriverOptions, Secret, SwitchError, SwitchUnreachable
from .ssh import close_session, got


class CliOptions(DriverOptions):
    """What every CLI family needs to reach its switch: SSH with a pinned host key, the login,
    and the enable password where the CLI asks for one."""

    hostname: Annotated[str, Field(pattern=r"^[A-Za-z0-9.:_-]+$")]
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]+$")]
    password: Secret
    host_key: Annotated[str, Field(pattern=r"^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+$")]
    enable_password: Secret = ""

# `name>` / `name#` / `name(config-if-Gi1/0/1)#`; Brocade's is `SSH@name#`.
_PROMPT = re.compile(r"(?:^|[\r\n])([A-Za-z0-9._@-]+)(\([A-Za-z0-9/._-]+\))?([>#]) ?$")
_MORE = re.compile(r"--More--|More: <space>")
_ERRORS = ("% Invalid", "% Incomplete", "% Ambiguous", "% Unknown", "% Unrecognized", "% Error",
           "No such command", "Invalid input")
_MAX_REPLY = 8 << 20      # a reply larger than this is not a switch answering a command
EXPECTED_PROMPT = "a CLI prompt (name> or name#)"


class _Closed(SwitchError):
    """The switch ended the session while we waited for a reply."""


class ConsoleSession:
    @classmethod
    def of(cls, o: CliOptions, timeout: float, **kw: Any) -> ConsoleSession:
        """A session to the switch `o` names (kw: `paging_off`, `errors`)."""
        return cls(o.hostname, o.ssh_port, o.username, o.password, o.host_key, o.enable_password,
                   timeout=timeout, **kw)

    def __init__(self, host: str, port: int, username: str, password: str | None, host_key: str,
                 enable_password: str = "", paging_off: str = "terminal length 0", timeout: float = 5.0,
                 errors: tuple[str, ...] = ()) -> None:
        self.host, self.port, self.username, self.password = host, port, username, password
        where = host if port == 22 else f"[{host}]:{port}"
        self.known_hosts = asyncssh.import_known_hosts(f"{where} {host_key}\n")
        self.enable_password = enable_password
        self.paging_off = paging_off
        self.timeout = timeout
        self.errors = _ERRORS + errors
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[str] | None = None
        self._lock = asyncio.Lock()
        self.mode = ""            # "", "(config)", "(config-if)", ...
        self.connects = 0

    async def _read_prompt(self, proc: asyncssh.SSHClientProcess[str], after: str,
                           also: re.Pattern[str] | None = None) -> str:
        """Everything up to the next prompt (or `also`), within the per-command timeout."""
        buf = ""
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    chunk = await proc.stdout.read(65536)
                    if not chunk:
                        raise _Closed(f"{self.host}: the switch closed the session after {after} "
                                      f"(expected {EXPECTED_PROMPT}); {got(buf)}")
                    buf += chunk
                    if len(buf) > _MAX_REPLY:
                        raise SwitchError(f"{self.host}: expected {EXPECTED_PROMPT} after {after}; "
                                          f"got more than {_MAX_REPLY >> 20} MiB without one, ending {buf[-200:]!r}")
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
        except TimeoutError:
            raise SwitchError(f"{self.host}: expected {EXPECTED_PROMPT} within {self.timeout:g}s after {after}; "
                              f"{got(buf)}") from None

    async def _open(self) -> asyncssh.SSHClientProcess[str]:
        if self._proc is not None:
            return self._proc
        try:
            self._conn = await asyncio.wait_for(asyncssh.connect(
                self.host, self.port, username=self.username, password=self.password, client_keys=None,
                known_hosts=self.known_hosts, agent_path=None, config=None), self.timeout)
            proc = await self._conn.create_process(term_type="vt100", term_size=(200, 50), encoding="utf-8")
        except (OSError, asyncssh.Error, TimeoutError) as e:
            await self.close()
            raise SwitchUnreachable(f"ssh {self.username}@{self.host}:{self.port}: {str(e) or type(e).__name__}") \
                from None
        self._proc = proc
        try:
            await self._read_prompt(proc, "login")
            if self.mode.endswith(">"):
                proc.stdin.write("enable\n")
                out = await self._read_prompt(proc, "'enable'", re.compile(r"[Pp]assword: ?$"))
                if out.rstrip().lower().endswith("password:"):
                    proc.stdin.write(self.enable_password + "\n")
                    out = await self._read_prompt(proc, "the enable password")
                if not self.mode.endswith("#"):
                    raise SwitchError(f"{self.host}: 'enable' refused: expected the name# prompt; "
                                      f"{got(out)}, then a {self.mode!r} prompt")
            if self.paging_off:
                proc.stdin.write(self.paging_off + "\n")
                # Some CLIs print their answer without a line break before the prompt.
                await self._read_prompt(proc, repr(self.paging_off), re.compile(r"[>#] ?$"))
        except _Closed as e:
            await self.close()     # let in and thrown out: busy, or not ready yet; worth a retry
            raise SwitchUnreachable(str(e)) from None
        except (OSError, asyncssh.Error) as e:
            await self.close()
            raise SwitchUnreachable(f"{self.host}: expected {EXPECTED_PROMPT} at login, but the session closed "
                                    f"({str(e) or type(e).__name__})") from None
        except SwitchError:
            await self.close()
            raise
        self.connects += 1
        return proc

    async def send(self, lines: list[str]) -> str:
        """Send lines in order; the replies, joined. Stops at the first line the switch rejects."""
        async with self._lock:
            reused = self._proc is not None
            proc = await self._open()
            replies = []
            for n, line in enumerate(lines):
                if "\n" in line or "\r" in line:
                    raise SwitchError("a command line cannot contain a line break")
                try:
                    proc.stdin.write(line + "\n")
                    reply = await self._read_prompt(proc, repr(line))
                    while line.strip() and line.strip() not in reply.split("\n", 1)[0]:
                        reply = await self._read_prompt(proc, repr(line))   # a stray prompt, not this reply
                except (_Closed, OSError, asyncssh.Error) as e:
                    await self.close()
                    why = str(e) if isinstance(e, _Closed) else (
                        f"{self.host}: expected {EXPECTED_PROMPT} after {line!r}, but the session closed "
                        f"({str(e) or type(e).__name__})")
                    if reused and n == 0:     # an idle session the switch had dropped: reconnect
                        raise SwitchUnreachable(why) from None
                    raise SwitchError(why) from None
                except SwitchError:
                    await self.close()        # out of step with the switch: start afresh next time
                    raise
                # The echo of the command comes first; the switch's answer follows it.
                answer = reply.split("\n", 1)[1] if "\n" in reply else ""
                bad = next((m for m in self.errors if m in answer), None)
                if bad:
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
                out = await self._read_prompt(proc, repr(line), question)
                if question.search(out[-40:]):
                    proc.stdin.write(answer)     # a single key: these questions read one
                    out += await self._read_prompt(proc, f"answering {answer!r} to {line!r}")
            except (OSError, asyncssh.Error) as e:
                await self.close()
                raise SwitchError(f"{self.host}: expected {EXPECTED_PROMPT} after {line!r}, but the session closed "
                                  f"({str(e) or type(e).__name__})") from None
            except SwitchError:
                await self.close()
                raise
            if any(marker in out for marker in self.errors) or "Not Saved" in out:
                raise SwitchError(f"{self.host}: {line!r} failed: {out.strip()[:300]}")
            return out

    async def _reset(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        """Back to the enable prompt after an error, so the next command starts clean."""
        try:
            for _ in range(4):
                if self.mode == "#":
                    return
                proc.stdin.write("exit\n")
                await self._read_prompt(proc, "'exit'")
        except (SwitchError, OSError, asyncssh.Error):
            await self.close()

    async def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self.mode = ""
        await close_session(proc, conn)
