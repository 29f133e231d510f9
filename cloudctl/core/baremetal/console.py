"""Nodes' serial consoles captured through their OBM (IPMI serial-over-LAN), as HIL's
start_console / show_console / stop_console, made robust where HIL's was fragile (HIL #417).

Which nodes have capture on is journaled (`BmNode.console`), so captures resume after a restart.
Each capture is a supervised task: it frees the BMC's single SOL slot, runs `ipmitool sol
activate`, appends the node's output to a bounded log, and asks the BMC every `console_check_s`
whether the session is still active, because ipmitool itself never notices that a BMC rebooted
or went away. A lost session is reopened with exponential backoff.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ...config import Baremetal as BaremetalConfig
from ...drivers.obm.ipmi import Ipmi, ObmError, Unsupported
from ...slim import dataclass
from ...store.records import BmNode
from ..events import Events
from ..tasks import Supervisor
from .auth import Caller
from .console_log import ConsoleLog
from .errors import BadArgumentError, ProjectMismatchError
from .obm import ipmi_of
from .site import Site

log = logging.getLogger("cloudctl.baremetal.console")

BANNER = b"[SOL Session operational"
STABLE_S = 60.0          # a session that lasted this long resets the backoff


class SessionLost(Exception):
    pass


@dataclass
class _Status:
    state: str = "connecting"        # connecting | active | retrying
    error: str | None = None
    reconnects: int = 0
    since: float | None = None       # when the current session became active


class Capture:
    """One node's supervised SOL session."""

    def __init__(self, name: str, bmc: Ipmi, out: ConsoleLog, cfg: BaremetalConfig,
                 events: Events, tasks: Supervisor) -> None:
        self.name, self.bmc, self.log, self.cfg, self.events = name, bmc, out, cfg, events
        self.status = _Status()
        self._head = b""                 # what ipmitool printed before its banner: its errors
        self.task = tasks.spawn("consoles", self._run(), f"console {name}")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.log.end_followers()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.cfg.console_backoff_s
        while True:
            started = loop.time()
            try:
                await self._session()
                why = "session ended"
            except (ObmError, SessionLost) as e:
                why = str(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:                 # a bug must not end the supervision
                log.exception("console %s: capture failed", self.name)
                why = f"internal error: {e}"
            if loop.time() - started >= STABLE_S:
                delay = self.cfg.console_backoff_s
            was_active = self.status.state == "active"
            self.status = _Status("retrying", why, self.status.reconnects + 1)
            if was_active:
                self.events.emit("node.console", self.name, f"serial console session lost: {why}")
            log.warning("console %s: %s; retrying in %.1f s", self.name, why, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.console_backoff_max_s)

    async def _session(self) -> None:
        self.status.state = "connecting"
        await self.bmc.sol_deactivate()          # a slot left by a crash or another client
        async with self.bmc.sol_session() as proc:
            assert proc.stdout is not None and proc.stderr is not None
            stderr = bytearray()
            errors = asyncio.ensure_future(_tail(proc.stderr, stderr))
            pump = asyncio.ensure_future(self._pump(proc.stdout))
            check = asyncio.ensure_future(self._check())
            try:
                done, _ = await asyncio.wait({pump, check}, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()                     # SessionLost / ObmError from the check
                await proc.wait()
                await asyncio.wait({errors}, timeout=5)
                said = self._head.decode(errors="replace") + "\n" + stderr.decode(errors="replace")
                text = " ".join(ln.strip() for ln in said.splitlines()
                                if ln.strip() and not ln.startswith("tcgetattr"))[:300]
                opened = "ended the session" if pump.result() else "failed before the session opened"
                raise SessionLost(f"ipmitool {opened} (exit {proc.returncode}){': ' + text if text else ''}")
            finally:
                for t in (pump, check, errors):
                    t.cancel()
                await asyncio.gather(pump, check, errors, return_exceptions=True)

    async def _pump(self, stdout: asyncio.StreamReader) -> bool:
        """Copy the node's output to the log until ipmitool ends; True if the session had opened."""
        self._head = head = b""
        while True:                                # ipmitool's own lines come before its banner
            chunk = await stdout.read(4096)
            if not chunk:
                return False
            self._head = head = head + chunk
            at = head.find(BANNER)
            if at >= 0 and b"\n" in head[at:]:
                rest = head[head.index(b"\n", at) + 1:]
                self._head = b""
                break
            if len(head) > 65536:
                raise SessionLost(head[-300:].decode(errors="replace"))
        self._opened()
        if rest:
            await self.log.append(rest)
        while True:
            chunk = await stdout.read(4096)
            if not chunk:
                return True
            await self.log.append(chunk)

    def _opened(self) -> None:
        if self.status.state == "active":
            return
        self.status.state, self.status.since, self.status.error = "active", time.time(), None
        if self.status.reconnects:
            self.events.emit("node.console", self.name, "serial console session reopened")

    async def _check(self) -> None:
        """Raise SessionLost when the BMC no longer has the session (it never tells ipmitool)."""
        failures = 0
        spawned = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.console_check_s)
            try:
                active = await self.bmc.sol_active()
                failures = 0
            except Unsupported:
                log.info("console %s: BMC has no payload status; relying on ipmitool alone", self.name)
                await asyncio.Event().wait()       # until cancelled
                return
            except ObmError as e:
                failures += 1
                if failures >= 2:
                    raise SessionLost(f"BMC unreachable: {e}") from None
                continue
            if active:
                self._opened()             # in case ipmitool's banner is still in its buffer
            elif self.status.state == "active":
                raise SessionLost("the BMC closed the SOL session")
            elif time.monotonic() - spawned > self.cfg.command_timeout_s:
                raise SessionLost(f"ipmitool did not open a session within {self.cfg.command_timeout_s:.0f} s")


async def _tail(stream: asyncio.StreamReader, buf: bytearray, keep: int = 4096) -> None:
    """Read a stream to its end, keeping its last `keep` bytes (ipmitool's error text)."""
    while chunk := await stream.read(4096):
        buf += chunk
        del buf[:-keep]


class Consoles:
    def __init__(self, site: Site, cfg: BaremetalConfig, directory: Path, events: Events,
                 tasks: Supervisor) -> None:
        self.site, self.cfg, self.dir, self.events, self.tasks = site, cfg, directory, events, tasks
        self._logs: dict[str, ConsoleLog] = {}
        self._captures: dict[str, Capture] = {}

    def _log(self, node: str) -> ConsoleLog:
        if node not in self._logs:
            self._logs[node] = ConsoleLog(self.dir, node, self.cfg.console_log_bytes)
        return self._logs[node]

    def _spawn(self, n: BmNode) -> None:
        if n.name not in self._captures:
            bmc = ipmi_of(self.site.secrets.obm(n), self.cfg.command_timeout_s)
            self._captures[n.name] = Capture(n.name, bmc, self._log(n.name), self.cfg, self.events, self.tasks)

    def _node(self, caller: Caller, name: str) -> BmNode:
        n = self.site.node(name)
        self.site.require_node_access(caller, n)
        if not n.obm:
            raise ProjectMismatchError(f"node {name!r} has no OBM registered, so it has no serial console")
        if n.obm.get("type") != "ipmi":   # (an obmd node's console is obmd's: the API redirects there)
            raise BadArgumentError(f"node {name!r}: its OBM ({n.obm.get('type')}) has no serial console this "
                                   f"controller captures; only IPMI nodes do")
        return n

    def start(self) -> None:
        """Resume the captures the journal says are on."""
        for n in self.site.nodes.values():
            if n.console and n.obm.get("type") == "ipmi":
                self._spawn(n)

    async def enable(self, caller: Caller, name: str) -> None:
        n = self._node(caller, name)
        if not n.console:
            await self.site.commit(BmNode(**{**n.to_dict(), "console": True}))
        self._spawn(self.site.node(name))

    async def disable(self, caller: Caller, name: str) -> None:
        n = self._node(caller, name)
        if n.console:
            await self.site.commit(BmNode(**{**n.to_dict(), "console": False}))
        await self.halt(name)

    async def halt(self, name: str) -> None:
        """Stop capturing (the node's row says so already, or is gone)."""
        cap = self._captures.pop(name, None)
        if cap is not None:
            await cap.stop()

    async def forget(self, name: str) -> None:
        """The node is deleted: stop and drop its log."""
        await self.halt(name)
        await self._log(name).remove()
        self._logs.pop(name, None)

    async def show(self, caller: Caller, name: str) -> bytes:
        self._node(caller, name)
        return await self._log(name).read()

    async def follow(self, caller: Caller, name: str) -> tuple[bytes, asyncio.Queue[bytes | None], ConsoleLog]:
        n = self._node(caller, name)
        out = self._log(name)
        data, q = await out.snapshot_and_follow()
        if not n.console:
            out.end_followers()            # nothing more will come
        return data, q, out

    def status(self, caller: Caller, name: str) -> dict[str, Any]:
        n = self._node(caller, name)
        cap = self._captures.get(name)
        if cap is None:
            return {"logging": n.console, "state": "off", "error": None, "reconnects": 0, "since": None}
        s = cap.status
        return {"logging": n.console, "state": s.state, "error": s.error, "reconnects": s.reconnects,
                "since": s.since}

    async def close(self) -> None:
        caps, self._captures = list(self._captures.values()), {}
        await asyncio.gather(*(c.stop() for c in caps), return_exceptions=True)
