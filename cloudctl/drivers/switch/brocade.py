"""Brocade (Ruckus) ICX / FastIron CLI over SSH: prompts `SSH@host>` and `SSH@host#`.

FastIron is VLAN-centric: a port joins a VLAN from inside that VLAN's config (`vlan N`,
`untagged ethernet 1/1`, `tagged ethernet 1/1`), and a port untagged in one VLAN and tagged in
others is what it calls dual mode. So a change reads the port's VLAN membership back first
(`show vlan ethernet 1/1`) and sends only the differences: leave the VLANs it should not be in,
then join the ones it should. A port with nothing attached is untagged in the switch's unused
`dummy_vlan` and disabled, not left in the default VLAN 1.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from .base import DEFAULT_TIMEOUT_S, PortVlans, SwitchDriver, SwitchError
from .console import CliOptions, ConsoleSession

_PORT = re.compile(r"^(?:(?:ethernet|ethe|eth|e) ?)?([0-9]+/[0-9]+(?:/[0-9]+)?)$", re.I)
_LISTED = re.compile(r"^[A-Za-z0-9]*Ethernet([0-9]+/[0-9]+(?:/[0-9]+)?) is ")
_MEMBER = re.compile(r"^VLAN: *([0-9]+) +(Untagged|Tagged)", re.I)


class BrocadeOptions(CliOptions):
    dummy_vlan: Annotated[int, Field(ge=2, le=4090)] = 4090


def number(name: str) -> str:
    """`ethernet 1/1/5`, `e1/1/5`, `1/1/5` -> `1/1/5`."""
    m = _PORT.match(name.strip())
    return m.group(1) if m else name


class BrocadeDriver(SwitchDriver):
    family = "brocade"
    options_model = BrocadeOptions
    options: BrocadeOptions

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name, options, timeout)
        o = self.options
        self.session = ConsoleSession.of(o, paging_off="skip-page-display", timeout=timeout,
                                         errors=("Error -", "Error:", "Incomplete command"))

    @classmethod
    def canonical_port(cls, name: str) -> str:
        return f"ethernet {number(name)}"

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None if _PORT.match(name.strip()) else "a Brocade interface name looks like 'ethernet 1/1/5' or 1/1/5"

    async def membership(self, port: str) -> tuple[int | None, frozenset[int]]:
        """The port's untagged VLAN and tagged VLANs, as the switch has them."""
        text = await self.session.send([f"show vlan ethernet {number(port)}"])
        untagged, tagged = None, set()
        found = False
        for line in text.splitlines():
            m = _MEMBER.match(line.strip())
            if m:
                found = True
                if m.group(2).lower() == "untagged":
                    untagged = int(m.group(1))
                else:
                    tagged.add(int(m.group(1)))
        if not found:
            raise SwitchError(f"{self.name}: expected 'VLAN: N Untagged|Tagged' lines for ethernet {number(port)}; "
                              f"got {text.strip()[:200]!r}")
        return untagged, frozenset(tagged)

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        eth = f"ethernet {number(port)}"
        had_untagged, had_tagged = await self.membership(port)
        untagged = vlans.native or self.options.dummy_vlan
        lines = ["configure terminal"]
        for v in sorted(had_tagged - vlans.tagged):
            lines += [f"vlan {v}", f"no tagged {eth}", "exit"]
        if had_untagged not in (None, 1, untagged):
            lines += [f"vlan {had_untagged}", f"no untagged {eth}", "exit"]
        if had_untagged != untagged:
            lines += [f"vlan {untagged}", f"untagged {eth}", "exit"]
        for v in sorted(vlans.tagged - had_tagged):
            lines += [f"vlan {v}", f"tagged {eth}", "exit"]
        lines += [f"interface {eth}", "disable" if vlans.native is None and not vlans.tagged else "enable",
                  "exit", "exit"]
        await self.session.send(lines)

    async def read_port(self, port: str) -> PortVlans:
        untagged, tagged = await self.membership(port)
        native = None if untagged == self.options.dummy_vlan else untagged
        return PortVlans(native=native, tagged=tagged)

    async def list_ports(self) -> list[str]:
        text = await self.session.send(["show interfaces"])
        return [f"ethernet {m.group(1)}" for m in map(_LISTED.match, text.splitlines()) if m]

    async def has_port(self, port: str) -> bool:
        return any(number(p) == number(port) for p in await self.list_ports())

    async def save(self) -> None:
        await self.session.send(["write memory"])

    async def close(self) -> None:
        await self.session.close()
