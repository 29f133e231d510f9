"""The switch driver contract.

A driver configures the VLANs of one switch's ports and reads them back. It knows nothing of
nodes, projects or the store: it is told a port's whole desired VLAN set and makes the switch
match it. Setting the whole set (rather than "add VLAN 5") makes every change idempotent, so an
operation replayed after a crash converges instead of doubling up, and the audit can compare
what a port has with what it should have.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class PortVlans:
    """What a port carries: one untagged (native) VLAN and tagged VLANs.

    `trunk_all` is a read-back only state: the port passes every VLAN (an unconfigured OVS port,
    a Cisco trunk with no allowed list). It is never desired, so it always shows as drift.
    """
    native: int | None = None
    tagged: frozenset[int] = frozenset()
    trunk_all: bool = False

    def describe(self) -> str:
        if self.trunk_all:
            return "all VLANs (unconfigured trunk)"
        parts = [f"native {self.native}"] if self.native is not None else []
        if self.tagged:
            parts.append("tagged " + ",".join(str(v) for v in sorted(self.tagged)))
        return ", ".join(parts) or "no VLAN"


class SwitchError(Exception):
    """The switch refused or failed a command: the operation fails with this text."""


class SwitchUnreachable(SwitchError):
    """The session broke or timed out: worth reconnecting and trying again."""


class DriverOptions(BaseModel):
    """Registration fields; each family extends it."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwitchDriver(ABC):
    """One switch, one persistent session; calls are serialized by the caller (one worker per switch)."""

    family: ClassVar[str]
    options_model: ClassVar[type[DriverOptions]]

    def __init__(self, name: str, options: dict[str, Any], timeout: float = 30.0) -> None:
        self.name = name
        self.options = self.options_model.model_validate(options)
        self.timeout = timeout

    @classmethod
    @abstractmethod
    def check_port_name(cls, name: str) -> str | None:
        """None if the switch can have a port by this name, else why not."""

    @abstractmethod
    async def set_port(self, port: str, vlans: PortVlans) -> None:
        """Make the port carry exactly `vlans`; no VLAN at all parks it where no traffic passes."""

    @abstractmethod
    async def read_port(self, port: str) -> PortVlans: ...

    @abstractmethod
    async def save(self) -> None:
        """Persist the running configuration, so a switch reboot keeps the VLANs."""

    @abstractmethod
    async def close(self) -> None: ...


def driver_class(family: str) -> type[SwitchDriver] | None:
    """The driver for a family name, imported on first use."""
    if family == "ovs":
        from .ovs import OvsDriver
        return OvsDriver
    if family == "cisco":
        from .cisco import CiscoDriver
        return CiscoDriver
    if family == "dell":
        from .dell import DellDriver
        return DellDriver
    return None


FAMILIES = ("ovs", "cisco", "dell")
