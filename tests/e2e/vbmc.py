"""A real IPMI BMC (virtualbmc) in front of a libvirt domain on qemu:///system: the domain's
power is what `ipmitool chassis power ...` acts on. Each Bmc runs its own vbmcd on private state."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hil_lab import free_port

BINDIR = Path(sys.executable).parent
skip_without_vbmc = pytest.mark.skipif(shutil.which("ipmitool") is None or not (BINDIR / "vbmcd").exists(),
                                       reason="needs ipmitool and virtualbmc")


def diskless_domain(name: str) -> str:
    """No disk, no NIC: SeaBIOS finds nothing to boot and idles; enough for power control."""
    return f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type></os><on_poweroff>destroy</on_poweroff>
<devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"""


class Bmc:
    def __init__(self, dom: Any, name: str, port: int, env: dict[str, str]) -> None:
        self.dom, self.name, self.port, self.env = dom, name, port, env

    def vbmc(self, *args: str) -> None:
        subprocess.run([str(BINDIR / "vbmc"), *args, self.name], env=self.env, check=True, timeout=60,
                       capture_output=True)

    def stop(self) -> None:
        """The BMC stops answering (its domain's power is left as it is)."""
        self.vbmc("stop")

    def start(self) -> None:
        self.vbmc("start")


@contextmanager
def bmc_for(conn: Any, name: str, user: str = "admin", password: str = "bmc-pw") -> Iterator[Bmc]:
    d = Path(tempfile.mkdtemp(prefix=name))
    (d / "vbmc").mkdir()
    cfg = d / "vbmc.conf"
    cfg.write_text(f"[default]\nconfig_dir = {d}/vbmc\npid_file = {d}/vbmcd.pid\nserver_port = {free_port()}\n"
                   f"[log]\nlogfile = {d}/vbmc.log\n")
    env = {**os.environ, "VIRTUALBMC_CONFIG": str(cfg)}
    dom = conn.defineXML(diskless_domain(name))
    vbmcd = subprocess.Popen([str(BINDIR / "vbmcd"), "--foreground"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    port = free_port()
    try:
        deadline = time.time() + 30
        while True:
            r = subprocess.run([str(BINDIR / "vbmc"), "add", name, "--libvirt-uri", "qemu:///system", "--port",
                                str(port), "--username", user, "--password", password, "--address", "127.0.0.1"],
                               env=env, capture_output=True, text=True, timeout=60, check=False)
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)                      # vbmcd still starting
        assert r.returncode == 0, r.stderr
        bmc = Bmc(dom, name, port, env)
        bmc.start()
        yield bmc
    finally:
        vbmcd.terminate()
        vbmcd.wait(30)
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        finally:
            shutil.rmtree(d, ignore_errors=True)
