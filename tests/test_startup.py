"""Start-up at scale: hosts are connected concurrently, so a slow or unreachable host does not
hold the others up; the state load leaves the cycle collector as it found it.

Real libvirt test:/// hosts throughout; the slow host is the production driver with its connect
made to wait (in its own thread, as a slow libvirtd would make it) for the others."""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.config import Host, load_config
from cloudctl.core.cloud import Cloud, host_driver
from cloudctl.core.compute import Compute
from cloudctl.drivers.hypervisor.base import DomainEvent, HypervisorDriver, HypervisorError
from cloudctl.drivers.hypervisor.simulated import SimulatedLibvirtDriver
from cloudctl.store import checkpoint as ckpt
from cloudctl.store.records import Address, Instance, User
from cloudctl.store.store import Store, ensure_private_dir

from support import write_config


class HeldUpDriver(SimulatedLibvirtDriver):
    """Connects only once `others` have connected: one after another, it would wait for hosts
    started after it, so its wait times out and the host is reported unreachable."""

    def __init__(self, host: str, uri: str, others: threading.Event) -> None:
        super().__init__(host, uri)
        self.others = others

    def _connect_sync(self, generation: int):  # type: ignore[no-untyped-def]
        if not self.others.wait(10.0):
            raise HypervisorError(f"{self.host}: held up until the others connected")
        return super()._connect_sync(generation)


class CountingDriver(SimulatedLibvirtDriver):
    def __init__(self, host: str, uri: str, done: list[str], all_done: threading.Event, want: int) -> None:
        super().__init__(host, uri)
        self.done, self.all_done, self.want = done, all_done, want

    def _connect_sync(self, generation: int):  # type: ignore[no-untyped-def]
        out = super()._connect_sync(generation)
        self.done.append(self.host)
        if len(self.done) == self.want:
            self.all_done.set()
        return out


async def test_hosts_connect_concurrently_and_a_slow_or_dead_host_holds_no_one_up(
        tmp_path: Path, model_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, model_cache)
    raw = yaml.safe_load(path.read_text())
    a, b = raw["hosts"]
    raw["hosts"] = [
        {**a, "name": "slow"},                          # first in the config: connected last
        {**a, "name": "host-a"},
        {**b, "name": "host-b"},
        {"name": "dead", "uri": f"test+unix:///default?socket={tmp_path}/no-libvirtd.sock", "zone": b["zone"]},
        {**b, "name": "host-c"},
    ]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    others = threading.Event()
    done: list[str] = []

    def factory(h: Host) -> HypervisorDriver:
        if h.name == "slow":
            return HeldUpDriver(h.name, h.libvirt_uri, others)
        if h.name == "dead":
            return host_driver(h)
        return CountingDriver(h.name, h.libvirt_uri, done, others, want=3)

    with caplog.at_level(logging.ERROR, "cloudctl"):
        cloud = await Cloud.open(cfg, "http://127.0.0.1:0", factory)
    try:
        # The slow host came up once the three after it had: they were not waiting for it.
        assert sorted(done) == ["host-a", "host-b", "host-c"]
        assert cloud.scheduler.hosts["slow"].vcpus > 0
        # The dead one is reported and offers nothing; the others are placed on.
        assert cloud.scheduler.hosts["dead"].vcpus == 0
        assert any("host dead" in r.getMessage() and "cannot connect" in r.getMessage() for r in caplog.records)
        # The scheduler learnt the hosts in the config's order, whatever order they answered in.
        assert list(cloud.scheduler.hosts) == ["slow", "host-a", "host-b", "dead", "host-c"]
        assert any("dead" in line and "unreachable" in line for line in cloud.compute.reconcile_report)
    finally:
        await cloud.stop()


async def test_state_load_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    await store.open()
    await store.close()
    assert gc.isenabled()
    # A start that fails (a checkpoint that cannot be used, and no other): the collector is back on.
    for g in ckpt.generations(tmp_path / "s"):
        ckpt.checkpoint_path(tmp_path / "s", g).write_bytes(b"torn")
    with pytest.raises(ckpt.CheckpointError):
        await Store(tmp_path / "s").open()
    assert gc.isenabled()
    gc.disable()   # and one the caller had turned off stays off
    try:
        await (s := Store(tmp_path / "t")).open()
        await s.close()
        assert not gc.isenabled()
    finally:
        gc.enable()


class EventOnOpenDriver(SimulatedLibvirtDriver):
    """Connects only while the state loads (the load waits for it), and sends a lifecycle event
    as soon as it is open: before the services that handle events exist."""

    def __init__(self, host: str, uri: str, loading: threading.Event, connected: threading.Event) -> None:
        super().__init__(host, uri)
        self.loading, self.connected = loading, connected

    def _connect_sync(self, generation: int):  # type: ignore[no-untyped-def]
        if not self.loading.wait(10.0):
            raise HypervisorError(f"{self.host}: the state load never began")
        out = super()._connect_sync(generation)
        self.connected.set()
        return out

    async def open(self, on_event):  # type: ignore[no-untyped-def]
        await super().open(on_event)
        on_event(DomainEvent(host=self.host, name="i-early", kind="stopped", detail="shutdown",
                             guest_initiated=True))


async def test_hosts_connect_while_the_state_loads_and_their_early_events_wait_for_the_services(
        tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    loading, connected = threading.Event(), threading.Event()
    during_load: list[bool] = []
    load = Store._load

    def slow_load(self: Store) -> int:   # (on the loader's thread)
        loading.set()
        during_load.append(connected.wait(10.0))   # a host connected while the load ran
        return load(self)

    seen: list[tuple[str, int]] = []
    handler = Compute.on_domain_event

    def recording(self: Compute, ev: DomainEvent) -> None:
        seen.append((ev.name, len(self.store.tables)))   # the services exist, the store is open
        handler(self, ev)

    monkeypatch.setattr(Store, "_load", slow_load)
    monkeypatch.setattr(Compute, "on_domain_event", recording)
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0",
                             lambda h: EventOnOpenDriver(h.name, h.libvirt_uri, loading, connected))
    try:
        assert during_load == [True]
        assert [name for name, _ in seen].count("i-early") == len(cfg.hosts)
        assert cloud.scheduler.hosts[cfg.hosts[0].name].vcpus > 0
    finally:
        await cloud.stop()


async def test_a_failed_load_closes_the_hosts_connected_meanwhile(
        tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    drivers: list[SimulatedLibvirtDriver] = []

    def factory(h: Host) -> HypervisorDriver:
        drivers.append(SimulatedLibvirtDriver(h.name, h.libvirt_uri))
        return drivers[-1]

    ensure_private_dir(cfg.state_dir)
    ckpt.checkpoint_path(cfg.state_dir, 3).write_bytes(b"torn")   # no usable checkpoint: the load fails
    with pytest.raises(ckpt.CheckpointError):
        await Cloud.open(cfg, "http://127.0.0.1:0", factory)
    assert drivers and all(d._closed for d in drivers)


async def test_the_start_up_checkpoint_is_written_once_the_start_is_done(
        tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its encoding took the GIL from the reconcile; written after it, the start loses nothing:
    until it is on disk the previous generation stays, and a start from there finds every change."""
    cfg = load_config(write_config(tmp_path, model_cache))
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    await cloud.stop()
    on_disk_at_reconcile: list[list[int]] = []
    reconcile = Compute.reconcile

    async def watching(self: Compute, *args: Any) -> list[str]:
        out = await reconcile(self, *args)
        await asyncio.sleep(0.2)   # (time enough for a checkpoint of a few rows to be written)
        on_disk_at_reconcile.append(ckpt.generations(cfg.state_dir))
        return out

    monkeypatch.setattr(Compute, "reconcile", watching)
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        gen = cloud.store.gen
        assert gen not in on_disk_at_reconcile[0] and gen - 1 in on_disk_at_reconcile[0]
        await cloud.store.started()
        assert gen in ckpt.generations(cfg.state_dir)
    finally:
        await cloud.stop()


async def test_a_held_start_up_checkpoint_loses_nothing_and_gives_way_to_a_checkpoint(tmp_path: Path) -> None:
    state = tmp_path / "s"
    first = Store(state)
    await first.open()
    with first.txn() as tx:
        tx.put(User(name="u1", access_key="AKIA1", secret_key="s1", account_id="100000000001", created=1.0))
    await first.sync()
    await first.close()
    s = Store(state)
    await s.open(hold_checkpoint=True)
    with s.txn() as tx:
        tx.put(User(name="u2", access_key="AKIA2", secret_key="s2", account_id="100000000002", created=2.0))
    await s.sync()
    await asyncio.sleep(0.2)
    assert s.gen not in ckpt.generations(state)   # held: the files of the previous start are all there
    killed = Store(state)   # a crash now: a start from the files finds both users
    killed._load_quietly()
    assert sorted(killed.table(User).rows) == ["u1", "u2"]
    # A checkpoint asked for meanwhile (BmSecrets.open, before the start is done) lets it through first.
    await asyncio.wait_for(s.checkpoint(), 30)
    assert {s.gen - 1, s.gen} <= set(ckpt.generations(state))
    await s.close()
    again = Store(state)
    again._load_quietly()
    assert sorted(again.table(User).rows) == ["u1", "u2"]


async def test_without_scripts_start_up_reapplies_no_association_but_undoes_those_of_gone_instances(
        tmp_path: Path, model_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With no NAT scripts configured an association is bookkeeping: re-applying 50,000 of them was
    50,000 tasks on the loop at start-up for no change. One whose instance is gone is still undone."""
    cfg = load_config(write_config(tmp_path, model_cache))
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        owner = "100000000001"

        def inst(iid: str, state: str) -> Instance:
            return Instance(id=iid, owner=owner, reservation_id="r-1", image_id="ami-1", instance_type="t3.nano",
                            host=cfg.hosts[0].name, zone=cfg.hosts[0].zone, state=state, launch_time=1.0,
                            private_ip="10.0.0." + iid[-1])

        def addr(ip: str, iid: str, launch: bool = False) -> Address:
            return Address(public_ip=ip, allocation_id="eipalloc-" + ip[-1], owner=owner, allocated=1.0,
                           association_id="eipassoc-" + ip[-1], instance_id=iid, private_ip="10.0.0." + iid[-1],
                           associated_at=1.0, launch=launch)

        kept, elastic_gone, launch_gone = addr("198.18.0.1", "i-1"), addr("198.18.0.2", "i-2"), \
            addr("198.18.0.3", "i-2", launch=True)
        with cloud.store.txn() as tx:
            for row in (inst("i-1", "stopped"), inst("i-2", "terminated"), kept, elastic_gone, launch_gone):
                tx.put(row)
        await cloud.store.sync()
        report = cloud.addresses.reconcile()
        await cloud.addresses.idle()
        assert "re-applying the NAT of 2 elastic IP address(es)" in report
        table = cloud.store.table(Address)
        assert table.get("198.18.0.1") == kept
        assert table.get("198.18.0.2") is not None and table.get("198.18.0.2").association_id is None  # type: ignore[union-attr]
        assert table.get("198.18.0.3") is None   # (a launch address goes back to the pool)
    finally:
        await cloud.stop()


async def test_start_up_reports_the_addresses_held_outside_the_pool_and_only_those(
        tmp_path: Path, model_cache: Path) -> None:
    """The report's pool test runs only when the index of pool addresses counts fewer than the
    table holds: an address left outside the pool (the config's pool shrunk) is still named."""
    cfg = load_config(write_config(tmp_path, model_cache))
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        def addr(ip: str) -> Address:
            return Address(public_ip=ip, allocation_id="eipalloc-" + ip[-1], owner="100000000001", allocated=1.0)

        assert not [ln for ln in cloud.addresses.reconcile() if "pool" in ln]
        with cloud.store.txn() as tx:
            for ip in ("198.18.0.1", "198.18.0.2"):
                tx.put(addr(ip))
        await cloud.store.sync()
        assert not [ln for ln in cloud.addresses.reconcile() if "pool" in ln]
        with cloud.store.txn() as tx:
            tx.put(addr("203.0.113.9"))
        await cloud.store.sync()
        assert [ln for ln in cloud.addresses.reconcile() if "pool" in ln] == [
            "203.0.113.9: held by 100000000001 (eipalloc-9) but no longer in the pool"]
        assert not [ln for ln in cloud.addresses.reconcile(only_unsure=True) if "pool" in ln]
    finally:
        await cloud.stop()


async def test_the_hosts_listed_while_the_state_loads_are_not_listed_again_by_the_reconcile(
        tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connected host's domain states are listed once all hosts are connected, while the
    state still loads; the reconcile after the load uses them (nothing changed since) instead of
    a listing of its own. An unreachable host is still reported."""
    path = write_config(tmp_path, model_cache)
    raw = yaml.safe_load(path.read_text())
    raw["hosts"].append({"name": "dead", "uri": f"test+unix:///default?socket={tmp_path}/no.sock",
                         "zone": raw["hosts"][0]["zone"]})
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    connected = threading.Event()
    states: list[tuple[str, bool]] = []
    listed: list[str] = []
    load = Store._load

    loaded = threading.Event()

    def slow_load(self: Store) -> int:   # (on the loader's thread: ends once the hosts are listed)
        connected.wait(10.0)
        out = load(self)
        loaded.set()
        return out

    class Recording(SimulatedLibvirtDriver):
        async def domain_states(self):  # type: ignore[no-untyped-def]
            out = await super().domain_states()
            states.append((self.host, loaded.is_set()))
            if len(states) == len(cfg.hosts) - 1:
                connected.set()
            return out

        async def list_domains(self, known=()):  # type: ignore[no-untyped-def]
            listed.append(self.host)
            return await super().list_domains(known)

    def factory(h: Host) -> HypervisorDriver:
        return host_driver(h) if h.name == "dead" else Recording(h.name, h.libvirt_uri)

    monkeypatch.setattr(Store, "_load", slow_load)
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0", factory)
    try:
        assert sorted(h for h, _ in states) == sorted(h.name for h in cfg.hosts if h.name != "dead")
        assert not any(after for _, after in states)   # listed while the state loaded
        assert listed == []
        assert any("dead" in line and "unreachable" in line for line in cloud.compute.reconcile_report)
    finally:
        await cloud.stop()
