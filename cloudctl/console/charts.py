"""Small charts of figures the controller already exports on /metrics, over the last hour.

A sampler reads them every `period_s` into fixed-size rings (no pass over the instances: the
instances-by-state count is kept by the table); a chart is a polyline's points, drawn by the
template as inline SVG. No chart library, no script.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..core.cloud import Cloud
from ..slim import dataclass

WIDTH, HEIGHT = 300.0, 60.0
STATES = ("pending", "running", "stopped", "shutting-down")


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    points: str      # "x,y x,y ..." in a WIDTH x HEIGHT box, y down
    last: float
    top: float


def _sum(metric: Any, suffix: str) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith(suffix))


class Sampler:
    def __init__(self, cloud: Cloud, metrics: Any, monitor: Any, period_s: float = 10.0, keep: int = 360) -> None:
        self.cloud, self.metrics, self.monitor = cloud, metrics, monitor
        self.period_s = period_s
        self.series: dict[str, deque[float]] = {k: deque(maxlen=keep) for k in
                                                ("rate", "latency_ms", "lag_ms", *STATES)}
        self._last: tuple[float, float] | None = None

    def sample(self) -> None:
        if self.metrics is not None:
            took = _sum(self.metrics.latency, "_sum")   # (its count is the requests answered)
            count = _sum(self.metrics.latency, "_count")
            if self._last is not None:
                n = max(0.0, count - self._last[1])
                self.series["rate"].append(n / self.period_s)
                self.series["latency_ms"].append(1000 * (took - self._last[0]) / n if n else 0.0)
            self._last = (took, count)
        if self.monitor is not None:
            self.series["lag_ms"].append(1000 * self.monitor.last_lag)
        counts = self.cloud.compute.by_state.counts
        for s in STATES:
            self.series[s].append(float(counts.get(s, 0)))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period_s)

    def charts(self) -> list[Chart]:
        titles = {"rate": ("API requests", "/s"), "latency_ms": ("API latency (mean)", "ms"),
                  "lag_ms": ("event-loop lag", "ms"), **{s: (f"instances {s}", "") for s in STATES}}
        return [chart(titles[k][0], titles[k][1], list(v)) for k, v in self.series.items()]


def chart(title: str, unit: str, values: list[float]) -> Chart:
    top = max(values, default=0.0) or 1.0
    step = WIDTH / max(1, len(values) - 1)
    pts = " ".join(f"{i * step:.1f},{HEIGHT - HEIGHT * v / top:.1f}" for i, v in enumerate(values))
    return Chart(title, unit, pts, values[-1] if values else 0.0, top)


def sampling(sampler: Sampler) -> Any:
    """A cleanup_ctx running the sampler while the app serves."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sampler.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ctx
