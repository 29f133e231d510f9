"""Arista EOS over its interactive CLI (SSH).

Every managed port is a trunk whose allowed list is exactly the VLANs it should carry. The
untagged network is the trunk's native VLAN and is in the allowed list; without one the native
VLAN is left at its default (1), which is outside every allowed list we set, so untagged frames
go nowhere; a port with nothing attached allows no VLAN at all. EOS forwards a VLAN only once it
exists, so each change first creates the VLANs it names. The native VLAN is reset only when
the port has one, read back first, so a tagged-only change sends only trunk commands.
"""
from __future__ import annotations

import re
from typing import Any

from .base import DEFAULT_TIMEOUT_S, PortVlans, SwitchDriver, SwitchError, same_interface
from .cisco import vlan_list
from .console import CliOptions, ConsoleSession

_PORT = re.compile(r"^(ethernet|eth|et) ?([0-9]+(/[0-9]+){0,2})$", re.I)


class AristaOptions(CliOptions):
    """The CLI login alone."""


def canonical(name: str) -> str:
    """`et1`, `ethernet 1/1` -> `Ethernet1`, `Ethernet1/1`."""
    m = _PORT.match(name.strip())
    return f"Ethernet{m.group(2)}" if m else name


class AristaDriver(SwitchDriver):
    family = "arista"
    options_model = AristaOptions
    options: AristaOptions

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name, options, timeout)
        o = self.options
        # EOS's errors all start with `% ` (its warnings with `! `).
        self.session = ConsoleSession.of(o, timeout=timeout, errors=("% ",))

    @classmethod
    def canonical_port(cls, name: str) -> str:
        return canonical(name)

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None if _PORT.match(name.strip()) else "an Arista interface name looks like Ethernet1 or Ethernet1/1"

    async def _running(self, port: str) -> str:
        text = await self.session.send([f"show running-config interfaces {canonical(port)}"])
        if not any(line.strip().lower() == f"interface {canonical(port)}".lower() for line in text.splitlines()):
            raise SwitchError(f"{self.name}: no interface {canonical(port)} in the running config "
                              f"(expected an 'interface {canonical(port)}' section; got {text.strip()[:200]!r})")
        return text

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        had = self.parse_native(await self._running(port))
        allowed = sorted(vlans.tagged | ({vlans.native} if vlans.native else set()))
        create = [line for v in allowed for line in (f"vlan {v}", "exit")]
        native = ([f"switchport trunk native vlan {vlans.native}"] if vlans.native
                  else ["no switchport trunk native vlan"] if had != 1 else [])
        await self.session.send(["configure terminal", *create, f"interface {canonical(port)}",
                                 "switchport mode trunk", *native,
                                 f"switchport trunk allowed vlan {','.join(map(str, allowed)) or 'none'}",
                                 "exit", "exit"])

    async def read_port(self, port: str) -> PortVlans:
        return self.parse(await self._running(port))

    @staticmethod
    def parse_native(text: str) -> int:
        for line in text.splitlines():
            w = line.split()
            if w[:4] == ["switchport", "trunk", "native", "vlan"] and len(w) > 4 and w[4].isdigit():
                return int(w[4])
        return 1

    def parse(self, text: str) -> PortVlans:
        mode, access, allowed = "access", 1, None
        for line in text.splitlines():
            w = line.split()
            if w[:2] == ["switchport", "mode"] and len(w) > 2:
                mode = w[2]
            elif w[:3] == ["switchport", "access", "vlan"] and len(w) > 3:
                access = int(w[3])
            elif w[:5] == ["switchport", "trunk", "allowed", "vlan", "add"] and len(w) > 5:
                allowed = (allowed or set()) | vlan_list(w[5])        # a long list's continuation lines
            elif w[:4] == ["switchport", "trunk", "allowed", "vlan"] and len(w) > 4:
                allowed = set() if w[4] == "none" else vlan_list(w[4])
        if mode == "access":
            return PortVlans(native=access)
        if allowed is None:
            return PortVlans(trunk_all=True)
        native = self.parse_native(text)
        # The native VLAN carries untagged frames only if the trunk allows it.
        return PortVlans(native=native if native in allowed else None, tagged=frozenset(allowed - {native}))

    async def list_ports(self) -> list[str]:
        text = await self.session.send(["show interfaces switchport"])
        return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Name:")]

    async def has_port(self, port: str) -> bool:
        return any(same_interface(p, canonical(port)) for p in await self.list_ports())

    async def save(self) -> None:
        await self.session.send(["write memory"])

    async def close(self) -> None:
        await self.session.close()
