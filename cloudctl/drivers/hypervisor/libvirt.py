"""The libvirt implementation of the hypervisor driver contract.

Every libvirt call blocks (the test driver for microseconds, a remote libvirtd for up to seconds),
so all of them run in a small thread pool per driver and the event loop only awaits futures.
Lifecycle events come from libvirt's own event loop, run on a thread of its own (see "Event-loop
integration"), and are handed to the asyncio loop one by one, in order.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import libvirt  # type: ignore[import-untyped]

if TYPE_CHECKING:   # (ElementTree and expat: imported by the rare paths that parse XML, on the host's thread)
    import xml.etree.ElementTree as ET

from ...handoff import run_in
from ...slim import dataclass
from .base import (
    METADATA_NS,
    POWER_CODE,
    DomainEvent,
    DomainInfo,
    DomainStates,
    FirewallSpec,
    HostPoll,
    HostResources,
    HypervisorDriver,
    HypervisorError,
    PolledDomains,
    Power,
    disk_xml,
)
from .idlepool import Lane, SharedPool
from .nwfilter import filter_name, nwfilter_xml
from .ovs_plug import HybridPlug, PlugError

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSOLE_TAIL_BYTES = 64 * 1024

# ---------------------------------------------------------------------------------------------
# Event-loop integration
# ---------------------------------------------------------------------------------------------
#
# libvirt's own event loop (its poll-based default implementation, in C) runs on a thread of its
# own; the asyncio loop sees a lifecycle event only (`LibvirtDriver._on_lifecycle` hands it over
# with call_soon_threadsafe). libvirt calls its event hooks from whichever thread makes an API
# call: a remote connection turns its socket's watch off and on and touches its keepalive timer
# around every RPC, and queueing a domain event arms a timer. Run on the asyncio loop (libvirtaio,
# wrapped to be thread-safe), those hooks and the timers' tasks were ~10 % of a launch's loop time
# (`bench/profile_hot.py`: libvirtaio's `_timer`, the queued hooks' replay); on libvirt's thread
# they cost the loop nothing, and the default implementation is thread-safe by design (a hook
# called from another thread wakes its poll). libvirt accepts one event implementation per
# process, registered before the first connection opens: the first driver to open registers it.
# Its cost grows with the hosts (GLib's loop steps over every connection's socket and source on each
# wake-up: `bench/host_threads.py`). An epoll loop of Python hooks on this thread was tried and not
# kept: each hook takes the GIL, a worker waiting for it behind the busy asyncio loop waits out the
# switch interval, and the launches' domains fell behind them (docs/scaling.md, branch libvirt-epoll).

_events_thread: threading.Thread | None = None
_setup_lock = threading.Lock()


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours arrive as exceptions instead."""


def _run_events() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:   # (releases the GIL while it polls)
            log.error("libvirt's event loop failed an iteration")
            time.sleep(0.1)


def _start_events() -> None:
    """Register libvirt's default event implementation and start its thread, once per process."""
    global _events_thread
    with _setup_lock:
        if _events_thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        if libvirt.virEventRegisterDefaultImpl() < 0:
            raise HypervisorError("cannot register libvirt's event loop")
        _events_thread = threading.Thread(target=_run_events, name="libvirt-events", daemon=True)
        _events_thread.start()


# The hosts' libvirt calls run on threads they share, each host through a lane of its own (at most
# its `workers` calls in flight, so a hung host holds only those): one parked thread per host was
# ~28 KiB a host while idle, and 200 hosts' polls keep one or two shared threads busy.
_threads: SharedPool | None = None


def _lane(workers: int, idle_s: float) -> Lane:
    """A host's lane over the shared threads (made with the first host's idle time)."""
    global _threads
    with _setup_lock:
        if _threads is None:
            _threads = SharedPool("libvirt", idle_s=idle_s)
        return _threads.lane(workers)


# ---------------------------------------------------------------------------------------------
# Mapping libvirt's vocabulary
# ---------------------------------------------------------------------------------------------

_EVENT_KIND: dict[int, str] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


def _event_details() -> dict[int, dict[int, str]]:
    """Detail names from the binding's own constants, so a newer libvirt's details get names too."""
    prefixes = {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: ("DEFINED", ""),
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("UNDEFINED", ""),
        libvirt.VIR_DOMAIN_EVENT_STARTED: ("STARTED", ""),
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("SUSPENDED", ""),
        libvirt.VIR_DOMAIN_EVENT_RESUMED: ("RESUMED", ""),
        libvirt.VIR_DOMAIN_EVENT_STOPPED: ("STOPPED", ""),
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("SHUTDOWN", ""),
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("PMSUSPENDED", "pm-"),
        libvirt.VIR_DOMAIN_EVENT_CRASHED: ("CRASHED", ""),
    }
    table: dict[int, dict[int, str]] = {}
    for event, (word, tag) in prefixes.items():
        prefix = f"VIR_DOMAIN_EVENT_{word}_"
        table[event] = {
            getattr(libvirt, const): tag + const[len(prefix):].lower().replace("_", "-")
            for const in dir(libvirt)
            if const.startswith(prefix) and not const.endswith("_LAST")
        }
    return table


_EVENT_DETAIL = _event_details()

# Kinds for which guest_initiated can be true: the domain went down.
_DOWN_KINDS = frozenset({"stopped", "shutdown", "crashed"})

_NOT_FOUND_CODES = frozenset({libvirt.VIR_ERR_NO_DOMAIN})

_UNDEFINE_FULL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
    | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_NVRAM", 0)
    | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0)
)
# What every driver accepts (the test driver refuses NVRAM, checkpoints and TPM).
_UNDEFINE_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA


def _power(state: int, reason: int) -> Power:
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return Power.PAUSED
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return Power.SHUTTING_DOWN
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return Power.CRASHED if reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED else Power.OFF
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return Power.CRASHED
    return Power.RUNNING  # RUNNING, BLOCKED, and NOSTATE (Xen's "running but not scheduled")


_POLL_GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
                | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_INTERFACE
                | libvirt.VIR_DOMAIN_STATS_BLOCK)


_RUNNING_STATE = libvirt.VIR_DOMAIN_RUNNING
_RUNNING_CODE = POWER_CODE[Power.RUNNING]
_block_keys: list[tuple[str, str]] = []   # ("block.<i>.rd.bytes", "block.<i>.wr.bytes") for i = 0, 1, ...
_net_keys: list[tuple[str, str]] = []     # ("net.<i>.rx.bytes", "net.<i>.tx.bytes")
_keys_lock = threading.Lock()


def _keys(keys: list[tuple[str, str]], prefix: str, a: str, b: str, n: int) -> list[tuple[str, str]]:
    """The first `n` devices' two keys, made once for all polls (the lists are shared by the hosts'
    threads: the first poll to meet a device index extends them)."""
    with _keys_lock:
        while len(keys) < n:
            i = len(keys)
            keys.append((f"{prefix}.{i}.{a}", f"{prefix}.{i}.{b}"))
    return keys[:n]


def _packed(stats: list[tuple[libvirt.virDomain, dict[str, Any]]]) -> PolledDomains:
    """getAllDomainStats' answer packed as the monitor keeps it (`PolledDomains`): each domain's name,
    power, CPU time, balloon size (KiB → bytes), and its disks' and interfaces' byte counters summed
    (0 where the hypervisor gives none).

    Straight into the packed parts, with the device keys made once for all polls: no `DomainStats`
    and no f-string a domain. This runs on a host's thread holding the interpreter lock, which the
    loop waits for (up to the 5 ms switch interval, each time it comes back from a system call); a
    `DomainStats` and a key per device a domain made it 10-15 M instructions for 250 domains, 1.7-3.3 M
    now (docs/scaling.md, "The poll's domains packed as read")."""
    names: list[str] = []
    powers = bytearray()
    flat: list[int] = []
    block, net = _block_keys, _net_keys
    for dom, st in stats:
        get = st.get
        names.append(dom.name())
        state = get("state.state", 0)
        powers.append(_RUNNING_CODE if state == _RUNNING_STATE
                      else POWER_CODE[_power(state, get("state.reason", 0))])
        rd = wr = rx = tx = 0
        n = get("block.count", 0)
        if n:
            for k_rd, k_wr in (block[:n] if len(block) >= n else _keys(block, "block", "rd.bytes", "wr.bytes", n)):
                rd += get(k_rd, 0)
                wr += get(k_wr, 0)
        n = get("net.count", 0)
        if n:
            for k_rx, k_tx in (net[:n] if len(net) >= n else _keys(net, "net", "rx.bytes", "tx.bytes", n)):
                rx += get(k_rx, 0)
                tx += get(k_tx, 0)
        flat += (get("cpu.time", 0), get("balloon.current", 0) * 1024, rd, wr, rx, tx)
    return PolledDomains.packed(tuple(names), bytes(powers), flat)


def _error(e: libvirt.libvirtError) -> HypervisorError:
    return HypervisorError(
        e.get_error_message() or str(e), not_found=e.get_error_code() in _NOT_FOUND_CODES
    )


def _code(e: libvirt.libvirtError) -> int:
    return e.get_error_code() or 0


def _xml_identity(xml: str) -> tuple[str | None, str | None] | None:
    """(name, canonical uuid) of a domain XML, or None if it does not parse (libvirt will say why)."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    name = (root.findtext("name") or "").strip() or None
    raw = (root.findtext("uuid") or "").strip()
    try:
        uuid = str(uuidlib.UUID(raw)) if raw else None
    except ValueError:
        uuid = raw  # malformed; libvirt will reject it with its own message
    return name, uuid


_HEAD = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?<domain(?:\s[^>]*)?>\s*<name>([^<&]*)</name>")


def _names(xml: str, name: str) -> bool:
    """Does the XML plainly define `name`: a root `domain` whose first child is `<name>` with that
    text (whitespace around it aside), as the compiled templates write it? Then `_xml_identity`
    would give that name too (or no parse at all, which libvirt refuses by itself); anything else
    (comments, entities, another first child) answers False and is parsed."""
    m = _HEAD.match(xml)
    return m is not None and m.group(1).strip() == name


def _with_uuid(xml: str, uuid: str) -> str:
    """Insert a <uuid> so the definition replaces, not collides with, the existing domain.

    minidom rather than ElementTree because it keeps namespace prefixes (cloudctl:instance); imported
    here, on the host's worker thread, as this path is rare (~0.4 MiB of base RSS otherwise).
    """
    from xml.dom import minidom
    doc = minidom.parseString(xml)
    root = doc.documentElement
    assert root is not None
    element = doc.createElement("uuid")
    element.appendChild(doc.createTextNode(uuid))
    after = next((n for n in root.childNodes if getattr(n, "tagName", None) == "name"), None)
    root.insertBefore(element, after.nextSibling if after is not None else root.firstChild)  # type: ignore[arg-type]
    return root.toxml()


def _console_paths(xml: str) -> list[str]:
    """Files that receive the serial console: <log file=...> and type='file' <source path=...>."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    paths: list[str] = []
    for device in [*root.iterfind("devices/serial"), *root.iterfind("devices/console")]:
        logf = device.find("log")
        if logf is not None and logf.get("file"):
            paths.append(logf.get("file", ""))
        source = device.find("source")
        if device.get("type") == "file" and source is not None and source.get("path"):
            paths.append(source.get("path", ""))
    return list(dict.fromkeys(paths))


def _read_tail(paths: list[str], limit: int = CONSOLE_TAIL_BYTES) -> bytes:
    for path in paths:
        try:
            # Non-blocking and regular files only: a FIFO or device here must not hang a worker.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        with open(fd, "rb") as f:
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - limit))
                return f.read(limit)
            except OSError:
                continue
    return b""


@dataclass(slots=True)
class _Intent:
    """The driver itself is taking a domain down; its down events are not the guest's doing."""

    active: int = 0  # operations in flight
    until: float = 0.0  # after they finish, late events still count as ours until then
    done: bool = False  # the terminal event (stopped/undefined) arrived while in flight
    # Starts of ours whose "started" had not arrived when the stop began: those events come
    # before the stop's, so they must not close it (libvirt's event thread may lag our calls).
    starts_ahead: int = 0


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


#: Behind libvirt's own chains: bridged traffic to an instance's tap that no filter chain took.
#: libvirt rebuilds a guest's chains whenever its filter is redefined, and in that moment the
#: guest's traffic would meet FORWARD's ACCEPT policy (measured: 2 of 39 probes from a
#: disallowed address got through while the filter was redefined in a loop). This rule makes
#: that moment fail closed. Instance taps share a prefix (core/network.py TAP_PREFIX).
BACKSTOP = ["FORWARD", "-m", "physdev", "--physdev-out", "ci+", "--physdev-is-bridged", "-j", "DROP"]


def _ensure_backstop() -> None:
    """Append the backstop to this host's FORWARD chain once (local hosts only)."""
    try:
        if subprocess.run(["iptables", "-w", "-C", *BACKSTOP], capture_output=True).returncode != 0:
            subprocess.run(["iptables", "-w", "-A", *BACKSTOP], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log.error("cannot add the fail-closed FORWARD rule (%s): a guest may be briefly unfiltered while "
                  "libvirt rebuilds its filter", e)


def _check_bridge_filtering() -> None:
    """nwfilter's IP rules see bridged traffic only through br_netfilter; without it they
    silently filter nothing, so say so loudly."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            on = f.read().strip() == "1"
    except OSError:
        on = False
    if not on:
        log.error("net.bridge.bridge-nf-call-iptables is not 1 (br_netfilter): security groups are NOT "
                  "enforced on this host; load br_netfilter and set the sysctl to 1")


class LibvirtDriver(HypervisorDriver):
    """One libvirt connection (one hypervisor host) behind the HypervisorDriver contract."""

    #: How long after one of our stop/undefine/reboot calls returns its late events still count
    #: as ours. Remote libvirtd can deliver STOPPED after the call (qemu: 1-2 s after SHUTDOWN).
    intent_grace: float = 10.0
    #: Graceful stop polls the domain state at this interval, growing to the maximum.
    poll_interval: tuple[float, float] = (0.02, 1.0)
    #: A shared thread beyond the first ends after this long without a call (concurrent launches
    #: take up to `workers` threads a host; kept, 200 hosts' extra threads were ~22 MiB).
    pool_idle_s: float = 2.0

    def __init__(self, host: str, uri: str, *, workers: int = 4) -> None:
        self.host = host
        self.uri = uri
        self._workers = workers
        self._pool: Lane | None = None
        self._conn: libvirt.virConnect | None = None
        self._callback_id: int | None = None
        self._generation = 0
        self._events_seen = 0   # lifecycle callbacks so far, of any connection (`unchanged_since`)
        self._lost = False
        self._closed = False
        self._on_event: Callable[[DomainEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._reconnect_lock: asyncio.Lock | None = None
        self._intents: dict[str, _Intent] = {}
        self._starts: dict[str, int] = {}   # our starts whose "started" event has not arrived yet
        self._undefine_flags = _UNDEFINE_FULL
        self._hotplug = True  # False once libvirt said it cannot (un)plug devices live (test driver)
        self._bridge_filtering_checked = False
        self._plugged: set[HybridPlug] = set()   # made on this host since the controller started
        self._filter_mutex: asyncio.Lock | None = None
        parts = urlsplit(uri)
        self._in_process_test = parts.scheme == "test"   # embedded: no keepalive, no close callback
        self._local = parts.hostname in (None, "", "localhost", "127.0.0.1", "::1")

    # -- connection --------------------------------------------------------------------------

    async def open(self, on_event: Callable[[DomainEvent], None]) -> None:
        if self._conn is not None:
            raise HypervisorError(f"driver for {self.host} is already open")
        loop = asyncio.get_running_loop()
        _start_events()  # before libvirt.open, so the connection is created with events
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._on_event = on_event
        self._closed = False
        self._lost = False
        self._reconnect_lock = asyncio.Lock()
        if self._pool is None:
            self._pool = _lane(self._workers, self.pool_idle_s)
        await self._connect()

    async def _connect(self) -> None:
        assert self._pool is not None
        self._generation += 1
        generation = self._generation
        self._starts.clear()   # (the old connection's events will not come)
        conn, callback_id = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._connect_sync, generation
        )
        self._conn, self._callback_id, self._lost = conn, callback_id, False

    def _connect_sync(self, generation: int) -> tuple[libvirt.virConnect, int]:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            raise _error(e) from None
        try:
            if not self._in_process_test:
                try:
                    conn.setKeepAlive(5, 3)
                except libvirt.libvirtError as e:
                    log.warning("%s: no keepalive: %s", self.host, e.get_error_message())
                conn.registerCloseCallback(self._on_close, generation)
            callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, generation
            )
        except libvirt.libvirtError as e:
            self._disconnect_sync(conn, None)
            raise _error(e) from None
        return conn, callback_id

    def _disconnect_sync(self, conn: libvirt.virConnect, callback_id: int | None) -> None:
        """Best effort: the connection may already be dead, which is often why we are here."""
        if callback_id is not None:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        if not self._in_process_test:
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn, callback_id = self._conn, self._callback_id
        self._conn = self._callback_id = None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(
                pool, self._disconnect_sync, conn, callback_id
            )
        pool.shutdown(wait=False)

    def _on_close(self, conn: libvirt.virConnect, reason: int, generation: int) -> None:
        """libvirt's close callback (any thread): the next call reconnects."""
        if generation == self._generation:
            log.warning("%s: libvirt connection closed (reason %d)", self.host, reason)
            self._lost = True

    async def _connection(self) -> libvirt.virConnect:
        if self._closed or self._pool is None:
            raise HypervisorError(f"driver for {self.host} is not open")
        if self._conn is not None and not self._lost:
            return self._conn
        assert self._reconnect_lock is not None
        async with self._reconnect_lock:
            if self._conn is not None and not self._lost:
                return self._conn
            old, callback_id = self._conn, self._callback_id
            self._conn = self._callback_id = None
            loop = asyncio.get_running_loop()
            if old is not None:
                await loop.run_in_executor(self._pool, self._disconnect_sync, old, callback_id)
            log.info("%s: reconnecting to %s", self.host, self.uri)
            await self._connect()  # one attempt per call; raises HypervisorError on failure
            assert self._conn is not None
            return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in the pool; libvirt errors come back as HypervisorError."""
        conn = self._conn
        if conn is None or self._lost or self._closed or self._pool is None:
            conn = await self._connection()
        assert self._pool is not None
        # (handed back without run_in_executor's or wrap_future's chained futures: see handoff)
        return await run_in(self._pool, self._guarded, conn, fn, *args)

    def _guarded(self, conn: libvirt.virConnect, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(conn, *args)
        except libvirt.libvirtError as e:
            if conn is self._conn and not self._alive(conn):
                self._lost = True
            raise _error(e) from None

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive() == 1)  # a local check, no round trip
        except libvirt.libvirtError:
            return False

    # -- events --------------------------------------------------------------------------------

    def _on_lifecycle(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, generation: int
    ) -> None:
        """libvirt's lifecycle callback, on libvirt's event thread: handed to the loop, in order."""
        self._events_seen += 1   # (before anything else: a listing asked for before this is stale)
        try:
            if generation != self._generation or self._on_event is None:
                return
            name = dom.name()
            if threading.get_ident() == self._loop_thread:
                self._deliver(name, event, detail)
            elif self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver, name, event, detail)
        except RuntimeError:   # the loop is closed: the driver is gone with it
            log.debug("%s: lifecycle event after the loop closed", self.host)
        except Exception:  # an exception here would only be printed by libvirt's C glue
            log.exception("%s: lifecycle event dropped", self.host)

    def _deliver(self, name: str, event: int, detail: int) -> None:
        kind = _EVENT_KIND.get(event)
        if kind is None or self._on_event is None:
            return
        detail_name = _EVENT_DETAIL.get(event, {}).get(detail, str(detail))
        guest = self._guest_initiated(name, kind)
        try:
            self._on_event(DomainEvent(self.host, name, kind, detail_name, guest))
        except Exception:
            log.exception("%s: on_event failed for %s %s", self.host, name, kind)

    def _guest_initiated(self, name: str, kind: str) -> bool:
        intent = self._intents.get(name)
        if kind == "started":
            self._uncount_start(name)
            if intent is not None and intent.starts_ahead:
                intent.starts_ahead -= 1   # a start from before our stop: the stop is still to come
            elif intent is not None and not intent.active:
                # Events arrive in order: once the domain is up again, our stop is history and the
                # next stop is news. (Not at start() itself: our STOPPED may still be in flight.)
                del self._intents[name]
            return False
        if kind == "undefined":
            self._starts.pop(name, None)
        if kind == "undefined" and intent is not None:
            if intent.active:
                intent.done = True
            else:
                del self._intents[name]
            return False
        if kind not in _DOWN_KINDS:
            return False
        if intent is None:
            return True
        if not intent.active and time.monotonic() > intent.until:
            del self._intents[name]
            return True
        if kind == "stopped":
            if intent.active:
                intent.done = True
            else:
                del self._intents[name]
        return False

    def _begin(self, name: str) -> None:
        intent = self._intents.setdefault(name, _Intent())
        if not intent.active:
            intent.starts_ahead = self._starts.get(name, 0)
        intent.active += 1
        intent.done = False

    def _end(self, name: str) -> None:
        intent = self._intents.get(name)
        if intent is None:
            return
        intent.active -= 1
        if intent.active:
            return
        if intent.done:
            del self._intents[name]
        else:
            intent.until = time.monotonic() + self.intent_grace
        if len(self._intents) > 4096:
            now = time.monotonic()
            for stale in [n for n, i in self._intents.items() if not i.active and i.until < now]:
                del self._intents[stale]

    # -- the contract --------------------------------------------------------------------------

    async def resources(self) -> HostResources:
        return await self._call(self._resources_sync)

    def _resources_sync(self, conn: libvirt.virConnect) -> HostResources:
        model, memory_mib, cpus = conn.getInfo()[:3]
        free: int | None = None
        # The test driver's figure is static and 0 for a node file without NUMA cells.
        if not self._in_process_test:
            try:
                free = conn.getFreeMemory() // (1024 * 1024)
            except libvirt.libvirtError:
                free = None
        return HostResources(cpus=cpus, memory_mib=memory_mib, model=model, free_memory_mib=free)

    async def list_domains(self, known: Collection[str] = ()) -> list[DomainInfo]:
        return await self._call(self._list_sync, frozenset(known))

    async def domain_states(self) -> DomainStates | None:
        # The stamp is taken on the loop before the call goes out: an event counted after it may
        # or may not be in the listing, so any such event makes the listing stale.
        stamp = (self._generation, self._events_seen)
        states = await self._call(self._states_sync, stamp)
        return states if self._generation == stamp[0] else None

    def unchanged_since(self, states: DomainStates) -> bool:
        return (states.stamp == (self._generation, self._events_seen) and not self._lost
                and not self._closed and self._conn is not None)

    @staticmethod
    def _states_sync(conn: libvirt.virConnect, stamp: object) -> DomainStates:
        return DomainStates.of(((dom.name(), _power(stats.get("state.state", 0), stats.get("state.reason", 0)))
                                for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)), stamp)

    @staticmethod
    def _list_sync(conn: libvirt.virConnect, known: frozenset[str]) -> list[DomainInfo]:
        domains: list[DomainInfo] = []
        # One call for every domain's state (one RPC remotely), then one metadata call for each
        # domain the caller does not know: at start-up that is none but strays, rather than one
        # round trip per instance (50,000 of them took 18 s).
        for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
            name = dom.name()   # held by the handle: no round trip
            power = _power(stats.get("state.state", 0), stats.get("state.reason", 0))
            if name in known:
                domains.append(DomainInfo(name=name, power=power, managed=True))
                continue
            controller = None
            try:
                meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
                managed = True
                controller = _controller_of(meta)
            except libvirt.libvirtError as e:
                if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined since the listing
                if _code(e) != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    raise
                managed = False
            domains.append(DomainInfo(name=name, power=power, managed=managed, controller=controller))
        return domains

    async def poll(self) -> HostPoll:
        return await self._call(self._poll_sync)

    def _poll_sync(self, conn: libvirt.virConnect) -> HostPoll:
        if not self._in_process_test and not self._alive(conn):
            self._lost = True
            raise HypervisorError(f"{self.host}: the libvirt connection is dead")
        res = self._resources_sync(conn)
        try:
            cpu = {k: int(v) for k, v in conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS).items()}
        except libvirt.libvirtError:
            cpu = {}
        flags = 0
        if hasattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT"):
            # Skip, rather than wait for, a domain whose job lock is held (a migration, a hot-plug).
            flags |= libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        stats = conn.getAllDomainStats(_POLL_GROUPS, flags)
        return HostPoll(res, cpu, _packed(stats))

    async def define(self, name: str, xml: str) -> None:
        await self._call(self._define_sync, name, xml)

    def _define_sync(self, conn: libvirt.virConnect, name: str, xml: str) -> libvirt.virDomain:
        """Define (or redefine) the domain `name` from `xml`, refusing XML that names another
        domain; the defined domain. The XML is parsed only when its head does not show the name
        plainly (`_names`) or libvirt refuses it: every launch's define parsed its whole XML."""
        if not _names(xml, name):
            named = _xml_identity(xml)
            if named is not None and named[0] is not None and named[0] != name:
                raise HypervisorError(f"domain XML defines {named[0]!r}, not {name!r}")
        try:
            return conn.defineXML(xml)
        except libvirt.libvirtError as e:
            identity = _xml_identity(xml)   # (this rare path may parse it a second time)
            if identity is None:
                raise
            try:
                existing = conn.lookupByName(name)
            except libvirt.libvirtError:
                raise e from None
            have, want = existing.UUIDString(), identity[1]
            if want == have:
                raise
            if want is None:
                # Same name, XML without a UUID: libvirt would invent one and collide.
                return conn.defineXML(_with_uuid(xml, have))
            if existing.isActive():
                raise  # a different domain of that name is running; do not pull it away
            self._undefine_dom(existing)
        return conn.defineXML(xml)

    async def start(self, name: str) -> None:
        await self._started(self._start_sync, name)

    async def define_and_start(self, name: str, xml: str) -> None:
        await self._started(self._define_and_start_sync, name, xml)

    async def _started(self, fn: Callable[..., bool], name: str, *args: Any) -> None:
        """Run a start, counted (before the call: its event may come before the call returns)
        until its "started" event arrives; a start that made no event is uncounted at once."""
        self._starts[name] = self._starts.get(name, 0) + 1
        created = False
        try:
            created = await self._call(fn, name, *args)
        finally:
            if not created:
                self._uncount_start(name)

    def _uncount_start(self, name: str) -> None:
        if (pending := self._starts.pop(name, 0)) > 1:
            self._starts[name] = pending - 1

    def _define_and_start_sync(self, conn: libvirt.virConnect, name: str, xml: str) -> bool:
        """The domain defineXML gave back is started as it is: no lookup by name and no isActive
        first (two of a launch's four round trips to libvirtd); one already running refuses the
        create, and is then left running (no start of ours, no event), as `_start_sync` leaves it."""
        return self._start_dom(self._define_sync(conn, name, xml))

    @staticmethod
    def _start_sync(conn: libvirt.virConnect, name: str) -> bool:
        """Start the domain; True if this call started it (and so makes its "started" event)."""
        dom = conn.lookupByName(name)
        if dom.isActive():
            return False
        return LibvirtDriver._start_dom(dom)

    @staticmethod
    def _start_dom(dom: libvirt.virDomain) -> bool:
        try:
            dom.create()
        except libvirt.libvirtError:
            if not dom.isActive():  # lost a race with another start, or running already: fine
                raise
            return False
        return True

    async def stop(self, name: str, *, force: bool = False, timeout: float = 60.0) -> None:
        self._begin(name)
        try:
            if not await self._call(self._begin_stop_sync, name, force):
                return
            deadline = time.monotonic() + timeout
            interval, ceiling = self.poll_interval
            while (remaining := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(interval, remaining))
                if not await self._call(self._is_active_sync, name):
                    return
                interval = min(interval * 1.5, ceiling)
            log.info("%s: %s ignored shutdown for %.0f s, destroying", self.host, name, timeout)
            await self._call(self._destroy_sync, name)
        finally:
            self._end(name)

    @staticmethod
    def _begin_stop_sync(conn: libvirt.virConnect, name: str, force: bool) -> bool:
        """Destroy now, or ask the guest to shut down; True if we must wait for it."""
        dom = conn.lookupByName(name)
        state = dom.state()[0]
        if not dom.isActive():
            return False
        # A paused, suspended or crashed guest cannot act on an ACPI request: no point waiting.
        if force or state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED,
                              libvirt.VIR_DOMAIN_CRASHED):
            LibvirtDriver._destroy_dom(dom)
            return False
        try:
            dom.shutdown()
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN or not dom.isActive():
                return False
            LibvirtDriver._destroy_dom(dom)  # e.g. no ACPI: go straight to the hard way
            return False
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:  # transient domain, gone with its shutdown
                return False
            raise

    @staticmethod
    def _is_active_sync(conn: libvirt.virConnect, name: str) -> bool:
        try:
            return bool(conn.lookupByName(name).isActive())
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise

    @staticmethod
    def _destroy_sync(conn: libvirt.virConnect, name: str) -> None:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise
        LibvirtDriver._destroy_dom(dom)

    @staticmethod
    def _destroy_dom(dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                return
            try:
                if not dom.isActive():  # it went down by itself meanwhile
                    return
            except libvirt.libvirtError:
                return
            raise

    async def reboot(self, name: str) -> None:
        self._begin(name)
        try:
            await self._call(lambda conn: conn.lookupByName(name).reboot(0))
        finally:
            self._end(name)

    async def undefine(self, name: str) -> None:
        self._begin(name)
        try:
            await self._call(self._undefine_sync, name)
        finally:
            self._end(name)

    def _undefine_sync(self, conn: libvirt.virConnect, name: str) -> None:
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                self._destroy_dom(dom)
            self._undefine_dom(dom)
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_NO_DOMAIN:  # absent, or transient and gone with destroy
                raise

    def _undefine_dom(self, dom: libvirt.virDomain) -> None:
        flags = self._undefine_flags
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_INVALID_ARG or flags == _UNDEFINE_BASIC:
                raise
            dom.undefineFlags(_UNDEFINE_BASIC)  # this driver refuses some flags; remember that
            self._undefine_flags = _UNDEFINE_BASIC

    async def console_output(self, name: str) -> bytes:
        return await self._call(self._console_sync, name)

    def _console_sync(self, conn: libvirt.virConnect, name: str) -> bytes:
        xml = conn.lookupByName(name).XMLDesc(0)
        if not self._local:
            return b""  # the log lives on the remote host; a local file of that name is not it
        return _read_tail(_console_paths(xml))

    async def domain_xml(self, name: str) -> str:
        return await self._call(lambda conn: conn.lookupByName(name).XMLDesc(0))

    # -- packet filters ------------------------------------------------------------------------

    def firewall_ref(self, name: str) -> str | None:
        return filter_name(name)

    async def set_firewall(self, name: str, spec: FirewallSpec) -> None:
        if self._local and not self._bridge_filtering_checked:
            self._bridge_filtering_checked = True
            await asyncio.to_thread(_check_bridge_filtering)
            await asyncio.to_thread(_ensure_backstop)
        xml = nwfilter_xml(filter_name(name), spec)
        t0 = time.monotonic()
        async with self._filter_lock():   # libvirt rebuilds every guest's rules per define
            await self._call(lambda conn: conn.nwfilterDefineXML(xml))
        log.info("%s: filter of %s applied in %.2f s", self.host, name, time.monotonic() - t0)

    async def remove_firewall(self, name: str) -> None:
        async with self._filter_lock():
            await self._call(self._remove_filter_sync, filter_name(name))

    async def plug_ovs(self, ovs_bridge: str, vlan: int | None, ovs_db: str | None) -> str:
        plug = HybridPlug.of(ovs_bridge, vlan, ovs_db)
        if not self._local or plug in self._plugged:
            return plug.bridge     # a remote host the admin prepared, or done already
        try:
            await asyncio.to_thread(plug.ensure)
        except PlugError as e:
            raise HypervisorError(f"{self.host}: plugging {plug.bridge} into {ovs_bridge}: {e}") from None
        self._plugged.add(plug)
        return plug.bridge

    def _filter_lock(self) -> asyncio.Lock:
        # One filter change at a time per host: concurrent defines made libvirt fail with
        # "An error occurred, but the cause is unknown" while it rebuilt the guests' rules.
        if self._filter_mutex is None:
            self._filter_mutex = asyncio.Lock()
        return self._filter_mutex

    @staticmethod
    def _remove_filter_sync(conn: libvirt.virConnect, fname: str) -> None:
        try:
            conn.nwfilterLookupByName(fname).undefine()
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_NO_NWFILTER:
                raise

    # -- data disks ----------------------------------------------------------------------------

    async def attach_disk(self, name: str, path: str, target: str, fmt: str = "qcow2") -> None:
        await self._call(self._attach_disk_sync, name, path, target, fmt)

    def _attach_disk_sync(self, conn: libvirt.virConnect, name: str, path: str, target: str, fmt: str) -> None:
        dom = conn.lookupByName(name)
        active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
        live = _disk_at(dom.XMLDesc(0), target) if active else None
        config = _disk_at(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target) if persistent else None
        for found in (live, config):
            if found is not None and _disk_source(found) != path:
                raise HypervisorError(f"{name}: device {target} already holds "
                                      f"{_disk_source(found) or 'another disk'}")
        flags = ((libvirt.VIR_DOMAIN_AFFECT_LIVE if active and live is None else 0)
                 | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent and config is None else 0))
        if not flags:
            return  # already there
        xml = disk_xml(path, target, fmt)
        try:
            dom.attachDeviceFlags(xml, flags)
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            self._cannot_hotplug(name, persistent)
            if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
                self._redefine_disks(conn, dom, add=xml)

    async def detach_disk(self, name: str, target: str, *, timeout: float = 30.0) -> None:
        if not await self._call(self._detach_disk_sync, name, target):
            return
        # A live unplug is a request to the guest (ACPI/PCI hot-unplug): wait for it to happen.
        deadline = time.monotonic() + timeout
        interval, ceiling = self.poll_interval
        while True:
            if not await self._call(self._has_live_disk_sync, name, target):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HypervisorError(f"{name}: the guest has not released {target} after {timeout:.0f} s")
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, ceiling)

    def _detach_disk_sync(self, conn: libvirt.virConnect, name: str, target: str) -> bool:
        """Ask libvirt to remove the disk; True if a live unplug is under way to wait for."""
        import xml.etree.ElementTree as ET
        dom = conn.lookupByName(name)
        active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
        live = _disk_at(dom.XMLDesc(0), target) if active else None
        config = _disk_at(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target) if persistent else None
        flags = ((libvirt.VIR_DOMAIN_AFFECT_LIVE if live is not None else 0)
                 | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config is not None else 0))
        if not flags:
            return False  # not there
        element = live if live is not None else config
        assert element is not None
        try:
            dom.detachDeviceFlags(ET.tostring(element, encoding="unicode"), flags)
        except libvirt.libvirtError as e:
            if _code(e) != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            self._cannot_hotplug(name, persistent)
            if config is not None:
                self._redefine_disks(conn, dom, remove=target)
            return False
        return live is not None

    @staticmethod
    def _has_live_disk_sync(conn: libvirt.virConnect, name: str, target: str) -> bool:
        try:
            dom = conn.lookupByName(name)
            return bool(dom.isActive()) and _disk_at(dom.XMLDesc(0), target) is not None
        except libvirt.libvirtError as e:
            if _code(e) == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise

    def _cannot_hotplug(self, name: str, persistent: bool) -> None:
        """libvirt's driver has no device (un)plug: only the persistent definition can change."""
        if not persistent:
            raise HypervisorError(f"{self.host}: this hypervisor cannot change the disks of the "
                                  f"running domain {name} and it has no persistent definition")
        if self._hotplug:
            self._hotplug = False
            log.info("%s: no live disk (un)plug on %s; disk changes go to the persistent definitions "
                     "and take effect at each domain's next start", self.host, self.uri)

    @staticmethod
    def _redefine_disks(conn: libvirt.virConnect, dom: libvirt.virDomain, *, add: str | None = None,
                        remove: str | None = None) -> None:
        """Add or remove a disk by rewriting the persistent definition (minidom keeps prefixes;
        imported here, on the host's worker thread: see _with_uuid)."""
        from xml.dom import minidom
        try:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        except libvirt.libvirtError:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        doc = minidom.parseString(xml)
        root = doc.documentElement
        assert root is not None
        devices = next((n for n in root.childNodes if getattr(n, "tagName", None) == "devices"), None)
        if devices is None:
            devices = root.appendChild(doc.createElement("devices"))
        if remove is not None:
            for node in list(devices.childNodes):
                if isinstance(node, minidom.Element) and node.tagName == "disk" and any(
                        t.getAttribute("dev") == remove for t in node.getElementsByTagName("target")):
                    devices.removeChild(node)
        if add is not None:
            element = minidom.parseString(add).documentElement
            assert element is not None
            devices.appendChild(doc.importNode(element, True))
        conn.defineXML(root.toxml())


def _disk_at(xml: str, target: str) -> ET.Element | None:
    """The domain's `<disk>` whose guest device is `target`."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for disk in root.iterfind("devices/disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return disk
    return None


def _disk_source(disk: ET.Element) -> str:
    source = disk.find("source")
    if source is None:
        return ""
    return source.get("file") or source.get("dev") or source.get("name") or ""


def _controller_of(meta: str) -> str | None:
    """The `controller` attribute of cloudctl's metadata element, if it has one."""
    import xml.etree.ElementTree as ET
    try:
        return ET.fromstring(meta).get("controller")
    except ET.ParseError:
        return None
