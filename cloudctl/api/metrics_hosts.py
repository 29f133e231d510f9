"""A histogram with one series per host, kept as plain numbers (issue 14: per-host base RSS).

prometheus_client's labelled Histogram gives each label value a child holding a value object and
a lock per bucket: ~3.7 KiB a host for `cloudctl_host_poll_duration_seconds` (0.7 MiB with 200
hosts). This keeps a list of counts per host and writes the same samples, in the same order, as
that child would (`_bucket` per bound, cumulative, then `_count`, `_sum`, `_created`), so the
scrape's text is unchanged. Observed and collected on the loop thread only (the monitor's
`on_poll`, the scrape), so it needs no lock.
"""
from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence

from prometheus_client import metrics as _client
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString


class PerHostHistogram(Collector):
    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets] + ([] if buckets and buckets[-1] == INF else [INF])
        self._le = [floatToGoString(b) for b in self.bounds]
        # host -> [observations per bucket (not cumulative)..., sum, created]: in first-seen order
        self._hosts: dict[str, list[float]] = {}

    def observe(self, host: str, amount: float) -> None:
        h = self._hosts.get(host)
        if h is None:
            h = self._hosts[host] = [0.0] * len(self.bounds) + [0.0, time.time()]
        h[-2] += amount
        h[bisect.bisect_left(self.bounds, amount)] += 1   # (the first bound >= amount, as `le` means)

    def collect(self) -> Iterable[Metric]:
        n = self.name
        m = Metric(n, self.documentation, "histogram")
        for host, h in self._hosts.items():
            acc = 0.0
            for i, le in enumerate(self._le):
                acc += h[i]
                m.add_sample(n + "_bucket", {"host": host, "le": le}, acc)
            m.add_sample(n + "_count", {"host": host}, acc)
            m.add_sample(n + "_sum", {"host": host}, h[-2])
            if _client._use_created:   # (PROMETHEUS_DISABLE_CREATED_SERIES, as the library's own)
                m.add_sample(n + "_created", {"host": host}, h[-1])
        return [m]
