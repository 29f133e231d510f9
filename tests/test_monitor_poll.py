"""The monitor's poll as users see it, in-process over libvirt's test driver: an instance whose domain
died without an event is recorded stopped (off: at the next poll; gone: only once two polls in a
row missed it), a domain of an instance that runs on another host now is removed, and the host view
counts the poll's domains. And the poll as kept: packed (`PolledDomains`), it reads back what the
driver gave, and a host's last poll is a few objects for the cycle collector, not one per domain."""
from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_compute_core import launch, raw_domain, until

from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.monitor import host_view
from cloudctl.drivers.hypervisor.base import POWER_CODE, DomainStats, PolledDomains, Power

from support import write_config


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    # The monitor's own rounds an hour apart: the test's polls are the only ones.
    cfg = load_config(write_config(tmp_path, model_cache, terminated_visible_s=0, monitor={"interval_s": 3600}))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    yield c
    await c.stop()


async def _lose_the_stop_event(cloud: Cloud, iid: str) -> None:
    """The instance's domain stopped (its event handled), then the store told it runs again: as
    after a stop event that never came (a dropped connection)."""
    await until(lambda: cloud.compute.table.get(iid).state == "stopped")
    await cloud.compute.idle()
    with cloud.store.txn() as tx:
        tx.put(dataclasses.replace(cloud.compute.table.get(iid), state="running"))
    cloud.store.flush()


async def test_a_domain_found_off_stops_its_instance(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    a, b = await launch(cloud, caller, 2)
    host = cloud.compute.table.get(a).host
    await asyncio.to_thread(raw_domain(cloud, a).destroy)
    await _lose_the_stop_event(cloud, a)
    h = await cloud.monitor.poll_host(host)
    inst = cloud.compute.table.get(a)
    assert (inst.state, inst.state_reason_code) == ("stopped", "Server.InternalError")
    assert inst.state_reason_message == f"Server.InternalError: its domain is off on {host}"
    assert cloud.compute.table.get(b).state == "running"
    listed = await cloud.drivers[host].list_domains()
    assert host_view(h, cloud.monitor, cloud.scheduler)["domains"] == len(listed) > 0


async def test_a_missing_domain_stops_its_instance_at_the_second_poll(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    a, b = await launch(cloud, caller, 2)
    host = cloud.compute.table.get(a).host
    dom = raw_domain(cloud, a)
    await asyncio.to_thread(dom.undefine)   # transient, still running ...
    await asyncio.to_thread(dom.destroy)    # ... and gone
    await _lose_the_stop_event(cloud, a)
    await cloud.monitor.poll_host(host)
    assert cloud.compute.table.get(a).state == "running"   # one miss may be a domain being moved
    await cloud.monitor.poll_host(host)
    inst = cloud.compute.table.get(a)
    assert inst.state == "stopped"
    assert inst.state_reason_message == f"Server.InternalError: its domain is gone on {host}"
    assert cloud.compute.table.get(b).state == "running"


async def test_the_domain_of_an_instance_moved_away_is_removed(cloud: Cloud) -> None:
    caller = Caller(await cloud.users.create("u"))
    a, b = await launch(cloud, caller, 2)
    inst = cloud.compute.table.get(a)
    other = next(h for h in cloud.drivers if h != inst.host)
    with cloud.store.txn() as tx:   # restarted on the other host while this one was fenced
        tx.put(dataclasses.replace(inst, host=other))
    cloud.store.flush()
    await cloud.monitor.poll_host(inst.host)
    await cloud.compute.idle()
    names = {d.name for d in await cloud.drivers[inst.host].list_domains()}
    assert a not in names
    assert cloud.compute.table.get(b).host != inst.host or b in names


async def test_the_kept_poll_names_domains_by_the_instances_own_ids(cloud: Cloud) -> None:
    """Not by libvirt's copies of the names, kept until the next poll (68 B a domain)."""
    caller = Caller(await cloud.users.create("u"))
    ids = await launch(cloud, caller, 3)
    for host in {cloud.compute.table.get(i).host for i in ids}:
        h = await cloud.monitor.poll_host(host)
        assert h.last is not None
        mine = [n for n in h.last.domains.names if cloud.compute.table.get(n) is not None]
        assert mine and all(n is cloud.compute.table.get(n).id for n in mine)
        assert [d.name for d in h.last.domains] == list(h.last.domains.names)   # (read back as before)


def _stats(n: int, power: Power = Power.RUNNING) -> DomainStats:
    return DomainStats(f"i-{n:017x}", power, n * 10**9 + 7, 512 << 20, n << 20, n << 19, n << 18, n << 17)


def test_a_packed_poll_reads_back_what_the_driver_gave() -> None:
    given = [_stats(n, list(Power)[n % len(Power)]) for n in range(1, 252)]
    poll = PolledDomains(iter(given))
    assert list(poll) == given and len(poll) == len(given)
    assert poll == PolledDomains(given) and poll != PolledDomains(given[:-1] + [given[-1]._replace(net_tx_bytes=1)])
    assert (poll[0], poll[-1], poll[100:103]) == (given[0], given[-1], given[100:103])
    assert poll.get(given[77].name) == given[77] and poll.get("i-nothere") is None
    assert poll.powers() == {d.name: d.power for d in given}
    assert all(type(p) is Power for p in poll.powers().values())
    with pytest.raises(IndexError):
        poll[len(given)]
    # Counters past what 64 unsigned bits hold (no libvirt counter is) are kept as given, too.
    odd = [DomainStats("a", Power.OFF, 10**20, -1), DomainStats("b", Power.PAUSED)]
    assert list(PolledDomains(odd)) == odd
    assert list(PolledDomains()) == []


def test_a_poll_made_from_its_packed_parts_reads_as_one_made_from_records() -> None:
    """A driver may hand its poll over already packed (names, a byte per power, the counters in a
    row): it reads back as the same poll made from `DomainStats`, and parts that do not line up
    are refused."""
    given = [_stats(n, list(Power)[n % len(Power)]) for n in range(1, 252)]
    flat = [v for d in given for v in d[2:]]
    codes = bytes(POWER_CODE[d.power] for d in given)
    names = tuple(d.name for d in given)
    poll = PolledDomains.packed(names, codes, flat)
    assert poll == PolledDomains(given) and list(poll) == given and poll.powers() == {d.name: d.power for d in given}
    assert list(PolledDomains.packed((), b"", [])) == []
    odd = [DomainStats("a", Power.OFF, 10**20, -1), DomainStats("b", Power.PAUSED)]   # (kept as given)
    assert list(PolledDomains.packed(("a", "b"), bytes([POWER_CODE[Power.OFF], POWER_CODE[Power.PAUSED]]),
                                     [v for d in odd for v in d[2:]])) == odd
    with pytest.raises(ValueError):
        PolledDomains.packed(names, codes[:-1], flat)
    with pytest.raises(ValueError):
        PolledDomains.packed(names, codes, flat[:-1])


def test_kept_polls_are_a_few_objects_for_the_collector() -> None:
    """200 hosts' last polls of 250 domains are what a full collection would walk, every one, if a
    domain were an object: kept packed, they are a few objects a host."""
    gc.collect()
    before = len(gc.get_objects())
    kept = [PolledDomains(_stats(h * 1000 + n) for n in range(250)) for h in range(200)]
    gc.collect()
    assert len(gc.get_objects()) - before < 5 * len(kept)
    assert sum(map(len, kept)) == 50_000


async def test_every_host_is_polled_again_and_again_one_round_at_a_time_and_a_hung_one_holds_no_other(
        tmp_path: Path, model_cache: Path) -> None:
    """One task keeps all hosts' rounds: each host comes round every interval, never twice at once,
    and a host whose poll hangs (until the monitor's timeout) delays no other host's rounds."""
    cfg = load_config(write_config(tmp_path, model_cache, monitor={"interval_s": 0.2, "timeout_s": 1.0}))
    c = await Cloud.open(cfg, "http://127.0.0.1:0")
    try:
        names = sorted(c.drivers)
        assert len(names) >= 2
        hung = names[0]
        in_flight = dict.fromkeys(names, 0)
        most = dict.fromkeys(names, 0)
        for name in names:
            driver = c.drivers[name]
            real = driver.poll

            async def poll(name: str = name, real: object = real) -> object:
                in_flight[name] += 1
                most[name] = max(most[name], in_flight[name])
                try:
                    if name == hung:
                        await asyncio.sleep(3600)
                    return await real()   # type: ignore[operator]
                finally:
                    in_flight[name] -= 1
            driver.poll = poll   # type: ignore[method-assign]
        before = {n: c.monitor.hosts[n].polls for n in names}
        await until(lambda: all(c.monitor.hosts[n].polls - before[n] >= 5 for n in names[1:]), timeout=20)
        others = {n: c.monitor.hosts[n] for n in names[1:]}
        assert all(h.failures == 0 and h.state == "on" for h in others.values())
        await until(lambda: c.monitor.hosts[hung].failures >= 2, timeout=20)   # its rounds go on, timed out
        assert set(most.values()) == {1}
    finally:
        await c.stop()
