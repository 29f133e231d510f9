"""The admin's Elastic-IP scripts, run as OpenNebula's econe runs them.

On associate: `associate_script ELASTIC_IP PRIVATE_IP NETWORK_TEMPLATE_BASE64`; on disassociate:
`disassociate_script ELASTIC_IP`. They set up (and tear down) whatever makes the public address
reach the instance on the host — NAT rules, a proxy ARP entry, a router's config. Each runs as
an argument list (never through a shell), off the event loop, in its own process group so a
timeout kills the script and anything it started; a non-zero exit or a timeout is a
`ScriptError`. Scripts must be idempotent: the controller re-runs them after a crash.

NETWORK_TEMPLATE_BASE64 is standard base64 (no newlines) of one line of compact JSON with
sorted keys describing the instance's network, format version 1:

    {"allocation_id": "eipalloc-…", "association_id": "eipassoc-…", "bridge": "br0" | null,
     "elastic_ip": "203.0.113.5", "gateway": "10.128.0.1", "host": "host-a",
     "instance_id": "i-…", "mac": "02:…", "network_interface_id": "eni-…",
     "prefixlen": 16, "private_ip": "10.128.0.4", "subnet": "10.128.0.0/16",
     "subnet_id": "subnet-…", "version": 1, "zone": "cloudctl-1a"}

Readers must ignore keys they do not know (later versions may add some).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

from ..slim import dataclass

log = logging.getLogger("cloudctl.ip_scripts")

TEMPLATE_VERSION = 1
_STDERR_KEPT = 2000      # bytes of a failing script's stderr kept for the log


class ScriptError(Exception):
    """The script failed or timed out. `summary` is safe to show users; `detail` is for the log."""

    def __init__(self, summary: str, detail: str = "") -> None:
        super().__init__(f"{summary}: {detail}" if detail else summary)
        self.summary = summary
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NetworkTemplate:
    """What an associate script is told about the instance's network."""

    elastic_ip: str
    private_ip: str
    instance_id: str
    allocation_id: str
    association_id: str
    network_interface_id: str | None
    mac: str | None
    subnet: str | None
    prefixlen: int | None
    gateway: str | None
    bridge: str | None
    subnet_id: str | None
    zone: str
    host: str

    def encode(self) -> str:
        doc = {"version": TEMPLATE_VERSION, **asdict(self)}
        return base64.b64encode(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).decode()


class AddressScripts(ABC):
    """Makes the host's packet path match an association."""

    #: Whether associating and disassociating do nothing (no scripts): nothing to re-apply at start-up.
    applies_nothing: ClassVar[bool] = False

    @abstractmethod
    async def associate(self, elastic_ip: str, private_ip: str, network: NetworkTemplate) -> None: ...

    @abstractmethod
    async def disassociate(self, elastic_ip: str) -> None: ...


class NoScripts(AddressScripts):
    """No scripts configured: associations are bookkeeping only."""

    applies_nothing = True

    async def associate(self, elastic_ip: str, private_ip: str, network: NetworkTemplate) -> None:
        return None

    async def disassociate(self, elastic_ip: str) -> None:
        return None


class ExecScripts(AddressScripts):
    def __init__(self, associate_script: Path | None, disassociate_script: Path | None, timeout_s: float) -> None:
        self.associate_script = associate_script
        self.disassociate_script = disassociate_script
        self.timeout_s = timeout_s

    async def associate(self, elastic_ip: str, private_ip: str, network: NetworkTemplate) -> None:
        if self.associate_script is not None:
            await self._run("associate", [str(self.associate_script), elastic_ip, private_ip, network.encode()])

    async def disassociate(self, elastic_ip: str) -> None:
        if self.disassociate_script is not None:
            await self._run("disassociate", [str(self.disassociate_script), elastic_ip])

    async def _run(self, what: str, argv: list[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise ScriptError(f"the {what} script could not be started", f"{argv[0]}: {e.strerror}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            _kill_group(proc.pid)
            await proc.wait()
            if isinstance(e, asyncio.CancelledError):
                raise
            raise ScriptError(f"the {what} script timed out after {self.timeout_s:g} s", argv[0]) from None
        if proc.returncode != 0:
            tail = err[-_STDERR_KEPT:].decode(errors="replace").strip()
            raise ScriptError(f"the {what} script failed (exit status {proc.returncode})",
                              f"{' '.join(argv[:3])}: {tail}")
        log.info("%s script: %s", what, " ".join(argv[:3]))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def scripts_for(associate_script: Path | None, disassociate_script: Path | None,
                timeout_s: float) -> AddressScripts:
    if associate_script is None and disassociate_script is None:
        return NoScripts()
    return ExecScripts(associate_script, disassociate_script, timeout_s)
