"""Cisco IOS-style switches (Catalyst; Nexus speaks the same for these commands) over an
interactive CLI session.

A port with one VLAN is an access port; with tagged VLANs it is a trunk whose allowed list is
exactly those VLANs and whose native VLAN is the untagged network or, without one, the switch's
`dummy_vlan` (kept out of every allowed list, so untagged frames go nowhere: HIL's trick). A port
with nothing attached is an access port on the dummy VLAN and shut down.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from .base import DEFAULT_TIMEOUT_S, PortVlans, SwitchDriver, SwitchError, same_interface
from .console import CliOptions, ConsoleSession

_PORT = re.compile(r"^[A-Za-z][A-Za-z-]{1,30} ?[0-9]+(/[0-9]+){0,3}$")


class CiscoOptions(CliOptions):
    dummy_vlan: Annotated[int, Field(ge=2, le=4094)] = 4094


def vlan_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


class CiscoDriver(SwitchDriver):
    family = "cisco"
    options_model = CiscoOptions
    options: CiscoOptions

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name, options, timeout)
        o = self.options
        self.session = ConsoleSession.of(o, timeout=timeout)

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None if _PORT.match(name) else "a Cisco interface name looks like GigabitEthernet1/0/5"

    def port_commands(self, vlans: PortVlans) -> list[str]:
        dummy = self.options.dummy_vlan
        if not vlans.tagged:
            return ["switchport mode access", f"switchport access vlan {vlans.native or dummy}",
                    "no switchport trunk allowed vlan", "no switchport trunk native vlan",
                    "shutdown" if vlans.native is None else "no shutdown"]
        allowed = sorted(vlans.tagged | ({vlans.native} if vlans.native else set()))
        return ["switchport mode trunk", f"switchport trunk allowed vlan {','.join(map(str, allowed))}",
                f"switchport trunk native vlan {vlans.native or dummy}", "no switchport access vlan", "no shutdown"]

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        await self.session.send(["configure terminal", f"interface {port}", *self.port_commands(vlans),
                                 "exit", "exit"])

    async def read_port(self, port: str) -> PortVlans:
        text = await self.session.send([f"show running-config interface {port}"])
        names = [line.split(None, 1)[1].strip() for line in text.splitlines()
                 if line.startswith("interface ") and len(line.split()) > 1]
        if not any(same_interface(n, port) for n in names):
            raise SwitchError(f"{self.name}: expected an 'interface {port}' section in its running config; "
                              f"got {text.strip()[:200]!r}")
        return self.parse(text)

    def parse(self, text: str) -> PortVlans:
        dummy = self.options.dummy_vlan
        mode, access, native, allowed = "access", 1, 1, None
        for line in text.splitlines():
            words = line.split()
            if words[:2] == ["switchport", "mode"] and len(words) > 2:
                mode = words[2]
            elif words[:3] == ["switchport", "access", "vlan"] and len(words) > 3:
                access = int(words[3])
            elif words[:4] == ["switchport", "trunk", "native", "vlan"] and len(words) > 4:
                native = int(words[4])
            elif words[:4] == ["switchport", "trunk", "allowed", "vlan"] and len(words) > 4:
                allowed = vlan_list(words[-1]) if words[4] not in ("none",) else set()
        if mode == "access":
            return PortVlans(native=None if access == dummy else access)
        if allowed is None:
            return PortVlans(trunk_all=True)
        nat = None if native == dummy else native
        return PortVlans(native=nat, tagged=frozenset(allowed - {native}))

    async def list_ports(self) -> list[str]:
        # `show interfaces status` would be shorter, but not every IOS (nor fake-switches) has it.
        text = await self.session.send(["show running-config"])
        return [line.split(None, 1)[1].strip() for line in text.splitlines()
                if line.startswith("interface ") and len(line.split()) > 1]

    async def save(self) -> None:
        # `write memory` rather than `copy running-config startup-config`: same effect on IOS
        # and NX-OS, no confirmation prompt (and fake-switches crashes on the copy form).
        await self.session.send(["write memory"])

    async def close(self) -> None:
        await self.session.close()
