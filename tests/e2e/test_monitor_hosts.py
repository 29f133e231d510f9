"""Host monitoring against a host that really becomes unreachable.

The second host is libvirtd's shared `test:///default` reached through a unix-socket relay this
test owns (`test+unix:///default?socket=<relay>`): closing the relay is a network cut between
the controller and that host; reopening it is the host coming back. No guest is booted.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from support import DEFAULT_CONFIG, wait_polls, wait_state

SYSTEM_SOCK = "/run/libvirt/libvirt-sock"
INTERVAL = 0.3


class Relay:
    """A unix-socket relay to libvirtd; `cut()` drops every connection and the listener."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None

    def open(self) -> None:
        ls = socket.socket(socket.AF_UNIX)
        ls.bind(str(self.path))
        ls.listen(16)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(SYSTEM_SOCK)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        assert self.listener is not None
        self.listener.close()
        os.unlink(self.path)
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _wait(fn: Any, timeout: float = 30.0) -> Any:
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.1)


def _status(ec2: Any, iid: str) -> dict[str, Any]:
    return ec2.describe_instance_status(InstanceIds=[iid], IncludeAllInstances=True)["InstanceStatuses"][0]


@pytest.fixture
def relay(libvirtd: str, tmp_path: Path) -> Any:
    r = Relay(tmp_path / "relay.sock")
    r.open()
    yield r
    if r.listener is not None and r.path.exists():
        r.cut()


def test_unreachable_host_goes_error_and_back(new_server: Any, relay: Relay) -> None:
    hosts = [{"name": "near", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-a.xml"),
              "zone": "cloudctl-1a"},
             {"name": "far", "uri": f"test+unix:///default?socket={relay.path}", "zone": "cloudctl-1b"}]
    srv = new_server(hosts=hosts, monitor={"interval_s": INTERVAL, "grace_s": 1.0, "timeout_s": 5.0})
    ec2 = srv.client(srv.create_user("ops"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.nano",
        Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"]]
    wait_state(ec2, ids, "running")
    assert all(srv.admin("GET", f"/v0/hosts/{h}")["state"] == "on" for h in ("near", "far"))
    assert _status(ec2, ids[0])["SystemStatus"]["Status"] == "ok"

    relay.cut()
    assert _wait(lambda: srv.admin("GET", "/v0/hosts/far")["state"] == "error")
    far = srv.admin("GET", "/v0/hosts/far")
    assert far["error"] and far["instances"] == 2
    for iid in ids:
        st = _status(ec2, iid)
        assert st["SystemStatus"]["Status"] == st["InstanceStatus"]["Status"] == "impaired"
        assert st["SystemStatus"]["Details"][0]["Status"] == "failed"
        assert "ImpairedSince" in st["SystemStatus"]["Details"][0]
    assert _status_filter(ec2, "impaired") == set(ids)
    failed = ec2.describe_instance_status(Filters=[{"Name": "instance-status.reachability", "Values": ["failed"]}])
    assert {s["InstanceId"] for s in failed["InstanceStatuses"]} == set(ids)
    # Nothing lost, and nothing placed there meanwhile.
    assert {i["State"]["Name"] for i in wait_state(ec2, ids, "running", timeout=0)} == {"running"}
    with pytest.raises(ec2.exceptions.ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                          Placement={"AvailabilityZone": "cloudctl-1b"})
    assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"

    # The host comes back as after a reboot: libvirtd's test:///default is per connection, so
    # the domains are gone. No event said so; the poll finds it: stopped, server-side reason.
    relay.open()
    assert _wait(lambda: srv.admin("GET", "/v0/hosts/far")["state"] == "on")
    back = wait_state(ec2, ids, "stopped", timeout=10 * INTERVAL + 5)
    assert {i["State"]["Name"] for i in back} == {"stopped"}
    assert {i["StateReason"]["Code"] for i in back} == {"Server.InternalError"}
    assert _status_filter(ec2, "impaired") == set()
    events = srv.admin("GET", "/v0/events?kind=host&subject=far")
    assert [e["data"]["state"] for e in events][-2:] == ["error", "on"]
    # The host takes work again: the stopped instances start on it and report ok.
    ec2.start_instances(InstanceIds=ids)
    wait_state(ec2, ids, "running")
    assert _wait(lambda: _status(ec2, ids[0])["SystemStatus"]["Status"] == "ok")
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated")


def test_fenced_host_restart_policy(new_server: Any, relay: Relay) -> None:
    hosts = [{"name": "far", "uri": f"test+unix:///default?socket={relay.path}", "zone": "cloudctl-1b",
              "shared_storage": True},
             {"name": "spare", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-b.xml"),
              "zone": "cloudctl-1b", "shared_storage": True},
             {"name": "near", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-a.xml"),
              "zone": "cloudctl-1a"}]
    srv = new_server(hosts=hosts, monitor={"interval_s": INTERVAL, "grace_s": 1.0, "timeout_s": 5.0,
                                           "failure_policy": "restart"})
    ec2 = srv.client(srv.create_user("ops"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    srv.admin("POST", "/v0/hosts/spare/disable")     # so that both land on `far`
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.nano",
        Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"]]
    srv.admin("POST", "/v0/hosts/spare/enable")
    ips = {i["InstanceId"]: i["PrivateIpAddress"] for i in wait_state(ec2, ids, "running")}
    assert srv.admin("GET", "/v0/hosts/far")["instances"] == 2
    with pytest.raises(urllib.error.HTTPError) as e:   # a host that answers cannot be fenced
        srv.admin("POST", "/v0/hosts/far/fence")
    assert e.value.code == 409

    relay.cut()
    assert _wait(lambda: srv.admin("GET", "/v0/hosts/far")["state"] == "error")
    wait_polls(srv, "far")
    assert srv.admin("GET", "/v0/hosts/spare")["instances"] == 0    # nothing moves before the fence
    [needed] = srv.admin("GET", "/v0/events?kind=host.fence_needed&subject=far")   # once, no agent
    assert sorted(needed["data"]["instances"]) == sorted(ids)
    res = srv.admin("POST", "/v0/hosts/far/fence")
    assert sorted(res["restarted"]) == sorted(ids)
    back = wait_state(ec2, ids, "running")
    assert {i["State"]["Name"] for i in back} == {"running"}
    assert {i["InstanceId"]: i["PrivateIpAddress"] for i in back} == ips      # same addresses
    assert srv.admin("GET", "/v0/hosts/spare")["instances"] == 2
    assert srv.admin("GET", "/v0/hosts/far")["instances"] == 0
    assert all(_status(ec2, i)["SystemStatus"]["Status"] == "ok" for i in ids)
    moves = srv.admin("GET", "/v0/events?kind=instance.restart")
    assert {e["subject"] for e in moves} == set(ids)
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated")


def test_host_unreachable_from_the_start(new_server: Any) -> None:
    hosts = [{"name": "near", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-a.xml"),
              "zone": "cloudctl-1a"},
             {"name": "dead", "uri": "qemu+tcp://127.0.0.1:1/system", "zone": "cloudctl-1b"}]
    srv = new_server(hosts=hosts, monitor={"interval_s": INTERVAL, "grace_s": 0.5})
    assert _wait(lambda: srv.admin("GET", "/v0/hosts/dead")["state"] == "error")
    dead = srv.admin("GET", "/v0/hosts/dead")
    assert dead["last_seen"] is None and dead["failures"] >= 1 and dead["error"]
    assert srv.admin("GET", "/v0/hosts/near")["state"] == "on"


def _status_filter(ec2: Any, status: str) -> set[str]:
    res = ec2.describe_instance_status(Filters=[{"Name": "system-status.status", "Values": [status]}])
    return {s["InstanceId"] for s in res["InstanceStatuses"]}


def test_disabled_host_takes_no_placements(new_server: Any) -> None:
    srv = new_server(monitor={"interval_s": INTERVAL})
    ec2 = srv.client(srv.create_user("ops"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    h = srv.admin("POST", "/v0/hosts/host-b/disable")
    assert h["state"] == "disabled" and h["admin"] == "disabled"
    with pytest.raises(ec2.exceptions.ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                          Placement={"AvailabilityZone": "cloudctl-1b"})
    assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    srv.stop()
    srv.start()   # the admin setting is journaled
    assert srv.admin("GET", "/v0/hosts/host-b")["state"] == "disabled"
    assert srv.admin("POST", "/v0/hosts/host-b/enable")["state"] == "on"
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                            Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"][0]["InstanceId"]
    assert srv.admin("GET", "/v0/hosts/host-b")["instances"] == 1
    ec2.terminate_instances(InstanceIds=[iid])
    kinds = [e["message"] for e in srv.admin("GET", "/v0/events?kind=host.state&subject=host-b")]
    assert "on -> disabled" in kinds and "disabled -> on" in kinds
