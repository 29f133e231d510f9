"""Every CLI switch family against its fake-switches model on loopback: a VLAN (untagged) connect,
a tagged connect, detach, and the controller's audit (the port reads back as set; a change made at
the switch's console shows as drift and is repaired). Port names are checked against the switch
when a port is registered, HIL's spellings (`te1/0/2`, `et2`, `1/2`) included. And a switch that
does not answer as a switch should (mute, chatty, dropping the session, a foreign prompt, or a
CLI of another family) fails the call within the per-command timeout, saying what was expected
and what came, for every family, Open vSwitch's shell included."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.config import load_config
from cloudctl.core.baremetal.auth import Caller
from cloudctl.core.baremetal.errors import BadArgumentError, DuplicateError
from cloudctl.core.cloud import Cloud
from cloudctl.drivers.switch.base import PortVlans, SwitchDriver, SwitchError, SwitchUnreachable, driver_class

from hil_lab import FakeSwitch
from support import write_config
from switch_fixtures import BEHAVIOURS, AristaNativeSwitch, BadSwitch

pytest.importorskip("fake_switches")

# family -> (its simulator, two ports (the second in HIL's spelling), another spelling of the
# first, a port the switch lacks)
FAMILIES: dict[str, tuple[Callable[[], FakeSwitch], list[str], str, str]] = {
    "cisco": (lambda: FakeSwitch("cisco_generic"), ["FastEthernet0/1", "fa0/2"], "FastEthernet0/1",
              "FastEthernet7/7"),
    "dell": (lambda: FakeSwitch("dell_generic"), ["ethernet 1/g1", "ethernet 1/g2"], "Ethernet 1/G1",
             "ethernet 9/g9"),
    "dell10g": (lambda: FakeSwitch("dell10g_generic"), ["Te1/0/1", "te1/0/2"], "TE1/0/1", "gi1/0/11"),
    "arista": (AristaNativeSwitch, ["Ethernet1", "et2"], "ET1", "Ethernet9"),
    "brocade": (lambda: FakeSwitch("brocade_generic"), ["ethernet 1/1", "1/2"], "ETHERNET 1/1", "ethernet 1/9"),
}
ADMIN = Caller("admin", is_admin=True)
NATIVE, TAGGED, OTHER = 1201, 1202, 1203


@pytest.fixture(scope="module", params=list(FAMILIES))
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeSwitch]]:
    fs = FAMILIES[request.param][0]()
    try:
        yield request.param, fs.start()
    finally:
        fs.stop()


def options(fs: FakeSwitch) -> dict[str, Any]:
    return {"hostname": "127.0.0.1", "ssh_port": fs.port, "username": "admin", "password": fs.password,
            "host_key": fs.host_key}


def make(family: str, opts: dict[str, Any], timeout: float = 5.0) -> SwitchDriver:
    cls = driver_class(family)
    assert cls is not None, family
    return cls("t", opts, timeout)


async def on(family: str, fs: FakeSwitch, fn: Callable[[SwitchDriver], Any]) -> Any:
    """`fn(driver)` over a session of our own."""
    d = make(family, options(fs))
    try:
        return await fn(d)
    finally:
        await d.close()


async def put(family: str, fs: FakeSwitch, port: str, want: PortVlans) -> PortVlans:
    """Set the port, save, and read it back on a fresh session (what the switch really kept)."""
    async def go(d: SwitchDriver) -> None:
        await d.set_port(port, want)
        await d.save()
    await on(family, fs, go)
    return await on(family, fs, lambda d: d.read_port(port))


async def test_vlan_connect(fake: tuple[str, FakeSwitch]) -> None:
    family, fs = fake
    for port in FAMILIES[family][1]:
        assert await put(family, fs, port, PortVlans(native=NATIVE)) == PortVlans(native=NATIVE)
    assert await put(family, fs, FAMILIES[family][1][0], PortVlans(native=OTHER)) == PortVlans(native=OTHER)


async def test_tagged_connect(fake: tuple[str, FakeSwitch]) -> None:
    family, fs = fake
    port = FAMILIES[family][1][1]
    both = PortVlans(native=NATIVE, tagged=frozenset({TAGGED}))
    assert await put(family, fs, port, both) == both
    trunk = PortVlans(tagged=frozenset({TAGGED, OTHER}))
    assert await put(family, fs, port, trunk) == trunk


async def test_detach(fake: tuple[str, FakeSwitch]) -> None:
    family, fs = fake
    port = FAMILIES[family][1][0]
    await put(family, fs, port, PortVlans(native=NATIVE, tagged=frozenset({TAGGED, OTHER})))
    assert await put(family, fs, port, PortVlans(native=NATIVE, tagged=frozenset({OTHER}))) == \
        PortVlans(native=NATIVE, tagged=frozenset({OTHER}))
    assert await put(family, fs, port, PortVlans(tagged=frozenset({OTHER}))) == PortVlans(tagged=frozenset({OTHER}))
    assert await put(family, fs, port, PortVlans()) == PortVlans()


async def test_ports_are_read_from_the_switch(fake: tuple[str, FakeSwitch]) -> None:
    family, fs = fake
    ports, spelled, ghost = FAMILIES[family][1:]
    for p in [*ports, spelled]:
        assert driver_class(family).check_port_name(p) is None, p    # type: ignore[union-attr]
        assert await on(family, fs, lambda d, p=p: d.has_port(p)), p
    assert not await on(family, fs, lambda d: d.has_port(ghost))
    assert len(await on(family, fs, lambda d: d.list_ports())) >= 2


# -- through the controller: registration and audit ---------------------------------------------

@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    config = load_config(write_config(tmp_path, model_cache, baremetal={
        "audit_on_start": "off", "attempts": 2, "backoff_s": 0.05, "switch_timeout_s": 2}))
    c = await Cloud.open(config, "http://127.0.0.1:0")
    try:
        yield c
    finally:
        await c.stop()


async def finished(c: Cloud, op_id: str) -> Any:
    """The operation once the switch's worker has ended it (the test's own timeout bounds this)."""
    while (op := c.baremetal.site.ops.get(op_id)).status == "pending":
        await asyncio.sleep(0.05)
    return op


async def cable(c: Cloud, switch: str, port: str) -> None:
    """A node's NIC on `port`: HIL reverts only a port cabled to a NIC (NotFoundError otherwise)."""
    site = c.baremetal.site
    node = f"n-{len(site.nodes.rows)}"
    await site.register_node(ADMIN, node, None)
    await site.register_nic(ADMIN, node, "eth0", f"52:54:00:00:09:{len(site.nodes.rows):02x}")
    await site.connect_nic(ADMIN, switch, port, node, "eth0")


def audit(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["port"]: r for r in rows}


async def test_registration_and_audit(fake: tuple[str, FakeSwitch], cloud: Cloud) -> None:
    family, fs = fake
    ports, spelled, ghost = FAMILIES[family][1:]
    bm = cloud.baremetal
    await bm.site.register_switch(ADMIN, "sw", family, options(fs))
    for p in ports:
        await bm.site.register_port(ADMIN, "sw", p)
    with pytest.raises(BadArgumentError, match="has no port"):
        await bm.site.register_port(ADMIN, "sw", ghost)
    if spelled != ports[0]:
        with pytest.raises(DuplicateError, match="already has port"):
            await bm.site.register_port(ADMIN, "sw", spelled)
    assert sorted(p.name for p in bm.site.ports_by_switch.get("sw").values()) == sorted(ports)

    for p in ports:            # a port on no network is parked: no VLAN passes
        await cable(cloud, "sw", p)
        op = await finished(cloud, (await bm.ops.revert(ADMIN, "sw", p)).id)
        assert (op.status, op.error) == ("done", "")
    report = audit(await bm.ops.audit(["sw"], repair=False))
    assert {p: r["status"] for p, r in report.items()} == {p: "ok" for p in ports}

    # Someone at the switch's console puts a port on a VLAN: drift, then repaired.
    await put(family, fs, ports[1], PortVlans(native=1299, tagged=frozenset({TAGGED})))
    report = audit(await bm.ops.audit(["sw"], repair=False))
    assert report[ports[1]]["status"] == "drift" and report[ports[0]]["status"] == "ok"
    assert report[ports[1]]["actual"] == "native 1299, tagged 1202"
    assert audit(await bm.ops.audit(["sw"], repair=True))[ports[1]]["status"] == "repaired"
    assert await on(family, fs, lambda d: d.read_port(ports[1])) == PortVlans()


# -- fake-switches' stock arista model: what it can do, and its refusal ----------------------------

@pytest.fixture(scope="module")
def stock_arista() -> Iterator[FakeSwitch]:
    fs = FakeSwitch("arista_generic")
    try:
        yield fs.start()
    finally:
        fs.stop()


async def test_arista_stock_model(stock_arista: FakeSwitch) -> None:
    """Tagged connect, detach and read-back need nothing the stock model lacks; an untagged
    network needs `switchport trunk native vlan`, which it refuses, and the refusal is the reason."""
    trunk = PortVlans(tagged=frozenset({TAGGED, OTHER}))
    assert await put("arista", stock_arista, "Ethernet2", trunk) == trunk
    assert await put("arista", stock_arista, "Ethernet2", PortVlans()) == PortVlans()
    with pytest.raises(SwitchError, match="native vlan 1201' refused: % Incomplete command"):
        await put("arista", stock_arista, "Ethernet2", PortVlans(native=NATIVE))
    assert await on("arista", stock_arista, lambda d: d.read_port("Ethernet2")) == PortVlans()


# -- switches that do not answer as expected ----------------------------------------------------

ALL = [*FAMILIES, "ovs"]


def bad_options(family: str, bad: BadSwitch) -> dict[str, Any]:
    return bad.options(bridge="br0") if family == "ovs" else bad.options()


@pytest.fixture(params=BEHAVIOURS)
async def bad(request: pytest.FixtureRequest) -> AsyncIterator[BadSwitch]:
    b = await BadSwitch(request.param).start()
    try:
        yield b
    finally:
        await b.stop()


@pytest.mark.parametrize("family", ALL)
async def test_a_misbehaving_switch_fails_with_a_reason(family: str, bad: BadSwitch) -> None:
    d = make(family, bad_options(family, bad), timeout=0.5)
    try:
        with pytest.raises(SwitchError) as e:
            # A hang guard only: the driver's own 0.5 s timeout is what ends each wait.
            await asyncio.wait_for(d.set_port(FAMILIES.get(family, (None, ["p1"]))[1][0], PortVlans(native=NATIVE)),
                                   60)
    finally:
        await d.close()
    why = str(e.value)
    assert bad.sessions >= 1
    if bad.behaviour in ("mute", "chatty", "wrong-prompt"):
        assert "expected" in why and "within 0.5s" in why, why
        what = {"mute": "Welcome to the switch", "chatty": "noise", "wrong-prompt": "$"}[bad.behaviour]
        assert what in why, why             # what came instead
    else:
        assert "closed" in why and "expected" in why, why
        assert isinstance(e.value, SwitchUnreachable) or bad.behaviour == "drop-on-command", why


WRONG_FAMILY = {   # driver family -> a fake-switches model of another family, and a port to ask for
    "cisco": ("brocade_generic", "FastEthernet0/1"),
    "dell": ("arista_generic", "ethernet 1/g1"),
    "dell10g": ("brocade_generic", "Te1/0/1"),
    "arista": ("dell_generic", "Ethernet1"),
    "brocade": ("cisco_generic", "ethernet 1/1"),
}


@pytest.mark.parametrize("family", list(WRONG_FAMILY))
async def test_a_switch_of_another_family_is_refused_with_its_words(family: str) -> None:
    model, port = WRONG_FAMILY[family]
    fs = FakeSwitch(model).start()
    try:
        d = make(family, options(fs), timeout=2)
        try:
            with pytest.raises(SwitchError) as e:
                await asyncio.wait_for(d.set_port(port, PortVlans(native=NATIVE)), 60)    # hang guard
        finally:
            await d.close()
    finally:
        fs.stop()
    why = str(e.value)     # the switch's own refusal, or what we expected and what it said
    assert ("refused: " in why and len(why.split("refused: ", 1)[1]) > 5) or ("expected" in why and "got" in why), why


@pytest.mark.parametrize("behaviour", ["mute", "drop"])
async def test_an_operation_on_a_misbehaving_switch_ends_in_error(cloud: Cloud, behaviour: str) -> None:
    """Registered while nobody answered (the port is recorded unchecked), then the switch comes
    up misbehaving: the operation ends `error` with the reason, not pending."""
    b = await BadSwitch(behaviour).start()
    await b.stop()
    bm = cloud.baremetal
    await bm.site.register_switch(ADMIN, "sw", "arista", b.options())
    await bm.site.register_port(ADMIN, "sw", "Ethernet1")
    await cable(cloud, "sw", "Ethernet1")
    await b.start()
    try:
        op = await finished(cloud, (await bm.ops.revert(ADMIN, "sw", "Ethernet1")).id)
    finally:
        await b.stop()
    assert op.status == "error"
    assert "expected a CLI prompt" in op.error and ("within 2s" in op.error or "closed" in op.error), op.error
    assert b.sessions >= 1


async def test_registration_on_a_misbehaving_switch_is_refused(cloud: Cloud) -> None:
    b = await BadSwitch("wrong-prompt").start()
    try:
        await cloud.baremetal.site.register_switch(ADMIN, "sw", "dell10g", b.options())
        with pytest.raises(BadArgumentError, match="cannot check port 'te1/0/1'.*expected a CLI prompt"):
            await cloud.baremetal.site.register_port(ADMIN, "sw", "te1/0/1")
    finally:
        await b.stop()
    assert not cloud.baremetal.site.ports_by_switch.get("sw")


@pytest.mark.parametrize("model", ["cisco_2960_24TT_L", "cisco_2960_48TT_L", "cisco_6500"])
async def test_other_cisco_models(model: str) -> None:
    """The `cisco` family on fake-switches' other Cisco models (24 and 48 ports, a 6500)."""
    fs = FakeSwitch(model).start()
    try:
        ports = await on("cisco", fs, lambda d: d.list_ports())
        assert len(ports) >= 12 and await on("cisco", fs, lambda d: d.has_port(ports[-1].lower()))
        for want in (PortVlans(native=NATIVE), PortVlans(native=NATIVE, tagged=frozenset({TAGGED})),
                     PortVlans(tagged=frozenset({OTHER})), PortVlans()):
            assert await put("cisco", fs, ports[-1], want) == want
    finally:
        fs.stop()
