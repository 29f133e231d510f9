"""Private addresses: one subnet per zone, one lease per instance, never handed out twice.

Leases are rows in the store, written in the same transaction as the instance that holds
them, so after a crash there is no instance without its lease and no lease without its
instance.
"""
from __future__ import annotations

import ipaddress

from ..store.records import Lease
from ..store.store import MultiIndex, Store, Txn
from .errors import CloudError


class Network:
    def __init__(self, store: Store, subnets: dict[str, str], zones: list[str]) -> None:
        self.store = store
        self.table = store.table(Lease)
        self._by_zone: MultiIndex[Lease] = self.table.add_index(MultiIndex(lambda l: l.zone))
        self.subnets: dict[str, ipaddress.IPv4Network] = {}
        for i, zone in enumerate(zones):
            cidr = subnets.get(zone) or f"10.{128 + i}.0.0/16"
            self.subnets[zone] = ipaddress.IPv4Network(cidr)
        self._cursor: dict[str, int] = {}

    def allocate(self, tx: Txn, zone: str, instance_id: str) -> str:
        net = self.subnets[zone]
        used = self._by_zone.get(zone)
        first = int(net.network_address) + 4           # .0-.3 reserved, as in a VPC subnet
        last = int(net.broadcast_address) - 1
        span = last - first + 1
        start = self._cursor.get(zone, 0)
        for step in range(span):
            off = (start + step) % span
            ip = str(ipaddress.IPv4Address(first + off))
            if ip not in used:
                self._cursor[zone] = off + 1
                tx.put(Lease(ip=ip, zone=zone, instance_id=instance_id))
                return ip
        raise CloudError("InsufficientFreeAddressesInSubnet",
                         f"The subnet of zone {zone} ({net}) has no free addresses")

    def release(self, tx: Txn, ip: str | None) -> None:
        if ip is None:
            return
        lease = self.table.get(ip)
        if lease is not None:
            tx.delete(lease)

    def usage(self) -> dict[str, tuple[int, int]]:
        return {z: (len(self._by_zone.get(z)), net.num_addresses - 5) for z, net in self.subnets.items()}
