"""Dell N-series (N2000/N3000/N4000) and PowerConnect 8100 "10G" CLI: what HIL's `delln3000`,
`dellnos9` and PowerConnect users run on these switches.

It differs from the older PowerConnect CLI (`dell`) where it matters here: VLANs are created in
global config mode (`vlan N` … `exit`; there is no `vlan database`, which drops the session on
fake-switches' model), ports are named `Gi1/0/11` / `Te1/0/1` (HIL's lowercase `gi1/0/11` is
the same port), and changing the switchport mode keeps the old VLAN settings, so every setting
is cleared explicitly. Ports: one VLAN → access port; tagged VLANs → general mode with those
VLANs allowed and the native VLAN (or the switch's unused `dummy_vlan`) as PVID; nothing →
access on the dummy VLAN, shut down.
"""
from __future__ import annotations

import re

from .base import PortVlans, same_interface
from .dell import _FAILURES, DellDriver

_PORT = re.compile(r"^(gi|te|fo|tw|gigabitethernet|tengigabitethernet|fortygigabitethernet|twentyfivegigabitethernet)"
                   r" ?([0-9]+/[0-9]+(/[0-9]+)?)$", re.I)
_LISTED = re.compile(r"^(Gi|Te|Fo|Tw)[0-9]+/[0-9]+(/[0-9]+)?$", re.I)


def canonical(name: str) -> str:
    """`gi1/0/11`, `GigabitEthernet 1/0/11` -> `Gi1/0/11` (the switch's own short form)."""
    m = _PORT.match(name.strip())
    return f"{m.group(1)[:2].capitalize()}{m.group(2)}" if m else name


class Dell10gDriver(DellDriver):
    family = "dell10g"
    failures = (*_FAILURES, "An invalid interface", "Failure Information", "ERROR:", "does not exist")

    @classmethod
    def canonical_port(cls, name: str) -> str:
        return canonical(name)       # this module's: no `ethernet 1/g5` form here

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None if _PORT.match(name.strip()) else "a Dell N-series interface name looks like Gi1/0/11 or te1/0/1"

    def port_commands(self, vlans: PortVlans) -> list[str]:
        dummy = self.options.dummy_vlan
        if not vlans.tagged:
            return ["switchport mode access", "no switchport general allowed vlan", "no switchport general pvid",
                    f"switchport access vlan {vlans.native or dummy}",
                    "shutdown" if vlans.native is None else "no shutdown"]
        return ["switchport mode general", "no switchport access vlan", "no switchport general allowed vlan",
                f"switchport general pvid {vlans.native or dummy}",
                f"switchport general allowed vlan add {','.join(map(str, sorted(vlans.tagged)))}", "no shutdown"]

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        needed = sorted(vlans.tagged | {vlans.native or self.options.dummy_vlan})
        create = [line for v in needed for line in (f"vlan {v}", "exit")]
        await self._send(["configure", *create, f"interface {canonical(port)}", *self.port_commands(vlans),
                          "exit", "exit"])

    async def read_port(self, port: str) -> PortVlans:
        return self.parse(await self._send([f"show running-config interface {canonical(port)}"]))

    async def list_ports(self) -> list[str]:
        text = await self._send(["show interfaces status"])
        return [w[0] for w in (line.split() for line in text.splitlines()) if w and _LISTED.match(w[0])]

    async def has_port(self, port: str) -> bool:
        return any(same_interface(p, canonical(port)) for p in await self.list_ports())
