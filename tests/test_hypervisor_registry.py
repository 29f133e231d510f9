"""Hosts name their hypervisor driver (default: by URI scheme). The production libvirt driver
carries no test behaviour: what a simulated host does instead (keep packet filters, plug nothing)
lives in the subclass chosen for libvirt's test driver, and a bad driver name stops the start in
one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloudctl.config import load_config
from cloudctl.core.cloud import host_driver
from cloudctl.drivers.hypervisor.base import FirewallRule, FirewallSpec
from cloudctl.drivers.hypervisor.libvirt import LibvirtDriver
from cloudctl.drivers.hypervisor.registry import make_driver
from cloudctl.drivers.hypervisor.simulated import SimulatedLibvirtDriver

from support import ROOT, write_config


def with_driver(tmp_path: Path, model_cache: Path, driver: str, uri: str | None = None) -> Path:
    path = write_config(tmp_path, model_cache)
    cfg = yaml.safe_load(path.read_text())
    cfg["hosts"][0]["driver"] = driver
    if uri is not None:
        cfg["hosts"][0]["uri"] = uri
        cfg["hosts"][0].pop("node_xml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_driver_follows_the_uri_scheme_or_the_config(tmp_path: Path, model_cache: Path) -> None:
    assert type(make_driver(None, "h", "qemu:///system")) is LibvirtDriver
    assert type(make_driver(None, "h", "qemu+ssh://root@h1/system")) is LibvirtDriver
    assert type(make_driver(None, "h", "test:///default")) is SimulatedLibvirtDriver
    remote = make_driver(None, "h", "test+unix:///default?socket=/run/x")
    assert type(remote) is SimulatedLibvirtDriver and remote._workers == 4   # type: ignore[attr-defined]
    assert make_driver(None, "h", "test:///default")._workers == 1    # type: ignore[attr-defined]
    assert type(make_driver("libvirt", "h", "test:///default")) is LibvirtDriver

    config = load_config(with_driver(tmp_path, model_cache, "libvirt"))
    kinds = [type(host_driver(h)) for h in config.hosts]   # (what Cloud.open builds each host's driver with)
    assert kinds == [LibvirtDriver, SimulatedLibvirtDriver]     # host-a as named, host-b by its test: URI


def test_the_production_driver_has_no_test_mode() -> None:
    real = make_driver(None, "h", "qemu:///system")
    assert not real.records_firewall_only and not hasattr(real, "firewalls")
    assert real.firewall_ref("i-1") == "cloudctl-i-1"


async def test_a_simulated_host_records_filters_and_plugs_nothing() -> None:
    sim = make_driver(None, "h", "test:///default")
    assert isinstance(sim, SimulatedLibvirtDriver) and sim.records_firewall_only
    assert sim.firewall_ref("i-1") is None
    spec = FirewallSpec("i-1", "52:54:00:00:00:01", "10.0.0.5", (FirewallRule("tcp", 22, 22, ("0.0.0.0/0",)),), ())
    await sim.set_firewall("i-1", spec)
    assert sim.firewalls == {"i-1": spec}
    await sim.remove_firewall("i-1")
    await sim.remove_firewall("i-1")
    assert sim.firewalls == {}
    bridge = await sim.plug_ovs("br-nosuch", 7, None)   # only named: no OVS on a simulated host
    assert bridge and not Path("/sys/class/net", bridge).exists()


@pytest.mark.parametrize("driver, uri, why", [
    ("xen", None, "unknown driver 'xen'; one of: libvirt, libvirt-test"),
    ("libvirt-test", "qemu:///system",
     "libvirt-test only records packet filters, so it takes only test: URIs, not 'qemu:///system'"),
])
def test_a_bad_driver_is_a_one_line_config_error(tmp_path: Path, model_cache: Path, driver: str, uri: str | None,
                                                 why: str) -> None:
    path = with_driver(tmp_path, model_cache, driver, uri)
    proc = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(path), "serve"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr == f"cloudctl: config {path.resolve()}: hosts.0.driver: {why}\n"
