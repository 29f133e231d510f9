"""When Python's cycle collector may walk the long-lived state: not once it has been seen alive.

A full collection walks every tracked object: at 50,000 instances ~330,000 rows and their maps,
80-85 ms with the loop held, and up to seconds while instances are being added. Rows are frozen
dataclasses that form no reference cycles (reference counting frees a deleted row), so the
collector has nothing to find among them. Two moments move everything alive to the permanent
generation (`gc.freeze`, O(1)), so later full collections walk only what was made since:

- after each checkpoint (periodic, admin, or at start), the young garbage collected first;
- right after a checkpoint's snapshot is taken: its lists hold a reference to every row (335,000 at
  50,000 instances), and a collection that walks a young list reads the header of every object in
  it, a cache miss each: a gen-0 or gen-1 collection meeting the snapshot took 16-57 ms at 50k
  (`bench/store_stalls.py`). Frozen, the lists are never walked; they are freed when the write ends;
- right after a full collection that took longer than `SLOW_FULL_S`: it has just freed every
  unreachable cycle, so what it leaves is alive; this bounds the pauses while the state grows
  between checkpoints. Quick full collections are left as they are (they keep finding cycles).

And one habit of the young generation. CPython counts it as allocations minus deallocations of
any tracked object, old ones included, so a steady replacement of old objects by new ones (rows
replaced by state changes; each host's last poll, when that was 250 `DomainStats` objects a host)
frees about as many as it makes: the counter stays under its threshold of 700 while the young list
grows to tens of thousands (49,000 `DomainStats` at 50,000 instances), and the young collection that
finally comes walks them all, 17-23 ms on the loop (`bench/store_stalls.py` at 50k). `sweep_young`
every `YOUNG_SWEEP_S` keeps that list to what a tenth of a second makes (well under 1 ms a sweep).
What is kept from one poll to the next is packed (`PolledDomains`: a few objects a host), since
whatever is kept that long reaches the oldest generation, where every full collection walked it.

The cost: an object frozen while alive that later becomes part of unreachable cycle garbage (a
request in flight at that moment) is not collected until exit; a few objects per freeze, and
freezes are rare (one per checkpoint, one per slow collection, which needs the state to have
grown by about a quarter since the last).
"""
from __future__ import annotations

import gc
import time
from typing import Any

from ..store.store import Store

SLOW_FULL_S = 0.005
YOUNG_SWEEP_S = 0.1

_started = 0.0
freezes = 0   # for tests and the curious: freezes done by this policy


def freeze_long_lived() -> None:
    """Move everything alive now out of the collector's sight, after its young garbage is gone."""
    global freezes
    gc.collect(1)
    gc.freeze()
    freezes += 1


async def sweep_young() -> None:
    """A young collection now, whatever the counter says (see the module's last paragraph); the
    middle generation's too once its count is due, which a collection asked for never triggers
    (left alone, it held 10 s of sweeps' survivors and took 11.5 ms at 50k)."""
    gc.collect(1 if gc.get_count()[1] >= gc.get_threshold()[1] else 0)


def _hide_snapshot() -> None:
    """Snapshot listener: the snapshot's lists (and what else is young now) out of the collector's sight."""
    global freezes
    gc.freeze()
    freezes += 1


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    """gc callback (any thread, under the GIL): freeze after a slow full collection."""
    global _started, freezes
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started = time.perf_counter()
    elif time.perf_counter() - _started > SLOW_FULL_S:
        gc.freeze()   # (the collection is over: this only moves list heads)
        freezes += 1


def install(store: Store) -> None:
    """Apply the policy: freeze after every checkpoint of `store` and after slow full collections."""
    store.checkpoint_listeners.append(freeze_long_lived)
    store.snapshot_listeners.append(_hide_snapshot)
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)
