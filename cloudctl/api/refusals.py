"""One short log line per refused request, rate-limited per source, for every listener.

A client without credentials can send malformed or hostile calls as fast as it likes; logging each
with a traceback (or with the values it sent) let one client write gigabytes of log an hour and
forge log lines. Here a refusal is one bounded line: the listener, the source, a reason from the
code's own small vocabulary, and details the caller built with `clip()` (cut and escaped, so no
control character or newline from the wire reaches the log). Each source gets at most `burst`
lines per `window_s`; the rest are counted and summarized in one line when the window ends.
Every refusal is counted through `observe` (Prometheus), logged or not.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from ..slim import dataclass

log = logging.getLogger("cloudctl.refusals")

OTHER_SOURCES = "other-sources"   # the key once `max_sources` are being tracked


def clip(value: object, limit: int = 64) -> str:
    """`value` as a printable ASCII literal of at most `limit` characters before escaping."""
    text = value if isinstance(value, str) else str(value)
    cut = ascii(text[:limit])
    return cut if len(text) <= limit else f"{cut}...({len(text)} chars)"


def source_key(remote: str | None) -> str:
    """The rate-limit key of a peer address: the address, or its /64 for IPv6 (one host's range)."""
    if not remote:
        return "-"
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return clip(remote, 64)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RefusalLog:
    """The refusals of one listener (`api`: "xmlrpc", "ec2", "hil", ...)."""

    def __init__(self, api: str, burst: int = 5, window_s: float = 60.0, max_sources: int = 1024,
                 logger: logging.Logger = log) -> None:
        self.api = api
        self.burst = burst
        self.window_s = window_s
        self.max_sources = max_sources
        self.log = logger
        self.observe: Callable[[str, str, bool], None] | None = None   # api, reason, logged?
        self._windows: dict[str, _Window] = {}

    def refused(self, remote: str | None, reason: str, detail: str = "") -> bool:
        """Record one refusal; True if it was logged. `detail` must already be bounded (`clip`)."""
        now = time.monotonic()
        key = source_key(remote)
        w = self._windows.get(key)
        if w is not None and now - w.start >= self.window_s:
            self._end(key)
            w = None
        if w is None:
            if len(self._windows) >= self.max_sources:
                self._sweep(now)
            if len(self._windows) >= self.max_sources:
                key = OTHER_SOURCES
                w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(now)
                self._schedule(key)
        logged = w.logged < self.burst
        if logged:
            w.logged += 1
            self.log.info("%s: refused a request from %s: %s%s", self.api, key, reason,
                          f" ({detail})" if detail else "")
        else:
            w.suppressed += 1
        if self.observe is not None:
            self.observe(self.api, reason, logged)
        return logged

    def flush(self) -> None:
        """End every window now (shutdown, tests): their summaries are logged."""
        for key in list(self._windows):
            self._end(key)

    def _end(self, key: str) -> None:
        w = self._windows.pop(key, None)
        if w is not None and w.suppressed:
            self.log.warning("%s: %d more refusals from %s in %.0f s were not logged", self.api,
                             w.suppressed, key, time.monotonic() - w.start)

    def _sweep(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w.start >= self.window_s]:
            self._end(key)

    def _schedule(self, key: str) -> None:
        """End the window on time, so a source that stops still gets its summary line."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return   # outside a loop (tools, tests): the window ends at the next refusal or flush()
        w = self._windows[key]

        def end() -> None:
            if self._windows.get(key) is w:
                self._end(key)
        loop.call_later(self.window_s, end)


class MalformedHttp(logging.Filter):
    """On aiohttp's server logger: a request its HTTP parser refused (bad header, line too long,
    bad chunk: a 4xx) becomes a refusal of `refusals` instead of an ERROR with a traceback quoting
    the input; other records, real faults among them, pass unchanged."""

    def __init__(self, refusals: RefusalLog) -> None:
        super().__init__()
        self.refusals = refusals

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return True
        # aiohttp's message is "Error handling request from %s" with the peer's address
        args = record.args if isinstance(record.args, tuple) else ()
        self.refusals.refused(args[0] if args and isinstance(args[0], str) else None, "bad_http",
                              type(exc).__name__)
        return False
