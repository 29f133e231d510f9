"""The fence agent interface: make sure a failed hypervisor host is powered off.

A fence is the only thing that lets a failed host's instances boot elsewhere (a VM must never
run twice), so an agent answers yes only when the host is off for certain and raises otherwise.
"""
from __future__ import annotations

from abc import ABC, abstractmethod


class FenceError(Exception):
    """The host could not be confirmed off; the text says why, for the event log."""


class FenceAgent(ABC):
    kind: str

    @abstractmethod
    async def fence(self, host: str) -> str:
        """Power `host` off and confirm it; return how it was confirmed. Never blocks the loop."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """What the admin sees in `host show`: never a password."""
