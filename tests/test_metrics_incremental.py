"""`/metrics` from bookkeeping kept as things change (no pass over the instances per scrape):
the counts must agree with a fresh count of the tables, and the cached per-instance text must
follow the table between polls and read exactly as prometheus_client writes it."""
from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloudctl.api.metrics_instances import FAMILIES, _lines
from cloudctl.drivers.hypervisor.base import DomainStats, Power
from cloudctl.store.records import Instance

from support import wait_state
from test_metrics import _scrape, _value

STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
VCPUS = {"t3.nano": 1, "t3.small": 2}
CONSUMING = ("pending", "running", "stopping", "shutting-down")


def _fresh(clients: list[Any]) -> tuple[dict[str, int], int]:
    """Instances by state, and vCPUs held, counted afresh from what DescribeInstances reads."""
    counts, vcpus = dict.fromkeys(STATES, 0), 0
    for ec2 in clients:
        for r in ec2.describe_instances()["Reservations"]:
            for i in r["Instances"]:
                counts[i["State"]["Name"]] += 1
                if i["State"]["Name"] in CONSUMING:
                    vcpus += VCPUS[i["InstanceType"]]
    return counts, vcpus


def _exported(srv: Any) -> tuple[dict[str, int], int]:
    fams = _scrape(srv)
    counts = {s.labels["state"]: int(s.value) for s in fams["cloudctl_instances"].samples}
    return counts, int(sum(s.value for s in fams["cloudctl_host_vcpus_used"].samples))


def _agree(srv: Any, clients: list[Any], expect: dict[str, int]) -> None:
    """The exported gauges equal a fresh count (and what the sequence should have left)."""
    want = {**dict.fromkeys(STATES, 0), **expect}
    deadline = time.time() + 10   # only for work still settling: a drift never goes away
    while True:
        fresh, exported = _fresh(clients), _exported(srv)
        if (fresh[0] == want and exported == fresh) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert fresh[0] == want
    assert exported == fresh


@pytest.mark.slow
def test_instance_counts_match_a_fresh_count_after_launches_stops_terminations(new_server: Any) -> None:
    srv = new_server()
    a, b = srv.client(srv.create_user("ma")), srv.client(srv.create_user("mb"))
    image = a.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    ia = [i["InstanceId"] for i in a.run_instances(ImageId=image, MinCount=4, MaxCount=4,
                                                    InstanceType="t3.nano")["Instances"]]
    ib = [i["InstanceId"] for i in b.run_instances(ImageId=image, MinCount=2, MaxCount=2,
                                                    InstanceType="t3.small")["Instances"]]
    wait_state(a, ia, "running")
    wait_state(b, ib, "running")
    _agree(srv, [a, b], {"running": 6})

    a.stop_instances(InstanceIds=ia[2:])
    wait_state(a, ia[2:], "stopped")
    _agree(srv, [a, b], {"running": 4, "stopped": 2})

    b.terminate_instances(InstanceIds=ib[1:])
    a.terminate_instances(InstanceIds=ia[1:2])
    wait_state(b, ib[1:], "terminated")
    wait_state(a, ia[1:2], "terminated")
    _agree(srv, [a, b], {"running": 2, "stopped": 2, "terminated": 2})

    a.start_instances(InstanceIds=ia[2:3])
    a.terminate_instances(InstanceIds=ia[3:])
    wait_state(a, ia[2:3], "running")
    wait_state(a, ia[3:], "terminated")
    final = {"running": 3, "terminated": 3}
    _agree(srv, [a, b], final)

    srv.stop()   # counted again from the checkpoint and journal at start-up
    srv.start()
    _agree(srv, [a, b], final)

    # Terminated instances expire (rows deleted): the count follows them out.
    cfg = yaml.safe_load(srv.config_path.read_text())
    cfg["terminated_visible_s"] = 1
    srv.config_path.write_text(yaml.safe_dump(cfg))
    srv.stop()
    srv.start()
    _agree(srv, [a, b], {"running": 3})


def _instance_samples(fams: dict[str, Any], iid: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in fams.values() for s in f.samples if s.labels.get("instance") == iid}


@pytest.mark.slow
def test_instance_series_follow_the_table_between_polls(new_server: Any) -> None:
    srv = new_server(monitor={"interval_s": 0.2}, terminated_visible_s=1)
    ec2 = srv.client(srv.create_user("mc"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3,
                                                       InstanceType="t3.nano")["Instances"]]
    wait_state(ec2, ids, "running")
    deadline = time.time() + 10
    while not all(_value(_scrape(srv)["cloudctl_instance_info"], "cloudctl_instance_info", instance=i)
                  for i in ids) and time.time() < deadline:
        time.sleep(0.1)
    for host in ("host-a", "host-b"):   # no more polls: the last ones' figures stay exported
        srv.admin("POST", f"/v0/hosts/{host}/offline")
    time.sleep(0.5)   # (a poll under way ends)
    before = _scrape(srv)
    keep, retype, gone = ids
    assert all(_instance_samples(before, i) for i in ids)

    ec2.stop_instances(InstanceIds=[retype])
    wait_state(ec2, [retype], "stopped")
    ec2.modify_instance_attribute(InstanceId=retype, InstanceType={"Value": "t3.small"})
    ec2.terminate_instances(InstanceIds=[gone])
    deadline = time.time() + 15
    while any(i["InstanceId"] == gone for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]):
        assert time.time() < deadline, "the terminated instance did not expire"
        time.sleep(0.2)
    after = _scrape(srv)

    assert _instance_samples(after, keep) == _instance_samples(before, keep)
    assert _instance_samples(after, gone) == {}   # its row is gone, though the last poll listed it
    info = [s for s in after["cloudctl_instance_info"].samples if s.labels["instance"] == retype]
    assert [(s.labels["instance_type"], s.value) for s in info] == [("t3.small", 1.0)]
    counters = {k: v for k, v in _instance_samples(before, retype).items() if k[0] != "cloudctl_instance_info"}
    assert {k: v for k, v in _instance_samples(after, retype).items() if k[0] != "cloudctl_instance_info"} == counters
    assert _value(after["cloudctl_instances"], "cloudctl_instances", state="stopped") == 1


class _Families(Collector):
    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> list[Metric]:
        return self.fams


def test_instance_lines_are_what_prometheus_client_writes() -> None:
    """The cached lines, byte for byte, against the library's writer on the same samples
    (large counters switch to exponents; quotes, backslashes and newlines are escaped)."""
    big, odd = 2**63 - 1, 'rack "7"\\b\nx'
    cases = [("host-a", "cloudctl-1a", DomainStats("i-0123456789abcdef0", Power.RUNNING)),
             (odd, odd, DomainStats("i-00000000000000001", Power.RUNNING, 123_456_789_012, 536_870_912,
                                    1_000_000, 999_999, big, 10**20)),
             ("h", "z", DomainStats("i-00000000000000002", Power.OFF, 1, 1, 7, 1_234_567, 10**6 - 1, 2**53 + 1))]
    fams: list[Metric] = [
        GaugeMetricFamily("cloudctl_instance_info", "", labels=["instance", "host", "instance_type", "zone"]),
        CounterMetricFamily("cloudctl_instance_cpu_seconds", "", labels=["instance"]),
        GaugeMetricFamily("cloudctl_instance_memory_bytes", "", labels=["instance"]),
        CounterMetricFamily("cloudctl_instance_block_read_bytes", "", labels=["instance"]),
        CounterMetricFamily("cloudctl_instance_block_write_bytes", "", labels=["instance"]),
        CounterMetricFamily("cloudctl_instance_network_receive_bytes", "", labels=["instance"]),
        CounterMetricFamily("cloudctl_instance_network_transmit_bytes", "", labels=["instance"])]
    ours: list[list[str]] = [[] for _ in FAMILIES]
    for host, label, d in cases:
        inst = Instance(id=d.name, owner="o", reservation_id="r-1", image_id="ami-1", instance_type=label,
                        host=host, zone=label, state="running", launch_time=0.0)
        for col, line in zip(ours, _lines(host, inst, d)):
            col.append(line)
        values = (1, d.cpu_time_ns / 1e9, d.memory_bytes, d.block_read_bytes, d.block_write_bytes,
                  d.net_rx_bytes, d.net_tx_bytes)
        fams[0].add_metric([d.name, host, label, label], values[0])
        for fam, v in zip(fams[1:], values[1:]):
            fam.add_metric([d.name], v)
    for fam, (name, _, _), col in zip(fams, FAMILIES, ours):
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Families([fam]))
        theirs = generate_latest(reg).decode()
        assert f"# TYPE {name} " in theirs
        assert "".join(col) == "".join(line + "\n" for line in theirs.splitlines() if not line.startswith("#"))
