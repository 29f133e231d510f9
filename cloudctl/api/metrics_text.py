"""A registry's text exposition written a slice of samples per turn of the event loop.

One family can be long: the request latency histogram has ~17 lines per API action used, so
~1,700 lines once 100 actions have been called. Written whole, that is one stall per scrape.
Here each family is written `SAMPLES` samples at a time, its header (and each trailing group's)
with the first slice, so the pieces joined are exactly `metrics_format.text` of the registry.
"""
from __future__ import annotations

import asyncio

from .metrics_format import Registry, header, sample_lines, split

SAMPLES = 150   # samples written per loop turn: ~1 ms


async def registry_text(registry: Registry) -> list[bytes]:
    """`metrics_format.text(registry.collect())` in pieces, yielding to the loop between them."""
    out: list[bytes] = []
    for family in registry.collect():   # (collect() yields one family at a time)
        own, trailing = split(family)
        groups = [(header(family.exposed, family.documentation, family.type), own)]
        groups += [(header(family.name + suffix, family.documentation, "gauge"), samples)
                   for suffix, samples in trailing]
        for head, samples in groups:
            for k in range(0, max(len(samples), 1), SAMPLES):
                out.append(((head if k == 0 else "") + sample_lines(samples[k:k + SAMPLES])).encode())
                await asyncio.sleep(0)
    return out
