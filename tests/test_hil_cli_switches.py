"""The Cisco and Dell CLI dialects against fake-switches (a third-party simulator of switch CLIs
over SSH), through the controller's REST API: port names with slashes (and spaces), VLAN
read-back, drift, a port the switch lacks refused at registration, and a dead switch that does
not hold up a live one."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudctl.drivers.switch.base import PortVlans, SwitchDriver, driver_class

from hil_client import Hil, q
from hil_lab import FakeSwitch, free_port
from support import Server, write_config

pytest.importorskip("fake_switches")

# model -> (driver family, 3 ports, a port for the dead switch, a port the switch lacks)
MODELS = {
    "cisco_generic": ("cisco", ["FastEthernet0/1", "FastEthernet0/2", "FastEthernet0/3"], "GigabitEthernet0/1",
                      "FastEthernet7/7"),
    "dell_generic": ("dell", ["ethernet 1/g1", "ethernet 1/g2", "ethernet 2/g1"], "ethernet 2/g2", "ethernet 9/g9"),
}


@pytest.fixture(scope="module", params=list(MODELS))
def fake(request: pytest.FixtureRequest) -> Iterator[FakeSwitch]:
    fs = FakeSwitch(request.param)
    try:
        yield fs.start()
    finally:
        fs.stop()


def family(fake: FakeSwitch) -> str:
    return MODELS[fake.model][0]


def ports(fake: FakeSwitch) -> list[str]:
    return MODELS[fake.model][1]


def driver(fake: FakeSwitch) -> SwitchDriver:
    cls = driver_class(family(fake))
    assert cls is not None
    return cls("check", options(fake))


def options(fs: FakeSwitch) -> dict[str, object]:
    return {"hostname": "127.0.0.1", "ssh_port": fs.port, "username": "admin", "password": fs.password,
            "host_key": fs.host_key}


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, fake: FakeSwitch) -> Iterator[Hil]:
    d = tmp_path_factory.mktemp("hil-cisco")
    srv = Server(write_config(d, model_cache, baremetal={"vlans": "1200-1299", "attempts": 5, "backoff_s": 20,
                                                         "audit_on_start": "off"}))
    try:
        srv.start()
        h = Hil(srv.admin_url, token=srv.token)
        h.ok("PUT", "/project/P")
        h.ok("PUT", "/switch/cat", {"type": family(fake), **options(fake)})
        # A second switch nobody answers for: its operations wait, the live switch's do not.
        h.ok("PUT", "/switch/dead", {"type": family(fake), **options(fake), "ssh_port": free_port()})
        for i, (sw, port) in enumerate([("cat", p) for p in ports(fake)] + [("dead", MODELS[fake.model][2])]):
            h.ok("PUT", f"/node/m{i}", {})
            h.ok("PUT", f"/node/m{i}/nic/nic0", {"macaddr": f"52:54:00:00:02:0{i}"})
            h.ok("PUT", f"/switch/{sw}/port/{q(port)}")
            h.ok("POST", f"/switch/{sw}/port/{q(port)}/connect_nic", {"node": f"m{i}", "nic": "nic0"})
            h.ok("POST", "/project/P/connect_node", {"node": f"m{i}"})
        for n in ("red", "blue"):
            h.ok("PUT", f"/network/{n}", {"owner": "P", "access": ["P"]})
        yield h
    finally:
        srv.stop()


def read(fake: FakeSwitch, port: str) -> PortVlans:
    """The port as the switch has it, read over a session of our own."""
    async def go() -> PortVlans:
        d = driver(fake)
        try:
            return await d.read_port(port)
        finally:
            await d.close()
    return asyncio.run(go())


def test_ports_with_slashes_get_vlans(admin: Hil, fake: FakeSwitch) -> None:
    names = ports(fake)
    assert [p["label"] for p in admin.ok("GET", "/switch/cat")["ports"]] == names
    assert admin.ok("GET", f"/switch/cat/port/{q(names[0])}")["node"] == "m0"
    red = admin.vlan("red")
    blue = admin.vlan("blue")
    assert admin.connect("m0", "nic0", "red")["status"] == "done"
    assert admin.connect("m1", "nic0", "red")["status"] == "done"
    assert admin.connect("m1", "nic0", "blue", f"vlan/{blue}")["status"] == "done"
    assert read(fake, names[0]) == PortVlans(native=red)
    assert read(fake, names[1]) == PortVlans(native=red, tagged=frozenset({blue}))
    assert admin.ok("GET", f"/switch/cat/port/{q(names[1])}")["networks"] == {"vlan/native": "red",
                                                                              f"vlan/{blue}": "blue"}
    assert admin.detach("m1", "nic0", "red")["status"] == "done"
    assert read(fake, names[1]) == PortVlans(tagged=frozenset({blue}))


def test_a_dead_switch_does_not_hold_up_a_live_one(admin: Hil) -> None:
    stuck = admin.ok("POST", "/node/m3/nic/nic0/connect_network", {"network": "blue"})["status_id"]
    assert admin.connect("m2", "nic0", "blue")["status"] == "done"
    assert admin.ok("GET", f"/operation/{stuck}")["status"] == "pending"


def test_audit_finds_and_repairs_drift(admin: Hil, fake: FakeSwitch) -> None:
    names = ports(fake)
    report = {r["port"]: r for r in admin.ok("POST", "/switch/cat/audit", {})}
    assert report[names[0]]["status"] == "ok" and report[names[2]]["status"] == "ok"

    async def tamper() -> None:      # someone at the console moves a port
        d = driver(fake)
        try:
            await d.set_port(names[0], PortVlans(native=1299))
        finally:
            await d.close()
    asyncio.run(tamper())
    report = {r["port"]: r for r in admin.ok("POST", "/switch/cat/audit", {})}
    assert report[names[0]]["status"] == "drift" and report[names[0]]["actual"] == "native 1299"
    assert admin.ok("POST", "/switch/cat/audit", {"repair": True})[0]["status"] == "repaired"
    red = admin.vlan("red")
    assert read(fake, names[0]) == PortVlans(native=red)


def test_a_port_the_switch_lacks_is_refused_when_registered(admin: Hil, fake: FakeSwitch) -> None:
    """The port list is read from the switch at registration: a typo is a 400 with the reason
    then, not an operation that fails at the first connect; the switch's other ports still work."""
    ghost = MODELS[fake.model][3]
    status, err = admin.call("PUT", f"/switch/cat/port/{q(ghost)}")
    assert status == 400 and err["type"] == "BadArgumentError" and "has no port" in err["msg"], (status, err)
    assert ghost not in [p["label"] for p in admin.ok("GET", "/switch/cat")["ports"]]
    assert admin.connect("m0", "nic0", "blue", "vlan/" + str(admin.vlan("blue")))[
        "status"] == "done"
