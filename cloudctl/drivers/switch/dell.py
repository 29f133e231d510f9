"""Dell PowerConnect (55xx/62xx; N3000 speaks the same for these commands) over an interactive CLI.

VLANs must exist before a port may use them, so each change first creates the VLANs it names in
the VLAN database (creating an existing VLAN is harmless). A port is reset (`no switchport
mode`) and then configured: one VLAN → access port; tagged VLANs → general mode with those VLANs
allowed and the native VLAN (or the switch's unused `dummy_vlan`) as PVID; nothing → access on
the dummy VLAN, shut down. Saving answers the `(y/n)` confirmation.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from .base import DEFAULT_TIMEOUT_S, PortVlans, SwitchDriver, SwitchError, same_interface
from .cisco import vlan_list
from .console import CliOptions, ConsoleSession

_PORT = re.compile(r"^(ethernet|gigabitethernet|tengigabitethernet|gi|te) ?([0-9]+(/[a-z]*[0-9]+){1,2})$", re.I)
# Dell's refusals that carry no `%` marker.
_FAILURES = ("VLAN ID not found", "This VLAN does not exist", "Port is not general port", "Could not configure",
             "Interface not in", "ERROR: Invalid input", "Command not found")


def canonical(name: str) -> str:
    """HIL's `gi1/0/5` and `GigabitEthernet 1/0/5` -> `Gi1/0/5`; `Ethernet 1/G5` -> `ethernet 1/g5`."""
    m = _PORT.match(name.strip())
    if not m:
        return name
    if m.group(1).lower() == "ethernet":
        return f"ethernet {m.group(2).lower()}"
    return f"{m.group(1)[:2].capitalize()}{m.group(2)}"


class DellOptions(CliOptions):
    dummy_vlan: Annotated[int, Field(ge=2, le=4093)] = 4093


class DellDriver(SwitchDriver):
    family = "dell"
    options_model = DellOptions
    options: DellOptions
    failures: tuple[str, ...] = _FAILURES

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name, options, timeout)
        o = self.options
        self.session = ConsoleSession.of(o, paging_off="terminal datadump", timeout=timeout)

    @classmethod
    def canonical_port(cls, name: str) -> str:
        return canonical(name)

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None if _PORT.match(name.strip()) else "a Dell interface name looks like 'ethernet 1/g5' or Gi1/0/5"

    async def _send(self, lines: list[str]) -> str:
        out = await self.session.send(lines)
        bad = next((f for f in self.failures if f in out), None)
        if bad:
            await self.session.send(["exit"] * 3 if self.session.mode != "#" else [])
            raise SwitchError(f"{self.name}: {out.strip()[:300]}")
        return out

    def port_commands(self, vlans: PortVlans) -> list[str]:
        dummy = self.options.dummy_vlan
        reset = ["no switchport mode"]
        if not vlans.tagged:
            return [*reset, f"switchport access vlan {vlans.native or dummy}",
                    "shutdown" if vlans.native is None else "no shutdown"]
        return [*reset, "switchport mode general",
                f"switchport general allowed vlan add {','.join(map(str, sorted(vlans.tagged)))}",
                f"switchport general pvid {vlans.native or dummy}", "no shutdown"]

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        needed = sorted(vlans.tagged | {vlans.native or self.options.dummy_vlan})
        await self._send(["configure", "vlan database", *(f"vlan {v}" for v in needed), "exit",
                          f"interface {canonical(port)}", *self.port_commands(vlans), "exit", "exit"])

    async def read_port(self, port: str) -> PortVlans:
        text = await self._send([f"show running-config interface {canonical(port)}"])
        return self.parse(text)

    def parse(self, text: str) -> PortVlans:
        dummy = self.options.dummy_vlan
        mode, access, pvid, allowed = "access", 1, 1, set()
        for line in text.splitlines():
            w = line.split()
            if w[:2] == ["switchport", "mode"] and len(w) > 2:
                mode = w[2]
            elif w[:3] == ["switchport", "access", "vlan"] and len(w) > 3:
                access = int(w[3])
            elif w[:3] == ["switchport", "general", "pvid"] and len(w) > 3:
                pvid = int(w[3])
            elif len(w) > 5 and w[0] == "switchport" and w[2:5] == ["allowed", "vlan", "add"]:
                allowed |= vlan_list(w[5])     # `… add 1002-1003 [tagged]`
        if mode == "access":
            return PortVlans(native=None if access == dummy else access)
        if mode == "trunk":
            return PortVlans(tagged=frozenset(allowed))
        return PortVlans(native=None if pvid == dummy else pvid, tagged=frozenset(allowed - {pvid}))

    async def list_ports(self) -> list[str]:
        text = await self._send(["show interfaces status"])
        return [w[0] for w in (line.split() for line in text.splitlines())
                if w and re.match(r"^[A-Za-z]{0,2}[0-9]+/[a-z]*[0-9]+(/[0-9]+)?$", w[0])]

    async def has_port(self, port: str) -> bool:
        # The status table lists `1/g5` for `ethernet 1/g5` and `Gi1/0/5` for `gigabitethernet 1/0/5`.
        given = re.sub(r"^ethernet\s*", "", canonical(port))
        return any(same_interface(p, given) for p in await self.list_ports())

    async def save(self) -> None:
        await self.session.confirm("copy running-config startup-config", re.compile(r"\(y/n\) ?$"), "y")

    async def close(self) -> None:
        await self.session.close()
