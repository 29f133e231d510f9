"""Start-up at scale: hosts are connected concurrently, so a slow or unreachable host does not
hold the others up; the state load leaves the cycle collector as it found it.

Real libvirt test:/// hosts throughout; the slow host is the production driver with its connect
made to wait (in its own thread, as a slow libvirtd would make it) for the others."""
from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import pytest
import yaml

from cloudctl.config import Host, load_config
from cloudctl.core.cloud import Cloud, host_driver
from cloudctl.core.compute import Compute
from cloudctl.drivers.hypervisor.base import DomainEvent, HypervisorDriver, HypervisorError
from cloudctl.drivers.hypervisor.simulated import SimulatedLibvirtDriver
from cloudctl.store import checkpoint as ckpt
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
