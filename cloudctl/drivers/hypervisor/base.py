"""The hypervisor driver contract.

One small abstract class that the core of cloudctl calls to run VMs on one host. A driver knows
nothing about instances, users or the state store: it speaks domain names, and reports what the
hypervisor says. Keeping it this narrow is what lets the core run against libvirt's test driver.

The contract is libvirt's. `define` takes libvirt domain XML, which the core renders from the
admin's templates (core/domains.py, config/templates/*.xml); NIC XML with its `<filterref>`
(`firewall_ref` is an nwfilter name) and data disks (`disk_xml` below) are libvirt XML too, and
hosts are named by libvirt URIs. A backend that is not libvirt must accept that XML, or the core
must first hand drivers a structured domain spec instead: it is not a drop-in today.

Drivers are chosen per host by name (drivers/hypervisor/registry.py): the production one is
`LibvirtDriver` (libvirt.py); `SimulatedLibvirtDriver` (simulated.py) runs libvirt's test driver.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from enum import StrEnum
from typing import NamedTuple, overload

from ...derived import derive_mac
from ...slim import dataclass
from ...xmltext import quoteattr
from .ovs_plug import HybridPlug

#: Namespace of the `<metadata>` child that marks a domain as cloudctl's own. libvirt accepts
#: and preserves a `urn:` namespace (checked with the test driver), so no http URI is needed.
METADATA_NS = "urn:cloudctl:instance"

#: Every value `DomainEvent.kind` can take.
EVENT_KINDS: frozenset[str] = frozenset(
    {"defined", "undefined", "started", "stopped", "shutdown", "crashed", "suspended", "resumed"}
)


def disk_xml(path: str, target: str, fmt: str = "qcow2") -> str:
    """The `<disk>` element for a file-backed data disk at guest device `target` (e.g. "vdb").

    Used for hot-plugging and by whoever renders domain XML, so both describe a disk alike.
    """
    return (f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)}/>"
            f"<source file={quoteattr(path)}/><target dev={quoteattr(target)} bus='virtio'/></disk>")


class Power(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    OFF = "off"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class HostResources:
    cpus: int
    memory_mib: int
    model: str
    free_memory_mib: int | None  # None when the hypervisor cannot say (or says something meaningless)


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    power: Power
    managed: bool  # carries cloudctl's metadata element (namespace METADATA_NS)
    controller: str | None = None  # the id of the controller that made it (None: made before ids)


_POWERS: tuple[Power, ...] = tuple(Power)
#: Each power state's byte in packed listings and polls (`DomainStates`, `PolledDomains.packed`).
POWER_CODE: dict[Power, int] = {p: i for i, p in enumerate(_POWERS)}


@dataclass(frozen=True, slots=True)
class DomainStates:
    """Every domain's power state at one moment, without metadata (`HypervisorDriver.domain_states`).

    Held as one string of names and one byte a state: listed while the state loads, 50,000 names
    kept as strings until the reconcile left pymalloc's arenas partly used among the loaded rows
    (~3 MiB more RSS). `stamp` is the driver's own: `unchanged_since` tells from it whether the
    listing still holds."""

    names: str   # "\n" between names (a domain name has none)
    codes: bytes   # each name's state, an index into `_POWERS`
    stamp: object

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, Power]], stamp: object) -> DomainStates:
        names: list[str] = []
        codes = bytearray()
        for name, power in pairs:
            names.append(name)
            codes.append(POWER_CODE[power])
        return cls("\n".join(names), bytes(codes), stamp)

    def items(self) -> Iterator[tuple[str, Power]]:
        if not self.codes:
            return iter(())
        return zip(self.names.split("\n"), map(_POWERS.__getitem__, self.codes))


@dataclass(frozen=True, slots=True)
class DomainEvent:
    host: str
    name: str
    kind: str  # one of EVENT_KINDS
    detail: str  # the hypervisor's reason, e.g. "booted", "destroyed", "shutdown"
    guest_initiated: bool  # a stop/shutdown/crash the controller did not ask for


class DomainStats(NamedTuple):
    """One domain's state and cumulative counters from a bulk poll (0 where the hypervisor has none)."""

    name: str
    power: Power
    cpu_time_ns: int = 0
    memory_bytes: int = 0        # current balloon size, else 0
    block_read_bytes: int = 0    # summed over disks
    block_write_bytes: int = 0
    net_rx_bytes: int = 0        # summed over interfaces
    net_tx_bytes: int = 0


_COUNTERS = len(DomainStats._fields) - 2


class PolledDomains(Sequence[DomainStats]):
    """Every domain of one poll, packed: names, a byte per power state, the counters in one array.

    The monitor keeps each host's last poll until the next (50,000 domains at 50,000 instances).
    As an object per domain they were what the cycle collector walked on the loop: a poll replaces
    its host's last one, so they aged into the oldest generation and each full collection walked
    them all (two a round, ~27 ms at 50k; `core/gcpolicy.py`). Packed, a poll is a few objects
    whatever its size (the names' tuple holds only strings, so the collector untracks it at its
    first look), and a domain takes 57 bytes besides its name instead of ~290. A `DomainStats`
    is made when one is read, and freed when the reader drops it.
    """

    __slots__ = ("names", "_powers", "_counters")

    names: tuple[str, ...]

    def __init__(self, domains: Iterable[DomainStats] = ()) -> None:
        names: list[str] = []
        powers = bytearray()
        flat: list[int] = []
        for d in domains:
            names.append(d.name)
            powers.append(POWER_CODE[d.power])
            flat += d[2:]
        self._set(tuple(names), bytes(powers), flat)

    @classmethod
    def packed(cls, names: tuple[str, ...], powers: bytes, counters: list[int]) -> PolledDomains:
        """A poll from its parts as kept: each domain's name, its power as `POWER_CODE` gives it, and
        its `DomainStats` counters in field order, one domain after another (a driver builds these
        from the hypervisor's answer without a `DomainStats` a domain)."""
        if len(powers) != len(names) or len(counters) != len(names) * _COUNTERS:
            raise ValueError("a packed poll needs one power and six counters a name")
        self = cls.__new__(cls)
        self._set(names, powers, counters)
        return self

    def _set(self, names: tuple[str, ...], powers: bytes, flat: list[int]) -> None:
        self.names = names
        self._powers = powers
        counters: Sequence[int]
        try:
            counters = array("Q", flat)
        except (OverflowError, TypeError):   # not all unsigned 64-bit ints (libvirt's are): kept as given
            counters = tuple(flat)
        self._counters = counters

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> DomainStats: ...

    @overload
    def __getitem__(self, i: slice) -> list[DomainStats]: ...

    def __getitem__(self, i: int | slice) -> DomainStats | list[DomainStats]:
        if isinstance(i, slice):
            return [self._stats(k) for k in range(*i.indices(len(self.names)))]
        if i < 0:
            i += len(self.names)
        if not 0 <= i < len(self.names):
            raise IndexError("domain index out of range")
        return self._stats(i)

    def __iter__(self) -> Iterator[DomainStats]:
        return map(self._stats, range(len(self.names)))

    def _stats(self, i: int) -> DomainStats:
        at = i * _COUNTERS
        return DomainStats(self.names[i], _POWERS[self._powers[i]], *self._counters[at:at + _COUNTERS])

    def get(self, name: str) -> DomainStats | None:
        """The domain called `name`, None if the poll did not list it."""
        try:
            return self._stats(self.names.index(name))
        except ValueError:
            return None

    def powers(self) -> dict[str, Power]:
        """Each domain's power state by name, no `DomainStats` made."""
        return dict(zip(self.names, map(_POWERS.__getitem__, self._powers)))

    def __eq__(self, other: object) -> bool:
        """The same domains with the same figures (as the list of `DomainStats` compared)."""
        if not isinstance(other, PolledDomains):
            return NotImplemented
        return (self.names == other.names and self._powers == other._powers
                and tuple(self._counters) == tuple(other._counters))

    def __repr__(self) -> str:
        return f"PolledDomains({list(self)!r})"


@dataclass(frozen=True, slots=True)
class HostPoll:
    """What one monitoring round learned about a host: its resources and every domain."""

    resources: HostResources
    cpu_time_ns: dict[str, int]  # cumulative host CPU time by mode (user, kernel, idle, iowait)
    domains: PolledDomains


@dataclass(frozen=True, slots=True)
class FirewallRule:
    """Traffic one rule allows. `protocol` is tcp, udp, icmp, all, or an IP protocol number;
    ports are a tcp/udp range, or for icmp the type and code (None = any). `peers` are the
    CIDRs it may come from (ingress) or go to (egress); source groups arrive expanded."""

    protocol: str
    from_port: int | None
    to_port: int | None
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FirewallSpec:
    """What one guest NIC may receive and send; everything else is dropped, and replies to
    allowed traffic always pass (stateful). The NIC is the domain's own (the filter is referenced
    from its interface), so no tap name: one was kept per instance, read by nothing (64 B each).
    `name` is the domain's: a MAC that follows from it is not kept (cloudctl/derived.py), as the
    instance row keeps none, so a spec held per instance adds no string of its own."""

    name: str
    mac: str
    ip: str
    ingress: tuple[FirewallRule, ...]
    egress: tuple[FirewallRule, ...]


derive_mac(FirewallSpec, "name")


class HypervisorError(Exception):
    """A hypervisor operation failed; the message is the hypervisor's own text.

    `not_found` lets callers treat "the domain is gone" as a state rather than a failure.
    """

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class HypervisorDriver(ABC):
    """One hypervisor host. All methods are coroutines and never block the event loop."""

    host: str

    @abstractmethod
    async def open(self, on_event: Callable[[DomainEvent], None]) -> None:
        """Connect and start delivering lifecycle events to `on_event` (called on the event loop)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop events and disconnect; safe to call twice."""

    @abstractmethod
    async def resources(self) -> HostResources:
        ...

    @abstractmethod
    async def list_domains(self, known: Collection[str] = ()) -> list[DomainInfo]:
        """Every domain on the host with its power state.

        `known` names domains the caller already knows as its own (the store's instances on the
        host): the driver may skip reading their metadata and report them managed, controller None.
        """

    async def domain_states(self) -> DomainStates | None:
        """Every domain's power state, no metadata read: listed at start-up while the state loads,
        for the reconcile after it (`unchanged_since` says whether it may still be used). None: this
        driver offers no such listing, and the reconcile lists then."""
        return None

    def unchanged_since(self, states: DomainStates) -> bool:
        """True if `states` (from `domain_states`) still holds: the same connection since, and no
        lifecycle event has come from the host since it was asked for."""
        return False

    @abstractmethod
    async def define(self, name: str, xml: str) -> None:
        """Persistently define `name` from `xml`, replacing an existing definition of that name."""

    @abstractmethod
    async def start(self, name: str) -> None:
        """Boot the domain; a no-op if it is already running."""

    async def define_and_start(self, name: str, xml: str) -> None:
        """`define`, then `start` (not tried if the definition failed): a launch's two steps, which
        a driver may take in one trip to its worker threads."""
        await self.define(name, xml)
        await self.start(name)

    @abstractmethod
    async def stop(self, name: str, *, force: bool = False, timeout: float = 60.0) -> None:
        """Ask the guest to shut down, wait up to `timeout` s, then pull the plug.

        `force` pulls the plug at once. A no-op if the domain is already off.
        """

    @abstractmethod
    async def reboot(self, name: str) -> None:
        ...

    @abstractmethod
    async def undefine(self, name: str) -> None:
        """Hard-stop the domain if it runs, then remove its definition; a no-op if it is absent."""

    @abstractmethod
    async def console_output(self, name: str) -> bytes:
        """The tail of the domain's file-backed serial/console log, or b"" if it has none."""

    @abstractmethod
    async def domain_xml(self, name: str) -> str:
        ...

    async def poll(self) -> HostPoll:
        """One monitoring round: check the connection, read host figures and all domains' stats.

        Meant to be cheap (one bulk call for the domains); raises HypervisorError when the host
        cannot be reached. The default builds it from `resources` and `list_domains`.
        """
        res = await self.resources()
        return HostPoll(res, {}, PolledDomains(DomainStats(d.name, d.power) for d in await self.list_domains()))

    # Not abstract, so a driver without disk hot-plug still satisfies the rest of the contract.
    async def attach_disk(self, name: str, path: str, target: str, fmt: str = "qcow2") -> None:
        """Give domain `name` the disk image `path` as guest device `target` (e.g. "vdf").

        Live and in the persistent definition when the domain runs, in the definition only
        when it is off. A no-op if that disk is already there; HypervisorError if `target`
        holds another file.
        """
        raise HypervisorError(f"{type(self).__name__} cannot attach disks")

    #: True when set_firewall only records the spec (a simulated host: simulated.py), so callers
    #: may apply many at once without queueing them behind the domain's other work.
    records_firewall_only: bool = False

    def firewall_ref(self, name: str) -> str | None:
        """What the domain's `<interface>` refers to for its packet filter (libvirt: the nwfilter
        name), or None when this driver filters without the domain's help."""
        return None

    async def set_firewall(self, name: str, spec: FirewallSpec) -> None:
        """Make domain `name`'s NIC filter exactly `spec`, live if it runs. Before the domain
        is defined, so the definition can refer to it."""
        raise HypervisorError(f"{type(self).__name__} cannot filter packets")

    async def remove_firewall(self, name: str) -> None:
        """Forget the filter of `name` (after its domain is gone); a no-op if there is none."""

    async def plug_ovs(self, ovs_bridge: str, vlan: int | None, ovs_db: str | None) -> str:
        """The Linux bridge a guest NIC joins to reach Open vSwitch bridge `ovs_bridge` on
        `vlan` (see ovs_plug.py). This default only names it: on a host the driver cannot set
        up, the admin has made it."""
        return HybridPlug.of(ovs_bridge, vlan, ovs_db).bridge

    async def detach_disk(self, name: str, target: str, *, timeout: float = 30.0) -> None:
        """Remove the disk at guest device `target` (live and persistent); a no-op if absent.

        A live unplug needs the guest's cooperation: waits up to `timeout` s for the device to
        go, then raises HypervisorError (the persistent definition has lost it already).
        """
        raise HypervisorError(f"{type(self).__name__} cannot detach disks")
