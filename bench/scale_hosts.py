"""Simulated hypervisors out of the controller's process: libvirt's test driver behind libvirtd.

One libvirtd per zone, each serving its zone's hosts over its own unix socket. A host is a
connection to `test+unix:///<node.xml>?socket=<sock>`: every such connection gets its own private
test-driver instance inside the daemon, described by the node file (256 CPUs, 2 TiB), so the
domains live in libvirtd's memory, not in the controller's, as with real hypervisors.

The daemons run in libvirt's unprivileged ("session") mode, with their sockets, state and config
under the bench's temp dir: they never touch the machine's system libvirtd (which other jobs may
be using) and need no root. When the bench runs as root they are started as `nobody` through
`setpriv` (libvirtd picks its system mode for uid 0). The test driver forgets a connection's
domains when it closes; for the restart phase the bench writes node files that hold the domains
the controller had (`node_xml_with_domains`), as hosts that kept running while it was down.
"""
from __future__ import annotations

import os
import pwd
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import procs

NODE_SRC = procs.REPO / "config" / "hosts" / "host-a.xml"   # 256 CPUs, 2 TiB: 4,096 t3.nano per host
METADATA_NS = "urn:cloudctl:instance"   # cloudctl/drivers/hypervisor/base.py: how a domain names its owner
LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
#: The daemons' niceness (`--hosts-nice`). They stand for other machines, but below the controller's
#: priority they did not leave it the CPU at the restart: their 200 connections' opens (each parses
#: its node file, 250 domains) are ~19-26 s of CPU on the same 2 cores whatever the priorities, and
#: niced they end later (docs/scaling.md, "The simulated hosts' share of a restart"). 0: the default.
HOSTS_NICE = 0


def missing() -> str | None:
    """Why the simulated hosts cannot run here, or None."""
    if not Path(LIBVIRTD).exists():
        return "libvirtd not found (make install installs libvirt-daemon-system)"
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "running as root and setpriv (util-linux) is missing: libvirtd must run unprivileged"
    return None


@dataclass
class Zone:
    name: str
    dir: Path
    sock: Path
    proc: procs.Proc


def start_zone(tmp: Path, name: str, nice: int = HOSTS_NICE) -> Zone:
    """One session-mode libvirtd with its socket under `tmp/<name>`, at `nice`; returns once it accepts."""
    d = tmp / f"libvirtd-{name}"
    for sub in ("run", "config", "cache", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "libvirtd.conf"
    conf.write_text(f'unix_sock_dir = "{d / "run"}"\nunix_sock_rw_perms = "0777"\nauth_unix_rw = "none"\n'
                    'auth_unix_ro = "none"\nmax_clients = 5000\nmax_workers = 20\nmax_client_requests = 20\n'
                    'keepalive_interval = 5\n')
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
    proc = procs.spawn(f"libvirtd-{name}", argv, tmp / f"libvirtd-{name}.log", env=env, clean_env=True)
    sock = d / "run" / "libvirt-sock"
    deadline = time.monotonic() + 30
    while not sock.exists():
        if not proc.alive() or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"libvirtd for {name} did not start:\n{proc.log_tail()}")
        time.sleep(0.1)
    return Zone(name, d, sock, proc)


def write_node(path: Path, domains: str = "") -> None:
    """The node description, readable by the daemon's user, with `domains` (XML) inside it."""
    text = NODE_SRC.read_text()
    path.write_text(text.replace("</node>", domains + "</node>"))
    os.chmod(path, 0o644)


def host_uri(node: Path, zone: Zone) -> str:
    return f"test+unix://{node}?socket={zone.sock}"


def domain_xml(iid: str, uuid: str, controller: str, vcpus: int = 1, memory_mib: int = 512) -> str:
    """A running domain as cloudctl defines it on a test host (config/templates/domain-test.xml)."""
    return (f"<domain type='test'><name>{escape(iid)}</name><uuid>{escape(uuid)}</uuid>"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<metadata><cloudctl:instance xmlns:cloudctl='{METADATA_NS}' controller='{escape(controller)}'>"
            f"{escape(iid)}</cloudctl:instance></metadata></domain>\n")
