"""Fence agents, one module per kind (see base.FenceAgent).

The agents' modules (the IPMI one brings the OBM driver) are imported when a host's config names
one, not with the package (issue 14: base RSS; `make run`'s hosts have none)."""
from typing import Any

from .base import FenceAgent, FenceError

__all__ = ["CommandFence", "FenceAgent", "FenceError", "IpmiFence"]


def __getattr__(name: str) -> Any:
    if name == "CommandFence":
        from .command import CommandFence
        return CommandFence
    if name == "IpmiFence":
        from .ipmi import IpmiFence
        return IpmiFence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
