"""Simulated hypervisors out of the controller's process: libvirt's test driver, one libvirtd a host.

Each host is its own unprivileged ("session") libvirtd serving libvirt's shared test driver,
`test+unix:///default?socket=<sock>`: every connection to one daemon sees the same domains, as
every connection to a real hypervisor does. The bench holds one connection to each daemon for the
run (`Host.keeper`), so the domains outlive the controller: a restart reconnects to hosts that
kept running, and a daemon does no more work for it than a real host's libvirtd would (list its
domains). A node file per connection (libvirt's other test-driver form) would be re-read by every
new connection, ~0.4 ms of the daemon's CPU a domain: 20 s on the controller's own cores at a
50,000-instance restart that real hosts never spend (docs/scaling.md, "The simulated hosts kept
running").

The test driver's own node is 16 CPUs and 3 GiB; the host's config overcommits both to the figures
of `config/hosts/host-a.xml` (256 CPUs, 2 TiB: 4,096 t3.nano a host). Its sample domain `test` is
removed when the host starts. The daemons' sockets, state and config live under the bench's temp
dir: they never touch the machine's system libvirtd and need no root; as root they run as `nobody`
through `setpriv` (libvirtd picks its system mode for uid 0).
"""
from __future__ import annotations

import math
import os
import pwd
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import escape

import libvirt

import procs

METADATA_NS = "urn:cloudctl:instance"   # cloudctl/drivers/hypervisor/base.py: how a domain names its owner
LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
#: What each host stands for (config/hosts/host-a.xml), against the test driver's 16 CPUs, 3 GiB.
HOST_CPUS, HOST_MEMORY_MIB = 256, 2 << 20
TEST_CPUS, TEST_MEMORY_MIB = 16, 3 << 10
#: The daemons' niceness (`--hosts-nice`): they stand for other machines. 0: the controller's priority.
HOSTS_NICE = 0
#: Small thread pools: 200 daemons on one box, each serving one controller connection and the keeper.
DAEMON_CONF = ('unix_sock_rw_perms = "0777"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
               "max_clients = 64\nmin_workers = 1\nmax_workers = 4\nprio_workers = 1\nmax_client_requests = 20\n"
               "admin_min_workers = 1\nadmin_max_workers = 1\nkeepalive_interval = 5\n")


def missing() -> str | None:
    """Why the simulated hosts cannot run here, or None."""
    if not Path(LIBVIRTD).exists():
        return "libvirtd not found (make install installs libvirt-daemon-system)"
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "running as root and setpriv (util-linux) is missing: libvirtd must run unprivileged"
    return None


@dataclass
class Host:
    name: str
    zone: str
    sock: Path
    proc: procs.Proc
    keeper: Any = None   # libvirt.virConnect held for the run: the test driver's domains live while one is open

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={self.sock}"

    def config(self) -> dict[str, Any]:
        """The controller's `hosts:` entry: the test node overcommitted to host-a.xml's size (the
        memory ratio rounded up: the scheduler truncates the product)."""
        return {"name": self.name, "uri": self.uri, "zone": self.zone, "cpu_overcommit": HOST_CPUS / TEST_CPUS,
                "memory_overcommit": math.ceil(HOST_MEMORY_MIB / TEST_MEMORY_MIB * 1000) / 1000}

    def add_domains(self, domains: Iterable[tuple[str, str]], controller: str) -> None:
        """Running domains the controller `controller` launched here (iid, uuid): a host that kept them."""
        for iid, uuid in domains:
            self.keeper.defineXML(domain_xml(iid, uuid, controller)).create()


def _spawn(tmp: Path, name: str, nice: int) -> tuple[procs.Proc, Path]:
    d = tmp / f"libvirtd-{name}"
    for sub in ("run", "config", "cache", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "libvirtd.conf"
    conf.write_text(f'unix_sock_dir = "{d / "run"}"\n' + DAEMON_CONF)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(d / "home"), "XDG_RUNTIME_DIR": str(d / "run"),
           "XDG_CONFIG_HOME": str(d / "config"), "XDG_CACHE_HOME": str(d / "cache"), "LIBVIRT_LOG_OUTPUTS": "3:stderr"}
    argv = [LIBVIRTD, "--config", str(conf)]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for p in [d, *d.rglob("*")]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        os.chmod(tmp, 0o755)
        argv = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *argv]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    return procs.spawn(f"libvirtd-{name}", argv, tmp / f"libvirtd-{name}.log", env=env, clean_env=True), \
        d / "run" / "libvirt-sock"


def start_hosts(tmp: Path, hosts: Iterable[tuple[str, str]], nice: int = HOSTS_NICE,
                timeout: float = 120.0) -> list[Host]:
    """One daemon for each (name, zone), all started at once; returns when every one holds its keeper.

    On failure the daemons already started are stopped before the error is raised."""
    started: list[Host] = []
    try:
        for name, zone in hosts:
            proc, sock = _spawn(tmp, name, nice)
            started.append(Host(name, zone, sock, proc))
        deadline = time.monotonic() + timeout
        for h in started:
            while not h.sock.exists():
                if not h.proc.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"libvirtd for {h.name} did not start:\n{h.proc.log_tail()}")
                time.sleep(0.05)
            h.keeper = libvirt.open(h.uri)
            sample = h.keeper.lookupByName("test")   # (the test driver's own sample domain)
            sample.destroy()
            sample.undefine()
        return started
    except BaseException:
        stop_hosts(started)
        raise


def fill_hosts(hosts: list[Host], domains: dict[str, list[tuple[str, str]]], controller: str) -> None:
    """Each host's running domains, four hosts at a time (the daemons parse them in their own threads)."""
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(lambda h: h.add_domains(domains.get(h.name, ()), controller), hosts):
            pass


def stop_hosts(hosts: list[Host]) -> None:
    """Close the keepers, then SIGTERM every daemon at once and wait for each (by PID)."""
    for h in hosts:
        if h.keeper is not None:
            try:
                h.keeper.close()
            except libvirt.libvirtError:
                pass
            h.keeper = None
    for h in hosts:
        if h.proc.alive():
            try:
                h.proc.popen.terminate()
            except ProcessLookupError:
                pass
    for h in hosts:
        h.proc.stop()


def cpu_s(hosts: list[Host]) -> float:
    """The daemons' CPU so far (utime + stime)."""
    return sum(h.proc.cpu_s() for h in hosts)


def domain_xml(iid: str, uuid: str, controller: str, vcpus: int = 1, memory_mib: int = 512) -> str:
    """A running domain as cloudctl defines it on a test host (config/templates/domain-test.xml)."""
    return (f"<domain type='test'><name>{escape(iid)}</name><uuid>{escape(uuid)}</uuid>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}' controller='{escape(controller)}'>"
            f"{escape(iid)}</cloudctl:instance></metadata></domain>\n")
