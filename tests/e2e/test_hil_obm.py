"""OBM through real IPMI: a "bare-metal node" is a diskless libvirt domain on qemu:///system
behind virtualbmc (a BMC that speaks IPMI over UDP on loopback), powered by the controller's
ipmitool calls from the REST API."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .vbmc import bmc_for, skip_without_vbmc
from hil_client import Hil

pytestmark = skip_without_vbmc

NAME = f"hil{os.getpid()}bm"


@pytest.fixture
def bmc(conn: Any) -> Iterator[tuple[Any, int]]:
    """The domain and a vbmcd on private state, with a BMC for the domain on a free UDP port."""
    with bmc_for(conn, NAME) as b:
        yield b.dom, b.port


def test_power_through_ipmi(new_server: Any, bmc: tuple[Any, int]) -> None:
    dom, port = bmc
    srv = new_server(baremetal={"audit_on_start": "off", "command_timeout_s": 20})
    h = Hil(srv.admin_url, token=srv.token)
    h.ok("PUT", "/project/P")
    h.ok("PUT", "/project/Q")
    h.ok("PUT", "/node/bm1", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": port, "user": "admin",
                                      "password": "bmc-pw"}})
    h.ok("POST", "/project/P/connect_node", {"node": "bm1"})
    assert "obm" not in h.ok("GET", "/node/bm1")   # HIL shows no OBM fields
    assert h.ok("GET", "/node/bm1/power_status") == {"power_status": "off"}
    h.ok("POST", "/node/bm1/power_on")
    assert dom.isActive()
    assert h.ok("GET", "/node/bm1/power_status") == {"power_status": "on"}
    h.ok("PUT", "/node/bm1/boot_device", {"bootdev": "pxe"})
    assert h.call("PUT", "/node/bm1/boot_device", {"bootdev": "floppy"})[0] == 400
    cli = [sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), "node", "power"]
    subprocess.run([*cli, "off", "bm1"], check=True, timeout=60)
    assert not dom.isActive()
    assert subprocess.run([*cli, "status", "bm1"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip() == "off"
    h.ok("POST", "/node/bm1/power_cycle")       # off: cycling powers it on
    assert dom.isActive()
    # Another project's member may not touch it; a wrong BMC password is the BMC's error, 502.
    h.ok("PUT", "/auth/basic/user/quinn", {"password": "quinn-secret"})
    h.ok("POST", "/auth/basic/user/quinn/add_project", {"project": "Q"})
    status, err = Hil(srv.admin_url, user="quinn", password="quinn-secret").call("POST", "/node/bm1/power_off")
    assert (status, err["type"]) == (401, "AuthorizationError")
    assert dom.isActive()
    h.ok("PUT", "/node/bm2", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": port, "user": "admin",
                                      "password": "wrong-pw"}})
    status, err = h.call("GET", "/node/bm2/power_status")
    assert (status, err["type"]) == (502, "OBMError")
    h.ok("POST", "/node/bm1/power_off")
    assert not dom.isActive()
