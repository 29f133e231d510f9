"""Hypervisor drivers by name: what a host's `driver:` key in the config selects.

A host without one gets the driver for its URI's scheme: `libvirt-test` for libvirt's test
driver (`test:`, `test+unix:` …), `libvirt` for every other libvirt URI. Drivers are imported
only when a host is made, so reading the config does not load libvirt.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from urllib.parse import urlsplit

from .base import HypervisorDriver

#: name -> (module in this package, class); a class is made as `cls(host_name, uri)`.
DRIVERS: dict[str, tuple[str, str]] = {
    "libvirt": ("libvirt", "LibvirtDriver"),
    "libvirt-test": ("simulated", "SimulatedLibvirtDriver"),
}


def _simulated(uri: str) -> bool:
    return urlsplit(uri).scheme.split("+", 1)[0] == "test"


def default_driver(uri: str) -> str:
    return "libvirt-test" if _simulated(uri) else "libvirt"


def driver_problem(name: str, uri: str) -> str | None:
    """Why driver `name` cannot run a host at `uri`, or None."""
    if name not in DRIVERS:
        return f"unknown driver {name!r}; one of: {', '.join(sorted(DRIVERS))}"
    if name == "libvirt-test" and not _simulated(uri):
        return f"libvirt-test only records packet filters, so it takes only test: URIs, not {uri!r}"
    return None


def make_driver(name: str | None, host: str, uri: str) -> HypervisorDriver:
    """The driver `name` (None: the default for the URI) for one host."""
    name = name or default_driver(uri)
    module, cls = DRIVERS[name]
    driver: Callable[[str, str], HypervisorDriver] = getattr(importlib.import_module(f".{module}", __package__), cls)
    return driver(host, uri)
