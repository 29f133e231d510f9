"""A node's serial console end to end: a qemu guest on qemu:///system whose serial port is a TCP
chardev, OpenIPMI's ipmi_sim as its BMC with SOL wired to that port, and the controller capturing
it through `ipmitool sol activate`. What the guest's kernel and /init print (guest/init's
markers) must reach `GET /hil/v0/node/<n>/console`, and the `cloudctl node console` CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_client import Hil
from hil_lab import free_port
from sol_lab import AVAILABLE, IpmiSim, wait_until

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="needs ipmi_sim (openipmi) and ipmitool")

NAME = f"sol{os.getpid()}bm"


def _domain(kernel: Path, initrd: Path, serial_port: int) -> str:
    # No disk, no NIC: the guest's /init finds no config drive, prints its markers and idles.
    return f"""<domain type='qemu'><name>{NAME}</name><uuid>{uuid.uuid4()}</uuid>
<memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd>
<cmdline>console=ttyS0 panic=-1</cmdline></os>
<features><acpi/></features><on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>
<devices>
  <serial type='tcp'><source mode='bind' host='127.0.0.1' service='{serial_port}'/>
    <protocol type='raw'/><target port='0'/></serial>
  <controller type='usb' model='none'/><memballoon model='none'/>
</devices></domain>"""


def _connected(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:port is established (ipmi_sim to qemu's chardev)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, timeout=30)
    return bool(out.stdout.strip())


@pytest.fixture
def node(conn: Any, guest_image: dict[str, Path]) -> Iterator[tuple[Any, IpmiSim, int]]:
    """The guest (defined, not started) and its BMC, whose SOL reaches the guest's ttyS0."""
    port = free_port()
    bmc = IpmiSim(port).start()
    dom = conn.defineXML(_domain(guest_image["vmlinuz"], guest_image["initrd.img"], port))
    try:
        yield dom, bmc, port
    finally:
        import libvirt
        try:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass                                # it powered itself off already
            dom.undefine()
        finally:
            bmc.stop()


def test_guest_serial_console_through_sol(new_server: Any, node: tuple[Any, IpmiSim, str]) -> None:
    dom, bmc, serial_port = node
    srv = new_server(baremetal={"audit_on_start": "off", "command_timeout_s": 10, "console_check_s": 1,
                                "console_backoff_s": 0.5, "console_backoff_max_s": 2})
    h = Hil(srv.admin_url, token=srv.token)
    h.ok("PUT", "/node/guest1", {"obm": bmc.obm()})
    h.ok("PUT", "/node/guest1/console")
    wait_until(lambda: h.ok("GET", "/node/guest1/console_status")["state"] == "active", "the SOL session")
    # qemu listens on the serial chardev and drops output while no one is connected; ipmi_sim
    # redials every few seconds. The guest starts paused until the BMC is on its serial line, so
    # everything it prints, from the kernel's first line, must reach the console.
    import libvirt
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    wait_until(lambda: _connected(serial_port), "ipmi_sim on the guest's serial chardev")
    dom.resume()
    wait_until(lambda: b"CLOUDCTL-GUEST-READY" in h.text("/node/guest1/console")[1], "the guest's READY marker",
               timeout=240)
    assert b"Linux version" in h.text("/node/guest1/console")[1]
    dom.shutdown()                         # ACPI power button: /init prints its marker, then powers off
    wait_until(lambda: b"CLOUDCTL-POWER-BUTTON" in h.text("/node/guest1/console")[1],
               "the power-button marker", timeout=120)
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), "node", "console",
                          "guest1"], capture_output=True, timeout=60, check=True).stdout
    assert b"CLOUDCTL-GUEST-BOOTED" in out or b"CLOUDCTL-GUEST-READY" in out
    h.ok("DELETE", "/node/guest1/console")
    assert not bmc.sol_active()
