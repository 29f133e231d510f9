"""Node serial consoles through real IPMI serial-over-LAN: the controller's `ipmitool sol activate`
against OpenIPMI's ipmi_sim, whose SOL is wired to the node's serial line (see sol_lab.py).
What the node prints must reach `GET /hil/v0/node/<n>/console`, through BMC crashes, sessions kicked
by another client and controller crashes; access is the node's project's and the admin's."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from hil_client import Hil
from sol_lab import AVAILABLE, IpmiSim, SerialLine, wait_until

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="needs ipmi_sim (openipmi) and ipmitool")

BM = {"audit_on_start": "off", "command_timeout_s": 10, "console_check_s": 0.5, "console_backoff_s": 0.2,
      "console_backoff_max_s": 1.0}


@pytest.fixture
def sol() -> Iterator[tuple[SerialLine, IpmiSim]]:
    line = SerialLine()
    bmc = IpmiSim(line.port).start()
    try:
        line.wait_connected()
        yield line, bmc
    finally:
        bmc.stop()
        line.close()


def _sol_processes(port: int) -> list[str]:
    """Command lines of live `ipmitool … sol activate` sessions to this BMC (read only)."""
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ipmitool") and b"activate" in argv and str(port).encode() in argv:
            assert not any(b"bmc-pw" in a for a in argv), "the BMC password is on a command line"
            out.append(pid)
    return out


class Follower:
    """A `GET …/console?follow=1` read in a thread, as `curl -N` would."""

    def __init__(self, url: str, auth: str) -> None:
        self.req = urllib.request.Request(url, headers={"Authorization": auth})
        self.got = bytearray()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with urllib.request.urlopen(self.req, timeout=120) as resp:
                while chunk := resp.read1(4096):
                    self.got.extend(chunk)
        except Exception as e:          # the controller was killed under it
            self.error = e


def _read_until(fd: int, needle: bytes, timeout: float = 60) -> None:
    """Read a child's output until `needle` shows up."""
    seen, deadline = b"", time.time() + timeout
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        assert ready, f"{needle!r} not seen; got {seen[-300:]!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"output ended before {needle!r}; got {seen[-300:]!r}"
        seen += chunk


def _shows(h: Hil, node: str, text: str) -> bool:
    status, body = h.text(f"/node/{node}/console")
    assert status == 200, body
    return text.encode() in body


def _print_until_shown(line: SerialLine, h: Hil, node: str, text: str) -> None:
    """The node prints `text` (again, every few tenths of a second) until the console has it: a line
    printed while no session is open is legitimately lost, as on a real serial port."""
    def once() -> bool:
        line.write(text + "\r\n")
        return _shows(h, node, text)
    wait_until(once, f"{text!r} in the console")


def test_console_capture(new_server: Any, sol: tuple[SerialLine, IpmiSim]) -> None:
    line, bmc = sol
    srv = new_server(baremetal=BM)
    admin = Hil(srv.admin_url, token=srv.token)
    for p in ("P", "Q"):
        admin.ok("PUT", f"/project/{p}")
    admin.ok("PUT", "/node/bm1", {"obm": bmc.obm()})
    admin.ok("PUT", "/node/bare", {})
    for n in ("bm1", "bare"):
        admin.ok("POST", "/project/P/connect_node", {"node": n})
    for user, project in (("pat", "P"), ("quinn", "Q")):
        admin.ok("PUT", f"/auth/basic/user/{user}", {"password": f"{user}-secret"})
        admin.ok("POST", f"/auth/basic/user/{user}/add_project", {"project": project})
    pat = Hil(srv.admin_url, user="pat", password="pat-secret")
    quinn = Hil(srv.admin_url, user="quinn", password="quinn-secret")

    # Errors: unknown node, no OBM, another project's member; none of them starts anything.
    for method in ("PUT", "DELETE"):
        status, err = pat.call(method, "/node/nope/console")
        assert (status, err["type"]) == (404, "NotFoundError")
    assert pat.text("/node/nope/console")[0] == 404
    status, err = pat.call("PUT", "/node/bare/console")
    assert status == 409 and "OBM" in err["msg"]
    status, err = quinn.call("PUT", "/node/bm1/console")
    assert (status, err["type"]) == (401, "AuthorizationError")
    assert quinn.text("/node/bm1/console")[0] == 401
    assert admin.ok("GET", "/node/bm1/console_status")["logging"] is False
    assert not bmc.sol_active()

    # Start: what the node prints shows up; the BMC has exactly one session, ours.
    pat.ok("PUT", "/node/bm1/console")
    pat.ok("PUT", "/node/bm1/console")                   # idempotent
    _print_until_shown(line, pat, "bm1", "hello from bm1")
    assert bmc.sol_active()
    assert len(_sol_processes(bmc.port)) == 1
    assert pat.ok("GET", "/node/bm1/console_status")["state"] == "active"
    body = pat.text("/node/bm1/console")[1]
    assert b"SOL Session operational" not in body          # ipmitool's banner is not the node's output

    # Follow: a streaming GET gets new output as the node prints it.
    first = Follower(srv.admin_url + "/hil/v0/node/bm1/console?follow=1", pat.auth)
    wait_until(lambda: b"hello from bm1" in first.got, "the backlog in the follow stream")
    line.write("streamed line\r\n")
    wait_until(lambda: b"streamed line" in first.got, "new output in the follow stream")

    # The BMC crashes and comes back: ipmitool never notices; the controller does and reconnects.
    bmc.crash()
    seen = line.connections
    bmc.start()
    line.wait_connected(after=seen)
    _print_until_shown(line, pat, "bm1", "after the BMC restart")
    assert pat.ok("GET", "/node/bm1/console_status")["reconnects"] >= 1
    assert len(_sol_processes(bmc.port)) == 1             # the stale ipmitool was killed
    wait_until(lambda: b"after the BMC restart" in first.got, "the follow stream to survive the reconnect")

    # Another client takes the SOL slot away (sol deactivate): the capture reopens its session.
    r = bmc.ipmitool("sol", "deactivate")
    assert r.returncode == 0, r.stderr
    _print_until_shown(line, pat, "bm1", "after a deactivate")

    # The controller is killed: the journal says the capture is on, so it resumes; the old
    # ipmitool died with the controller (pdeathsig), not left holding the BMC's slot.
    srv.kill()
    wait_until(lambda: not _sol_processes(bmc.port), "the old ipmitool to die with the controller", 10)
    srv.start()
    _print_until_shown(line, pat, "bm1", "after the controller restart")
    assert b"hello from bm1" in pat.text("/node/bm1/console")[1]    # the log survived too
    assert len(_sol_processes(bmc.port)) == 1
    second = Follower(srv.admin_url + "/hil/v0/node/bm1/console?follow=1", pat.auth)
    wait_until(lambda: b"after the controller restart" in second.got, "the backlog after the restart")

    # The CLI, as the admin.
    cli = [sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), "node"]
    out = subprocess.run([*cli, "console", "bm1"], capture_output=True, timeout=60, check=True).stdout
    assert b"after the controller restart" in out
    status = json.loads(subprocess.run([*cli, "console", "--status", "bm1"], capture_output=True, timeout=60,
                                       check=True).stdout)
    assert (status["logging"], status["state"]) == (True, "active")
    follower = subprocess.Popen([*cli, "console", "--follow", "bm1"], stdout=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        _read_until(follower.stdout.fileno(), b"after the controller restart")      # the backlog first
        line.write("for the CLI follower\r\n")
        _read_until(follower.stdout.fileno(), b"for the CLI follower")
    finally:
        follower.kill()
        follower.wait()
    subprocess.run([*cli, "console-stop", "bm1"], check=True, timeout=60)
    assert pat.ok("GET", "/node/bm1/console_status") == {"logging": False, "state": "off", "error": None,
                                                         "reconnects": 0, "since": None}
    # Stopped: the slot is free (a real client can open SOL and sees the node), and what the node
    # prints now is not captured.
    assert not bmc.sol_active()
    probe = subprocess.Popen(bmc.argv("sol", "activate"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env={**os.environ, "IPMI_PASSWORD": "bmc-pw"})
    try:
        wait_until(bmc.sol_active, "the probe's session")
        line.write("printed after stop\r\n")
        assert probe.stdout is not None
        _read_until(probe.stdout.fileno(), b"printed after stop")
    finally:
        probe.kill()
        probe.wait()
    assert not _shows(pat, "bm1", "printed after stop")
    second.thread.join(30)
    assert not second.thread.is_alive() and second.error is None     # stop ended the stream cleanly
    assert b"printed after stop" not in second.got

    # Restart through the CLI; then leaving the project stops the capture and drops the log.
    bmc.ipmitool("sol", "deactivate")
    subprocess.run([*cli, "console-start", "bm1"], check=True, timeout=60)
    _print_until_shown(line, admin, "bm1", "second capture")
    admin.ok("POST", "/project/P/detach_node", {"node": "bm1"})
    assert admin.ok("GET", "/node/bm1/console_status")["logging"] is False
    assert admin.text("/node/bm1/console") == (200, b"")
    wait_until(lambda: not _sol_processes(bmc.port), "the capture to stop on detach", 20)
    assert not bmc.sol_active()
    srv.kill()
    srv.start()
    assert admin.ok("GET", "/node/bm1/console_status")["logging"] is False     # durable too
    # A free node: the admin may capture it; deleting the node ends the capture.
    admin.ok("PUT", "/node/bm1/console")
    _print_until_shown(line, admin, "bm1", "free node output")
    admin.ok("DELETE", "/node/bm1")
    wait_until(lambda: not _sol_processes(bmc.port), "the capture to stop on delete", 20)
    assert admin.call("GET", "/node/bm1/console_status")[0] == 404


def test_console_log_is_bounded(new_server: Any, sol: tuple[SerialLine, IpmiSim]) -> None:
    """A node that prints far more than the cap: the log keeps its latest output within the cap."""
    line, bmc = sol
    cap = 8192
    srv = new_server(baremetal={**BM, "console_log_bytes": cap})
    admin = Hil(srv.admin_url, token=srv.token)
    admin.ok("PUT", "/node/chatty", {"obm": bmc.obm()})
    admin.ok("PUT", "/node/chatty/console")
    _print_until_shown(line, admin, "chatty", "first")
    for i in range(400):
        line.write(f"line {i:04d} " + "x" * 60 + "\r\n")
    _print_until_shown(line, admin, "chatty", "last line")
    body = admin.text("/node/chatty/console")[1]
    assert cap // 2 <= len(body) <= cap
    assert b"first" not in body and b"line 0399" in body
    size = sum(p.stat().st_size for p in (srv.state_dir / "console").iterdir())
    assert size <= cap


def test_console_error_is_reported(new_server: Any, sol: tuple[SerialLine, IpmiSim]) -> None:
    """A BMC that refuses the credentials: the start is accepted (capture is asynchronous, as the
    BMC may be down for a while) and the status says what goes wrong while it keeps retrying."""
    _, bmc = sol
    srv = new_server(baremetal=BM)
    admin = Hil(srv.admin_url, token=srv.token)
    admin.ok("PUT", "/node/locked", {"obm": {**bmc.obm(), "password": "not-the-password"}})
    admin.ok("PUT", "/node/locked/console")

    def failing() -> bool:
        st = admin.ok("GET", "/node/locked/console_status")
        return st["state"] == "retrying" and st["reconnects"] >= 2 and "RMCP+" in (st["error"] or "")
    wait_until(failing, "the capture to report the BMC's refusal")
    assert not bmc.sol_active()
    assert admin.text("/node/locked/console") == (200, b"")
