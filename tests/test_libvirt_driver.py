"""LibvirtDriver against libvirt's real test driver.

Each test opens its own `test:///<abs path>/tests/data/node-small.xml` connection, and the test
driver gives every connection a private fresh copy of that node, so tests share no state.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest
import uvloop

from cloudctl.drivers.hypervisor.base import (
    EVENT_KINDS,
    METADATA_NS,
    DomainEvent,
    DomainInfo,
    DomainStates,
    DomainStats,
    HypervisorError,
    PolledDomains,
    Power,
)
from cloudctl.drivers.hypervisor.libvirt import LibvirtDriver

from support import eventually

NODE = Path(__file__).resolve().parent / "data" / "node-small.xml"
URI = f"test://{NODE}"


def domain_xml(name: str, *, managed: bool = True, memory_mib: int = 128, uuid: str | None = None,
               devices: str = "") -> str:
    metadata = (
        f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}'>{name}</cloudctl:instance></metadata>"
        if managed else ""
    )
    return (
        f"<domain type='test'><name>{name}</name>"
        + (f"<uuid>{uuid}</uuid>" if uuid else "")
        + f"{metadata}<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices></domain>"
    )


class Events:
    """Collects DomainEvents; `wait` sleeps on the loop (no polling), so late delivery shows."""

    def __init__(self) -> None:
        self.items: list[DomainEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DomainEvent) -> None:
        self.items.append(event)
        self._changed.set()

    async def wait(self, name: str, kind: str, timeout: float = 2.0) -> DomainEvent:
        """The first not yet consumed event of `kind` for `name`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, event in enumerate(self.items):
                if event.name == name and event.kind == kind:
                    return self.items.pop(i)
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {kind!r} event for {name!r}; have {self.items}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def of(self, name: str) -> list[tuple[str, str, bool]]:
        return [(e.kind, e.detail, e.guest_initiated) for e in self.items if e.name == name]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def driver(events: Events) -> AsyncIterator[LibvirtDriver]:
    d = LibvirtDriver("host-t", URI)
    await d.open(events)
    yield d
    await d.close()


async def powers(d: LibvirtDriver) -> dict[str, Power]:
    return {i.name: i.power for i in await d.list_domains()}


async def settle() -> None:
    """Let in-flight events arrive (they are dispatched on the loop right after the call)."""
    await asyncio.sleep(0.05)


# -- basics --------------------------------------------------------------------------------------


async def test_open_resources_and_list_match_the_node_xml(driver: LibvirtDriver) -> None:
    res = await driver.resources()
    assert (res.cpus, res.memory_mib, res.model) == (8, 16384, "x86_64")
    assert res.free_memory_mib is None  # the test driver has no real figure
    assert sorted(await driver.list_domains(), key=lambda i: i.name) == [
        DomainInfo("i-0000000a", Power.OFF, True),
        DomainInfo("i-0000000b", Power.PAUSED, True),
        DomainInfo("legacy-vm", Power.RUNNING, False),
    ]



async def test_domain_states_are_the_listings_states_and_say_when_they_no_longer_hold(driver: LibvirtDriver) -> None:
    """The start-up's early listing: every domain's power as `list_domains` gives it (held as one
    string and one byte a domain); stale once an event comes from the host."""
    states = await driver.domain_states()
    assert states is not None
    assert dict(states.items()) == {d.name: d.power for d in await driver.list_domains()}
    assert driver.unchanged_since(states)
    n = "i-00000101"
    await driver.define(n, domain_xml(n))   # ("defined": an event)
    await eventually(lambda: not driver.unchanged_since(states))
    fresh = await driver.domain_states()
    assert dict(fresh.items())[n] is Power.OFF and driver.unchanged_since(fresh)
    assert list(DomainStates.of([], None).items()) == []
    every = [(f"d{i}", p) for i, p in enumerate(Power)]
    assert list(DomainStates.of(every, None).items()) == every


async def test_lifecycle_and_list_reflect_each_step(driver: LibvirtDriver) -> None:
    n = "i-00000100"
    await driver.define(n, domain_xml(n))
    assert (await powers(driver))[n] is Power.OFF
    await driver.start(n)
    assert (await powers(driver))[n] is Power.RUNNING
    await driver.stop(n)
    assert (await powers(driver))[n] is Power.OFF
    await driver.start(n)
    assert (await powers(driver))[n] is Power.RUNNING
    await driver.reboot(n)
    assert (await powers(driver))[n] is Power.RUNNING
    await driver.undefine(n)
    assert n not in await powers(driver)


async def test_idempotent_no_ops(driver: LibvirtDriver, events: Events) -> None:
    n = "i-00000101"
    await driver.define(n, domain_xml(n))
    await driver.start(n)
    await settle()
    events.items.clear()
    await driver.start(n)  # already running
    assert (await powers(driver))[n] is Power.RUNNING
    await driver.stop(n, force=True)
    await driver.stop(n)  # already off
    await driver.stop(n, force=True)
    assert (await powers(driver))[n] is Power.OFF
    await driver.undefine(n)
    await driver.undefine(n)  # already absent
    await driver.undefine("never-existed")
    await settle()
    assert events.of(n) == [("stopped", "destroyed", False), ("undefined", "removed", False)]


async def test_close_twice_and_calls_after_close(events: Events) -> None:
    d = LibvirtDriver("host-t", URI)
    with pytest.raises(HypervisorError):
        await d.list_domains()  # not open yet
    await d.open(events)
    with pytest.raises(HypervisorError):
        await d.open(events)
    await d.close()
    await d.close()
    with pytest.raises(HypervisorError) as err:
        await d.list_domains()
    assert not err.value.not_found


# -- errors --------------------------------------------------------------------------------------


async def test_bad_xml_raises_with_libvirts_message(driver: LibvirtDriver) -> None:
    with pytest.raises(HypervisorError) as err:
        await driver.define("broken", "<domain type='test'><name>broken</name>")
    assert "Premature end of data" in str(err.value)
    assert not err.value.not_found
    with pytest.raises(HypervisorError) as err:
        await driver.define("broken", "<domain type='test'><name>broken</name></domain>")
    assert str(err.value) == "XML error: an os <type> must be specified"
    with pytest.raises(HypervisorError, match="defines 'other', not 'broken'"):
        await driver.define("broken", domain_xml("other"))
    assert "broken" not in await powers(driver)


async def test_missing_domain_is_not_found(driver: LibvirtDriver) -> None:
    ops: list[Callable[[], object]] = [
        lambda: driver.start("ghost"),
        lambda: driver.stop("ghost"),
        lambda: driver.stop("ghost", force=True),
        lambda: driver.reboot("ghost"),
        lambda: driver.console_output("ghost"),
        lambda: driver.domain_xml("ghost"),
    ]
    for op in ops:
        with pytest.raises(HypervisorError) as err:
            await op()  # type: ignore[misc]
        assert err.value.not_found
        assert str(err.value) == "Domain not found"


async def test_reboot_of_a_stopped_domain_fails(driver: LibvirtDriver) -> None:
    with pytest.raises(HypervisorError) as err:
        await driver.reboot("i-0000000a")
    assert "not running" in str(err.value) and not err.value.not_found


# -- define replaces -----------------------------------------------------------------------------


async def test_define_replaces_an_existing_definition(driver: LibvirtDriver) -> None:
    n = "i-00000102"
    uuid = "0b8f3c4e-6a1d-4a43-b1b4-0f8d9e6f0102"
    await driver.define(n, domain_xml(n, uuid=uuid, memory_mib=128))
    await driver.define(n, domain_xml(n, uuid=uuid, memory_mib=256))  # same uuid: an update
    assert "<memory unit='KiB'>262144</memory>" in await driver.domain_xml(n)
    await driver.define(n, domain_xml(n, memory_mib=512))  # no uuid: keeps the existing one
    xml = await driver.domain_xml(n)
    assert "<memory unit='KiB'>524288</memory>" in xml and uuid in xml
    assert 'xmlns:cloudctl="urn:cloudctl:instance"' in xml  # the prefix survived the rewrite
    other = "0b8f3c4e-6a1d-4a43-b1b4-0f8d9e6f0999"
    await driver.define(n, domain_xml(n, uuid=other))  # different uuid, domain off: replaced
    assert other in await driver.domain_xml(n)
    await driver.start(n)
    with pytest.raises(HypervisorError, match="already exists with uuid"):
        await driver.define(n, domain_xml(n, uuid=uuid))  # running: not pulled away
    assert other in await driver.domain_xml(n)


async def test_define_and_start_twice_leaves_one_running_domain(driver: LibvirtDriver, events: Events) -> None:
    """A launch converged again (a restart mid-launch) redefines a running domain and starts it:
    no error, the new definition kept, one start; a domain XML naming another domain is refused
    before anything is defined, however its name is written."""
    n = "i-00000103"
    await driver.define_and_start(n, domain_xml(n, memory_mib=128))
    await events.wait(n, "started")
    await driver.define_and_start(n, domain_xml(n, memory_mib=256))   # running: redefined, left running
    assert (await powers(driver))[n] is Power.RUNNING
    inactive = await driver._call(lambda conn: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert "<memory unit='KiB'>262144</memory>" in inactive
    await settle()
    assert ("started", "booted", False) not in events.of(n)
    for xml in (domain_xml("other"), domain_xml("other").replace("<name>", "<!-- i-00000109 --><name>"),
                domain_xml("other").replace("<name>other</name>", "<name> other\n</name>")):
        with pytest.raises(HypervisorError, match="defines 'other', not 'i-00000109'"):
            await driver.define_and_start("i-00000109", xml)
    assert not {"i-00000109", "other"} & set(await powers(driver))


# -- events --------------------------------------------------------------------------------------


async def test_events_for_our_own_operations(driver: LibvirtDriver, events: Events) -> None:
    n = "i-00000103"
    await driver.define(n, domain_xml(n))
    assert await events.wait(n, "defined") == DomainEvent("host-t", n, "defined", "added", False)
    await driver.start(n)
    assert (await events.wait(n, "started")).detail == "booted"
    await driver.stop(n)  # graceful: the test driver shuts off at once
    stopped = await events.wait(n, "stopped")
    assert (stopped.detail, stopped.guest_initiated) == ("shutdown", False)
    await driver.start(n)
    await driver.reboot(n)  # the test driver emits nothing for a reboot
    await driver.stop(n, force=True)
    stopped = await events.wait(n, "stopped")
    assert (stopped.detail, stopped.guest_initiated) == ("destroyed", False)
    await driver.start(n)
    await driver.undefine(n)  # running: destroyed, then undefined
    stopped = await events.wait(n, "stopped")
    assert (stopped.detail, stopped.guest_initiated) == ("destroyed", False)
    assert (await events.wait(n, "undefined")).detail == "removed"
    await settle()
    assert all(e.kind in EVENT_KINDS for e in events.items)
    assert events.of(n) == [("started", "booted", False), ("started", "booted", False)]


async def test_paused_domain_events_and_stop(driver: LibvirtDriver, events: Events) -> None:
    n = "i-0000000b"  # paused in the node file: no ACPI possible, so stop destroys at once
    t0 = time.monotonic()
    await driver.stop(n, timeout=30)
    assert time.monotonic() - t0 < 1
    assert (await events.wait(n, "stopped")).detail == "destroyed"
    await driver.start(n)
    await asyncio.to_thread(lambda: driver._conn.lookupByName(n).suspend())  # type: ignore[union-attr]
    assert (await events.wait(n, "suspended")).detail == "paused"
    assert (await powers(driver))[n] is Power.PAUSED


async def test_guest_initiated_stop_is_flagged_and_delivered_promptly(
    driver: LibvirtDriver, events: Events
) -> None:
    n = "i-00000104"
    await driver.define(n, domain_xml(n))
    await driver.start(n)
    await events.wait(n, "started")
    conn = driver._conn
    assert conn is not None
    # As if the guest powered itself off: libvirt, called from a thread the loop knows nothing
    # of, while the loop sleeps. (Stock libvirtaio never wakes the loop for this.)
    # (Delivered within the wait's 2 s, not at the loop's next wake-up for some other reason.)
    threading.Thread(target=lambda: conn.lookupByName(n).destroy()).start()
    stopped = await events.wait(n, "stopped", timeout=2.0)
    assert (stopped.detail, stopped.guest_initiated) == ("destroyed", True)
    # A stop of ours right after is not the guest's, and a later guest stop is again.
    await driver.start(n)
    await driver.stop(n, force=True)
    assert not (await events.wait(n, "stopped")).guest_initiated
    await driver.start(n)
    await asyncio.to_thread(lambda: conn.lookupByName(n).destroy())
    assert (await events.wait(n, "stopped")).guest_initiated


async def test_our_stop_stays_ours_when_events_lag_behind_our_calls(
    driver: LibvirtDriver, events: Events
) -> None:
    """libvirt's event thread can run behind the calls: our start's "started" may reach us after
    our stop began. It comes before the stop's own event, so it must not end the stop's intent."""
    n = "i-00000105"
    conn = driver._conn
    assert conn is not None
    await driver.define(n, domain_xml(n))
    await driver.start(n)
    await events.wait(n, "started")
    release, blocked = threading.Event(), threading.Event()

    def hold(_c: object, _dom: object, event: int, _d: int, _o: object) -> None:
        # A second lifecycle callback, for this domain: once, it holds libvirt's event thread,
        # so every later event waits behind it.
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and not blocked.is_set():
            blocked.set()
            release.wait(10)

    dom = await asyncio.to_thread(conn.lookupByName, n)
    cb = await asyncio.to_thread(conn.domainEventRegisterAny, dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                 hold, None)
    try:
        await asyncio.to_thread(dom.destroy)           # the guest's stop: its event holds the thread
        await eventually(blocked.is_set, 5, "the event thread held")
        await driver.start(n)                          # "started" queued behind the hold
        await driver.stop(n, force=True)               # our "stopped" too
        release.set()
        assert (await events.wait(n, "stopped")).guest_initiated
        assert not (await events.wait(n, "started")).guest_initiated
        stopped = await events.wait(n, "stopped")
        assert (stopped.detail, stopped.guest_initiated) == ("destroyed", False)
        # and a stop the guest makes afterwards is again the guest's
        await driver.start(n)
        await events.wait(n, "started")
        await asyncio.to_thread(dom.destroy)
        assert (await events.wait(n, "stopped")).guest_initiated
    finally:
        release.set()
        await asyncio.to_thread(conn.domainEventDeregisterAny, cb)


async def test_no_thread_safety_complaints_in_asyncio_debug_mode(
    driver: LibvirtDriver, events: Events, capfd: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        for i in range(20):
            n = f"dbg-{i}"
            await driver.define(n, domain_xml(n))
            await driver.start(n)
            await driver.undefine(n)
            await events.wait(n, "undefined")
    finally:
        loop.set_debug(False)
    assert "Non-thread-safe" not in capfd.readouterr().err


async def test_event_hooks_called_from_threads_run_on_libvirts_own_thread(driver: LibvirtDriver) -> None:
    """The hooks libvirt calls (here via libvirt's own public API) from a worker thread run on
    libvirt's event thread, promptly, never on the asyncio loop's (where they cost every launch
    ~10 % of its loop time); disabled or removed from a thread, they stop."""
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    fired: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()

    def on_timer(timer: int, _opaque: object) -> None:
        loop.call_soon_threadsafe(fired.put_nowait, ("timer", timer, threading.get_ident()))

    def on_fd(watch: int, _fd: int, _events: int, _opaque: object) -> None:
        os.read(r, 100)
        loop.call_soon_threadsafe(fired.put_nowait, ("fd", watch, threading.get_ident()))

    r, w = os.pipe()
    try:
        timer = await asyncio.to_thread(libvirt.virEventAddTimeout, 0, on_timer, None)
        kind, ident, thread = await asyncio.wait_for(fired.get(), 2)
        assert (kind, ident) == ("timer", timer) and thread != loop_thread
        events_thread = thread
        await asyncio.to_thread(libvirt.virEventUpdateTimeout, timer, -1)
        assert await asyncio.to_thread(libvirt.virEventRemoveTimeout, timer) == 0
        await asyncio.sleep(0.02)
        while not fired.empty():
            fired.get_nowait()

        watch = await asyncio.to_thread(
            libvirt.virEventAddHandle, r, libvirt.VIR_EVENT_HANDLE_READABLE, on_fd, None
        )
        await asyncio.to_thread(os.write, w, b"x")
        assert await asyncio.wait_for(fired.get(), 2) == ("fd", watch, events_thread)
        await asyncio.to_thread(libvirt.virEventUpdateHandle, watch, 0)
        await asyncio.to_thread(os.write, w, b"y")
        await asyncio.sleep(0.05)
        assert fired.empty()  # disabled from a thread: no callback
        await asyncio.to_thread(libvirt.virEventUpdateHandle, watch, libvirt.VIR_EVENT_HANDLE_READABLE)
        assert await asyncio.wait_for(fired.get(), 2) == ("fd", watch, events_thread)
        assert await asyncio.to_thread(libvirt.virEventRemoveHandle, watch) == 0
        await asyncio.sleep(0.02)
        await asyncio.to_thread(os.write, w, b"z")
        await asyncio.sleep(0.05)
        assert fired.empty()  # removed from a thread: no callback
    finally:
        os.close(r)
        os.close(w)


# -- moving between event loops -----------------------------------------------------------------


async def _scenario_on_a_fresh_loop() -> list[tuple[str, str, bool]]:
    got = Events()
    d = LibvirtDriver("host-fresh", URI)
    await d.open(got)
    try:
        await d.define("fresh", domain_xml("fresh"))
        await d.start("fresh")
        conn = d._conn
        assert conn is not None
        threading.Thread(target=lambda: conn.lookupByName("fresh").destroy()).start()
        await got.wait("fresh", "stopped")
        await d.undefine("fresh")
        await got.wait("fresh", "undefined")
        return [(e.kind, e.detail, e.guest_initiated) for e in got.items]
    finally:
        await d.close()


def test_events_follow_the_driver_to_a_new_loop() -> None:
    """libvirt keeps one event implementation per process (its own, on its thread); each driver's
    events go to the loop it was opened on."""
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        with asyncio.Runner(loop_factory=factory) as runner:
            assert runner.run(_scenario_on_a_fresh_loop()) == [
                ("defined", "added", False), ("started", "booted", False)
            ]


async def test_events_come_back_to_the_session_loop(driver: LibvirtDriver, events: Events) -> None:
    await driver.define("back", domain_xml("back"))
    await driver.start("back")
    assert (await events.wait("back", "started")).detail == "booted"


async def test_a_driver_on_a_second_running_loop_gets_its_own_events(driver: LibvirtDriver, events: Events) -> None:
    """Each driver hands its events to the loop it was opened on: two loops running at once (a
    tool's thread beside the server's) each get theirs."""
    async def other() -> list[tuple[str, str, bool]]:
        got = Events()
        d = LibvirtDriver("host-other", URI)
        await d.open(got)
        try:
            await d.define("other-loop", domain_xml("other-loop"))
            await got.wait("other-loop", "defined")
            return [(e.kind, e.detail, e.guest_initiated) for e in got.items]
        finally:
            await d.close()

    assert await asyncio.to_thread(asyncio.run, other()) == []
    await driver.define("this-loop", domain_xml("this-loop"))
    assert (await events.wait("this-loop", "defined")).detail == "added"
    assert "legacy-vm" in await powers(driver)  # ours is unharmed


# -- metadata, console ---------------------------------------------------------------------------


async def test_managed_flag_follows_the_metadata_element(driver: LibvirtDriver) -> None:
    await driver.define("mine", domain_xml("mine"))
    await driver.define("theirs", domain_xml("theirs", managed=False))
    managed = {i.name: i.managed for i in await driver.list_domains()}
    assert managed["mine"] and not managed["theirs"]
    conn = driver._conn
    assert conn is not None
    meta = conn.lookupByName("mine").metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    assert meta == "<instance>mine</instance>"
    assert 'xmlns:cloudctl="urn:cloudctl:instance">mine</cloudctl:instance>' in await driver.domain_xml("mine")


async def test_console_output_reads_the_serial_file(driver: LibvirtDriver, tmp_path: Path) -> None:
    serial = tmp_path / "serial.log"
    serial.write_bytes(b"boot...\nMARKER\n")
    await driver.define("con-file", domain_xml(
        "con-file", devices=f"<serial type='file'><source path='{serial}'/><target port='0'/></serial>"))
    assert await driver.console_output("con-file") == b"boot...\nMARKER\n"

    big = bytes(range(256)) * 400  # 100 KiB: only the last 64 KiB come back
    serial.write_bytes(big)
    assert await driver.console_output("con-file") == big[-65536:]

    logged = tmp_path / "pty.log"
    logged.write_bytes(b"via virtlogd\n")
    await driver.define("con-log", domain_xml(
        "con-log", devices=f"<serial type='pty'><log file='{logged}'/><target port='0'/></serial>"))
    assert await driver.console_output("con-log") == b"via virtlogd\n"

    await driver.define("con-none", domain_xml("con-none"))
    assert await driver.console_output("con-none") == b""
    await driver.define("con-gone", domain_xml(
        "con-gone", devices=f"<serial type='file'><source path='{tmp_path}/absent.log'/></serial>"))
    assert await driver.console_output("con-gone") == b""


# -- graceful stop, reconnect ----------------------------------------------------------------------


class _GuestIgnoresAcpi(LibvirtDriver):
    """The test driver obeys shutdown at once; this guest does not."""

    @staticmethod
    def _begin_stop_sync(conn: libvirt.virConnect, name: str, force: bool) -> bool:
        if force:
            return LibvirtDriver._begin_stop_sync(conn, name, force)
        return bool(conn.lookupByName(name).isActive())


async def test_stop_waits_for_the_timeout_then_destroys(events: Events) -> None:
    d = _GuestIgnoresAcpi("host-t", URI)
    await d.open(events)
    try:
        await d.define("stubborn", domain_xml("stubborn"))
        await d.start("stubborn")
        t0 = time.monotonic()
        await d.stop("stubborn", timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 1.5
        stopped = await events.wait("stubborn", "stopped")
        assert (stopped.detail, stopped.guest_initiated) == ("destroyed", False)
        assert (await powers(d))["stubborn"] is Power.OFF
    finally:
        await d.close()


async def test_lost_connection_reconnects_once_per_call(driver: LibvirtDriver, events: Events) -> None:
    first = driver._conn
    await driver.define("before", domain_xml("before"))
    # What libvirt's close callback does when a remote connection drops.
    driver._on_close(first, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, driver._generation)
    names = await powers(driver)
    assert driver._conn is not first
    assert "before" not in names and "legacy-vm" in names  # the test driver's fresh copy
    await driver.define("after", domain_xml("after"))
    await driver.start("after")
    assert (await events.wait("after", "started")).detail == "booted"  # events re-registered

    uri, driver.uri = driver.uri, f"test://{NODE.parent}/no-such-node.xml"
    driver._on_close(driver._conn, libvirt.VIR_CONNECT_CLOSE_REASON_ERROR, driver._generation)
    for _ in range(2):  # each call makes one attempt, then raises
        with pytest.raises(HypervisorError) as err:
            await driver.list_domains()
        assert not err.value.not_found
    driver.uri = uri
    assert "legacy-vm" in await powers(driver)


# -- scale -------------------------------------------------------------------------------------------


async def test_200_concurrent_define_and_start(driver: LibvirtDriver, events: Events) -> None:
    names = [f"i-{i:08x}" for i in range(0x200, 0x200 + 200)]

    async def up(n: str) -> None:
        await driver.define(n, domain_xml(n))
        await driver.start(n)

    await asyncio.gather(*(up(n) for n in names))
    state = await powers(driver)
    assert all(state[n] is Power.RUNNING for n in names)
    for n in names:
        await events.wait(n, "started")


async def test_list_domains_at_5000(driver: LibvirtDriver) -> None:
    conn = driver._conn
    assert conn is not None

    def populate() -> None:
        for i in range(5000):
            dom = conn.defineXML(domain_xml(f"bulk-{i}", managed=i % 2 == 0))
            if i % 3 == 0:
                dom.create()

    await asyncio.to_thread(populate)
    t0 = time.perf_counter()
    domains = await driver.list_domains()
    elapsed = time.perf_counter() - t0
    print(f"\nlist_domains() at {len(domains)} domains: {elapsed * 1000:.1f} ms")
    assert len(domains) == 5003
    assert sum(d.managed for d in domains) == 2500 + 2
    assert sum(d.power is Power.RUNNING for d in domains) == 1667 + 1
    assert elapsed < 2.0


async def test_churn_of_2000_domains_keeps_the_loop_responsive(driver: LibvirtDriver, events: Events) -> None:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - t - 0.001)

    async def cycle(i: int) -> None:
        n = f"churn-{i}"
        await driver.define(n, domain_xml(n))
        await driver.start(n)
        await driver.stop(n)
        await driver.undefine(n)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await asyncio.gather(*(cycle(i) for i in range(2000)))
    elapsed = time.perf_counter() - t0
    done.set()
    await tick
    # Every event comes, however late: libvirt's event thread shares two cores with the test's.
    await eventually(lambda: sum(e.name.startswith("churn-") for e in events.items) >= 8000, 30,
                     "8,000 lifecycle events")
    await settle()
    lags.sort()
    print(f"\n2000 define+start+stop+undefine: {elapsed:.2f} s, {2000 / elapsed:.0f} cycles/s, "
          f"loop lag max {lags[-1] * 1000:.1f} ms, median {lags[len(lags) // 2] * 1000:.2f} ms")
    assert not [n for n in await powers(driver) if n.startswith("churn-")]
    churn = [e for e in events.items if e.name.startswith("churn-")]   # (none more after a settle)
    assert len(churn) == 8000 and not any(e.guest_initiated for e in churn)
    assert lags[-1] < 1.0  # the gather of 2000 tasks alone stalls ~0.1 s; blocking would be seconds


# -- data disks --------------------------------------------------------------------------------------


def _disk_targets(xml: str) -> dict[str, str]:
    import xml.etree.ElementTree as ET
    root = ET.fromstring(xml)
    return {d.find("target").get("dev"): d.find("source").get("file")  # type: ignore[union-attr]
            for d in root.iterfind("devices/disk")}


async def _inactive_xml(d: LibvirtDriver, name: str) -> str:
    conn = d._conn
    assert conn is not None
    return await asyncio.to_thread(lambda: conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


async def test_attach_and_detach_disk_on_a_defined_domain(driver: LibvirtDriver) -> None:
    await driver.define("disky", domain_xml("disky"))
    await driver.attach_disk("disky", "/srv/vol-1.qcow2", "vdf")
    await driver.attach_disk("disky", "/srv/vol-1.qcow2", "vdf")          # already there: no-op
    await driver.attach_disk("disky", "/srv/vol-2.qcow2", "vdg")
    assert _disk_targets(await driver.domain_xml("disky")) == {"vdf": "/srv/vol-1.qcow2", "vdg": "/srv/vol-2.qcow2"}
    assert "<driver name='qemu' type='qcow2'/>" in await driver.domain_xml("disky")
    with pytest.raises(HypervisorError, match="vdf already holds /srv/vol-1.qcow2"):
        await driver.attach_disk("disky", "/srv/other.qcow2", "vdf")
    # The rewritten definition kept cloudctl's metadata element (namespace prefix and all).
    assert {i.name: i.managed for i in await driver.list_domains()}["disky"] is True
    await driver.detach_disk("disky", "vdf")
    await driver.detach_disk("disky", "vdf")                              # absent: no-op
    assert _disk_targets(await driver.domain_xml("disky")) == {"vdg": "/srv/vol-2.qcow2"}
    with pytest.raises(HypervisorError) as e:
        await driver.attach_disk("no-such-domain", "/srv/x.qcow2", "vdb")
    assert e.value.not_found
    with pytest.raises(HypervisorError) as e:
        await driver.detach_disk("no-such-domain", "vdb")
    assert e.value.not_found


async def test_disk_on_a_running_test_domain_goes_to_the_persistent_definition(driver: LibvirtDriver) -> None:
    """libvirt's test driver has no device (un)plug at all (VIR_ERR_NO_SUPPORT for
    attachDeviceFlags, detachDeviceFlags, updateDeviceFlags): the driver falls back to rewriting
    the persistent definition, so the disk is there from the domain's next start."""
    await driver.define("hot", domain_xml("hot"))
    await driver.start("hot")
    await driver.attach_disk("hot", "/srv/vol-h.qcow2", "vdb")
    assert _disk_targets(await _inactive_xml(driver, "hot")) == {"vdb": "/srv/vol-h.qcow2"}
    assert _disk_targets(await driver.domain_xml("hot")) == {}           # not live: cannot be
    assert driver._hotplug is False
    assert (await powers(driver))["hot"] is Power.RUNNING
    await driver.stop("hot", force=True)
    await driver.start("hot")
    assert _disk_targets(await driver.domain_xml("hot")) == {"vdb": "/srv/vol-h.qcow2"}
    await driver.detach_disk("hot", "vdb")
    assert _disk_targets(await _inactive_xml(driver, "hot")) == {}


class _FakeDomain:
    """What qemu:///system does for device (un)plug, which the test driver cannot show: the
    live and persistent XML change per the AFFECT flags, and a live unplug completes only after
    the guest acknowledges it (`release_after` polls later)."""

    def __init__(self, active: bool, release_after: int = 0) -> None:
        self.active = active
        self.live: dict[str, str] = {}
        self.config: dict[str, str] = {}
        self.calls: list[tuple[str, int]] = []
        self.release_after = release_after
        self.pending: str | None = None

    def isActive(self) -> int:
        return int(self.active)

    def isPersistent(self) -> int:
        return 1

    def _xml(self, disks: dict[str, str]) -> str:
        body = "".join(f"<disk type='file' device='disk'><source file='{p}'/><target dev='{t}'/></disk>"
                       for t, p in disks.items())
        return f"<domain><name>f</name><devices>{body}</devices></domain>"

    def XMLDesc(self, flags: int) -> str:
        if self.pending is not None:
            if self.release_after <= 0:
                self.live.pop(self.pending, None)
                self.pending = None
            self.release_after -= 1
        return self._xml(self.config if flags & libvirt.VIR_DOMAIN_XML_INACTIVE or not self.active else self.live)

    def attachDeviceFlags(self, xml: str, flags: int) -> None:
        import xml.etree.ElementTree as ET
        self.calls.append(("attach", flags))
        d = ET.fromstring(xml)
        t, p = d.find("target").get("dev"), d.find("source").get("file")  # type: ignore[union-attr]
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            self.live[t] = p  # type: ignore[index]
        if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            self.config[t] = p  # type: ignore[index]

    def detachDeviceFlags(self, xml: str, flags: int) -> None:
        import xml.etree.ElementTree as ET
        self.calls.append(("detach", flags))
        t = ET.fromstring(xml).find("target").get("dev")  # type: ignore[union-attr]
        if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            self.config.pop(t, None)  # type: ignore[arg-type]
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            self.pending = t


class _FakeConn:
    def __init__(self, dom: _FakeDomain) -> None:
        self.dom = dom

    def lookupByName(self, name: str) -> _FakeDomain:
        return self.dom


class _FakeDriver(LibvirtDriver):
    def __init__(self, dom: _FakeDomain) -> None:
        super().__init__("fake", "qemu:///system")
        self.poll_interval = (0.001, 0.005)
        self._fake = _FakeConn(dom)

    async def _call(self, fn, *args):  # type: ignore[no-untyped-def,override]
        return fn(self._fake, *args)


async def test_hot_plug_flags_as_qemu_would_get_them() -> None:
    live, cfg = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
    running = _FakeDomain(active=True, release_after=3)
    d = _FakeDriver(running)
    await d.attach_disk("f", "/v/a.qcow2", "vdb")
    assert running.calls == [("attach", live | cfg)]
    assert running.live == running.config == {"vdb": "/v/a.qcow2"}
    await d.attach_disk("f", "/v/a.qcow2", "vdb")     # nothing left to do: no call
    assert len(running.calls) == 1
    await d.detach_disk("f", "vdb")                   # waits for the guest to let go
    assert running.calls[-1] == ("detach", live | cfg)
    assert running.live == running.config == {}

    off = _FakeDomain(active=False)
    d = _FakeDriver(off)
    await d.attach_disk("f", "/v/b.qcow2", "vdc")
    assert off.calls == [("attach", cfg)] and off.config == {"vdc": "/v/b.qcow2"}
    await d.detach_disk("f", "vdc")
    assert off.calls[-1] == ("detach", cfg) and off.config == {}

    stuck = _FakeDomain(active=True, release_after=10**9)
    d = _FakeDriver(stuck)
    await d.attach_disk("f", "/v/c.qcow2", "vdd")
    with pytest.raises(HypervisorError, match="has not released vdd"):
        await d.detach_disk("f", "vdd", timeout=0.05)
    assert stuck.config == {}                         # the definition lost it regardless


async def test_known_domains_are_listed_without_their_metadata(driver: LibvirtDriver,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await driver.define("mine", domain_xml("mine"))
    await driver.define("theirs", domain_xml("theirs", managed=False))
    await driver.define("stray", domain_xml("stray"))
    read: list[str] = []
    real = libvirt.virDomain.metadata

    def metadata(dom: libvirt.virDomain, *args: object) -> object:   # real libvirt, counted
        read.append(dom.name())
        return real(dom, *args)

    monkeypatch.setattr(libvirt.virDomain, "metadata", metadata)
    listed = {i.name: i for i in await driver.list_domains(known={"mine", "not-here"})}
    assert "mine" not in read and {"theirs", "stray"} <= set(read)
    assert listed["mine"].managed and listed["stray"].managed and not listed["theirs"].managed
    assert "not-here" not in listed
    assert listed["mine"].power == listed["stray"].power == Power.OFF


async def test_a_burst_of_events_comes_in_order_on_the_loop(driver: LibvirtDriver) -> None:
    """libvirt's event loop runs on a thread of its own: a burst of changes made from a worker
    thread reaches the asyncio loop as lifecycle events, on the loop's thread, in the order
    libvirt emitted them."""
    loop_thread = threading.get_ident()
    seen: list[tuple[str, str, bool]] = []
    driver._on_event = lambda e: seen.append((e.name, e.kind, threading.get_ident() == loop_thread))
    names = [f"burst-{i}" for i in range(8)]

    def burst() -> None:
        conn = driver._conn
        assert conn is not None
        for n in names:
            dom = conn.defineXML(domain_xml(n))
            dom.create()
            dom.destroy()
            dom.undefine()

    await asyncio.to_thread(burst)
    for _ in range(100):
        if len(seen) >= 4 * len(names):
            break
        await asyncio.sleep(0.02)
    assert [(n, k) for n, k, _ in seen] == [(n, k) for n in names
                                            for k in ("defined", "started", "stopped", "undefined")]
    assert all(on_loop for _, _, on_loop in seen)


# -- the monitor's poll ----------------------------------------------------------------------------


async def test_a_poll_lists_every_domain_as_libvirt_reports_it(driver: LibvirtDriver) -> None:
    """The poll's domains are the listing's, each with its power state (the test driver reports no
    counters: they are 0), whatever the state: running, paused, off."""
    for n in ("p-run", "p-paused", "p-off"):
        await driver.define(n, domain_xml(n))
    await driver.start("p-run")
    await driver.start("p-paused")
    await asyncio.to_thread(lambda: driver._conn.lookupByName("p-paused").suspend())  # type: ignore[union-attr]
    poll = await driver.poll()
    listed = await powers(driver)
    assert {d.name: d.power for d in poll.domains} == listed
    assert (listed["p-run"], listed["p-paused"], listed["p-off"]) == (Power.RUNNING, Power.PAUSED, Power.OFF)
    assert list(poll.domains) == [DomainStats(name, listed[name]) for name in poll.domains.names]
    assert poll.resources == await driver.resources()


def _qemu_record(n: int, disks: int, nics: int) -> dict[str, object]:
    """One domain's typed parameters as libvirt's qemu driver gives them for the poll's groups
    (docs of virConnectGetAllDomainStats), with fields the poll does not read among them."""
    st: dict[str, object] = {"state.state": libvirt.VIR_DOMAIN_RUNNING, "state.reason": 1,
                             "cpu.time": n * 10**9 + 7, "cpu.user": n, "cpu.system": n,
                             "balloon.current": 524288 + n, "balloon.maximum": 1048576,
                             "block.count": disks, "net.count": nics}
    for i in range(disks):
        st |= {f"block.{i}.name": f"vd{i}", f"block.{i}.path": f"/v/{n}-{i}.qcow2", f"block.{i}.rd.reqs": 3,
               f"block.{i}.rd.bytes": (n + 1) << (10 + i), f"block.{i}.wr.bytes": (n + 2) << i}
    for i in range(nics):
        st |= {f"net.{i}.name": f"vnet{i}", f"net.{i}.rx.bytes": n * 1000 + i, f"net.{i}.tx.bytes": n * 10 + i,
               f"net.{i}.rx.pkts": 1}
    return st


def _summed(st: dict[str, object], group: str, field: str) -> int:
    """The test's own reading: the field of every device the record counts, summed."""
    count = int(st.get(f"{group}.count", 0))   # type: ignore[call-overload]
    return sum(int(v) for k, v in st.items()   # type: ignore[call-overload]
               if k.startswith(f"{group}.") and k.endswith(f".{field}") and int(k.split(".")[1]) < count)


def test_the_poll_packs_libvirts_records_as_they_read() -> None:
    """What `_poll_sync` makes of getAllDomainStats' answer, domain by domain, against the records
    read field by field: libvirt's handles (the test driver's) with records as the qemu driver fills
    them: any number of disks and NICs (40: more than any poll before), a device the count leaves
    out, a missing field, each state and reason, and a record with nothing but its state."""
    from cloudctl.drivers.hypervisor.libvirt import _packed

    conn = libvirt.open(URI)
    try:
        handles = []
        for n in range(12):
            conn.defineXML(domain_xml(f"q-{n}"))
            handles.append(conn.lookupByName(f"q-{n}"))
        records = [_qemu_record(n, disks, nics) for n, (disks, nics) in
                   enumerate([(1, 1), (2, 1), (0, 0), (3, 2), (40, 40), (1, 0), (0, 3)])]
        records[1]["block.5.rd.bytes"] = 10**6   # (not counted: past block.count)
        del records[3]["block.1.wr.bytes"]
        states = [(libvirt.VIR_DOMAIN_PAUSED, 1, Power.PAUSED), (libvirt.VIR_DOMAIN_SHUTDOWN, 1, Power.SHUTTING_DOWN),
                  (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, Power.CRASHED),
                  (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, Power.OFF),
                  (libvirt.VIR_DOMAIN_CRASHED, 0, Power.CRASHED), (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, Power.PAUSED),
                  (libvirt.VIR_DOMAIN_NOSTATE, 0, Power.RUNNING), (libvirt.VIR_DOMAIN_BLOCKED, 0, Power.RUNNING)]
        powers = [Power.RUNNING] * len(records)
        for state, reason, power in states:
            records.append(_qemu_record(len(records), 1, 1) | {"state.state": state, "state.reason": reason})
            powers.append(power)
        records[-1] = {"state.state": libvirt.VIR_DOMAIN_RUNNING}   # (its other groups missing)
        handles = [handles[i % len(handles)] for i in range(len(records))]
        answer = list(zip(handles, records))
        expected = [DomainStats(dom.name(), power, int(st.get("cpu.time", 0)),   # type: ignore[call-overload]
                                int(st.get("balloon.current", 0)) * 1024,   # type: ignore[call-overload]
                                _summed(st, "block", "rd.bytes"), _summed(st, "block", "wr.bytes"),
                                _summed(st, "net", "rx.bytes"), _summed(st, "net", "tx.bytes"))
                    for (dom, st), power in zip(answer, powers)]
        assert expected[4].block_read_bytes > 0 and expected[-1] == DomainStats(expected[-1].name, Power.RUNNING)
        polled = _packed(answer)
        assert list(polled) == expected
        assert polled == PolledDomains(expected) and polled.names == tuple(d.name for d in expected)
        assert list(_packed([])) == []
    finally:
        conn.close()
