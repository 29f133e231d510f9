"""`/metrics` is written by cloudctl's own text writer (api/metrics_format.py), not prometheus_client
(~2 MiB of every controller's memory, issue 14). Held here to the library's own writer,
`generate_latest`, byte for byte on the same samples, and to its parser on a served controller."""
from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import prometheus_client.metrics as client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from cloudctl.api import metrics_format as fmt
from cloudctl.api.metrics_format import Family, Registry, go_float
from cloudctl.api.metrics_plain import PlainCounter, PlainHistogram
from cloudctl.api.metrics_text import SAMPLES, registry_text

from support import write_config

ODD = ['rack "7"', "back\\slash", "new\nline", "ünïcødé ✓", "", "tab\there", "\\n literally", '"\\"']


class _Library:
    """Our families as the library's Metric objects, for its writer."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        out = []
        for f in self.families:
            m = Metric(f.name, f.documentation, f.type)
            for name, labels, value in f.samples:
                m.add_sample(name, labels, value)
            out.append(m)
        return out


def theirs(families: list[Family]) -> bytes:
    r = CollectorRegistry(auto_describe=False)
    r.register(_Library(families))   # type: ignore[arg-type]
    return generate_latest(r)


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-9, 123456.0, 999999.0, 1000000.0, 1234567.0, 9999999.5, 10**7, 2**53 + 1,
           2**63 - 1, 2**64, 10**20, 1e16, 1.5e16, 1e22, -1e22, -12345678.0, 5e-324, 1.7976931348623157e308,
           math.inf, -math.inf, math.nan, 0.1 + 0.2, 1 / 3]


@pytest.mark.parametrize("value", SPECIAL)
def test_values_are_written_as_the_library_writes_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=0, max_value=2**64),
                 st.integers(min_value=1, max_value=10**12).map(lambda n: n / 8)))
def test_any_value_is_written_as_the_library_writes_it(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def _families(rng: random.Random) -> list[Family]:
    """Counters, gauges and histograms with odd label values, unlabelled and empty families,
    `_created` samples and the other trailing suffixes, in random orders."""
    fams = []
    for n in range(12):
        kind = rng.choice(["counter", "gauge", "histogram"])
        labels = rng.sample(["host", "zone", "api", "action", "b", "a"], rng.randint(0, 3))
        f = Family(f"t_family_{n}", rng.choice(["plain help", "with \\ and \n in it", "ünïcødé"]), kind, labels)
        for _ in range(rng.randint(0, 6)):
            values = [rng.choice(ODD + ["host-a", "ec2"]) for _ in labels]
            named = dict(zip(labels, values))
            v = rng.choice(SPECIAL + [rng.random() * 10 ** rng.randint(-3, 12)])
            if kind == "histogram":
                for le in ("0.005", "1.0", "+Inf"):
                    f.add_sample(f.name + "_bucket", {**named, "le": le}, v)
                f.add_sample(f.name + "_count", named, v)
                f.add_sample(f.name + "_sum", named, v)
            else:
                f.add(values, v)
            for suffix in rng.sample(list(fmt.TRAILING), rng.randint(0, 2)):
                f.add_sample(f.name + suffix, named, 1_700_000_000.25)
        fams.append(f)
    fams.append(Family.counter("t_total_value", "one number", value=7))
    fams.append(Family.gauge("t_empty", "no samples", ["x"]))
    return fams


@pytest.mark.parametrize("seed", range(40))
def test_families_are_written_as_the_library_writes_them(seed: int) -> None:
    fams = _families(random.Random(seed))
    assert fmt.text(fams) == theirs(fams)


@pytest.mark.parametrize("seed", range(5))
def test_a_registry_written_in_slices_is_the_whole_text(seed: int) -> None:
    """Families longer than a slice (a histogram per API action, their _created samples after the
    buckets under their own HELP/TYPE), empty ones: the pieces joined are the text in one go."""
    rng = random.Random(seed)
    r = Registry()
    latency = PlainHistogram("t_request_duration_seconds", "handling time", ["api", "action"], (.001, .1, 1))
    requests = PlainCounter("t_requests", "requests", ["api", "action", "code"])
    for c in (latency, requests, PlainCounter("t_unused", "never incremented", ["x"])):
        r.register(c)
    fams = _families(rng)
    r.register(type("Fixed", (), {"collect": lambda self: fams})())
    for n in range(SAMPLES + rng.randint(1, 40)):   # more _created samples than a slice, too
        latency.observe(latency.child("ec2", f"Action{n}"), n / 100)
        requests.inc("ec2", f"Action{n}", rng.choice(ODD))
    pieces = asyncio.run(registry_text(r))
    assert len(pieces) > 10
    whole = fmt.text(r.collect())
    assert b"".join(pieces) == whole == theirs(list(r.collect()))


def test_the_plain_series_write_what_the_librarys_series_write(monkeypatch: Any) -> None:
    """A labelled counter, a labelled and an unlabelled histogram: the same observations, the same
    text as prometheus_client's Counter and Histogram, with and without `_created`."""
    obs = [("h2", 0.0), ("h1", 0.001), ("h2", 0.0031), ("h1", 7.5), ("h3", 5.0), ("h1", 0.0004), ("h2", 0.01)]
    buckets = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0)
    for created in (True, False):
        monkeypatch.setattr(client, "_use_created", created)
        monkeypatch.setattr(fmt, "created_series", created)
        monkeypatch.setattr("time.time", lambda: 1_700_000_000.25)
        lib = CollectorRegistry(auto_describe=False)
        l_count = Counter("t_polls_failed", "failed", ["host"], registry=lib)
        l_hist = Histogram("t_poll_seconds", "a poll", ["host"], buckets=buckets, registry=lib)
        l_lag = Histogram("t_lag_seconds", "lag", buckets=buckets, registry=lib)
        count, hist = PlainCounter("t_polls_failed", "failed", ["host"]), PlainHistogram("t_poll_seconds", "a poll",
                                                                                         ["host"], buckets)
        lag = PlainHistogram("t_lag_seconds", "lag", (), buckets)
        observe_lag = lag.observer()
        ours = Registry()
        for c in (count, hist, lag):
            ours.register(c)
        assert fmt.text(ours.collect()) == generate_latest(lib)   # (nothing observed yet)
        for host, seconds in obs:
            l_count.labels(host).inc()
            count.inc(host)
            l_hist.labels(host).observe(seconds)
            hist.observe(hist.child(host), seconds)
            l_lag.observe(seconds)
            observe_lag(seconds)
        text = fmt.text(ours.collect())
        assert text == generate_latest(lib)
        assert (b't_polls_failed_created{host="h2"}' in text) is created
        assert b"t_lag_seconds_count 7.0" in text


async def test_the_consoles_charts_read_the_request_series(tmp_path: Path, model_cache: Path) -> None:
    """The operator console's request rate and latency charts sum the request histogram's
    samples (console/charts.py): they move with the requests counted, as a scrape does."""
    from cloudctl.api.metrics import Metrics
    from cloudctl.config import load_config
    from cloudctl.console.charts import Sampler
    from cloudctl.core.cloud import Cloud

    cloud = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    try:
        metrics = Metrics(cloud, ["DescribeInstances"])
        sampler = Sampler(cloud, metrics, None, period_s=2.0)
        sampler.sample()
        for seconds in (0.002, 0.004, 0.006, 0.008):
            metrics.request("ec2", "DescribeInstances", "ok", seconds)
        sampler.sample()
        assert list(sampler.series["rate"]) == [2.0]   # 4 requests in 2 s
        assert list(sampler.series["latency_ms"]) == [pytest.approx(5.0)]
        assert list(sampler.series["running"]) == [0.0, 0.0]
    finally:
        await cloud.stop()
