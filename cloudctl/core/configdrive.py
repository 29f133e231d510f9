"""cloud-init config drives: a small ISO 9660 image attached to an instance as a CD-ROM.

Two layouts are written, both read by stock cloud-init without any network:
  * ``nocloud``  — label ``cidata``: ``user-data``, ``meta-data`` (YAML), ``network-config`` (v2);
  * ``config-2`` — label ``config-2``: the OpenStack layout (``openstack/latest/...`` and
    ``ec2/latest/meta-data.json``), for images whose cloud-init only enables that datasource.

The image is made by ``genisoimage`` (Debian package ``genisoimage``; ``mkisofs`` is the same
program elsewhere) with Joliet and Rock Ridge, so every reader sees the long, case-sensitive
names cloud-init looks for. An external tool rather than a pure-Python writer: it is in every
distribution this cloud runs on, is what OpenStack Nova uses for the same job, and keeps a
dependency (and its ISO bugs) out of the controller. ``build_config_drive`` blocks (a few ms of
subprocess work): call it in a thread (``asyncio.to_thread``).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

FORMATS = ("nocloud", "config-2")
_LABELS = {"nocloud": "cidata", "config-2": "config-2"}
_TOOLS = ("genisoimage", "mkisofs")


class ConfigDriveError(Exception):
    """The image could not be built (tool missing or failed); the message says which."""


def build_config_drive(path: Path, *, instance_id: str, hostname: str, user_data: bytes | None,
                       public_keys: list[str], local_ipv4: str | None, fmt: str = "nocloud",
                       mac: str | None = None, gateway: str | None = None, dns: list[str] | None = None) -> None:
    """Write a config drive ISO at `path`, atomically (temp file in the same directory, renamed).

    `local_ipv4` may carry its prefix ("10.128.0.4/16"); a bare address is configured as /32.
    With it the guest gets a static address (and `gateway` as default route, if given);
    without it, DHCP. `mac` pins the configuration to that NIC; without it, to the first
    Ethernet-looking interface (`e*`). The file is created 0600: user data may hold secrets,
    and libvirt's dynamic ownership hands it to the hypervisor process.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown config drive format {fmt!r}; expected one of {', '.join(FORMATS)}")
    tool = next((t for t in _TOOLS if shutil.which(t)), None)
    if tool is None:
        raise ConfigDriveError("genisoimage (or mkisofs) is not installed; install the genisoimage package")
    iface = ipaddress.IPv4Interface(local_ipv4) if local_ipv4 else None
    files = (_nocloud if fmt == "nocloud" else _config2)(
        instance_id=instance_id, hostname=hostname, user_data=user_data, public_keys=public_keys,
        iface=iface, mac=mac, gateway=gateway, dns=list(dns or []))

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="cloudctl-cd-") as staging:
        root = Path(staging)
        for rel, data in files.items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.close(fd)
            # -r: Rock Ridge with every file world-readable and owned by root, whatever the
            # staging files' modes; -J: Joliet, for readers without Rock Ridge.
            proc = subprocess.run(
                [tool, "-quiet", "-o", tmp, "-V", _LABELS[fmt], "-J", "-r", "-input-charset", "utf-8", staging],
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise ConfigDriveError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}")
            # Durable before it is visible: a crash must not leave a named but empty drive.
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _nocloud(*, instance_id: str, hostname: str, user_data: bytes | None, public_keys: list[str],
             iface: ipaddress.IPv4Interface | None, mac: str | None, gateway: str | None,
             dns: list[str]) -> dict[str, bytes]:
    import yaml  # (at the first NoCloud drive: a controller whose images never ask for one never loads it)
    meta = {"instance-id": instance_id, "local-hostname": hostname, "public-keys": list(public_keys)}
    nic: dict[str, Any] = {"match": {"macaddress": mac} if mac else {"name": "e*"}}
    if iface is None:
        nic["dhcp4"] = True
    else:
        nic["addresses"] = [iface.with_prefixlen]
        if gateway:
            nic["routes"] = [{"to": "0.0.0.0/0", "via": gateway}]
        if dns:
            nic["nameservers"] = {"addresses": dns}
    network = {"version": 2, "ethernets": {"primary": nic}}
    return {
        "user-data": user_data or b"",
        "meta-data": yaml.safe_dump(meta, sort_keys=False).encode(),
        "network-config": yaml.safe_dump(network, sort_keys=False).encode(),
    }


def _config2(*, instance_id: str, hostname: str, user_data: bytes | None, public_keys: list[str],
             iface: ipaddress.IPv4Interface | None, mac: str | None, gateway: str | None,
             dns: list[str]) -> dict[str, bytes]:
    meta = {"uuid": instance_id, "name": hostname, "hostname": hostname, "launch_index": 0,
            "public_keys": {str(n): k for n, k in enumerate(public_keys)}}
    ec2: dict[str, Any] = {"instance-id": instance_id, "hostname": hostname, "local-hostname": hostname,
                           "public-keys": {str(n): {"openssh-key": k} for n, k in enumerate(public_keys)}}
    if iface is not None:
        ec2["local-ipv4"] = str(iface.ip)
    files = {
        "openstack/latest/meta_data.json": _json(meta),
        "ec2/latest/meta-data.json": _json(ec2),
    }
    # As OpenStack does: no user_data file when there is none (cloud-init treats both alike).
    if user_data is not None:
        files["openstack/latest/user_data"] = user_data
    # cloud-init maps OpenStack links to interfaces by MAC only, so without one DHCP is safer.
    if iface is not None and mac:
        net: dict[str, Any] = {"id": "network0", "link": "tap0", "type": "ipv4", "ip_address": str(iface.ip),
                               "netmask": str(iface.netmask), "network_id": "network0"}
        if gateway:
            net["routes"] = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gateway}]
        files["openstack/latest/network_data.json"] = _json({
            "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": mac}],
            "networks": [net], "services": [{"type": "dns", "address": a} for a in dns]})
    return files


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()
