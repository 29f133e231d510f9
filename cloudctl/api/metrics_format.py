"""Prometheus' text exposition format, written by the controller itself.

`/metrics` is the only thing the controller wanted from prometheus_client, and that package's
`__init__` brings its HTTP servers, WSGI and gzip exposition, push gateway and parser with it:
~2 MiB of every controller's resident memory (issue 14's base RSS). What is written here is what
that library wrote for the same samples, byte for byte (tests/test_metrics_format.py holds the
two writers to each other): HELP and TYPE lines with the exposed name (`_total` on a counter),
labels sorted by name, Go's float format, and the `_created` samples last, as a gauge family of
their own. The names are the code's constants (no escaping of names needed); label values and
help texts are escaped.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: OpenMetrics-only samples that the text format writes after the family, under their own
#: HELP/TYPE as gauges (as Prometheus' client libraries do).
TRAILING = ("_created", "_gsum", "_gcount")


def _created_wanted() -> bool:
    """`PROMETHEUS_DISABLE_CREATED_SERIES` (the client libraries' variable, read once at start as
    theirs is): true, 1 or t drops the `_created` samples of counters and histograms."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


#: Whether counters and histograms write their `_created` samples (read at collect time).
created_series = _created_wanted()

Labels = dict[str, str]


class Sample(NamedTuple):
    name: str
    labels: Labels
    value: float


def go_float(value: float) -> str:
    """A value as Go's strconv formats it in Prometheus' text (Python's repr, but exponents from
    1e+06 on for positive numbers, and +Inf, -Inf, NaN spelled as Go spells them)."""
    v = float(value)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    text = repr(v)
    point = text.find(".")
    if v > 0 and point > 6:   # 1234567.0 -> 1.234567e+06; Python keeps the digits until 1e16
        digits = (text[:point] + text[point + 1:]).rstrip("0.")
        head = digits[0] + "." + digits[1:] if len(digits) > 1 else digits[0] + "."
        return f"{head.rstrip('.')}e+{point - 1:02d}"
    return text


def label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


class Family:
    """One metric family and its samples, as a collector hands them to the writer."""

    __slots__ = ("name", "documentation", "type", "labelnames", "samples")

    def __init__(self, name: str, documentation: str, type: str, labels: Sequence[str] = (),
                 value: float | None = None) -> None:
        self.name, self.documentation, self.type = name, documentation, type
        self.labelnames = tuple(labels)
        self.samples: list[Sample] = []
        if value is not None:
            self.add((), value)

    @classmethod
    def counter(cls, name: str, documentation: str, labels: Sequence[str] = (),
                value: float | None = None) -> "Family":
        return cls(name, documentation, "counter", labels, value)

    @classmethod
    def gauge(cls, name: str, documentation: str, labels: Sequence[str] = (),
              value: float | None = None) -> "Family":
        return cls(name, documentation, "gauge", labels, value)

    def add(self, labels: Sequence[str], value: float) -> None:
        """One sample of the family's own series: `<name>_total` for a counter, `<name>` else."""
        name = self.name + "_total" if self.type == "counter" else self.name
        self.samples.append(Sample(name, dict(zip(self.labelnames, labels)), value))

    def add_sample(self, name: str, labels: Labels, value: float) -> None:
        self.samples.append(Sample(name, labels, value))

    @property
    def exposed(self) -> str:
        """The name its HELP and TYPE lines carry."""
        return self.name + "_total" if self.type == "counter" else self.name


class Collector(Protocol):
    def collect(self) -> Iterable[Family]: ...


class Registry:
    """The collectors of one `/metrics` answer, in the order they are written."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Family]:
        for c in self._collectors:
            yield from c.collect()


def sample_lines(samples: Iterable[Sample]) -> str:
    out = []
    for name, labels, value in samples:
        if labels:
            pairs = ",".join(f'{k}="{label_value(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{name}{{{pairs}}} {go_float(value)}\n")
        else:
            out.append(f"{name} {go_float(value)}\n")
    return "".join(out)


def header(name: str, documentation: str, type: str) -> str:
    return f"# HELP {name} {_help(documentation)}\n# TYPE {name} {type}\n"


def split(family: Family) -> tuple[list[Sample], list[tuple[str, list[Sample]]]]:
    """The family's own samples, and its trailing groups (by suffix, in the order written)."""
    own: list[Sample] = []
    trailing: dict[str, list[Sample]] = {}
    for s in family.samples:
        for suffix in TRAILING:
            if s.name == family.name + suffix:
                trailing.setdefault(suffix, []).append(s)
                break
        else:
            own.append(s)
    return own, sorted(trailing.items())


def family_text(family: Family) -> bytes:
    """One family whole: its header, its samples, then each trailing group under its own header."""
    own, trailing = split(family)
    parts = [header(family.exposed, family.documentation, family.type), sample_lines(own)]
    for suffix, samples in trailing:
        parts += [header(family.name + suffix, family.documentation, "gauge"), sample_lines(samples)]
    return "".join(parts).encode()


def text(families: Iterable[Family]) -> bytes:
    """Families written in one go (a registry's `collect()`, for instance)."""
    return b"".join(family_text(f) for f in families)
