"""What the cloud offers: its region, zones and instance types."""
from __future__ import annotations

from collections.abc import Sequence

from ..config import Config, InstanceType
from ..slim import dataclass
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .query import Query
from .scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    zone_id: str
    region: str


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    spec: InstanceType


@dataclass(frozen=True, slots=True)
class TypeCapacity:
    """One instance type in one zone: how many more fit (`free`) of how many in all (`max`),
    and what one has (the disk is its root plus its default ephemeral disk)."""
    name: str
    free: int
    max: int
    vcpus: int
    memory_mib: int
    disk_gib: int


class Catalog:
    def __init__(self, config: Config, endpoint: str) -> None:
        self.config = config
        self.endpoint = endpoint
        # Does any type have instance-store disks? Then images list ephemeral0 at /dev/sdb, the
        # mapping instances of such types get.
        self.has_instance_store = any(t.ephemeral_gib for t in config.instance_types.values())
        self.zones = [Zone(z, f"{config.region}-az{i + 1}", config.region) for i, z in enumerate(config.zones)]
        self.zone_filters = FilterSet({
            "zone-name": lambda z: z.name, "zone-id": lambda z: z.zone_id,
            "region-name": lambda z: z.region, "state": lambda z: "available",
            "zone-type": lambda z: "availability-zone", "group-name": lambda z: z.region,
            "opt-in-status": lambda z: "opt-in-not-required",
        })
        self.region_filters = FilterSet({
            "region-name": lambda r: r, "endpoint": lambda r: endpoint,
            "opt-in-status": lambda r: "opt-in-not-required",
        })
        self.type_filters = FilterSet({
            "instance-type": lambda t: t.name,
            "vcpu-info.default-vcpus": lambda t: t.spec.vcpus,
            "memory-info.size-in-mib": lambda t: t.spec.memory_mib,
            "instance-storage-info.total-size-in-gb": lambda t: t.spec.ephemeral_gib * t.spec.ephemeral_disks,
            "instance-storage-supported": lambda t: bool(t.spec.ephemeral_gib),
            "instance-storage-info.disk.size-in-gb": lambda t: t.spec.ephemeral_gib or None,
            "instance-storage-info.disk.count": lambda t: t.spec.ephemeral_disks if t.spec.ephemeral_gib else None,
            "instance-storage-info.disk.type": lambda t: "hdd" if t.spec.ephemeral_gib else None,
            "instance-storage-info.nvme-support": lambda t: "unsupported" if t.spec.ephemeral_gib else None,
            "current-generation": lambda t: True,
            "processor-info.supported-architecture": lambda t: "x86_64",
            "supported-usage-class": lambda t: "on-demand",
            "burstable-performance-supported": lambda t: False,
            "bare-metal": lambda t: False,
            "hypervisor": lambda t: "nitro",
        })

    def is_admin(self, caller: Caller) -> bool:
        """Does the caller get the administrator's views (config `admin_users`)?"""
        return caller.user.name in self.config.admin_users and not caller.system

    def zone_capacity(self, scheduler: Scheduler) -> list[tuple[str, list[TypeCapacity]]]:
        """Per zone (in zone order), per instance type (in config order): Eucalyptus's verbose listing."""
        by_zone: dict[str, list[TypeCapacity]] = {z.name: [] for z in self.zones}
        for c in scheduler.capacity(by_zone=True):
            t = self.config.instance_types[c["instance_type"]]
            by_zone.setdefault(c["zone"], []).append(TypeCapacity(
                c["instance_type"], c["available"], c["total"], t.vcpus, t.memory_mib, t.disk_gib + t.ephemeral_gib))
        return list(by_zone.items())

    def describe_zones(self, caller: Caller, query: Query, zone_ids: Sequence[str] = ()) -> list[Zone]:
        """The zones `query` selects: its ids are zone names; `zone_ids` selects by zone id."""
        names, ids = query.ids, zone_ids
        match = self.zone_filters.compile(query.filters)
        caller.check_dry_run()
        known = {z.name for z in self.zones} | {z.zone_id for z in self.zones}
        for n in [*names, *ids]:
            if n not in known:
                raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{n}]")
        zones = [z for z in self.zones if (not names or z.name in names) and (not ids or z.zone_id in ids)]
        return [z for z in zones if match(z)]

    def describe_regions(self, caller: Caller, query: Query) -> list[str]:
        """The region, if `query` (ids are region names) selects it."""
        match = self.region_filters.compile(query.filters)
        caller.check_dry_run()
        for n in query.ids:
            if n != self.config.region:
                raise CloudError("InvalidParameterValue", f"Invalid region: {n}")
        return [r for r in [self.config.region] if match(r)]

    def describe_types(self, caller: Caller, query: Query) -> tuple[list[TypeInfo], str | None]:
        """The instance types `query` selects (its ids are type names), one page."""
        names = query.ids
        match = self.type_filters.compile(query.filters)
        page = query.page(5, 100, "types")
        for n in names:
            if n not in self.config.instance_types:
                raise CloudError("InvalidInstanceType", f"The following supplied instance types do not exist: [{n}]")
        caller.check_dry_run()
        rows = {n: TypeInfo(n, t) for n, t in self.config.instance_types.items()
                if (not names or n in names)}
        rows = {n: t for n, t in rows.items() if match(t)}
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token
