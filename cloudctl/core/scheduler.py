"""Placement by free vCPUs, memory and (for instance-store disks) host disk, and the capacity
report built from the same numbers."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..config import Config, InstanceType
from ..slim import dataclass
from ..store.records import Instance
from ..store.store import Index, Store
from .instance_store import gib_needed

# States in which an instance holds its host's CPU and memory.
CONSUMING = frozenset({"pending", "running", "stopping", "shutting-down"})


@dataclass(slots=True)
class HostCapacity:
    name: str
    zone: str
    vcpus: int           # offered, after overcommit
    memory_mib: int
    used_vcpus: int = 0
    used_memory_mib: int = 0
    instances: int = 0
    enabled: bool = True
    disk_gib: int | None = None   # for ephemeral disks; None: not limited
    used_disk_gib: int = 0

    def room_for(self, t: InstanceType, disk: int = 0) -> int:
        """How many more instances of `t` fit, each with `disk` GiB of ephemeral disks."""
        if not self.enabled:
            return 0
        n = min((self.vcpus - self.used_vcpus) // t.vcpus, (self.memory_mib - self.used_memory_mib) // t.memory_mib)
        if disk and self.disk_gib is not None:
            n = min(n, (self.disk_gib - self.used_disk_gib) // disk)
        return max(0, n)

    def total_for(self, t: InstanceType, disk: int = 0) -> int:
        n = min(self.vcpus // t.vcpus, self.memory_mib // t.memory_mib)
        return min(n, self.disk_gib // disk) if disk and self.disk_gib is not None else n


class _Usage(Index[Instance]):
    """Keeps each host's used vCPUs/memory in step with the instances table."""

    def __init__(self, sched: "Scheduler") -> None:
        self.sched = sched

    def _apply(self, row: Instance, sign: int) -> None:
        if row.state not in CONSUMING:
            return
        host = self.sched.hosts.get(row.host)
        t = self.sched.types.get(row.instance_type)
        if host is None or t is None:
            return
        host.used_vcpus += sign * t.vcpus
        host.used_memory_mib += sign * t.memory_mib
        host.instances += sign
        if t.ephemeral_gib:
            host.used_disk_gib += sign * gib_needed(row, t)

    def add(self, row: Instance) -> None:
        self._apply(row, 1)

    def remove(self, row: Instance) -> None:
        self._apply(row, -1)

    def update(self, old: Instance, new: Instance) -> None:
        if (old.state in CONSUMING) == (new.state in CONSUMING) and old.host == new.host \
                and old.instance_type == new.instance_type:
            return   # same host, same type, still (not) consuming: the usage is unchanged
        self._apply(old, -1)
        self._apply(new, 1)


class Scheduler:
    def __init__(self, store: Store, config: Config) -> None:
        self.config = config
        self.types = config.instance_types
        self.hosts: dict[str, HostCapacity] = {}
        # Each zone's hosts, in `hosts` order: a launch names its zone, and `pick` and `room` then
        # look at that zone's hosts only (a launch at 200 hosts in 4 zones walked all 200, twice).
        self._in_zone: dict[str, list[HostCapacity]] = {}
        self._store = store
        self._usage: _Usage | None = None

    def add_host(self, name: str, zone: str, cpus: int, memory_mib: int,
                 cpu_ratio: float, mem_ratio: float, disk_gib: int | None = None) -> None:
        self.hosts[name] = HostCapacity(name, zone, int(cpus * cpu_ratio), int(memory_mib * mem_ratio),
                                        disk_gib=disk_gib)
        self._in_zone = {}
        for h in self.hosts.values():
            self._in_zone.setdefault(h.zone, []).append(h)

    def _of_zone(self, zone: str | None) -> Iterable[HostCapacity]:
        return self.hosts.values() if zone is None else self._in_zone.get(zone, ())

    def start(self) -> None:
        """Attach the usage index once every host is known (it counts existing instances)."""
        self._usage = _Usage(self)
        self._store.table(Instance).add_index(self._usage)

    def pick(self, zone: str | None, t: InstanceType, exclude_full: bool = True,
             accept: Callable[[HostCapacity], bool] | None = None, disk: int = 0) -> HostCapacity | None:
        """The host with the most free memory (then vCPUs) that fits one more instance of `t`
        with `disk` GiB of ephemeral disks (and that `accept` accepts, when given).

        `room_for` inlined, as in `room`: this runs per instance launched, over every host of the zone."""
        best = None
        best_mem = best_cpu = -1
        tv, tm = t.vcpus, t.memory_mib
        for h in self._of_zone(zone):
            if not h.enabled:
                continue
            free_cpu, free_mem = h.vcpus - h.used_vcpus, h.memory_mib - h.used_memory_mib
            if free_cpu < tv or free_mem < tm:   # (room_for < 1: fewer than one instance's worth)
                continue
            if disk and h.disk_gib is not None and h.disk_gib - h.used_disk_gib < disk:
                continue
            if accept is not None and not accept(h):
                continue
            if best is None or free_mem > best_mem or (free_mem == best_mem and free_cpu > best_cpu):
                best, best_mem, best_cpu = h, free_mem, free_cpu
        return best

    def room(self, zone: str | None, t: InstanceType, disk: int = 0, cap: int | None = None) -> int:
        """How many more instances of `t` fit in `zone` (None: anywhere): the sum of each host's
        `room_for`, inlined (a launch walks its zone's hosts for this; at 200 hosts the method call
        per host was most of the walk). With `cap`, the walk stops once `cap` fit: the answer is
        then some number >= `cap` (a launch of one needs one host with room, not the zone's sum)."""
        return self._room(self._of_zone(zone), t, disk, cap)

    def rooms(self, t: InstanceType, disk: int = 0) -> dict[str, int]:
        """`room` of every zone that has hosts, in one walk over the hosts."""
        return {z: self._room(hosts, t, disk) for z, hosts in self._in_zone.items()}

    @staticmethod
    def _room(hosts: Iterable[HostCapacity], t: InstanceType, disk: int, cap: int | None = None) -> int:
        tv, tm = t.vcpus, t.memory_mib
        total = 0
        if cap is None:
            cap = 1 << 62
        for h in hosts:
            if not h.enabled:
                continue
            n = (h.vcpus - h.used_vcpus) // tv
            m = (h.memory_mib - h.used_memory_mib) // tm
            if m < n:
                n = m
            if disk and h.disk_gib is not None:
                m = (h.disk_gib - h.used_disk_gib) // disk
                if m < n:
                    n = m
            if n > 0:
                total += n
                if total >= cap:
                    break
        return total

    def fits(self, host: str, t: InstanceType, disk: int = 0) -> bool:
        h = self.hosts.get(host)
        return h is not None and h.room_for(t, disk) >= 1

    def capacity(self, by_zone: bool) -> list[dict[str, Any]]:
        """Per instance type (and zone): how many more fit, out of how many in total (each with
        the type's default ephemeral disk)."""
        zones = sorted({h.zone for h in self.hosts.values()}) if by_zone else [None]
        out = []
        for name, t in self.types.items():
            for z in zones:
                hosts = [h for h in self.hosts.values() if z is None or h.zone == z]
                total = sum(h.total_for(t, t.ephemeral_gib) for h in hosts)
                avail = sum(h.room_for(t, t.ephemeral_gib) for h in hosts)
                out.append({"instance_type": name, "zone": z, "available": avail, "total": total,
                            "used": total - avail,
                            "used_percent": round(100.0 * (total - avail) / total, 1) if total else 0.0})
        return out
