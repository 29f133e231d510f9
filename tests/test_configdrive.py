"""Config drives: built with genisoimage, read back with isoinfo (same package) as a guest would."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cloudctl.core.configdrive import ConfigDriveError, build_config_drive

pytestmark = pytest.mark.skipif(not (shutil.which("genisoimage") and shutil.which("isoinfo")),
                                reason="genisoimage/isoinfo not installed (apt-get install genisoimage)")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHy0kNw5FqtKnhK1b1l+J0pGg2bQxjWc7k0b8gkR3e9x"
BINARY = bytes(range(256)) * 4 + b"\x00\r\n\x1f\x8b"      # every byte value, NULs, a gzip magic


def label(iso: Path) -> str:
    out = subprocess.run(["isoinfo", "-d", "-i", str(iso)], check=True, capture_output=True, text=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Volume id:"))


def names(iso: Path) -> set[str]:
    out = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def read(iso: Path, name: str) -> bytes:
    return subprocess.run(["isoinfo", "-R", "-x", name, "-i", str(iso)], check=True, capture_output=True).stdout


def test_nocloud_round_trip(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    build_config_drive(iso, instance_id="i-0123456789abcdef0", hostname="ip-10-128-0-4", user_data=BINARY,
                       public_keys=[KEY], local_ipv4="10.128.0.4/16", gateway="10.128.0.1",
                       mac="02:00:00:00:00:01", dns=["10.128.0.2", "192.0.2.53"])
    assert label(iso) == "cidata"
    assert {"/user-data", "/meta-data", "/network-config"} <= names(iso)
    assert read(iso, "/user-data") == BINARY
    meta = yaml.safe_load(read(iso, "/meta-data"))
    assert meta == {"instance-id": "i-0123456789abcdef0", "local-hostname": "ip-10-128-0-4", "public-keys": [KEY]}
    net = yaml.safe_load(read(iso, "/network-config"))
    nic = net["ethernets"]["primary"]
    assert net["version"] == 2
    assert nic["addresses"] == ["10.128.0.4/16"] and nic["match"] == {"macaddress": "02:00:00:00:00:01"}
    assert nic["routes"] == [{"to": "0.0.0.0/0", "via": "10.128.0.1"}]
    assert nic["nameservers"] == {"addresses": ["10.128.0.2", "192.0.2.53"]}   # the network's DNS
    assert iso.stat().st_mode & 0o077 == 0                       # user data may hold secrets
    assert [p.name for p in tmp_path.iterdir()] == ["cd.iso"]    # no temp file left behind


def test_nocloud_without_user_data_or_address(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    build_config_drive(iso, instance_id="i-1", hostname="h", user_data=None, public_keys=[], local_ipv4=None)
    assert read(iso, "/user-data") == b""
    assert yaml.safe_load(read(iso, "/meta-data"))["public-keys"] == []
    nic = yaml.safe_load(read(iso, "/network-config"))["ethernets"]["primary"]
    assert nic == {"match": {"name": "e*"}, "dhcp4": True}


def test_config2_round_trip(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    build_config_drive(iso, instance_id="i-0123456789abcdef0", hostname="web-1", user_data=BINARY,
                       public_keys=[KEY, "ssh-rsa AAAAB3Nza second"], local_ipv4="10.129.0.9/16",
                       fmt="config-2", mac="02:00:00:00:00:02", gateway="10.129.0.1", dns=["10.129.0.2"])
    assert label(iso) == "config-2"
    assert {"/openstack/latest/meta_data.json", "/openstack/latest/user_data",
            "/openstack/latest/network_data.json", "/ec2/latest/meta-data.json"} <= names(iso)
    meta = json.loads(read(iso, "/openstack/latest/meta_data.json"))
    assert meta["uuid"] == "i-0123456789abcdef0" and meta["hostname"] == "web-1"
    assert meta["public_keys"] == {"0": KEY, "1": "ssh-rsa AAAAB3Nza second"}
    assert read(iso, "/openstack/latest/user_data") == BINARY
    ec2 = json.loads(read(iso, "/ec2/latest/meta-data.json"))
    assert ec2["instance-id"] == "i-0123456789abcdef0" and ec2["local-ipv4"] == "10.129.0.9"
    assert ec2["public-keys"]["0"]["openssh-key"] == KEY
    net = json.loads(read(iso, "/openstack/latest/network_data.json"))
    assert net["links"][0]["ethernet_mac_address"] == "02:00:00:00:00:02"
    assert net["networks"][0]["ip_address"] == "10.129.0.9" and net["networks"][0]["netmask"] == "255.255.0.0"
    assert net["services"] == [{"type": "dns", "address": "10.129.0.2"}]


def test_config2_without_user_data_has_no_file(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    build_config_drive(iso, instance_id="i-1", hostname="h", user_data=None, public_keys=[], local_ipv4=None,
                       fmt="config-2")
    assert "/openstack/latest/user_data" not in names(iso)
    assert "/openstack/latest/network_data.json" not in names(iso)


def test_rebuild_replaces_atomically(tmp_path: Path) -> None:
    iso = tmp_path / "cd.iso"
    build_config_drive(iso, instance_id="i-1", hostname="h", user_data=b"one", public_keys=[], local_ipv4=None)
    build_config_drive(iso, instance_id="i-1", hostname="h", user_data=b"two", public_keys=[], local_ipv4=None)
    assert read(iso, "/user-data") == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["cd.iso"]


def test_bad_format_and_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        build_config_drive(tmp_path / "x.iso", instance_id="i", hostname="h", user_data=None, public_keys=[],
                           local_ipv4=None, fmt="iso")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigDriveError, match="genisoimage"):
        build_config_drive(tmp_path / "x.iso", instance_id="i", hostname="h", user_data=None, public_keys=[],
                           local_ipv4=None)
    assert list(tmp_path.iterdir()) == []


def test_build_time(tmp_path: Path) -> None:
    """Not a benchmark: a guard that a drive stays cheap enough to build per launch."""
    t0 = time.perf_counter()
    for n in range(10):
        build_config_drive(tmp_path / f"{n}.iso", instance_id="i-1", hostname="h", user_data=b"x" * 16384,
                           public_keys=[KEY], local_ipv4="10.0.0.5/24")
    per = (time.perf_counter() - t0) / 10
    print(f"config drive build: {per * 1000:.1f} ms")
    assert per < 1.0
