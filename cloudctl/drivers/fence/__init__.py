"""Fence agents, one module per kind (see base.FenceAgent)."""
from .base import FenceAgent, FenceError
from .command import CommandFence
from .ipmi import IpmiFence

__all__ = ["CommandFence", "FenceAgent", "FenceError", "IpmiFence"]
