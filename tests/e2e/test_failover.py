"""Host-failure policy with automatic fencing, against hosts that really become unreachable.

`far` is libvirtd's `test:///default` through a relay this test owns (closing it is a network cut,
see test_monitor_hosts); `spare` is an embedded test host of the same zone. Fence agents are real:
a script (the `command` agent) and a virtualbmc BMC in front of a qemu domain that stands for
`far`'s power (the `ipmi` agent). Instance state comes from boto3, hosts and events from the
admin API and the CLI.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import test_monitor_hosts
from .conftest import MEASUREMENTS
from .test_monitor_hosts import Relay, _status, _wait
from .vbmc import bmc_for, skip_without_vbmc
from support import DEFAULT_CONFIG, ROOT, Server, wait_polls, wait_state

relay = test_monitor_hosts.relay     # the fixture: a cut-able link to far
INTERVAL = 0.3
MONITOR = {"interval_s": INTERVAL, "grace_s": 1.0, "timeout_s": 5.0, "fence_retry_s": 0.5,
           "fence_retry_max_s": 1.0}


def _hosts(relay: Relay, **far: Any) -> list[dict[str, Any]]:
    return [{"name": "far", "uri": f"test+unix:///default?socket={relay.path}", "zone": "cloudctl-1b",
             "shared_storage": True, **far},
            {"name": "spare", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-b.xml"),
             "zone": "cloudctl-1b", "shared_storage": True},
            {"name": "near", "uri": "test:///", "node_xml": str(DEFAULT_CONFIG.parent / "hosts/host-a.xml"),
             "zone": "cloudctl-1a"}]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _launch_on_far(srv: Server, ec2: Any, types: list[str]) -> list[str]:
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    srv.admin("POST", "/v0/hosts/spare/disable")     # so that they all land on `far`
    ids = [ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType=t,
                             Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"][0]["InstanceId"]
           for t in types]
    srv.admin("POST", "/v0/hosts/spare/enable")
    wait_state(ec2, ids, "running")
    assert srv.admin("GET", "/v0/hosts/far")["instances"] == len(ids)
    return ids


def _on(ec2: Any, host: str) -> dict[str, str]:
    """Instances (not terminated) that DescribeInstances places on `host`, with their state."""
    res = ec2.describe_instances(Filters=[{"Name": "host-id", "Values": [host]}])
    return {i["InstanceId"]: i["State"]["Name"] for r in res["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"}


def _events(srv: Server, kind: str, subject: str | None = None) -> list[dict[str, Any]]:
    return srv.admin("GET", f"/v0/events?kind={kind}" + (f"&subject={subject}" if subject else ""))


def _cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _restarted_after_fence(srv: Server, ids: list[str]) -> None:
    """One `host.fenced` for far, then exactly one restart per instance, each after it."""
    [fenced] = _events(srv, "host.fenced", "far")
    restarts = _events(srv, "instance.restart")
    assert sorted(e["subject"] for e in restarts) == sorted(ids)
    assert all(e["id"] > fenced["id"] and e["data"]["previous_host"] == "far" for e in restarts)
    assert sorted(fenced["data"]["restarted"]) == sorted(ids)


def test_command_fence_fails_then_succeeds(new_server: Any, relay: Relay, tmp_path: Path) -> None:
    calls, down = tmp_path / "calls", tmp_path / "pdu-down"
    agent = _script(tmp_path / "fence-pdu", f"""echo "$*" >> {calls}
if [ -e {down} ]; then echo "PDU 192.0.2.9 refused the login" >&2; exit 3; fi
echo "outlet 7 is off"
""")
    srv = new_server(hosts=_hosts(relay, fence={"kind": "command", "argv": [str(agent), "--outlet", "7"],
                                                 "timeout_s": 10}),
                     monitor={**MONITOR, "failure_policy": "restart"})
    ec2 = srv.client(srv.create_user("ops"))
    ids = _launch_on_far(srv, ec2, ["t3.nano", "t3.nano"])
    far = srv.admin("GET", "/v0/hosts/far")
    assert far["fence_agent"]["kind"] == "command" and far["failure_policy"] == "restart"
    assert far["instance_policies"] == {"restart": 2, "none": 0} and far["fence_state"] == "idle"

    down.touch()
    relay.cut()
    assert _wait(lambda: len(_events(srv, "host.fence_failed", "far")) >= 2)
    failed = _events(srv, "host.fence_failed", "far")
    assert "PDU 192.0.2.9 refused the login" in failed[0]["message"] and "exited 3" in failed[0]["message"]
    assert failed[0]["data"]["reason"] and failed[0]["data"]["agent"] == "command"
    # Nothing moved, nothing fenced: the instances wait on far, impaired.
    assert set(_on(ec2, "far")) == set(ids) and _on(ec2, "spare") == {}
    assert _events(srv, "host.fenced", "far") == [] and _events(srv, "instance.restart") == []
    assert all(_status(ec2, i)["SystemStatus"]["Status"] == "impaired" for i in ids)
    far = srv.admin("GET", "/v0/hosts/far")
    assert far["state"] == "error" and far["fence_state"] in ("failed", "fencing")
    assert far["fence_attempts"] >= 2 and "refused the login" in far["fence_error"]
    shown = _cli(srv, "host", "show", "far")
    assert "fence_agent" in shown and '"kind": "command"' in shown and "refused the login" in shown

    down.unlink()           # the PDU answers again: the next attempt fences
    assert _wait(lambda: set(_on(ec2, "spare")) == set(ids))
    back = wait_state(ec2, ids, "running")
    assert {i["State"]["Name"] for i in back} == {"running"}
    assert _on(ec2, "far") == {}
    _restarted_after_fence(srv, ids)
    [fenced] = _events(srv, "host.fenced", "far")
    assert fenced["data"]["by"] == "command" and "outlet 7 is off" in fenced["message"]
    # The agent was called as `argv... HOST`, and not again once the fence held.
    lines = calls.read_text().splitlines()
    assert set(lines) == {"--outlet 7 far"} and len(lines) == len(failed := _events(srv, "host.fence_failed",
                                                                                      "far")) + 1
    wait_polls(srv, "far")
    assert len(calls.read_text().splitlines()) == len(lines)
    assert srv.admin("GET", "/v0/hosts/far")["fence_state"] == "fenced"
    assert all(_status(ec2, i)["SystemStatus"]["Status"] == "ok" for i in ids)
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated")


def test_policy_per_instance_type(new_server: Any, relay: Relay, tmp_path: Path) -> None:
    """Type beats host beats global: t3.nano restarts (its type), t3.micro stays (its type),
    t3.small stays (no type policy: the host's `none` beats the global `restart`)."""
    agent = _script(tmp_path / "fence-ok", "exit 0\n")
    types = {"t3.nano": {"vcpus": 1, "memory_mib": 256, "failure_policy": "restart"},
             "t3.micro": {"vcpus": 1, "memory_mib": 512, "failure_policy": "none"},
             "t3.small": {"vcpus": 2, "memory_mib": 1024}}
    srv = new_server(hosts=_hosts(relay, failure_policy="none", fence={"kind": "command", "argv": [str(agent)]}),
                     instance_types=types, monitor={**MONITOR, "failure_policy": "restart"})
    ec2 = srv.client(srv.create_user("ops"))
    nano, micro, small = _launch_on_far(srv, ec2, ["t3.nano", "t3.micro", "t3.small"])
    far = srv.admin("GET", "/v0/hosts/far")
    assert (far["failure_policy"], far["failure_policy_from"]) == ("none", "host")
    assert far["instance_policies"] == {"restart": 1, "none": 2}

    t0 = time.monotonic()
    relay.cut()
    assert _wait(lambda: nano in _on(ec2, "spare"))
    MEASUREMENTS["network cut → restart instance placed on spare (command fence)"] = \
        f"{time.monotonic() - t0:.2f} s (grace {MONITOR['grace_s']:g} s, poll {INTERVAL:g} s)"
    assert wait_state(ec2, [nano], "running")[0]["State"]["Name"] == "running"
    _restarted_after_fence(srv, [nano])
    wait_polls(srv, "far")
    assert _on(ec2, "far") == {micro: "running", small: "running"} and set(_on(ec2, "spare")) == {nano}
    for iid in (micro, small):
        assert _status(ec2, iid)["SystemStatus"]["Status"] == "impaired"
    assert _status(ec2, nano)["SystemStatus"]["Status"] == "ok"
    assert srv.admin("GET", "/v0/hosts/far")["instance_policies"] == {"restart": 0, "none": 2}
    ec2.terminate_instances(InstanceIds=[nano])
    wait_state(ec2, [nano], "terminated")


def test_sigkill_between_fence_and_restart(new_server: Any, relay: Relay, tmp_path: Path) -> None:
    """The first fence succeeds, but the controller is SIGKILLed (by the agent itself) before it
    hears so: nothing was journaled. After start-up the host is fenced again and every instance
    restarts once, on one host."""
    calls, killed = tmp_path / "calls", tmp_path / "killed"
    agent = _script(tmp_path / "fence-and-crash", f"""echo "$PPID $*" >> {calls}
if [ ! -e {killed} ]; then touch {killed}; kill -9 "$PPID"; sleep 1; fi
exit 0
""")
    srv = new_server(hosts=_hosts(relay, fence={"kind": "command", "argv": [str(agent)]}),
                     monitor={**MONITOR, "failure_policy": "restart"})
    ec2 = srv.client(srv.create_user("ops"))
    ids = _launch_on_far(srv, ec2, ["t3.nano", "t3.nano"])
    pid = srv.proc.pid if srv.proc else 0

    relay.cut()
    assert srv.proc is not None
    srv.proc.wait(60)
    assert srv.proc.returncode == -9 and calls.read_text().split() == [str(pid), "far"]

    srv.start()             # far is still cut off
    assert _wait(lambda: set(_on(ec2, "spare")) == set(ids), timeout=60)
    back = wait_state(ec2, ids, "running")
    assert {i["State"]["Name"] for i in back} == {"running"}
    res = ec2.describe_instances(InstanceIds=ids)
    assert sorted(i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]) == sorted(ids)
    _restarted_after_fence(srv, ids)
    assert len(calls.read_text().splitlines()) == 2
    assert _wait(lambda: srv.admin("GET", "/v0/hosts/spare")["domains"] == len(ids))
    ec2.terminate_instances(InstanceIds=ids)
    wait_state(ec2, ids, "terminated")


@skip_without_vbmc
def test_ipmi_fence_powers_the_host_off_before_restart(new_server: Any, relay: Relay, conn: Any) -> None:
    with bmc_for(conn, f"fence{time.monotonic_ns() % 10**8}") as bmc:
        bmc.dom.create()            # far's power is on
        srv = new_server(hosts=_hosts(relay, fence={"kind": "ipmi", "host": "127.0.0.1", "port": bmc.port,
                                                     "user": "admin", "password": "bmc-pw", "timeout_s": 10}),
                         monitor={**MONITOR, "failure_policy": "restart"})
        ec2 = srv.client(srv.create_user("ops"))
        ids = _launch_on_far(srv, ec2, ["t3.nano", "t3.nano"])
        assert "password" not in str(srv.admin("GET", "/v0/hosts/far")["fence_agent"])

        # Invariant, sampled throughout: an instance is on spare only once far's power is off.
        # (Spare is read first: once something moved, the power must already be off.)
        seen: list[tuple[int, bool]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                moved = srv.admin("GET", "/v0/hosts/spare")["instances"]
                seen.append((moved, bool(bmc.dom.isActive())))
                time.sleep(0.05)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            bmc.stop()                  # the BMC does not answer at first
            relay.cut()
            assert _wait(lambda: _events(srv, "host.fence_failed", "far"), timeout=60)
            reason = _events(srv, "host.fence_failed", "far")[0]["data"]["reason"]
            assert reason.startswith("IPMI:") and bmc.dom.isActive()
            assert _on(ec2, "spare") == {} and set(_on(ec2, "far")) == set(ids)

            bmc.start()
            t0 = time.monotonic()
            assert _wait(lambda: set(_on(ec2, "spare")) == set(ids), timeout=60)
            MEASUREMENTS["IPMI fence (BMC back) → instances placed on spare"] = \
                f"{time.monotonic() - t0:.2f} s (retry pause ≤ {MONITOR['fence_retry_max_s']:g} s)"
            assert not bmc.dom.isActive()           # the host really is off
            wait_state(ec2, ids, "running")
            assert _wait(lambda: any(moved for moved, _ in seen))   # the watcher saw them moved too
        finally:
            done.set()
            watcher.join(10)
        assert any(active for _, active in seen) and any(moved for moved, _ in seen)
        assert not [s for s in seen if s[0] and s[1]], "instances moved while far's power was on"
        _restarted_after_fence(srv, ids)
        [fenced] = _events(srv, "host.fenced", "far")
        assert fenced["data"]["by"] == "ipmi" and "reports power off" in fenced["message"]
        ec2.terminate_instances(InstanceIds=ids)
        wait_state(ec2, ids, "terminated")
