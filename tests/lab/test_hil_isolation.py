"""Bare-metal isolation proven with packets: a real sshd on loopback driving Open vSwitch
(userspace datapath), nodes that are network namespaces cabled to its ports, and the controller
driven through its REST API. Needs root, `sshd`, OVS and `ping` (scripts/debian-packages.txt).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_client import Hil
from hil_lab import Nodes, Ovs, Sshd
from support import Server, Servers

pytestmark = pytest.mark.skipif(shutil.which("ovs-vswitchd") is None or not Path("/usr/sbin/sshd").exists(),
                                reason="needs openvswitch-switch and openssh-server")

N = 7   # namespaces n1..n7


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Ovs, Sshd, Nodes]]:
    ovs, sshd = Ovs(), Sshd()
    nodes = Nodes(ovs)
    try:
        ovs.start()
        sshd.start()
        for i in range(1, N + 1):
            nodes.add(i)
        yield ovs, sshd, nodes
    finally:
        nodes.remove_all()
        sshd.stop()
        ovs.stop()


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    return server_with(baremetal={"vlans": "1100-1199", "attempts": 8, "backoff_s": 0.5, "audit_on_start": "report"})


@pytest.fixture(scope="module")
def admin(srv: Server, lab: tuple[Ovs, Sshd, Nodes]) -> Hil:
    """The site: switch `ovs1`, projects A (n1 n2 n5), B (n3 n4), C (n6), n7 free; a network each."""
    ovs, sshd, nodes = lab
    h = Hil(srv.admin_url, token=srv.token)
    h.ok("PUT", "/switch/ovs1", {"type": "ovs", "hostname": "127.0.0.1", "ssh_port": sshd.port, "username": "root",
                                 "host_key": sshd.host_key, "client_key": str(sshd.client_key),
                                 "bridge": ovs.bridge, "ovsdb": ovs.db})
    for p in ("A", "B", "C"):
        h.ok("PUT", f"/project/{p}")
        h.ok("PUT", f"/network/{p}-net", {"owner": p, "access": [p], "net_id": ""})
    owner = {1: "A", 2: "A", 5: "A", 3: "B", 4: "B", 6: "C"}
    for i in range(1, N + 1):
        h.ok("PUT", f"/node/n{i}", {})
        h.ok("PUT", f"/node/n{i}/nic/eth0", {"macaddr": f"52:54:00:00:01:0{i}"})
        h.ok("PUT", f"/switch/ovs1/port/{nodes.port(i)}")
        h.ok("POST", f"/switch/ovs1/port/{nodes.port(i)}/connect_nic", {"node": f"n{i}", "nic": "eth0"})
        if i in owner:
            h.ok("POST", f"/project/{owner[i]}/connect_node", {"node": f"n{i}"})
    return h


def audit(h: Hil, repair: bool = False) -> dict[str, str]:
    return {r["port"]: r["status"] for r in h.ok("POST", "/switches/audit", {"repair": repair})}


def test_fresh_ports_are_drift_and_repair_parks_them(admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    """An OVS port nobody configured passes every VLAN: the audit says so, and repair closes it."""
    _, _, nodes = lab
    assert nodes.wait_pings(1, 3)                      # one flat L2 before the controller acts
    report = admin.ok("POST", "/switches/audit", {"repair": False})
    assert {r["status"] for r in report} == {"drift"}
    assert all(r["actual"].startswith("all VLANs") for r in report)
    assert set(audit(admin, repair=True).values()) == {"repaired"}
    assert set(audit(admin).values()) == {"ok"}
    assert not nodes.pings(1, 3)


def test_isolation_by_project_network(admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    _, _, nodes = lab
    for n, net in (("n1", "A-net"), ("n2", "A-net"), ("n3", "B-net"), ("n4", "B-net")):
        assert admin.connect(n, "eth0", net)["status"] == "done"
    assert nodes.wait_pings(1, 2) and nodes.wait_pings(3, 4)
    assert not nodes.pings(1, 3) and not nodes.pings(2, 4)
    assert admin.ok("GET", "/node/n1")["nics"][0]["networks"] == {"vlan/native": "A-net"}
    assert set(audit(admin).values()) == {"ok"}


def test_access_list_is_enforced(srv: Server, admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    _, _, nodes = lab
    admin.ok("PUT", "/auth/basic/user/carol", {"password": "carol-secret"})
    admin.ok("POST", "/auth/basic/user/carol/add_project", {"project": "C"})
    carol = Hil(srv.admin_url, user="carol", password="carol-secret")
    status, err = carol.call("POST", "/node/n6/nic/eth0/connect_network", {"network": "A-net"})
    assert (status, err["type"]) == (409, "ProjectMismatchError")
    assert carol.call("PUT", "/network/A-net/access/C")[0] == 401     # only A (or the admin) grants
    admin.ok("PUT", "/network/A-net/access/C")
    assert carol.connect("n6", "eth0", "A-net")["status"] == "done"
    assert nodes.wait_pings(6, 1) and not nodes.pings(6, 3)
    # C cannot lose access while its node is on the network.
    status, err = admin.call("DELETE", "/network/A-net/access/C")
    assert (status, err["type"]) == (409, "BlockedError")


def test_detach_stops_traffic_and_a_nic_moves(admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    _, _, nodes = lab
    assert admin.detach("n2", "eth0", "A-net")["status"] == "done"
    assert not nodes.pings(1, 2)
    assert admin.ok("GET", "/node/n2")["nics"][0]["networks"] == {}
    # n3 moves from B-net to A-net (B's admin grants nothing: the admin gives B access).
    admin.ok("PUT", "/network/A-net/access/B")
    assert admin.detach("n3", "eth0", "B-net")["status"] == "done"
    assert admin.connect("n3", "eth0", "A-net")["status"] == "done"
    assert nodes.wait_pings(1, 3) and not nodes.pings(4, 3)
    assert set(audit(admin).values()) == {"ok"}


def test_tagged_channel_reads_back(admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    """A second network on a tagged channel: the port becomes native + trunk on the switch."""
    ovs, _, nodes = lab
    vlan = admin.vlan("A-net")
    assert admin.connect("n5", "eth0", "A-net", f"vlan/{vlan}")["status"] == "done"
    assert ovs.vsctl("get", "port", nodes.port(5), "trunks").strip() == f"[{vlan}]"
    status, err = admin.call("POST", "/node/n5/nic/eth0/connect_network", {"network": "A-net"})
    assert (status, err["type"]) == (409, "BlockedError")              # already on this NIC
    assert set(audit(admin).values()) == {"ok"}
    # Drift made behind the controller's back is found and repaired.
    ovs.vsctl("set", "port", nodes.port(5), "trunks=1,2,3")
    assert audit(admin)[nodes.port(5)] == "drift"
    assert audit(admin, repair=True)[nodes.port(5)] == "repaired"
    assert ovs.vsctl("get", "port", nodes.port(5), "trunks").strip() == f"[{vlan}]"


def test_a_switch_error_fails_one_operation_not_the_worker(admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    """A port the controller knows but the switch lacks: the operation ends in error with the
    switch's own words, and the next operation on the same switch still goes through."""
    ovs, _, nodes = lab
    admin.ok("PUT", "/node/ghost", {})
    admin.ok("PUT", "/node/ghost/nic/eth0", {"macaddr": "52:54:00:00:01:99"})
    assert admin.call("PUT", "/switch/ovs1/port/ghostport")[0] == 400      # checked against the bridge
    # The port exists when registered and is removed at the switch afterwards.
    ovs.vsctl("add-port", ovs.bridge, "ghostport", "--", "set", "interface", "ghostport", "type=internal")
    admin.ok("PUT", "/switch/ovs1/port/ghostport")
    ovs.vsctl("del-port", ovs.bridge, "ghostport")
    admin.ok("POST", "/switch/ovs1/port/ghostport/connect_nic", {"node": "ghost", "nic": "eth0"})
    admin.ok("POST", "/project/B/connect_node", {"node": "ghost"})
    st = admin.connect("ghost", "eth0", "B-net")
    assert st["status"] == "error" and 'no row "ghostport"' in st["error"]
    assert admin.ok("GET", "/node/ghost")["nics"][0]["networks"] == {}
    assert admin.connect("n2", "eth0", "A-net")["status"] == "done"
    assert nodes.wait_pings(2, 1)
    assert admin.ok("GET", f"/operation/{st['id']}")["status"] == "error"   # still queryable
    admin.ok("POST", "/project/B/detach_node", {"node": "ghost"})
    admin.ok("POST", "/switch/ovs1/port/ghostport/detach_nic")
    admin.ok("DELETE", "/switch/ovs1/port/ghostport")


def test_kill_with_pending_operations(srv: Server, admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    """Operations queued while the switch is unreachable survive a SIGKILL, complete once after
    the restart, and leave the switch exactly as recorded."""
    _, sshd, nodes = lab
    sshd.pause()
    srv.kill()                     # also ends the controller's open SSH session
    srv.start()
    # n1 A-net -> C-net (C grants A), n4 B-net detach, n6 A-net detach then later.
    admin.ok("PUT", "/network/C-net/access/A")
    queued = [admin.ok("POST", "/node/n1/nic/eth0/detach_network", {"network": "A-net"})["status_id"],
              admin.ok("POST", "/node/n4/nic/eth0/detach_network", {"network": "B-net"})["status_id"],
              admin.ok("POST", "/node/n6/nic/eth0/detach_network", {"network": "A-net"})["status_id"]]
    assert all(admin.ok("GET", f"/operation/{o}")["status"] == "pending" for o in queued)
    srv.kill()
    sshd.start()
    srv.start()
    done = [admin.wait_op(o) for o in queued]
    assert [d["status"] for d in done] == ["done"] * 3
    queued2 = [admin.connect("n1", "eth0", "C-net"), admin.connect("n6", "eth0", "C-net")]
    assert [d["status"] for d in queued2] == ["done"] * 2
    nets = {i: admin.ok("GET", f"/node/n{i}")["nics"][0]["networks"] for i in (1, 4, 6)}
    assert nets == {1: {"vlan/native": "C-net"}, 4: {}, 6: {"vlan/native": "C-net"}}
    assert admin.ok("GET", "/network/A-net")["connected-nodes"] == {"n2": ["eth0"], "n3": ["eth0"],
                                                                     "n5": ["eth0"]}
    report = audit(admin)
    assert set(report.values()) == {"ok"}, report
    # Each operation was recorded once (its event is written in the same transaction).
    events = srv.admin("GET", "/v0/events?kind=switch.operation&limit=10000")
    assert sorted(e["data"]["operation"] for e in events if e["data"]["operation"] in queued) == sorted(queued)
    assert nodes.wait_pings(1, 6) and not nodes.pings(1, 3) and not nodes.pings(4, 2)


def cli(srv: Server, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == code, (args, out.stdout, out.stderr)
    return out


def test_cli_drives_the_same_calls(srv: Server, admin: Hil, lab: tuple[Ovs, Sshd, Nodes]) -> None:
    ovs, _, nodes = lab
    cli(srv, "project", "create", "D")
    cli(srv, "project", "connect-node", "D", "n7")
    assert "D" in cli(srv, "project", "list").stdout.split()
    vlan = int(cli(srv, "bm-network", "create", "D-net", "--owner", "D").stdout.split()[-1])
    assert 1100 <= vlan <= 1199
    assert "D-net" in cli(srv, "bm-network", "list").stdout
    cli(srv, "bm-network", "grant", "D-net", "B")
    assert cli(srv, "node", "connect-network", "n7", "eth0", "D-net").stdout.strip().endswith("done")
    assert cli(srv, "node", "connect-network", "n4", "eth0", "D-net").stdout.strip().endswith("done")
    assert nodes.wait_pings(7, 4) and not nodes.pings(7, 1)
    bad = cli(srv, "node", "connect-network", "n7", "eth0", "nosuch", code=1)
    assert "NotFoundError: network 'nosuch' does not exist" in bad.stderr
    assert cli(srv, "node", "list", "free").stdout.split() == ["ghost"]   # the only node in no project
    assert json.loads(cli(srv, "node", "show", "n7").stdout)["nics"][0]["networks"] == {"vlan/native": "D-net"}
    cli(srv, "switch", "audit")                                       # exit 0: no drift
    ovs.vsctl("set", "port", nodes.port(7), "tag=1199")
    drift = cli(srv, "switch", "audit", "ovs1", code=3).stdout
    assert any(nodes.port(7) in line and "drift" in line for line in drift.splitlines())
    assert nodes.pings(7, 4) is False
    cli(srv, "switch", "audit", "--repair")
    assert nodes.wait_pings(7, 4)
    assert cli(srv, "node", "detach-network", "n4", "eth0", "D-net").stdout.strip().endswith("done")
    assert not nodes.pings(7, 4)
