"""The per-instance series of `/metrics`, kept as rendered text and rendered a slice per loop turn.

These are seven lines per instance (~560 bytes): 350,000 lines and ~28 MB at 50,000 instances.
Rendered by prometheus_client in one go at scrape time they held the event loop ~90 ms per 2,000
instances. Here a host's part is rendered from its last poll at the first scrape after that poll
(not at each poll: hosts are polled more often than a scrape usually comes, and a poll nobody
scrapes costs nothing), `SLICE` domains per turn of the loop, and kept as text (no object per instance);
a later scrape reuses it while neither the poll nor the instances table moved, and otherwise
re-renders only the slices holding an instance whose row changed. The answer is sent from the
cached chunks, so no step of a scrape holds the loop for more than one slice. The text is what
prometheus_client writes for the same samples (label order, float format, HELP/TYPE lines).

Which instances appear is decided as before: a domain of the host's last poll whose instance
exists and is placed on that host.
"""
from __future__ import annotations

import asyncio
from dataclasses import field
from typing import TYPE_CHECKING

from ..drivers.hypervisor.base import DomainStats, HostPoll
from ..slim import dataclass
from ..store.records import Instance
from .metrics_format import go_float, label_value

if TYPE_CHECKING:
    from ..core.cloud import Cloud

SLICE = 100   # domains rendered per loop turn: ~1 ms on the 2-core bench VM (7-10 us each)

# (name as exposed, type, help); the order of the families and of the values in `_lines`.
FAMILIES = (
    ("cloudctl_instance_info", "gauge", "instances on hypervisors (join on instance)"),
    ("cloudctl_instance_cpu_seconds_total", "counter", "guest CPU time"),
    ("cloudctl_instance_memory_bytes", "gauge", "guest memory (balloon)"),
    ("cloudctl_instance_block_read_bytes_total", "counter", "bytes read from disks"),
    ("cloudctl_instance_block_write_bytes_total", "counter", "bytes written to disks"),
    ("cloudctl_instance_network_receive_bytes_total", "counter", "bytes received"),
    ("cloudctl_instance_network_transmit_bytes_total", "counter", "bytes sent"),
)
_HEADERS = tuple(f"# HELP {n} {h}\n# TYPE {n} {t}\n".encode() for n, t, h in FAMILIES)

Lines = tuple[str, str, str, str, str, str, str]


@dataclass(slots=True)
class _Slice:
    rows: list[Instance | None]   # per domain of the slice: the instance row it was rendered with
    chunks: list[bytes]           # per family: the slice's lines


@dataclass(slots=True)
class _HostPart:
    poll: HostPoll | None = None
    changes: int = -1             # the instances table's change count when rendered
    slices: list[_Slice] = field(default_factory=list)


class InstanceSeries:
    def __init__(self, cloud: "Cloud") -> None:
        self.cloud = cloud
        self._parts: dict[str, _HostPart] = {}
        self._lock = asyncio.Lock()   # one scrape renders at a time; the next finds the text ready

    async def chunks(self) -> list[bytes]:
        """The seven families' text: headers and cached chunks, in prometheus_client's order."""
        async with self._lock:
            parts = []
            for name, h in self.cloud.monitor.hosts.items():
                if h.last is None:
                    continue
                part = self._parts.get(name)
                if part is None or part.poll is not h.last or part.changes != self.cloud.compute.table.changes:
                    part = self._parts[name] = await self._render(name, h.last, part)
                parts.append(part)
        out: list[bytes] = []
        for i, header in enumerate(_HEADERS):
            out.append(header)
            for part in parts:
                out.extend(sl.chunks[i] for sl in part.slices if sl.chunks[i])
        return out

    async def _render(self, host: str, poll: HostPoll, old: _HostPart | None) -> _HostPart:
        """The host's part from `poll`, a slice per loop turn. A slice whose instance rows are
        all the ones it was rendered with (same poll) is kept as it is."""
        table = self.cloud.compute.table
        new = _HostPart(poll, table.changes)
        reuse = old.slices if old is not None and old.poll is poll else []
        domains = poll.domains
        for n, start in enumerate(range(0, len(domains), SLICE)):
            if n:
                await asyncio.sleep(0)
            rows = [table.get(name) for name in domains.names[start:start + SLICE]]
            if n < len(reuse) and all(a is b for a, b in zip(rows, reuse[n].rows)):
                new.slices.append(reuse[n])
                continue
            cols: list[list[str]] = [[] for _ in FAMILIES]
            for d, inst in zip(domains[start:start + SLICE], rows):
                if inst is not None and inst.host == host:
                    for col, line in zip(cols, _lines(host, inst, d)):
                        col.append(line)
            new.slices.append(_Slice(rows, ["".join(col).encode() for col in cols]))
        return new


def _lines(host: str, inst: Instance, d: DomainStats) -> Lines:
    i = _esc(d.name)
    return (f'cloudctl_instance_info{{host="{_esc(host)}",instance="{i}",instance_type="{_esc(inst.instance_type)}",'
            f'zone="{_esc(inst.zone)}"}} 1.0\n',
            f'cloudctl_instance_cpu_seconds_total{{instance="{i}"}} {go_float(d.cpu_time_ns / 1e9)}\n',
            f'cloudctl_instance_memory_bytes{{instance="{i}"}} {go_float(d.memory_bytes)}\n',
            f'cloudctl_instance_block_read_bytes_total{{instance="{i}"}} {go_float(d.block_read_bytes)}\n',
            f'cloudctl_instance_block_write_bytes_total{{instance="{i}"}} {go_float(d.block_write_bytes)}\n',
            f'cloudctl_instance_network_receive_bytes_total{{instance="{i}"}} {go_float(d.net_rx_bytes)}\n',
            f'cloudctl_instance_network_transmit_bytes_total{{instance="{i}"}} {go_float(d.net_tx_bytes)}\n')


def _esc(v: str) -> str:
    """A label value escaped as the text format wants (most have nothing to escape: one test each)."""
    if "\\" in v or '"' in v or "\n" in v:
        return label_value(v)
    return v
