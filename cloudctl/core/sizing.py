"""Choosing an instance type for a request given as CPUs and memory (OpenNebula templates)."""
from __future__ import annotations

from ..config import InstanceType
from .errors import CloudError


def closest_type(types: dict[str, InstanceType], vcpus: float, memory_mib: int) -> str:
    """The smallest type with at least `vcpus` and `memory_mib`; the request must fit one.

    "Smallest" is by memory, then vCPUs: what a user asking for 1 CPU and 768 MiB expects is
    the 1 GiB type, not a 4 GiB one with more CPUs.
    """
    if vcpus <= 0 or memory_mib <= 0:
        raise CloudError("InvalidParameterValue", "CPU and MEMORY must be positive")
    fits = [(t.memory_mib, t.vcpus, name) for name, t in types.items()
            if t.vcpus >= vcpus and t.memory_mib >= memory_mib]
    if not fits:
        biggest = max(types.items(), key=lambda kv: (kv[1].memory_mib, kv[1].vcpus))
        raise CloudError("InvalidParameterValue",
                         f"no instance type has {vcpus:g} CPUs and {memory_mib} MiB; the largest is "
                         f"{biggest[0]} ({biggest[1].vcpus} vCPUs, {biggest[1].memory_mib} MiB)")
    return min(fits)[2]
