"""Virtual networks: the default VPC, one subnet per configured network, one lease per instance.

Networks come from the config (like econe's virtual networks), so their ids are derived from
their names and stay stable across restarts without being stored. Leases are rows in the
store, written in the same transaction as the instance that holds them, so after a crash there
is no instance without its lease and no lease without its instance; an address is never handed
out twice because the lease table is keyed by address across the whole VPC.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace
from typing import Any

from ..config import Config, NetworkConfig
from ..slim import dataclass
from ..store.records import Instance, Lease
from ..store.store import CountIndex, Store, Txn
from .context import Caller
from .errors import CloudError, not_found
from .filters import FilterSet
from .query import Query


def _stable_id(prefix: str, *parts: str) -> str:
    return f"{prefix}-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:17]


TAP_PREFIX = "ci"   # every instance's host-side NIC: a firewall can match them all as `ci+`


class LiveByPrivateIp:
    """Instances not terminated, by private IP, read through the leases: they are keyed by address
    and name the instance holding it (a lease is taken with the address and released with it when the
    instance terminates), so an index of its own (a dict slot per instance, ~30-50 B) would only
    repeat them. For the services that look instances up by address (metadata's caller, an
    association)."""

    __slots__ = ("_leases", "_instances")

    def __init__(self, store: Store) -> None:
        self._leases = store.table(Lease)
        self._instances = store.table(Instance)

    def get(self, ip: str) -> dict[str, Instance]:
        """{id: instance} of the live instance holding `ip` (at most one), as `MultiIndex.get` gives."""
        lease = self._leases.get(ip)
        if lease is None:
            return {}
        inst = self._instances.get(lease.instance_id)
        if inst is None or inst.private_ip != ip or inst.state == "terminated":
            return {}   # (an ELB's address, or a lease its instance no longer names)
        return {inst.id: inst}


def tap_name(instance_id: str) -> str:
    """The host-side NIC of an instance: fixed so firewalls can name it (15 chars at most)."""
    return TAP_PREFIX + instance_id.removeprefix("i-")[-13:]


def interface_id(instance_id: str) -> str:
    """Each instance has one network interface; its id follows from the instance's."""
    return "eni-" + instance_id.removeprefix("i-")


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    name: str
    zone: str
    net: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns: tuple[str, ...]
    first: int
    last: int
    bridge: str | None
    bridge_type: str
    vlan: int | None
    default_for_az: bool
    ovs_db: str | None = None
    map_public_ip: bool = False     # launches here take a public address unless they decline

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class Networks:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.table = store.table(Lease)
        self.vpc_cidr = ipaddress.IPv4Network(config.vpc_cidr)
        self.vpc_id = _stable_id("vpc", config.region)
        self.subnets: dict[str, Subnet] = {}
        self._default: dict[str, Subnet] = {}
        for n in config.network_list():
            s = _subnet(config.region, n)
            self.subnets[s.id] = s
            if n.default or n.zone not in self._default:
                self._default[n.zone] = s
        for zone, s in self._default.items():
            self.subnets[s.id] = self._default[zone] = replace(s, default_for_az=True)
        self._by_name = {s.name: s for s in self.subnets.values()}
        # Leases written before networks existed name only their zone: they belong to its default.
        # How many leases each subnet has (which addresses are taken is the table itself: it is keyed by
        # address), not a group of its leases: a dict slot per lease (~30-50 B an instance) for a count.
        self._by_subnet: CountIndex[Lease] = self.table.add_index(
            CountIndex(lambda lease: lease.subnet_id or (d.id if (d := self._default.get(lease.zone)) else None)))
        self._cursor: dict[str, int] = {}
        self.filters = FilterSet({
            "subnet-id": lambda s: s.id, "vpc-id": lambda s: self.vpc_id,
            "availability-zone": lambda s: s.zone, "availabilityZone": lambda s: s.zone,
            "cidr-block": lambda s: str(s.net), "cidrBlock": lambda s: str(s.net), "cidr": lambda s: str(s.net),
            "default-for-az": lambda s: str(s.default_for_az).lower(),
            "defaultForAz": lambda s: str(s.default_for_az).lower(),
            "state": lambda s: "available",
            "available-ip-address-count": lambda s: self.available(s),
            "map-public-ip-on-launch": lambda s: str(s.map_public_ip).lower(),
        }, tags_of=lambda s: {"Name": s.name})
        self.vpc_filters = FilterSet({
            "vpc-id": lambda v: self.vpc_id, "is-default": lambda v: "true", "isDefault": lambda v: "true",
            "state": lambda v: "available", "cidr": lambda v: str(self.vpc_cidr),
            "cidr-block-association.cidr-block": lambda v: str(self.vpc_cidr),
        })

    # -- lookups -------------------------------------------------------------------------------
    def default_for(self, zone: str) -> Subnet:
        return self._default[zone]

    def get(self, subnet_id: str) -> Subnet:
        s = self.subnets.get(subnet_id)
        if s is None:
            raise CloudError.not_found("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist")
        return s

    def by_name(self, name: str) -> Subnet | None:
        return self._by_name.get(name)

    def containing(self, ip: str, zone: str | None = None) -> Subnet | None:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise CloudError("InvalidParameterValue", f"Invalid private IP address '{ip}'") from None
        return next((s for s in self.subnets.values() if addr in s.net and zone in (None, s.zone)), None)

    def of(self, inst: Instance) -> Subnet | None:
        """The subnet an instance's NIC is on (instances from before networks have only a zone)."""
        if inst.subnet_id:
            return self.subnets.get(inst.subnet_id)
        return self._default.get(inst.zone)

    # -- leases --------------------------------------------------------------------------------
    def allocate(self, tx: Txn, subnet: Subnet, instance_id: str, ip: str | None = None) -> str:
        """Lease `ip` (checked) or the next free address of the subnet's range."""
        if ip is not None:
            try:
                addr = int(ipaddress.IPv4Address(ip))
            except ValueError:
                raise CloudError("InvalidParameterValue", f"Invalid private IP address '{ip}'") from None
            if not subnet.first <= addr <= subnet.last:
                raise CloudError("InvalidParameterValue",
                                 f"Address {ip} does not fall within the lease range of subnet {subnet.id} "
                                 f"({ipaddress.IPv4Address(subnet.first)}-{ipaddress.IPv4Address(subnet.last)})")
            if self.table.get(ip) is not None or addr == int(subnet.gateway):
                raise CloudError.conflict("InvalidIPAddress.InUse", f"Address {ip} is in use.")
            tx.put(Lease(ip=ip, zone=subnet.zone, instance_id=instance_id, subnet_id=subnet.id))
            return ip
        used = self.table.rows   # (any lease of the address, whichever subnet filed it: taken)
        span = subnet.size
        start = self._cursor.get(subnet.id, 0)
        first, gateway = subnet.first, int(subnet.gateway)
        for step in range(span):
            off = (start + step) % span
            n = first + off
            cand = f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"   # (str(IPv4Address(n)), cheaper)
            if cand not in used and n != gateway:
                self._cursor[subnet.id] = off + 1
                tx.put(Lease(ip=cand, zone=subnet.zone, instance_id=instance_id, subnet_id=subnet.id))
                return cand
        raise CloudError.capacity("InsufficientFreeAddressesInSubnet",
                                  f"The subnet {subnet.id} ({subnet.name}, {subnet.net}) has no free addresses")

    def release(self, tx: Txn, ip: str | None) -> None:
        if ip is None:
            return
        lease = self.table.get(ip)
        if lease is not None:
            tx.delete(lease)

    def usage(self) -> list[dict[str, Any]]:
        """Per network: used and free leases (`cloudctl network list`)."""
        out = []
        for s in self.subnets.values():
            used = self._by_subnet.counts.get(s.id, 0)
            free = self.available(s)
            out.append({"name": s.name, "subnet_id": s.id, "zone": s.zone, "cidr": str(s.net),
                        "gateway": str(s.gateway), "bridge": s.bridge or "", "vlan": s.vlan,
                        "default_for_az": s.default_for_az, "used": used, "free": free})
        return out

    # -- Describe ------------------------------------------------------------------------------
    def describe_subnets(self, caller: Caller, query: Query) -> tuple[list[Subnet], str | None]:
        ids = query.ids
        for sid in ids:
            if sid not in self.subnets:
                raise not_found("SubnetID", [sid])
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "subnets")
        caller.check_dry_run()
        pool = {s.id: s for s in self.subnets.values() if (not ids or s.id in ids) and match(s)}
        keys, token = page.of(sorted(pool))
        return [pool[k] for k in keys], token

    def describe_vpcs(self, caller: Caller, query: Query) -> list[str]:
        for vid in query.ids:
            if vid != self.vpc_id:
                raise CloudError.not_found("InvalidVpcID.NotFound", f"The vpc ID '{vid}' does not exist")
        match = self.vpc_filters.compile(query.filters)
        caller.check_dry_run()
        return [self.vpc_id] if match(self.vpc_id) else []

    def available(self, s: Subnet) -> int:
        gw = 1 if s.first <= int(s.gateway) <= s.last else 0
        return s.size - gw - self._by_subnet.counts.get(s.id, 0)


def _subnet(region: str, n: NetworkConfig) -> Subnet:
    net = ipaddress.IPv4Network(n.cidr)
    first = int(ipaddress.IPv4Address(n.first)) if n.first else int(net.network_address) + 4
    last = int(ipaddress.IPv4Address(n.last)) if n.last else int(net.broadcast_address) - 1
    gateway = ipaddress.IPv4Address(n.gateway) if n.gateway else net.network_address + 1
    return Subnet(id=_stable_id("subnet", region, n.name), name=n.name, zone=n.zone, net=net, gateway=gateway,
                  dns=tuple(n.dns), first=first, last=last, bridge=n.bridge, bridge_type=n.bridge_type,
                  vlan=n.vlan, default_for_az=False, ovs_db=n.ovs_db,
                  map_public_ip=n.map_public_ip_on_launch)
