"""Instance-store (ephemeral) disks: which an instance has, and their files on the host.

An instance type with `ephemeral_gib` gives each of its instances `ephemeral0` at /dev/sdb (the
guest's /dev/vdb, as Eucalyptus's virtio guests see it); RunInstances' block device mappings add
`ephemeral1`.. (up to the type's `ephemeral_disks`; more are ignored, as EC2 ignores them), move
them, or leave a device out (`NoDevice`). The instance record keeps the list; the files exist
only while the instance runs: made empty before it starts, removed when it stops or terminates
(EC2 keeps no instance-store data across a stop). A file's path is derived from its instance's
id, so start-up reconciliation finds and removes those no running instance owns.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..config import InstanceType
from ..drivers.storage.base import StorageDriver
from ..store.records import Instance
from .errors import CloudError
from .launch import DeviceMapping

log = logging.getLogger("cloudctl.instance_store")

DEFAULT_DEVICE = "/dev/sdb"
_VIRTUAL = re.compile(r"^ephemeral([0-9]|1[0-9]|2[0-3])$")
_DEVICE = re.compile(r"^/dev/(?:sd|xvd|vd)([b-z])$")
_FILE = re.compile(r"^(ephemeral[0-9]+)\.qcow2(?:\.part)?$")
#: States in which an instance's ephemeral files may exist (the others remove them).
HOLDING = frozenset({"pending", "running", "stopping"})


def _bad(msg: str) -> CloudError:
    return CloudError("InvalidBlockDeviceMapping", msg)


def target_of(device: str) -> str:
    """`/dev/sdb`, `/dev/xvdb`, `/dev/vdb` → the guest disk `vdb` (as volumes name theirs)."""
    m = _DEVICE.match(device)
    if m is None:
        raise _bad(f"Invalid device name {device or '(none)'} for an instance store volume "
                   f"(use /dev/sd[b-z] or /dev/xvd[b-z])")
    return "vd" + m.group(1)


def plan(itype: InstanceType, mappings: Iterable[DeviceMapping], ebs_targets: Iterable[str] = ()) -> tuple[str, ...]:
    """The instance-store disks of one launch, "ephemeralN=/dev/sdX" each in N order.

    The type's default (ephemeral0 at /dev/sdb) overlaid by the launch's mappings, per device;
    an EBS volume the launch maps at a device replaces the default there. Malformed names and a
    device or ephemeral name mapped twice are refused; ephemeralN beyond what the type has is
    ignored (as EC2 does)."""
    by_target: dict[str, tuple[str, str]] = {"vdb": ("ephemeral0", DEFAULT_DEVICE)} if itype.ephemeral_gib else {}
    ebs = set(ebs_targets)
    seen: set[str] = set()
    names: set[str] = set()
    for m in mappings:
        target = target_of(m.device)
        if target in seen:
            raise _bad(f"Device {m.device} is mapped twice")
        seen.add(target)
        if m.virtual_name is None:
            by_target.pop(target, None)
            continue
        if not _VIRTUAL.match(m.virtual_name):
            raise _bad(f"Invalid virtual name {m.virtual_name!r} for {m.device}: expected ephemeral0 to ephemeral23")
        if m.virtual_name in names:
            raise _bad(f"{m.virtual_name} is mapped twice")
        if target in ebs:
            raise _bad(f"Device {m.device} is mapped to both an EBS volume and {m.virtual_name}")
        names.add(m.virtual_name)
        by_target[target] = (m.virtual_name, m.device)
    for t in ebs:
        by_target.pop(t, None)
    if not itype.ephemeral_gib:
        return ()
    kept = [(int(n[9:]), n, dev) for n, dev in by_target.values() if int(n[9:]) < itype.ephemeral_disks]
    return tuple(f"{n}={dev}" for _, n, dev in sorted(kept))


def disks(inst: Instance, itype: InstanceType | None) -> list[tuple[str, str]]:
    """(ephemeralN, device) of the instance's disks its (current) type gives it."""
    if not inst.ephemeral or itype is None or not itype.ephemeral_gib:
        return []
    out = []
    for entry in inst.ephemeral:
        name, _, device = entry.partition("=")
        if int(name[9:]) < itype.ephemeral_disks:
            out.append((name, device))
    return out


def gib_needed(inst: Instance, itype: InstanceType | None) -> int:
    """The host disk the instance's ephemeral disks take while it runs."""
    if not inst.ephemeral or itype is None or not itype.ephemeral_gib:
        return 0
    return itype.ephemeral_gib * len(disks(inst, itype))


class InstanceStore:
    """The files: `<instance_dir>/<instance-id>/ephemeralN.qcow2`, made by the storage driver."""

    def __init__(self, base: Path, storage: StorageDriver) -> None:
        self.base = base
        self.storage = storage

    def path(self, iid: str, name: str) -> Path:
        return self.base / iid / f"{name}.qcow2"

    async def ensure(self, inst: Instance, itype: InstanceType) -> list[tuple[str, str]]:
        """(file, guest device) of each disk, each made empty now unless it exists (a start
        after a crash finds the one it made). Off the event loop: qemu-img is a child process."""
        out = []
        for name, device in disks(inst, itype):
            path = self.path(inst.id, name)
            if not await asyncio.to_thread(path.exists):
                await asyncio.to_thread(_mkdir, path.parent)
                await self.storage.create(path, itype.ephemeral_gib)
            out.append((str(path), target_of(device)))
        return out

    async def remove(self, iid: str) -> None:
        """Every ephemeral file of the instance (whatever its type says now); none is no error."""
        for path in await asyncio.to_thread(_files_of, self.base / iid):
            await self.storage.delete(path)

    async def with_files(self) -> list[str]:
        """Ids of the instances that have ephemeral files now (start-up reconciliation compares
        them with the records)."""
        return await asyncio.to_thread(_with_files, self.base)


def _mkdir(d: Path) -> None:
    # Traversable by the hypervisor's qemu user, which opens the disks in it.
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o711)


def _files_of(d: Path) -> list[Path]:
    try:
        return [d / e.name for e in os.scandir(d) if _FILE.match(e.name)]
    except FileNotFoundError:
        return []


def _with_files(base: Path) -> list[str]:
    try:
        entries = [e.name for e in os.scandir(base) if e.name.startswith("i-") and e.is_dir()]
    except FileNotFoundError:
        return []
    return [iid for iid in entries if _files_of(base / iid)]
