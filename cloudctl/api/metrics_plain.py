"""A labelled counter and histogram kept as plain numbers, for the series touched most or kept most.

Every API request counts itself in `cloudctl_api_requests` and observes its time in
`cloudctl_api_request_duration_seconds`: prometheus_client's children take a lock per value
touched (the counter's, the histogram's sum and one bucket, found by a walk over the bounds),
~14k instructions of a by-id describe's ~600k (issue 14). `cloudctl_host_poll_duration_seconds`
has one series per host: the library's child holds a value object and a lock per bucket, ~3.7 KiB
a host (0.7 MiB with 200 hosts). These keep a list of numbers per label set instead and write the
same samples, in the same order, as the library's children would (`_total` then `_created` for a
counter; `_bucket` per bound, cumulative, then `_count`, `_sum`, `_created` for a histogram), so
the scrape's text is unchanged. Observed and collected on the loop thread only (the API handlers,
the monitor's `on_poll`, the scrape), so they need no lock.
"""
from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from . import metrics_format as fmt
from .metrics_format import Family, go_float

INF = float("inf")


class PlainCounter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._rows: dict[tuple[str, ...], list[float]] = {}   # labels -> [value, created], first-seen order

    def child(self, *labels: str) -> list[float]:
        """The label set's [value, created]: add to its first item to count (`row[0] += 1`)."""
        row = self._rows.get(labels)
        if row is None:
            row = self._rows[labels] = [0.0, time.time()]
        return row

    def inc(self, *labels: str) -> None:
        self.child(*labels)[0] += 1

    def collect(self) -> Iterable[Family]:
        m = Family.counter(self.name, self.documentation)
        created = fmt.created_series
        for labels, (value, made) in self._rows.items():
            named = dict(zip(self.labelnames, labels))
            m.add_sample(self.name + "_total", named, value)
            if created:
                m.add_sample(self.name + "_created", named, made)
        return [m]


class PlainHistogram:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = [float(b) for b in buckets] + ([] if buckets and buckets[-1] == INF else [INF])
        self._le = [go_float(b) for b in self.bounds]
        # labels -> [observations per bucket (not cumulative)..., sum, created]: in first-seen order
        self._rows: dict[tuple[str, ...], list[float]] = {}

    def child(self, *labels: str) -> list[float]:
        """The label set's row, for `observe`."""
        row = self._rows.get(labels)
        if row is None:
            row = self._rows[labels] = [0.0] * len(self.bounds) + [0.0, time.time()]
        return row

    def observe(self, row: list[float], amount: float) -> None:
        row[-2] += amount
        row[bisect.bisect_left(self.bounds, amount)] += 1   # (the first bound >= amount, as `le` means)

    def observer(self, *labels: str) -> Callable[[float], None]:
        """`observe` for one label set (all of an unlabelled histogram), for a callback."""
        return partial(self.observe, self.child(*labels))

    def collect(self) -> Iterable[Family]:
        n = self.name
        m = Family(n, self.documentation, "histogram")
        created = fmt.created_series
        for labels, row in self._rows.items():
            named = dict(zip(self.labelnames, labels))
            acc = 0.0
            for i, le in enumerate(self._le):
                acc += row[i]
                m.add_sample(n + "_bucket", {**named, "le": le}, acc)
            m.add_sample(n + "_count", named, acc)
            m.add_sample(n + "_sum", named, row[-2])
            if created:
                m.add_sample(n + "_created", named, row[-1])
        return [m]
