"""A registry's text exposition written a slice of samples per turn of the event loop.

prometheus_client's writer takes ~6 us a line, and one family can be long: the request
latency histogram has ~17 lines per API action used, so ~1,700 lines (~10 ms) once 100
actions have been called. Written whole, that is one stall per scrape. Here each family is
written `SAMPLES` samples at a time by generate_latest itself, the repeated HELP/TYPE lines
dropped, so the pieces joined are exactly generate_latest(registry).
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

SAMPLES = 150   # samples written per loop turn: ~1 ms
# Samples generate_latest writes after the family's others, under their own HELP/TYPE lines.
_TRAILING = ("_created", "_gsum", "_gcount")


async def registry_text(registry: Collector) -> list[bytes]:
    """generate_latest(registry) in pieces, yielding to the loop between them."""
    out: list[bytes] = []
    for family in registry.collect():   # (collect() yields one family at a time)
        main: list[object] = []
        trailing: dict[str, list[object]] = {}
        for s in family.samples:
            suffix = next((x for x in _TRAILING if s.name == family.name + x), None)
            if suffix is None:
                main.append(s)
            else:
                trailing.setdefault(suffix, []).append(s)
        # The family's own HELP/TYPE come with its first piece; each trailing group's come
        # with that group's first piece (a piece of a trailing group repeats the family's too).
        for k in range(0, max(len(main), 1), SAMPLES):
            out.append(_drop_lines(_write(family, main[k:k + SAMPLES]), 2 if k else 0))
            await asyncio.sleep(0)
        for _, samples in sorted(trailing.items()):
            for k in range(0, len(samples), SAMPLES):
                out.append(_drop_lines(_write(family, samples[k:k + SAMPLES]), 4 if k else 2))
                await asyncio.sleep(0)
    return out


def _write(family: Metric, samples: list[object]) -> bytes:
    part = copy.copy(family)
    part.samples = samples   # type: ignore[assignment]
    return generate_latest(_Only(part))


def _drop_lines(text: bytes, n: int) -> bytes:
    return text.split(b"\n", n)[n] if n else text


class _Only(Collector):
    """One family as a collector, for generate_latest."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return (self.family,)
