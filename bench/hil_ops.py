"""Bare-metal switch operations: 200 connect/detach operations across 2 switches.

Usage:  .venv/bin/python bench/hil_ops.py [--rounds 5] [--nics 10]   (root; sshd, OVS, fake-switches)

Switch 1 is Open vSwitch behind a real sshd on loopback, switch 2 a fake-switches Cisco. Each
round connects every NIC to a network and then detaches it, all queued at once through the REST
API, so both switch workers run in parallel. Reported: operations/s end to end (202 to `done`),
the controller's longest event-loop stall during the run, and the cost per switch command over
the one persistent session against the peer design, an SSH exec channel per command (what a
`conn.run()` per command costs; HIL opened a fresh pexpect ssh per drain).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import asyncssh  # noqa: E402

from hil_client import Hil, q  # noqa: E402
from hil_lab import FakeSwitch, Ovs, Sshd  # noqa: E402
from support import Server, write_config  # noqa: E402

sys.path.insert(0, str(ROOT))
from cloudctl.drivers.switch.ovs import OvsDriver  # noqa: E402


def ovs_options(ovs: Ovs, sshd: Sshd) -> dict[str, object]:
    return {"type": "ovs", "hostname": "127.0.0.1", "ssh_port": sshd.port, "username": "root",
            "host_key": sshd.host_key, "client_key": str(sshd.client_key), "bridge": ovs.bridge, "ovsdb": ovs.db}


async def per_command(ovs: Ovs, sshd: Sshd, port: str, n: int = 30) -> dict[str, float]:
    """ms per `ovs-vsctl list port` over the persistent shell vs over a new exec channel each."""
    opts = {k: v for k, v in ovs_options(ovs, sshd).items() if k != "type"}
    d = OvsDriver("bench", opts)
    await d.read_port(port)
    t = time.perf_counter()
    for _ in range(n):
        await d.read_port(port)
    session_ms = (time.perf_counter() - t) / n * 1000
    argv = d._vsctl("--format=json", "--columns=tag,trunks,vlan_mode", "list", "port", port)
    await d.close()
    kh = asyncssh.import_known_hosts(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    async with asyncssh.connect("127.0.0.1", sshd.port, username="root", client_keys=[str(sshd.client_key)],
                                known_hosts=kh, agent_path=None, config=None) as conn:
        import shlex
        t = time.perf_counter()
        for _ in range(n // 3):
            await conn.run(shlex.join(argv), check=True)
        exec_ms = (time.perf_counter() - t) / (n // 3) * 1000
    return {"session_ms_per_cmd": round(session_ms, 2), "exec_ms_per_cmd": round(exec_ms, 2),
            "exec_over_session": round(exec_ms / session_ms, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nics", type=int, default=10, help="per switch (Cisco model: at most 16)")
    args = ap.parse_args()
    ovs, sshd, fake = Ovs(), Sshd(), FakeSwitch("cisco_generic")
    work = Path(tempfile.mkdtemp(prefix="hilbench"))
    srv = None
    try:
        ovs.start(), sshd.start(), fake.start()
        ports = {"ovs": [f"b{os.getpid()}p{i}"[:15] for i in range(args.nics)],
                 "cat": [f"FastEthernet0/{i + 1}" for i in range(args.nics)]}
        for p in ports["ovs"]:
            ovs.vsctl("add-port", ovs.bridge, p, "--", "set", "interface", p, "type=internal")
        srv = Server(write_config(work, work / "cache", baremetal={"vlans": "1500-1599", "audit_on_start": "off"}))
        srv.start()
        h = Hil(srv.admin_url, token=srv.token)
        h.ok("PUT", "/project/bench")
        h.ok("PUT", "/switch/ovs", ovs_options(ovs, sshd))
        h.ok("PUT", "/switch/cat", {"type": "cisco", "hostname": "127.0.0.1", "ssh_port": fake.port,
                                    "username": "admin", "password": fake.password, "host_key": fake.host_key})
        nics = []
        for sw, plist in ports.items():
            for i, p in enumerate(plist):
                node = f"{sw}-n{i}"
                h.ok("PUT", f"/node/{node}", {})
                h.ok("PUT", f"/node/{node}/nic/nic0", {"macaddr": f"52:54:00:10:{len(nics):02x}:01"})
                h.ok("PUT", f"/switch/{sw}/port/{q(p)}")
                h.ok("POST", f"/switch/{sw}/port/{q(p)}/connect_nic", {"node": node, "nic": "nic0"})
                h.ok("POST", "/project/bench/connect_node", {"node": node})
                nics.append(node)
        for k in range(4):
            h.ok("PUT", f"/network/net{k}", {"owner": "bench", "access": ["bench"]})
        h.ok("POST", "/switches/audit", {"repair": True})        # park every port, open both sessions
        reset = Hil(srv.admin_url, token=srv.token)
        reset.ok("POST", "/stats/reset-lag")
        t0 = time.perf_counter()
        ops = 0
        for r in range(args.rounds):
            for verb in ("connect_network", "detach_network"):
                ids = [h.ok("POST", f"/node/{n}/nic/nic0/{verb}", {"network": f"net{(i + r) % 4}"})["status_id"]
                       for i, n in enumerate(nics)]
                for op in ids:
                    st = h.wait_op(op, timeout=300)
                    assert st["status"] == "done", st
                ops += len(ids)
        wall = time.perf_counter() - t0
        lag = reset.ok("POST", "/stats/reset-lag")["loop_lag_max_ms"]
        drift = [r for r in h.ok("POST", "/switches/audit", {}) if r["status"] != "ok"]
        cmd = asyncio.run(per_command(ovs, sshd, ports["ovs"][0]))
        out = {"operations": ops, "switches": 2, "wall_s": round(wall, 2), "ops_per_s": round(ops / wall, 1),
               "loop_lag_max_ms": lag, "audit_drift_after": len(drift), **cmd}
        print(json.dumps(out, indent=2))
    finally:
        if srv is not None:
            srv.stop()
        fake.stop()
        sshd.stop()
        ovs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
