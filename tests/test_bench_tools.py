"""The bench's own tools, where a mistake would silently measure the wrong thing: the scale bench's
reading of a stopped controller's state and the long journal it adds (replayed by the real store
to the very same state), the run history's comparison (a slower run is flagged), and the verdict's
reading of the 32-client rate beside what the same client reaches against the bare hello, and the
simulated hosts (their domains outlive a controller's connection, as a real host's do), and the per-thread
CPU that bench/host_threads.py reports."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import libvirt
import pytest

from cloudctl.config import Host
from cloudctl.store.journal import read_journal
from cloudctl.store.records import User
from cloudctl.store.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import history  # noqa: E402
import procs  # noqa: E402
import scale  # noqa: E402
import scale_hosts  # noqa: E402
import scale_report  # noqa: E402
import scale_state  # noqa: E402


def user(name: str) -> User:
    return User(name=name, access_key=f"AK{name}", secret_key="s", account_id="123456789012", created=1.0)


async def test_added_journal_replays_to_the_same_state(tmp_path: Path) -> None:
    s = Store(tmp_path)
    await s.open()
    with s.txn() as tx:
        for n in "abc":
            tx.put(user(n))
    await s.checkpoint()
    with s.txn() as tx:   # after the checkpoint: only in the journal
        tx.delete(s.table(User).get("a"))
        tx.put(user("d"))
    await s.sync()
    digest = s.digest()
    await s.close()

    rows = scale_state.latest_rows(tmp_path)
    assert sorted(k for t, k in rows if t == "users") == ["b", "c", "d"]
    info = scale_state.write_journal(tmp_path, rows, 1000)
    added = tmp_path / f"journal.{info['generation']:08d}"
    assert sum(1 for _ in read_journal(added)) == 1000

    s2 = Store(tmp_path)
    await s2.open()
    try:
        assert s2.digest() == digest
    finally:
        await s2.close()


def test_history_compares_with_the_last_run_of_the_same_machine(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "HISTORY", tmp_path / "history.jsonl")
    monkeypatch.setattr(history, "REPO", tmp_path)
    here = {"machine": "box-a", "commit": "c1"}
    first = history.record("scale", here, {"run_p50_ms": 2.0, "run_x32_per_s": 300.0})
    assert "nothing to compare" in first
    history.record("scale", {"machine": "box-b", "commit": "c2"}, {"run_p50_ms": 1.0, "run_x32_per_s": 900.0})
    second = history.record("scale", here | {"commit": "c3"}, {"run_p50_ms": 3.0, "run_x32_per_s": 400.0})
    lines = {ln.split(":")[0].strip(): ln for ln in second.splitlines()}
    assert "2 -> 3 (+50%)" in lines["run_p50_ms"] and lines["run_p50_ms"].endswith("WORSE")
    assert "300 -> 400 (+33%)" in lines["run_x32_per_s"] and lines["run_x32_per_s"].endswith("better")
    assert "commit c1" in second   # box-b's run is not this machine's
    entries = [json.loads(ln) for ln in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [e["commit"] for e in entries] == ["c1", "c2", "c3"]
    assert all({"date", "loadavg", "machine", "mode", "figures"} <= e.keys() for e in entries)


def test_launch_probe_gives_each_request_what_overlapped_it() -> None:
    """A collection or journal write counts toward a request only for the part inside it, and a
    report starts afresh (the scale bench reads one before its launches, one after)."""
    import launch_probe as lp
    lp.report()
    lp.LAUNCHES.extend([(10.0, 10.010, 0.002, 0.001), (20.0, 20.004, 0.003, 0.0)])
    lp.GCS.extend([(9.999, 10.001, 0), (10.005, 10.007, 1), (20.001, 20.002, 2), (30.0, 30.1, 2)])
    lp.WRITES.extend([(10.002, 10.020), (19.0, 19.5)])
    first, second = lp.report()["launches"]
    assert first == {"wall_ms": 10.0, "loop_cpu_ms": 2.0, "run_queue_ms": 1.0, "gc_ms": [1.0, 2.0, 0.0],
                     "journal_write_ms": 8.0}
    assert second["gc_ms"] == [0.0, 0.0, 1.0] and second["journal_write_ms"] == 0.0
    assert lp.report() == {"launches": []}


def test_scale_verdict_gives_the_32_client_rate_beside_the_clients_ceiling() -> None:
    def result(x32: dict[str, float]) -> dict:
        return {"start": {"rss_mib": 70.0, "rss_mib_after_first_call": 71.0},
                "stages": {"1000": {"instances": 1000, "rss_mib": 73.0,
                                    "run_instances": {"sequential": {"mean_ms": 2.0, "p99_ms": 4.0}}},
                           "50000": {"instances": 50000, "rss_mib": 170.0,
                                     "run_instances": {"sequential": {"mean_ms": 2.5, "p99_ms": 6.0},
                                                       "concurrent_32": x32}}}}

    def row(res: dict) -> dict:
        [r] = [g for g in scale_report.verdict(res) if g["goal"].startswith("RunInstances with 32")]
        return r

    r = row(result({"calls_per_s": 450.0, "hello_calls_per_s": 3600.0}))
    assert (r["value"], r["result"]) == (450.0, "FAIL")
    assert r["where"] == "@50,000; this client against the bare hello 3600.0/s (0.12 of it)"
    assert row(result({"calls_per_s": 450.0}))["where"] == "@50,000"
    assert scale_report.headline(result({"calls_per_s": 450.0, "hello_calls_per_s": 3600.0}))[
        "hello_x32_per_s @50000"] == 3600.0


@pytest.mark.parametrize("nice", [0, 7])
def test_a_simulated_host_keeps_its_domains_when_a_controller_goes(nice: int) -> None:
    """The scale bench's restart reconnects to hosts that kept running: a domain defined through a
    connection that then closes (a killed controller's) is still there, running, for the next one,
    and only on its own host. The daemons run at the niceness asked for, and a host's config
    overcommits the test node to the size the bench's capacity figures assume."""
    if why := scale_hosts.missing():
        pytest.skip(why)
    tmp = procs.make_tmp()
    os.chmod(tmp, 0o755)   # (the daemons run as nobody when the tests run as root)
    hosts: list[scale_hosts.Host] = []
    try:
        hosts = scale_hosts.start_hosts(tmp, [("h0", "z1"), ("h1", "z1")], nice)
        with open(f"/proc/{hosts[0].proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[16]) == min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19)
        hosts[0].add_domains([("i-00000001", "00000000-0000-4000-8000-000000000001")], "ctl")
        gone = libvirt.open(hosts[0].uri)
        gone.defineXML(scale_hosts.domain_xml("i-00000002", "00000000-0000-4000-8000-000000000002", "ctl")).create()
        gone.close()
        conn = libvirt.open(hosts[0].uri)
        try:
            doms = {d.name(): d.isActive() for d in conn.listAllDomains()}
            assert doms == {"i-00000001": 1, "i-00000002": 1}   # (the test driver's sample domain removed)
            cfg = Host.model_validate(hosts[0].config())
            _model, memory_mib, cpus = conn.getInfo()[:3]
            assert cpus * cfg.cpu_overcommit == scale_hosts.HOST_CPUS == 256
            assert int(memory_mib * cfg.memory_overcommit) // 512 == 4096   # t3.nano, as host-a.xml holds
        finally:
            conn.close()
        other = libvirt.open(hosts[1].uri)
        try:
            assert other.listAllDomains() == []
        finally:
            other.close()
    finally:
        scale_hosts.stop_hosts(hosts)
        assert not any(h.proc.alive() for h in hosts)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_bench_stops_the_hosts_it_started() -> None:
    """`scale.Bench.stop` (what the scale bench and bench/profile_hot.py call when they end, however
    they end) leaves none of its hosts' daemons running: each is a libvirtd of its own."""
    if why := scale_hosts.missing():
        pytest.skip(why)
    tmp = procs.make_tmp()
    os.chmod(tmp, 0o755)   # (the daemons run as nobody when the tests run as root)
    b = scale.Bench(tmp, argparse.Namespace(), n_hosts=3)
    try:
        b.start_hosts()
        daemons = [h.proc for h in b.host_list]
        assert len(daemons) == 3 and all(d.alive() for d in daemons)
        assert [h["name"] for h in b.hosts] == ["h000", "h001", "h002"]
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert not any(d.alive() for d in daemons)


def test_host_threads_reports_each_kind_of_thread_idle_and_per_launch(tmp_path: Path) -> None:
    """bench/host_threads.py end to end on 4 hosts (one a zone): the per-thread CPU it reports comes from a
    controller that ran the launches (the loop's CPU per launch is there and plausible), and the
    idle figures are shares of a core."""
    if why := scale_hosts.missing():
        pytest.skip(why)
    import host_threads
    out = tmp_path / "threads.json"
    argv = sys.argv
    sys.argv = ["host_threads.py", "--hosts", "4", "--instances", "20", "--launches", "40", "--idle-s", "1",
                "--json", str(out)]
    try:
        assert host_threads.main() == 0
    finally:
        sys.argv = argv
    [r] = json.loads(out.read_text())
    assert r["hosts"] == 4 and r["repo"] == procs.REPO.name
    per = r["per_launch_us"]
    assert 50 < per["MainThread"] < 100_000 and per["process"] >= per["MainThread"]
    assert all(0 <= v <= 200 for v in r["idle_pct_of_a_core"].values())
    assert r["launch_wall_ms"] > 0
