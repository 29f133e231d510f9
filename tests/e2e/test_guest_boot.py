"""Real TCG guests on qemu:///system: boot, config drive, user-data, hot-plug, graceful shutdown,
NICs. Fixtures and the domain XML template are in conftest.py."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNsb3VkY3RsLWUyZS10ZXN0LWtleS1ub3QtcmVhbDAw "
       "e2e@cloudctl")
USER_DATA = "#!/bin/sh\necho hello-from-user-data\n"


def _disk_xml(path: Path, dev: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>")


def test_boot_userdata_hotplug_shutdown(guests, scratch: Path,  # type: ignore[no-untyped-def]
                                        make_nocloud_iso, measurements) -> None:
    import libvirt

    iso = make_nocloud_iso(scratch / "seed.iso", USER_DATA,
                      "instance-id: i-0e2e000000000001\nlocal-hostname: e2e-guest\n"
                      f"public-keys:\n  - {KEY}\n",
                      # DHCP from QEMU's user-mode network (slirp): 10.0.2.15/24 via 10.0.2.2
                      "version: 2\nethernets:\n  primary:\n    match:\n      name: e*\n    dhcp4: true\n")
    g = guests(iso, serial="pty-log", nic="user", persistent=True)
    c = g.console
    t_booted = c.wait_for("CLOUDCTL-GUEST-BOOTED", 60, line=True)
    c.wait_for("CLOUDCTL-CONFIG-DRIVE cidata /dev/vda", 60, line=True)
    c.wait_for("instance-id: i-0e2e000000000001", 60, line=True)
    c.wait_for(f"public-key: {KEY}", 60, line=True)
    c.wait_for("CLOUDCTL-USERDATA-DONE", 60, line=True)
    # the script's output, not the echo of the user-data file itself
    t_ud = c.wait_for("hello-from-user-data", 60, line=True, after="CLOUDCTL-USERDATA-DONE")
    c.wait_for("CLOUDCTL-NET eth0 10.0.2.15/24 gw 10.0.2.2 dhcp", 60, line=True)
    c.wait_for("CLOUDCTL-USERDATA-EXIT 0", 60, line=True)
    t_ready = c.wait_for("CLOUDCTL-GUEST-READY", 60, line=True)
    lines = c.lines()
    assert lines[lines.index("user-data:") + 1:lines.index("user-data:") + 3] == USER_DATA.splitlines()
    measurements["boot, pty+log serial, user NIC, persistent"] = (
        f"create() {g.create_seconds:.2f} s, BOOTED {t_booted:.2f} s, user-data output {t_ud:.2f} s, "
        f"READY {t_ready:.2f} s")

    # hot-plug a second volume
    extra = scratch / "extra.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(extra), "16M"], check=True)
    t0 = time.monotonic()
    g.dom.attachDeviceFlags(_disk_xml(extra, "vdc"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    t_call = time.monotonic() - t0
    c.wait_for("CLOUDCTL-DISK-ADDED vdc", 30, line=True)
    t_added = time.monotonic() - t0
    assert "vdc" in g.dom.XMLDesc()
    # ... and unplug it again
    t0 = time.monotonic()
    g.dom.detachDeviceFlags(_disk_xml(extra, "vdc"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    c.wait_for("CLOUDCTL-DISK-REMOVED vdc", 30, line=True)
    t_removed = time.monotonic() - t0
    measurements["volume hot-plug"] = (
        f"attachDeviceFlags {t_call:.2f} s, DISK-ADDED seen after {t_added:.2f} s (guest polls every 2 s); "
        f"detach -> DISK-REMOVED after {t_removed:.2f} s")

    # graceful shutdown: ACPI power button -> guest /init -> poweroff
    t0 = time.monotonic()
    g.dom.shutdown()
    off = g.wait_inactive(20)
    if off is None:
        g.dom.destroy()
        measurements["graceful shutdown"] = "did NOT power off within 20 s; destroyed"
    else:
        measurements["graceful shutdown"] = f"dom.shutdown() -> inactive after {off:.2f} s"
    assert off is not None, "guest ignored the ACPI power button for 20 s"
    assert "CLOUDCTL-POWER-BUTTON" in c.lines()
    assert g.dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert g.dom.state()[1] == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN


def test_config2_drive_serial_file(guests, scratch: Path,  # type: ignore[no-untyped-def]
                                   make_configdrive2_iso, measurements) -> None:
    """OpenStack config-2 drive on a virtio-scsi CD-ROM, a non-script user-data,
    console via <serial type='file'>."""
    user_data = "#cloud-config\nhostname: not-a-script\n"
    meta = {"uuid": "7d1c6e0a-1111-4222-8333-944445555666", "hostname": "e2e",
            "public_keys": {"k1": KEY + "\n"}}
    iso = make_configdrive2_iso(scratch / "config2.iso", user_data, json.dumps(meta))
    g = guests(iso, drive_bus="scsi-cdrom", serial="file", nic=None)
    c = g.console
    c.wait_for("CLOUDCTL-CONFIG-DRIVE config-2 /dev/sr0", 60, line=True)
    c.wait_for(f"instance-id: {meta['uuid']}", 60, line=True)
    c.wait_for("hostname: not-a-script", 60, line=True)
    c.wait_for(f"public-key: {KEY}", 60, line=True)
    t_ready = c.wait_for("CLOUDCTL-GUEST-READY", 60, line=True)
    assert not any(ln.startswith("CLOUDCTL-USERDATA-EXIT") for ln in c.lines())  # not run
    measurements["boot, file serial, config-2 on scsi CD-ROM, no NIC, transient"] = (
        f"create() {g.create_seconds:.2f} s, READY {t_ready:.2f} s")
    g.dom.destroy()


@pytest.fixture
def lab_net() -> Iterator[dict[str, str]]:
    """A Linux bridge (no address) with one test host in a network namespace: 10.250.0.1/24."""
    sfx = str(os.getpid() % 100000)
    net = {"bridge": f"cce{sfx}br", "veth": f"cce{sfx}v", "ns": f"cce2e-{sfx}",
           "host_ip": "10.250.0.1", "guest_ip": "10.250.0.42", "tap": f"cce{sfx}t"}

    def ip(*args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True)

    def teardown() -> None:
        ip("link", "del", net["veth"], check=False)  # before the netns: netns del is async
        ip("link", "del", net["tap"], check=False)
        ip("netns", "del", net["ns"], check=False)
        ip("link", "del", net["bridge"], check=False)

    teardown()
    try:
        ip("link", "add", net["bridge"], "type", "bridge")
        ip("link", "set", net["bridge"], "up")
        ip("netns", "add", net["ns"])
        ip("link", "add", net["veth"], "type", "veth", "peer", "name", "eth0", "netns", net["ns"])
        ip("link", "set", net["veth"], "master", net["bridge"])
        ip("link", "set", net["veth"], "up")
        ip("-n", net["ns"], "link", "set", "lo", "up")
        ip("-n", net["ns"], "addr", "add", f"{net['host_ip']}/24", "dev", "eth0")
        ip("-n", net["ns"], "link", "set", "eth0", "up")
        yield net
    finally:
        teardown()


@pytest.mark.parametrize("nic", ["bridge", "ethernet"])
def test_nic_ping_and_root_disk(guests, scratch: Path, lab_net: dict[str, str], nic: str,  # type: ignore[no-untyped-def]
                                make_nocloud_iso, measurements) -> None:
    """The guest writes to its root overlay and pings a namespace host through the bridge
    (type='bridge': libvirt enslaves the tap; type='ethernet': libvirt makes the tap, we enslave it)."""
    script = f"""#!/bin/sh
echo "hostname=$(hostname)"
cloudctl-mount-root
cat /mnt/root/hello.txt
echo written-by-guest > /mnt/root/from-guest.txt
umount /mnt/root
i=0
until ping -c 1 -W 1 {lab_net['host_ip']} >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 15 ] || {{ echo PING-FAIL; exit 1; }}
done
echo PING-OK after $i retries
"""
    mac = "52:54:00:e2:e0:0%d" % (1 if nic == "bridge" else 2)
    # static address from NoCloud network-config v2, the way cloudctl's config drive writes it
    netcfg = (f"version: 2\nethernets:\n  primary:\n    match:\n      macaddress: '{mac}'\n"
              f"    addresses:\n    - {lab_net['guest_ip']}/24\n")
    iso = make_nocloud_iso(scratch / "seed.iso", script,
                           "instance-id: i-0e2e000000000002\nlocal-hostname: e2e-net\n", netcfg)
    g = guests(iso, nic=nic, mac=mac, bridge=lab_net["bridge"] if nic == "bridge" else None)
    if nic == "ethernet":
        # the tap name is fixed through <target dev=...> in real use; here find it in the live XML
        import xml.etree.ElementTree as ET
        tap = ET.fromstring(g.dom.XMLDesc()).find("./devices/interface/target").get("dev")
        subprocess.run(["ip", "link", "set", tap, "master", lab_net["bridge"]], check=True)
        subprocess.run(["ip", "link", "set", tap, "up"], check=True)
    c = g.console
    c.wait_for(f"CLOUDCTL-NET eth0 {lab_net['guest_ip']}/24 gw -", 60, line=True)
    c.wait_for("hostname=e2e-net", 60, line=True, after="CLOUDCTL-USERDATA-DONE")
    c.wait_for("hello-from-cloudctl-root", 60, line=True, after="CLOUDCTL-USERDATA-DONE")
    t_ping = c.wait_for("PING-OK", 60, after="CLOUDCTL-USERDATA-DONE")
    c.wait_for("CLOUDCTL-GUEST-READY", 60, line=True)
    r = subprocess.run(["ip", "netns", "exec", lab_net["ns"], "ping", "-c", "1", "-W", "2", lab_net["guest_ip"]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    measurements[f"NIC type='{nic}'"] = (f"guest pinged the netns host {t_ping:.2f} s after create(); "
                                         "host->guest ping OK")

    g.dom.shutdown()
    off = g.wait_inactive(20)
    if off is None:
        g.dom.destroy()
    assert off is not None, "guest ignored the ACPI power button for 20 s"

    # the write went to the overlay, not to the cached base image
    overlay = g.overlay
    raw = scratch / "overlay.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)], check=True)
    r = subprocess.run(["debugfs", "-R", "cat /from-guest.txt", str(raw)], capture_output=True, text=True)
    assert r.stdout.strip() == "written-by-guest"


def test_guest_build_is_cached(guest_image: dict[str, Path], measurements) -> None:  # type: ignore[no-untyped-def]
    """A second guest/build.sh on a complete build exits at once (no download, no rebuild)."""
    root = Path(__file__).resolve().parents[2]
    out = root / ".cache" / "guest"  # guest_image may point at a copy (repo not traversable by qemu)
    files = {n: out / n for n in guest_image}
    before = {n: p.stat().st_mtime_ns for n, p in files.items()}
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(root / "guest" / "build.sh"), str(out)],
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "cached:" in r.stderr, r.stderr
    assert {n: p.stat().st_mtime_ns for n, p in files.items()} == before
    info = dict(ln.split("=", 1) for ln in (out / "build-info").read_text().splitlines())
    assert info["kernel_pkg"].startswith("linux-image-") and info["kernel_release"] in info["kernel_pkg"]
    measurements["guest build, cached re-run"] = f"{took:.2f} s"
