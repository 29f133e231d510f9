"""Controllers sharing a hypervisor: start-up reconcile removes the orphan domains this
controller made, and leaves other controllers' domains alone (reporting them)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import libvirt

from .conftest import URI
from support import DEFAULT_CONFIG, Server, write_config

NS = "urn:cloudctl:instance"


def define(conn: Any, name: str, controller: str) -> None:
    conn.defineXML(f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='q35'>hvm</type></os>
      <metadata><cloudctl:instance xmlns:cloudctl='{NS}' controller='{controller}'>{name}</cloudctl:instance>
      </metadata></domain>""")


def names(conn: Any) -> set[str]:
    return {d.name() for d in conn.listAllDomains()}


def test_only_own_orphans_are_removed(libvirtd: str, work_dir: Path, model_cache: Path) -> None:
    d = work_dir / f"owner-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    path = write_config(d, model_cache, hosts=[{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}], networks=[],
                        domain_template=str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"))
    state = d / "state"
    state.mkdir(mode=0o711)
    (state / "controller.id").write_text("mine\n")
    suffix = f"{time.monotonic_ns() % 10**12:012x}"[-12:]
    mine, theirs = f"i-00000{suffix}", f"i-11111{suffix}"
    conn = libvirt.open(URI)
    try:
        define(conn, mine, "mine")
        define(conn, theirs, "another-controller")
        srv = Server(path).start()
        try:
            deadline = time.monotonic() + 30
            while mine in names(conn) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert mine not in names(conn)          # our own orphan: removed
            assert theirs in names(conn)            # someone else's: untouched
            report = srv.admin("GET", "/v0/reconcile")
            assert any(theirs in line and "another controller" in line for line in report), report
            assert any(mine in line and "removing" in line for line in report), report
        finally:
            srv.stop()
    finally:
        for n in (mine, theirs):
            try:
                conn.lookupByName(n).undefine()
            except libvirt.libvirtError:
                pass
        conn.close()
