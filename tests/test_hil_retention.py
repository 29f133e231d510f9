"""Finished switch operations are kept within `baremetal.finished_operations`: the oldest finished
ones go (their ids answer 404), pending ones and each port's newest stay, the failure counter
does not go down, and the bound holds in the state files (checkpoint + journal replayed after a
SIGKILL) and after a restart with a smaller bound. Against fake-switches (a third-party switch
CLI simulator over SSH) and a switch nobody answers for."""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from crashlab import load_state
from hil_client import Hil, q
from hil_lab import FakeSwitch, free_port
from support import Server, write_config

pytest.importorskip("fake_switches")

PORTS = ["FastEthernet0/1", "FastEthernet0/2"]
GHOST = "FastEthernet7/7"          # a port fake-switches' cisco_generic lacks: operations fail


@pytest.fixture
def fake() -> Iterator[FakeSwitch]:
    fs = FakeSwitch("cisco_generic")
    try:
        yield fs.start()
    finally:
        fs.stop()


def failures(h: Hil) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(h.base + "/metrics", timeout=10) as resp:
        fams = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    return {s.labels["switch"]: s.value for s in fams["cloudctl_switch_operation_failures"].samples
            if s.name.endswith("_total")}


def ops_in_files(state_dir: Path) -> dict[str, str]:
    return {k: op.status for k, op in load_state(state_dir)["bm_operations"].items()}


@pytest.mark.slow
def test_finished_operations_are_bounded(tmp_path: Path, model_cache: Path, fake: FakeSwitch) -> None:
    keep = 5
    cfg = write_config(tmp_path, model_cache, baremetal={
        "vlans": "1300-1309", "attempts": 5, "backoff_s": 30, "audit_on_start": "off",
        "finished_operations": {"max_count": keep, "max_age_days": 1}})
    srv = Server(cfg)
    try:
        srv.start()
        h = Hil(srv.admin_url, token=srv.token)
        opts = {"type": "cisco", "hostname": "127.0.0.1", "ssh_port": fake.port, "username": "admin",
                "password": fake.password, "host_key": fake.host_key}
        h.ok("PUT", "/switch/cat", opts)
        h.ok("PUT", "/switch/dead", {**opts, "ssh_port": free_port()})    # nobody listens: stays pending
        h.ok("PUT", "/project/P")
        cabling = [("cat", PORTS[0]), ("cat", PORTS[1]), ("cat", GHOST), ("dead", PORTS[0])]
        for i, (sw, port) in enumerate(cabling):
            h.ok("PUT", f"/node/m{i}", {})
            h.ok("PUT", f"/node/m{i}/nic/nic0", {"macaddr": f"52:54:00:00:03:0{i}"})
            if port == GHOST:     # registered while the switch is down (unchecked): it refuses it later
                fake.stop()
            h.ok("PUT", f"/switch/{sw}/port/{q(port)}")
            if port == GHOST:
                fake.start()
            h.ok("POST", f"/switch/{sw}/port/{q(port)}/connect_nic", {"node": f"m{i}", "nic": "nic0"})
            h.ok("POST", "/project/P/connect_node", {"node": f"m{i}"})
        h.ok("PUT", "/network/red", {"owner": "P", "access": ["P"]})
        stuck = h.ok("POST", "/node/m3/nic/nic0/connect_network", {"network": "red"})["status_id"]

        def run(path: str, node: str) -> str:
            op = h.ok("POST", f"/node/{node}/nic/nic0/{path}", {"network": "red"})["status_id"]
            assert h.wait_op(op)["status"] != "pending"
            return op

        done: list[str] = []                      # finished, oldest first
        for _ in range(2):                        # two refusals by the switch
            done.append(run("connect_network", "m2"))
            assert h.ok("GET", f"/operation/{done[-1]}")["status"] == "error"
        assert failures(h)["cat"] == 2
        for _ in range(2):
            for node in ("m0", "m1"):
                done.append(run("connect_network", node))
            srv.admin("POST", "/v0/checkpoint")   # part of the history in a checkpoint, part in the journal
            for node in ("m0", "m1"):
                done.append(run("detach_network", node))

        # The newest `keep` finished ones, counting each port's newest, which stay whatever their
        # age: m0's and m1's last detach, m2's last refusal (done[1]), and the next newest two.
        kept = set(done[-(keep - 1):]) | {done[1]}
        assert len(kept) == keep
        for op in done:
            status, body = h.call("GET", f"/operation/{op}")
            if op in kept:
                assert status == 200 and body["status"] in ("done", "error"), (op, body)
            else:
                assert (status, body["type"]) == (404, "NotFoundError"), (op, body)
                assert "pruned" in body["msg"] and f"newest {keep}" in body["msg"]
        assert h.ok("GET", f"/operation/{stuck}")["status"] == "pending"
        assert failures(h)["cat"] == 2            # the pruned refusal still counts
        assert h.ok("GET", "/node/m0")["nics"][0]["networks"] == {}

        # The files after a crash: checkpoint plus the journal replayed, still bounded.
        srv.kill()
        assert ops_in_files(srv.state_dir) == {**{op: ("error" if op == done[1] else "done") for op in kept},
                                               stuck: "pending"}

        # A restart with a smaller bound prunes at start; each port's newest and the pending one stay.
        data = yaml.safe_load(cfg.read_text())
        data["baremetal"]["finished_operations"]["max_count"] = 1
        cfg.write_text(yaml.safe_dump(data))
        srv.start()
        newest = {done[-2], done[-1], done[1]}    # m0's detach, m1's detach, m2's refusal
        for op in done:
            assert h.call("GET", f"/operation/{op}")[0] == (200 if op in newest else 404), op
        assert h.ok("GET", f"/operation/{stuck}")["status"] == "pending"
        # And the bound holds for new operations too.
        done.append(run("connect_network", "m0"))
        assert h.call("GET", f"/operation/{done[-3]}")[0] == 404          # m0's previous newest
        assert h.ok("GET", f"/operation/{done[-1]}")["status"] == "done"
        srv.stop()
        assert ops_in_files(srv.state_dir) == {done[-1]: "done", done[-2]: "done", done[1]: "error",
                                               stuck: "pending"}
    finally:
        srv.stop()


def test_retention_config_errors_are_one_line(tmp_path: Path, model_cache: Path) -> None:
    from cloudctl.config import ConfigError, load_config
    for bad, where in (({"max_count": 0}, "max_count"), ({"max_age_days": -1}, "max_age_days"),
                       ({"keep": 5}, "keep")):
        path = write_config(tmp_path, model_cache, baremetal={"finished_operations": bad})
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert f"baremetal.finished_operations.{where}" in str(e.value) and "\n" not in str(e.value)
