"""The libvirt driver for simulated hosts: libvirt's test driver (`test:///…`, or `test+unix://`
to a libvirtd running it), on which the whole core runs in tests and demos.

The test driver has no nwfilter and such a host has no bridges, so this subclass keeps the
packet filters it is given instead of defining them (`firewalls`: what a real host would
enforce, for tests to read) and plugs nothing into Open vSwitch. Everything else is the
production driver, unchanged.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from .base import FirewallSpec, HypervisorDriver
from .libvirt import LibvirtDriver


class SimulatedLibvirtDriver(LibvirtDriver):
    #: set_firewall only records: callers may apply many at once, queued behind nothing.
    records_firewall_only = True

    def __init__(self, host: str, uri: str, *, workers: int | None = None) -> None:
        # The embedded test driver answers in microseconds: one thread keeps it from competing
        # with the event loop for the GIL. Behind a socket it gets the usual few.
        if workers is None:
            workers = 1 if urlsplit(uri).scheme == "test" else 4
        super().__init__(host, uri, workers=workers)
        #: The last filter given per domain.
        self.firewalls: dict[str, FirewallSpec] = {}

    def firewall_ref(self, name: str) -> str | None:
        return None

    async def set_firewall(self, name: str, spec: FirewallSpec) -> None:
        self.firewalls[name] = spec

    async def remove_firewall(self, name: str) -> None:
        self.firewalls.pop(name, None)

    async def plug_ovs(self, ovs_bridge: str, vlan: int | None, ovs_db: str | None) -> str:
        return await HypervisorDriver.plug_ovs(self, ovs_bridge, vlan, ovs_db)   # names the bridge only
