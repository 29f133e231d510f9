"""OBM through real IPMI: a "bare-metal node" is a diskless libvirt domain on qemu:///system
behind virtualbmc (a BMC that speaks IPMI over UDP on loopback), powered by the controller's
ipmitool calls from the REST API."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_client import Hil
from hil_lab import free_port

pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None
                                or not Path(sys.executable).with_name("vbmcd").exists(),
                                reason="needs ipmitool and virtualbmc")

NAME = f"hil{os.getpid()}bm"
# No disk, no NIC: SeaBIOS finds nothing to boot and idles; enough for power control.
DOMAIN = f"""<domain type='qemu'><name>{NAME}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type></os><on_poweroff>destroy</on_poweroff>
<devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"""


@pytest.fixture
def bmc(conn: Any) -> Iterator[tuple[Any, int]]:
    """The domain and a vbmcd on private state, with a BMC for the domain on a free UDP port."""
    d = Path(tempfile.mkdtemp(prefix=NAME))
    (d / "vbmc").mkdir()
    cfg = d / "vbmc.conf"
    cfg.write_text(f"[default]\nconfig_dir = {d}/vbmc\npid_file = {d}/vbmcd.pid\nserver_port = {free_port()}\n"
                   f"[log]\nlogfile = {d}/vbmc.log\n")
    env = {**os.environ, "VIRTUALBMC_CONFIG": str(cfg)}
    bindir = Path(sys.executable).parent
    dom = conn.defineXML(DOMAIN)
    vbmcd = subprocess.Popen([str(bindir / "vbmcd"), "--foreground"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    port = free_port()
    try:
        deadline = time.time() + 30
        while True:
            r = subprocess.run([str(bindir / "vbmc"), "add", NAME, "--libvirt-uri", "qemu:///system", "--port",
                                str(port), "--username", "admin", "--password", "bmc-pw", "--address", "127.0.0.1"],
                               env=env, capture_output=True, text=True, timeout=60)
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)                      # vbmcd still starting
        assert r.returncode == 0, r.stderr
        subprocess.run([str(bindir / "vbmc"), "start", NAME], env=env, check=True, timeout=60)
        yield dom, port
    finally:
        vbmcd.terminate()
        vbmcd.wait(30)
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_power_through_ipmi(new_server: Any, bmc: tuple[Any, int]) -> None:
    dom, port = bmc
    srv = new_server(baremetal={"audit_on_start": "off", "command_timeout_s": 20})
    h = Hil(srv.admin_url, token=srv.token)
    h.ok("PUT", "/project/P")
    h.ok("PUT", "/project/Q")
    h.ok("PUT", "/node/bm1", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": port, "user": "admin",
                                      "password": "bmc-pw"}})
    h.ok("POST", "/project/P/connect_node", {"node": "bm1"})
    assert "password" not in h.ok("GET", "/node/bm1")["obm"]
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
    assert (status, err["type"]) == (403, "AuthorizationError")
    assert dom.isActive()
    h.ok("PUT", "/node/bm2", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": port, "user": "admin",
                                      "password": "wrong-pw"}})
    status, err = h.call("GET", "/node/bm2/power_status")
    assert (status, err["type"]) == (502, "OBMError")
    h.ok("POST", "/node/bm1/power_off")
    assert not dom.isActive()
