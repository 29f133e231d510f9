"""Real-guest fixtures: the tiny test guest (guest/build.sh), libvirtd started by hand
(scripts/libvirtd.sh) and TCG domains on qemu:///system, driven with plain libvirt-python.

Everything here is marked ``e2e``; it is skipped only when ``qemu-system-x86_64`` is missing.
Needs root (qemu:///system) and the packages in scripts/debian-packages.txt.
"""
from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST_CACHE = ROOT / ".cache" / "guest"
LIBVIRTD_SH = ROOT / "scripts" / "libvirtd.sh"
URI = "qemu:///system"
# pytest-timeout for e2e tests, fixtures included: the first one builds the guest (up to 10 min).
E2E_TIMEOUT_S = 1800
MAX_GUESTS = 2  # 2 host cores, TCG: never more than two guests at once
_GUEST_SEQ = itertools.count(1)  # domain names unique across the session

# Numbers printed at the end of the run (pytest_terminal_summary).
MEASUREMENTS: dict[str, str] = {}

QEMU_MISSING = shutil.which("qemu-system-x86_64") is None

# The domain XML that works here (libvirt 9.0, QEMU 7.2, TCG). Placeholders: $name $uuid
# $memory_mib $vcpus $kernel $initrd $cmdline $root_disk $config_drive_xml $serial $interface.
# q35 + explicit pcie-root-ports: every cold-plugged PCIe device takes one port, so 8 ports with
# 3 cold-plugged devices (config drive, root disk, NIC) leave 5 for hot-plugged volumes.
DOMAIN_XML = Template("""\
<domain type='qemu'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>$memory_mib</memory>
  <vcpu>$vcpus</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initrd</initrd>
    <cmdline>$cmdline</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
$config_drive_xml
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$root_disk'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
$interface
$serial
    <controller type='usb' model='none'/>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <controller type='pci' model='pcie-root-port'/>
    <memballoon model='none'/>
  </devices>
</domain>
""")

# The config drive: a read-only virtio disk (vda), or a CD-ROM on virtio-scsi (sr0). Not a SATA
# CD-ROM: Debian's cloud kernel has no AHCI driver, the guest would never see it.
CONFIG_DRIVE_XML = {
    "virtio": "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
              "      <source file='$path'/>\n      <target dev='vda' bus='virtio'/>\n"
              "      <readonly/>\n    </disk>",
    "scsi-cdrom": "    <controller type='scsi' model='virtio-scsi'/>\n"
                  "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n"
                  "      <source file='$path'/>\n      <target dev='sda' bus='scsi'/>\n"
                  "      <readonly/>\n    </disk>",
}

# Console capture: both work with libvirt 9.0 and can be read while the guest runs.
# "pty-log" goes through virtlogd (rotated, and `virsh console` still works); "file" is
# written by QEMU through an fd libvirt passes in.
SERIAL_XML = {
    "pty-log": "    <serial type='pty'>\n      <log file='$path' append='off'/>\n"
               "      <target port='0'/>\n    </serial>",
    "file": "    <serial type='file'>\n      <source path='$path'/>\n      <target port='0'/>\n    </serial>",
}

# NICs that work here without dnsmasq (see test_guest_boot.py::test_nic_ping_and_root_disk).
def interface_xml(kind: str | None, mac: str, bridge: str | None = None, tap: str | None = None) -> str:
    if kind is None:
        return ""
    if kind == "user":  # QEMU slirp, no host setup; guest 10.0.2.15/24, gateway 10.0.2.2
        src = ""
    elif kind == "bridge":  # libvirt creates vnetN and enslaves it to an existing Linux bridge
        src = f"\n      <source bridge='{bridge}'/>"
    elif kind == "ethernet":  # libvirt creates the tap; the controller attaches it itself
        src = ""
    else:
        raise ValueError(kind)
    target = f"\n      <target dev='{tap}'/>" if tap else ""
    return (f"    <interface type='{kind}'>\n      <mac address='{mac}'/>{src}{target}\n"
            f"      <model type='virtio'/>\n    </interface>")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="qemu-system-x86_64 not installed "
                                   "(apt-get install --no-install-recommends $(cat scripts/debian-packages.txt))")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
            if QEMU_MISSING:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if MEASUREMENTS:
        terminalreporter.section("e2e measurements")
        for k, v in MEASUREMENTS.items():
            terminalreporter.write_line(f"{k}: {v}")


def _world_traversable(path: Path) -> bool:
    """Can the qemu user (libvirt-qemu) reach files under path?"""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """Per-session scratch dir the qemu user can traverse (overlays, ISOs, console logs)."""
    d = Path(tempfile.mkdtemp(prefix="cloudctl-e2e-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_image(work_dir: Path) -> dict[str, Path]:
    """vmlinuz / initrd.img / root.qcow2 built by guest/build.sh, cached in .cache/guest."""
    GUEST_CACHE.mkdir(parents=True, exist_ok=True)
    for d in (GUEST_CACHE.parent, GUEST_CACHE):
        d.chmod(d.stat().st_mode | 0o755)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "guest" / "build.sh"), str(GUEST_CACHE)],
                       capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    if r.returncode != 0:
        pytest.fail(f"guest/build.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    MEASUREMENTS["guest build"] = f"{took:.2f} s ({r.stderr.strip().splitlines()[-1]})"
    files = {n: GUEST_CACHE / n for n in ("vmlinuz", "initrd.img", "root.qcow2")}
    if not _world_traversable(GUEST_CACHE):
        # e.g. a clone under a 0700 home: qemu runs as libvirt-qemu and opens these by path
        copy = work_dir / "guest"
        copy.mkdir(mode=0o755)
        for n, p in files.items():
            shutil.copy2(p, copy / n)
            files[n] = copy / n
    return files


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[str]:
    """virtlogd + libvirtd started by scripts/libvirtd.sh with its default (machine-wide) state
    dir, so that concurrent test runs share one daemon: each run holds a lease (this pytest
    process) and the daemons stop when the last lease is released and no domain runs. A libvirtd
    that was already answering (e.g. under systemd) is used and left alone."""
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(LIBVIRTD_SH), "start"],
                       capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    if r.returncode != 0:
        pytest.fail(f"scripts/libvirtd.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    MEASUREMENTS["libvirtd start"] = f"{took:.2f} s ({r.stderr.strip().splitlines()[-1]})"
    try:
        yield URI
    finally:
        r = subprocess.run(["bash", str(LIBVIRTD_SH), "stop"], capture_output=True, text=True, timeout=300)
        if r.stderr.strip():
            MEASUREMENTS["libvirtd stop"] = r.stderr.strip().replace("\n", "; ")


@pytest.fixture(scope="session")
def conn(libvirtd: str):  # type: ignore[no-untyped-def]
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors still raise
    c = libvirt.open(libvirtd)
    yield c
    try:
        c.close()
    except libvirt.libvirtError:
        pass


class ConsoleLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.monotonic()

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""

    def lines(self) -> list[str]:
        return [ln.rstrip("\r") for ln in self.text().split("\n")]

    def wait_for(self, needle: str, timeout: float = 60.0, *, line: bool = False,
                 after: str | None = None) -> float:
        """Wait until needle is in the log (a whole line if line=True, only after the first
        line equal to `after` if given); returns seconds since the guest was started."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if after is not None:
                lines = lines[lines.index(after) + 1:] if after in lines else []
            hit = needle in lines if line else any(needle in ln for ln in lines)
            if hit:
                return time.monotonic() - self.t0
            if time.monotonic() > deadline:
                tail = "\n".join(self.lines()[-40:])
                raise AssertionError(f"{needle!r} not on the console within {timeout:.0f} s; "
                                     f"log {self.path} ends with:\n{tail}")
            time.sleep(0.1)


class Guest:
    def __init__(self, dom, name: str, gdir: Path, console: ConsoleLog) -> None:  # type: ignore[no-untyped-def]
        self.dom = dom
        self.name = name
        self.dir = gdir
        self.overlay = gdir / "root.qcow2"
        self.console = console
        self.create_seconds = 0.0

    def is_active(self) -> bool:
        import libvirt
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:  # transient domain gone
            return False

    def wait_inactive(self, timeout: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.is_active():
                return time.monotonic() - t0
            time.sleep(0.1)
        return None


@pytest.fixture
def scratch(work_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Per-test dir under work_dir (pytest's tmp_path is 0700: the qemu user cannot read it)."""
    d = work_dir / f"t-{request.node.name[:60]}-{os.getpid()}"
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_iso(directory: Path, label: str, out: Path) -> Path:
    subprocess.run(["genisoimage", "-quiet", "-output", str(out), "-volid", label,
                    "-joliet", "-rock", str(directory)], check=True)
    return out


def nocloud_iso(dest: Path, user_data: str, meta_data: str, network_config: str | None = None) -> Path:
    src = dest.parent / (dest.stem + ".d")
    src.mkdir()
    (src / "user-data").write_text(user_data)
    (src / "meta-data").write_text(meta_data)
    if network_config is not None:
        (src / "network-config").write_text(network_config)
    return make_iso(src, "cidata", dest)


def configdrive2_iso(dest: Path, user_data: str, meta_data_json: str) -> Path:
    src = dest.parent / (dest.stem + ".d")
    latest = src / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_text(user_data)
    (latest / "meta_data.json").write_text(meta_data_json)
    return make_iso(src, "config-2", dest)


@pytest.fixture(scope="session")
def measurements() -> dict[str, str]:
    return MEASUREMENTS


@pytest.fixture(scope="session")
def make_nocloud_iso():  # type: ignore[no-untyped-def]
    return nocloud_iso


@pytest.fixture(scope="session")
def make_configdrive2_iso():  # type: ignore[no-untyped-def]
    return configdrive2_iso


@pytest.fixture
def guests(conn, guest_image: dict[str, Path], work_dir: Path):  # type: ignore[no-untyped-def]
    """Factory: guests(config_drive=..., serial=..., nic=..., persistent=...) -> started Guest.
    Destroys/undefines every domain it made and removes its files."""
    import libvirt

    made: list[Guest] = []

    def start(config_drive: Path, *, drive_bus: str = "virtio", serial: str = "pty-log", nic: str | None = "user",
              bridge: str | None = None, mac: str | None = None, persistent: bool = False, memory_mib: int = 128,
              cmdline: str = "console=ttyS0 quiet panic=-1") -> Guest:
        if sum(g.is_active() for g in made) >= MAX_GUESTS:
            raise RuntimeError(f"at most {MAX_GUESTS} guests at once")
        n = next(_GUEST_SEQ)
        name = f"cloudctl-e2e-{os.getpid()}-{n}"
        gdir = work_dir / name
        gdir.mkdir(mode=0o755)
        overlay = gdir / "root.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str(guest_image["root.qcow2"]), str(overlay)], check=True)
        log = gdir / "console.log"
        mac = mac or "52:54:00:%02x:%02x:%02x" % (os.getpid() >> 8 & 0xFF, os.getpid() & 0xFF, n & 0xFF)
        xml = DOMAIN_XML.substitute(
            name=name, uuid=str(uuid.uuid4()), memory_mib=memory_mib, vcpus=1,
            kernel=guest_image["vmlinuz"], initrd=guest_image["initrd.img"], cmdline=cmdline,
            root_disk=overlay,
            config_drive_xml=Template(CONFIG_DRIVE_XML[drive_bus]).substitute(path=config_drive),
            serial=Template(SERIAL_XML[serial]).substitute(path=log),
            interface=interface_xml(nic, mac, bridge=bridge))
        (gdir / "domain.xml").write_text(xml)
        console = ConsoleLog(log)
        if persistent:
            dom = conn.defineXML(xml)
            g = Guest(dom, name, gdir, console)
            made.append(g)
            console.t0 = time.monotonic()
            dom.create()
        else:
            console.t0 = time.monotonic()
            dom = conn.createXML(xml, 0)
            g = Guest(dom, name, gdir, console)
            made.append(g)
        g.create_seconds = time.monotonic() - console.t0
        return g

    yield start

    for g in made:
        try:
            if g.is_active():
                g.dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            g.dom.undefine()
        except libvirt.libvirtError:
            pass
        shutil.rmtree(g.dir, ignore_errors=True)


class BridgedCloud:
    """A served controller on qemu:///system whose one network sits on a lab bridge."""

    def __init__(self, server, lab, ec2, image_id: str, subnet_id: str) -> None:  # type: ignore[no-untyped-def]
        self.server, self.lab, self.ec2 = server, lab, ec2
        self.image_id, self.subnet_id = image_id, subnet_id
        self.user: dict[str, str] = {}     # the user's keys (for the AWS CLI)
        self.work: Path | None = None      # the controller's directory

    def address(self, n: int) -> str:
        """The n-th address of the lab network (the gateway is .1)."""
        return str(self.lab.net.network_address + n)

    def run(self, user_data: str = "", ip: str | None = None, **kw):  # type: ignore[no-untyped-def]
        args = {"ImageId": self.image_id, "InstanceType": "t3.nano", "MinCount": 1, "MaxCount": 1,
                "SubnetId": self.subnet_id, **kw}
        if user_data:
            args["UserData"] = user_data
        if ip:
            args["PrivateIpAddress"] = ip
        return self.ec2.run_instances(**args)["Instances"][0]


@pytest.fixture
def bridged_cloud(libvirtd: str, work_dir: Path, model_cache: Path,  # type: ignore[no-untyped-def]
                  guest_image: dict[str, Path], request: pytest.FixtureRequest) -> Iterator[BridgedCloud]:
    """Controller + lab bridge (host = gateway .1) + the test guest imported as an image.

    Guests get static addresses from the config drive; tests add namespace hosts with
    `cloud.lab.add_host(name, address)` and prove reachability with `netlab.ping`. A test
    marked `@pytest.mark.cloud_config.with_args(fn)` adds config: `fn(work_dir)` returns the overrides.
    """
    import sys

    from .netlab import NetLab
    from support import DEFAULT_CONFIG, Server, write_config
    lab = NetLab("n", f"10.{140 + os.getpid() % 50}.{os.getpid() % 250}.0/24")
    d = work_dir / f"bctl-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    srv = None
    try:
        config: dict[str, Any] = {
            "hosts": [{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}],
            "networks": [{"name": "lab", "zone": "cloudctl-1a", "cidr": str(lab.net), "bridge": lab.bridge}],
            "domain_template": str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"), "stop_timeout_s": 30}
        if (marker := request.node.get_closest_marker("cloud_config")) is not None:
            config.update(marker.args[0](d))
        path = write_config(d, model_cache, **config)
        srv = Server(path).start()
        ids: dict[str, str] = {}
        for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
            extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
            out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(path), "image", "import",
                                  str(guest_image[key]), "--name", f"guest-{kind}", "--type", kind, *extra],
                                 capture_output=True, text=True, timeout=300, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            ids[kind] = out.stdout.split()[0]
        user = srv.create_user("netlab")
        ec2 = srv.client(user)
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        cloud = BridgedCloud(srv, lab, ec2, ids["machine"], subnet)
        cloud.user, cloud.work = user, d
        yield cloud
        ec2 = srv.client(user)   # (a test may have restarted the server: a new port)
        left = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"]
        if left:
            ec2.terminate_instances(InstanceIds=left)
            ec2.get_waiter("instance_terminated").wait(InstanceIds=left, WaiterConfig={"Delay": 1})
    finally:
        if srv is not None:
            srv.stop()
        lab.close()
