"""The per-instance series of `/metrics`, kept as rendered text and rendered a slice per loop turn.

These are seven lines per instance (~560 bytes): 350,000 lines and ~28 MB at 50,000 instances.
Rendered by prometheus_client in one go at scrape time they held the event loop ~90 ms per 2,000
instances. Here a host's part is rendered from its last poll at the first scrape after that poll
(not at each poll: hosts are polled more often than a scrape usually comes, and a poll nobody
scrapes costs nothing), `SLICE` domains per turn of the loop, and kept as text; a later scrape
reuses it while neither the poll nor the instances table moved, and otherwise re-renders only
the lines of instances whose row changed. The answer is sent from the cached chunks, so no
step of a scrape holds the loop for more than one slice. The text is what prometheus_client
writes for the same samples (label order, float format, HELP/TYPE lines).

Which instances appear is decided as before: a domain of the host's last poll whose instance
exists and is placed on that host.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.utils import floatToGoString

from ..drivers.hypervisor.base import DomainStats, HostPoll
from ..store.records import Instance

if TYPE_CHECKING:
    from ..core.cloud import Cloud

SLICE = 250   # domains rendered per loop turn: ~1 ms on this VM

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
class _HostPart:
    poll: HostPoll | None = None
    changes: int = -1   # the instances table's change count when rendered
    rows: dict[str, tuple[Instance, Lines]] = field(default_factory=dict)   # domain -> (its row then, lines)
    chunks: list[list[bytes]] = field(default_factory=lambda: [[] for _ in FAMILIES])


class InstanceSeries:
    def __init__(self, cloud: "Cloud") -> None:
        self.cloud = cloud
        self._parts: dict[str, _HostPart] = {}
        self._lock = asyncio.Lock()   # one scrape renders at a time; the next finds the text ready
        self.rendered = 0             # domains rendered (not reused) since start: for the bench

    async def chunks(self) -> list[bytes]:
        """The seven families' text: headers and cached chunks, in prometheus_client's order."""
        async with self._lock:
            parts = []
            for name, h in self.cloud.monitor.hosts.items():
                if h.last is None:
                    continue
                part = self._parts.get(name)
                if part is None:
                    part = self._parts[name] = _HostPart()
                if part.poll is not h.last or part.changes != self.cloud.compute.table.changes:
                    part = self._parts[name] = await self._render(name, h.last, part)
                parts.append(part)
        out: list[bytes] = []
        for i, header in enumerate(_HEADERS):
            out.append(header)
            for part in parts:
                out.extend(part.chunks[i])
        return out

    async def _render(self, host: str, poll: HostPoll, old: _HostPart) -> _HostPart:
        """The host's part from `poll`, a slice per loop turn; lines of unchanged rows reused."""
        table = self.cloud.compute.table
        new = _HostPart(poll, table.changes)
        reuse = old.rows if old.poll is poll else {}
        domains = poll.domains
        for start in range(0, len(domains), SLICE):
            if start:
                await asyncio.sleep(0)
            cols: list[list[str]] = [[] for _ in FAMILIES]
            for d in domains[start:start + SLICE]:
                inst = table.get(d.name)
                if inst is None or inst.host != host:
                    continue
                prev = reuse.get(d.name)
                if prev is not None and prev[0] is inst:
                    lines = prev[1]
                else:
                    lines = _lines(host, inst, d)
                    self.rendered += 1
                new.rows[d.name] = (inst, lines)
                for col, line in zip(cols, lines):
                    col.append(line)
            if cols[0]:
                for chunk, col in zip(new.chunks, cols):
                    chunk.append("".join(col).encode())
        return new


def _lines(host: str, inst: Instance, d: DomainStats) -> Lines:
    i = _esc(d.name)
    return (f'cloudctl_instance_info{{host="{_esc(host)}",instance="{i}",instance_type="{_esc(inst.instance_type)}",'
            f'zone="{_esc(inst.zone)}"}} 1.0\n',
            f'cloudctl_instance_cpu_seconds_total{{instance="{i}"}} {floatToGoString(d.cpu_time_ns / 1e9)}\n',
            f'cloudctl_instance_memory_bytes{{instance="{i}"}} {floatToGoString(d.memory_bytes)}\n',
            f'cloudctl_instance_block_read_bytes_total{{instance="{i}"}} {floatToGoString(d.block_read_bytes)}\n',
            f'cloudctl_instance_block_write_bytes_total{{instance="{i}"}} {floatToGoString(d.block_write_bytes)}\n',
            f'cloudctl_instance_network_receive_bytes_total{{instance="{i}"}} {floatToGoString(d.net_rx_bytes)}\n',
            f'cloudctl_instance_network_transmit_bytes_total{{instance="{i}"}} {floatToGoString(d.net_tx_bytes)}\n')


def _esc(v: str) -> str:
    """A label value escaped as the text format wants (backslash, double quote, newline)."""
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v
