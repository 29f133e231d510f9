"""What the cloud offers: its region, zones and instance types."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config, InstanceType
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .pagination import decode_token, page_size, paginate, query_fingerprint


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    zone_id: str
    region: str


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    spec: InstanceType


class Catalog:
    def __init__(self, config: Config, endpoint: str) -> None:
        self.config = config
        self.endpoint = endpoint
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
            "instance-storage-info.total-size-in-gb": lambda t: t.spec.disk_gib,
            "current-generation": lambda t: True,
            "processor-info.supported-architecture": lambda t: "x86_64",
            "supported-usage-class": lambda t: "on-demand",
            "burstable-performance-supported": lambda t: False,
            "bare-metal": lambda t: False,
            "hypervisor": lambda t: "nitro",
        })

    def describe_zones(self, caller: Caller, names: list[str] | None, ids: list[str] | None,
                       filters: list[dict[str, Any]] | None) -> list[Zone]:
        match = self.zone_filters.compile(filters)
        caller.check_dry_run()
        known = {z.name for z in self.zones} | {z.zone_id for z in self.zones}
        for n in [*(names or ()), *(ids or ())]:
            if n not in known:
                raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{n}]")
        zones = [z for z in self.zones if (not names or z.name in names) and (not ids or z.zone_id in ids)]
        return [z for z in zones if match(z)]

    def describe_regions(self, caller: Caller, names: list[str] | None,
                         filters: list[dict[str, Any]] | None) -> list[str]:
        match = self.region_filters.compile(filters)
        caller.check_dry_run()
        for n in names or ():
            if n != self.config.region:
                raise CloudError("InvalidParameterValue", f"Invalid region: {n}")
        return [r for r in [self.config.region] if match(r)]

    def describe_types(self, caller: Caller, names: list[str] | None, filters: list[dict[str, Any]] | None,
                       max_results: int | None, next_token: str | None) -> tuple[list[TypeInfo], str | None]:
        match = self.type_filters.compile(filters)
        limit = page_size(max_results, 5, 100)
        fp = query_fingerprint("types", names, filters)
        after = decode_token(next_token, fp)
        for n in names or ():
            if n not in self.config.instance_types:
                raise CloudError("InvalidInstanceType", f"The following supplied instance types do not exist: [{n}]")
        caller.check_dry_run()
        rows = {n: TypeInfo(n, t) for n, t in self.config.instance_types.items()
                if (not names or n in names)}
        rows = {n: t for n, t in rows.items() if match(t)}
        keys, token = paginate(sorted(rows), after, limit, fp)
        return [rows[k] for k in keys], token
