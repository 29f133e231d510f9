"""Volumes and snapshots (EC2's EBS, the part a private cloud needs): qcow2 files in the volume
store, given to instances as data disks.

Each call changes only the store (journaled, then acknowledged) and answers at once with a
transitional state (`creating`, `attaching`, `detaching`, `deleting`, snapshot `pending`); the
file and hypervisor work (qemu-img, disk hot-plug) runs afterwards in a task that records the
outcome, as compute's converge does for instances. Work touching the same volume, snapshot or
instance runs in order (`_serial`). At start-up `reconcile` re-drives whatever a crash left
in a transitional state; every step is idempotent, so doing one twice is harmless.

Layout: `<volume_store>/<vol-id>.qcow2` and `<volume_store>/snapshots/<snap-id>.qcow2`; a
snapshot is a flattened, standalone copy, so volumes and snapshots never depend on each other's
files and either can be deleted at any time.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from ..config import Config
from ..drivers.hypervisor.base import HypervisorDriver, HypervisorError
from ..drivers.storage.base import GIB, StorageDriver, StorageError
from ..slim import dataclass
from ..store.idgroups import IdGroups
from ..store.records import Instance, Snapshot, Volume
from ..store.store import MultiIndex, Store, SumIndex, Txn
from .context import Caller
from .errors import CloudError, not_found
from .filters import FilterSet
from .ids import new_id, well_formed
from .images import ROOT_DEVICE_NAME
from .instance_store import target_of
from .launch import BlockDevice
from .query import Query
from .tags import Tags
from .work import KeyedWork

log = logging.getLogger("cloudctl.volumes")

VOLUME_TYPES = ("standard", "gp2", "gp3")
DEFAULT_VOLUME_TYPE = "gp2"
MIN_SIZE_GIB, MAX_SIZE_GIB = 1, 16384
R = TypeVar("R")
ROOT_DEVICES = frozenset({"/dev/sda1", "/dev/sda", "/dev/xvda", "/dev/vda"})
#: The root device name of this cloud's images (a mapping may name another of ROOT_DEVICES).
ROOT_DEVICE = ROOT_DEVICE_NAME
ROOT_TARGET = "vda"


def is_root(v: Volume) -> bool:
    """Attached as its instance's root disk (only a launch, or an attach to a stopped instance
    that lost its root, puts a volume there)."""
    return v.device in ROOT_DEVICES and v.instance_id is not None


@dataclass(frozen=True, slots=True)
class RootSpec:
    """The root volume RunInstances makes: from the root mapping, else the defaults."""
    device: str = ROOT_DEVICE
    size: int | None = None          # GiB; None: the instance type's disk
    volume_type: str = "gp2"
    delete_on_termination: bool = True


@dataclass(frozen=True, slots=True)
class LaunchVolume:
    device: str
    target: str
    size: int
    volume_type: str
    snapshot_id: str | None
    delete_on_termination: bool
GP3_IOPS, GP3_THROUGHPUT = (3000, 16000), (125, 1000)   # (default = minimum, maximum)
#: Device names a volume may be attached as; the letter picks the guest disk (`/dev/sdf` → vdf).
#: `a` is the root disk's.
_DEVICE = re.compile(r"^/dev/(?:sd|xvd|vd)([b-z])$")
#: How long a detach waits for the guest to release the disk (a forced one: less).
DETACH_TIMEOUT_S, FORCED_DETACH_TIMEOUT_S = 30.0, 5.0


@dataclass(frozen=True, slots=True)
class VolumeRequest:
    """CreateVolume's ask. Size may be left out when a snapshot gives it; no type means gp2;
    iops and throughput apply to gp3 only; a client token makes a retry return the same volume."""
    zone: str | None
    size: int | None = None
    snapshot_id: str | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    client_token: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def effective_iops(v: Volume) -> int | None:
    """What EC2 reports: gp2 has a baseline of 3 IOPS/GiB (100..16000), gp3 what was asked."""
    if v.volume_type == "gp2":
        return min(16000, max(100, 3 * v.size))
    return v.iops


def wire_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def device_target(device: str) -> str:
    """`/dev/sdf`, `/dev/xvdf`, `/dev/vdf` → the guest disk `vdf`."""
    m = _DEVICE.match(device or "")
    if m is None:
        raise CloudError("InvalidParameterValue", f"Value ({device}) for parameter device is invalid. "
                         f"{device} is not a valid EBS device name (use /dev/sd[b-z] or /dev/vd[b-z]).")
    return "vd" + m.group(1)


class Volumes:
    def __init__(self, store: Store, config: Config, tags: Tags, drivers: dict[str, HypervisorDriver],
                 storage: StorageDriver, work: KeyedWork, image_file: Callable[[str], Path | None]) -> None:
        self.store = store
        self.config = config
        self.tags = tags
        self.drivers = drivers
        self.storage = storage
        self.dir = Path(config.volume_store or config.state_dir / "volumes")
        self.snapshot_dir = self.dir / "snapshots"
        self.table = store.table(Volume)
        self.snapshots = store.table(Snapshot)
        self.instances = store.table(Instance)
        # (keys by `attrgetter`: one C call where a lambda was a Python call, each put reading them)
        self._by_owner: IdGroups[Volume] = self.table.add_index(IdGroups(self.table, attrgetter("owner")))
        self._usage: SumIndex[Volume] = self.table.add_index(SumIndex(attrgetter("owner"), attrgetter("size")))
        self._by_instance: MultiIndex[Volume] = self.table.add_index(MultiIndex(attrgetter("instance_id")))
        self._snaps_by_owner: MultiIndex[Snapshot] = self.snapshots.add_index(MultiIndex(lambda s: s.owner))
        self.work = work   # shared with compute: one order per instance
        self.image_file = image_file   # an image's file by id (None if gone): root volumes overlay it
        self.filters = FilterSet({
            "volume-id": lambda v: v.id,
            "status": lambda v: v.state,
            "size": lambda v: v.size,
            "volume-type": lambda v: v.volume_type,
            "snapshot-id": lambda v: v.snapshot_id or "",
            "availability-zone": lambda v: v.zone,
            "create-time": lambda v: wire_time(v.created),
            "encrypted": lambda v: False,
            "multi-attach-enabled": lambda v: False,
            "fast-restored": lambda v: False,
            "attachment.instance-id": lambda v: v.instance_id,
            "attachment.status": lambda v: v.attach_state,
            "attachment.device": lambda v: v.device,
            "attachment.attach-time": lambda v: wire_time(v.attach_time) if v.attach_time else None,
            "attachment.delete-on-termination": lambda v: v.delete_on_termination if v.instance_id else None,
        }, tags_of=lambda v: tags.of(v.id))
        self.snapshot_filters = FilterSet({
            "snapshot-id": lambda s: s.id,
            "volume-id": lambda s: s.volume_id,
            "status": lambda s: s.state,
            "owner-id": lambda s: s.owner,
            "progress": lambda s: s.progress,
            "start-time": lambda s: wire_time(s.started),
            "volume-size": lambda s: s.volume_size,
            "description": lambda s: s.description,
            "encrypted": lambda s: False,
            "storage-tier": lambda s: "standard",
        }, tags_of=lambda s: tags.of(s.id))
        tags.register("volume", self._check_volume)
        tags.register("snapshot", self._check_snapshot)

    def _check_volume(self, caller: Caller, volume_id: str) -> None:
        self._volume(caller, volume_id)

    def _check_snapshot(self, caller: Caller, snapshot_id: str) -> None:
        self._snapshot(caller, snapshot_id)

    # -- files and lookups ---------------------------------------------------------------------
    def volume_path(self, volume_id: str) -> Path:
        return self.dir / f"{volume_id}.qcow2"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.snapshot_dir / f"{snapshot_id}.qcow2"

    def _volume(self, caller: Caller, volume_id: str) -> Volume:
        return _by_ids(self._by_owner.get(caller.account), [volume_id or ""], "vol", "Volume", "volume")[volume_id]

    def _snapshot(self, caller: Caller, snapshot_id: str) -> Snapshot:
        return _by_ids(self._snaps_by_owner.get(caller.account), [snapshot_id or ""], "snap", "Snapshot",
                       "snapshot")[snapshot_id]

    def _instance(self, caller: Caller, instance_id: str) -> Instance:
        if not well_formed(instance_id or "", "i"):
            raise CloudError("InvalidInstanceID.Malformed", f"Invalid id: \"{instance_id}\"")
        inst = self.instances.get(instance_id)
        if inst is None or inst.owner != caller.account:
            raise not_found("InstanceID", instance_id)
        return inst

    def disks_for(self, instance_id: str) -> list[tuple[str, str]]:
        """(file, guest device) of each volume the instance's domain definition must hold.

        Volumes being attached count (their hot-plug may not have run yet); volumes being
        detached do not (their unplug is a no-op if the disk is already gone).
        """
        vols = self._by_instance.rows(instance_id)   # (the group's rows: no dict made for a small group)
        if len(vols) == 1 and is_root(vols[0]):   # (a launch's instance: its root volume alone)
            return []
        return sorted(((str(self.volume_path(v.id)), v.target) for v in vols
                       if v.target and v.attach_state in ("attaching", "attached") and not is_root(v)),
                  key=lambda d: d[1])

    def attached_to(self, instance_id: str) -> list[Volume]:
        """The volumes attached (or attaching, detaching) to an instance: the root first, then by device."""
        vols = self._by_instance.rows(instance_id)
        if len(vols) <= 1:   # the common case, read for every instance of every DescribeInstances
            return list(vols)
        return sorted(vols, key=lambda v: (not is_root(v), v.device or ""))

    def root_of(self, instance_id: str) -> Volume | None:
        """The instance's root volume, if it has one attached."""
        for v in self._by_instance.rows(instance_id):   # (no dict made for a small group, no generator)
            if is_root(v):
                return v
        return None

    async def ensure_file(self, vol: Volume, image_path: Path | None) -> Path:
        """The volume's file, made now if it is a root volume whose file does not exist yet.

        A root volume gets its file (an overlay over its image, the image untouched) when its
        instance is first defined on a host with real disks, or when something needs its data
        (a snapshot, an attach); on simulated hosts most never get one, which costs nothing.
        """
        path = self.volume_path(vol.id)
        if await asyncio.to_thread(path.exists):
            return path
        if vol.image_id is None:
            raise StorageError(f"the file of {vol.id} is missing")
        if image_path is None:
            raise StorageError(f"image {vol.image_id} of {vol.id} is gone; cannot create its disk")
        await self.storage.create(path, vol.size, backing=image_path)
        return path

    # -- CreateVolume --------------------------------------------------------------------------
    async def create(self, caller: Caller, req: VolumeRequest) -> Volume:
        token = req.client_token
        if token is not None and not (0 < len(token) <= 64 and token.isascii()):
            raise CloudError("InvalidParameterValue", "ClientToken must be 1-64 ASCII characters")
        if token:
            prior = next((v for v in self._by_owner.get(caller.account).values() if v.client_token == token), None)
            if prior is not None:
                caller.check_dry_run()
                return prior
        zone = req.zone
        if not zone:
            raise CloudError("MissingParameter", "The request must contain the parameter AvailabilityZone")
        if zone not in self.config.zones:
            raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        vtype = req.volume_type or DEFAULT_VOLUME_TYPE
        if vtype not in VOLUME_TYPES:
            raise CloudError("InvalidParameterValue", f"Value ({vtype}) for parameter volumeType is invalid. "
                             f"Supported types: {', '.join(VOLUME_TYPES)}")
        snap = self._snapshot(caller, req.snapshot_id) if req.snapshot_id else None
        if snap is not None and snap.state != "completed":
            raise CloudError.wrong_state("IncorrectState",
                                         f"Snapshot '{snap.id}' is {snap.state}; it must be completed")
        size = req.size
        if size is None:
            if snap is None:
                raise CloudError("MissingParameter", "The request must contain the parameter size or snapshotId")
            size = snap.volume_size
        if not MIN_SIZE_GIB <= size <= MAX_SIZE_GIB:
            raise CloudError("InvalidParameterValue", f"Volume of {size}GiB is out of range: the size must be "
                             f"between {MIN_SIZE_GIB} and {MAX_SIZE_GIB} GiB")
        if snap is not None and size < snap.volume_size:
            raise CloudError("InvalidParameterValue", f"Volume of size {size}GiB is smaller than snapshot "
                             f"'{snap.id}', expect size >= {snap.volume_size}GiB")
        iops, throughput = req.iops, req.throughput
        if vtype == "gp3":
            iops = _in_range(iops, GP3_IOPS, "iops")
            throughput = _in_range(throughput, GP3_THROUGHPUT, "throughput")
        else:
            for name, value in (("iops", iops), ("throughput", throughput)):
                if value is not None:
                    raise CloudError("InvalidParameterCombination",
                                     f"The parameter {name} is not supported for {vtype} volumes.")
        self.check_quota(caller.account, 1, size)
        caller.check_dry_run()
        vol = Volume(id=new_id("vol"), owner=caller.account, zone=zone, size=size, volume_type=vtype,
                     state="creating", created=time.time(), snapshot_id=snap.id if snap else None,
                     iops=iops, throughput=throughput, client_token=token or None)
        with self.store.txn() as tx:
            tx.put(vol)
            if req.tags:
                self.tags.put(tx, caller.account, vol.id, "volume", list(req.tags))
        await self.store.sync()
        self._serial((vol.id, *((snap.id,) if snap else ())), self._make_file(vol.id))
        return vol

    # -- volumes made by RunInstances' BlockDeviceMappings ---------------------------------------
    def launch_specs(self, caller: Caller, devices: Iterable[BlockDevice]) -> tuple[RootSpec, list[LaunchVolume]]:
        """Validate a launch's block devices: (the root volume, data volumes)."""
        root = RootSpec()
        root_seen = False
        specs: list[LaunchVolume] = []
        for bd in devices:
            device = bd.device
            if device in ROOT_DEVICES:
                if root_seen:
                    raise CloudError("InvalidParameterValue", f"The root device is mapped twice ({device})")
                size = bd.size
                if size is not None and not MIN_SIZE_GIB <= size <= MAX_SIZE_GIB:
                    raise CloudError("InvalidParameterValue", f"Root volume size {size} GiB is out of range")
                if bd.snapshot_id:
                    raise CloudError("InvalidParameterValue", "The root volume comes from the image; "
                                     "a SnapshotId on the root device is not supported")
                vtype = bd.volume_type or DEFAULT_VOLUME_TYPE
                if vtype not in VOLUME_TYPES:
                    raise CloudError("InvalidParameterValue", f"Value ({vtype}) for parameter volumeType is invalid")
                root = RootSpec(device, size, vtype, bd.delete_on_termination)
                root_seen = True
                continue
            target = device_target(device)
            if any(s.target == target for s in specs):
                raise CloudError("InvalidParameterValue", f"Device {device} is mapped twice")
            snap = self._snapshot(caller, bd.snapshot_id) if bd.snapshot_id else None
            size = bd.size or (snap.volume_size if snap else None)
            if size is None:
                raise CloudError("MissingParameter", f"Block device mapping {device} needs VolumeSize or SnapshotId")
            if not MIN_SIZE_GIB <= size <= MAX_SIZE_GIB or (snap is not None and size < snap.volume_size):
                raise CloudError("InvalidParameterValue", f"Volume size {size} GiB for {device} is invalid")
            vtype = bd.volume_type or DEFAULT_VOLUME_TYPE
            if vtype not in VOLUME_TYPES:
                raise CloudError("InvalidParameterValue", f"Value ({vtype}) for parameter volumeType is invalid")
            specs.append(LaunchVolume(device, target, size, vtype, snap.id if snap else None,
                                      bd.delete_on_termination))
        return root, specs

    def check_quota(self, owner: str, count: int, gib: int) -> None:
        """Refuse `count` more volumes of `gib` GiB in all beyond the owner's quotas."""
        limits = self.config.limits
        n, used = self._usage.get(owner)
        if limits.volumes is not None and n + count > limits.volumes:
            raise CloudError.limit("VolumeLimitExceeded", f"You have reached your volume limit of {limits.volumes} "
                                   f"volumes ({n} in use, {count} requested).")
        if limits.volume_gib is not None and used + gib > limits.volume_gib:
            raise CloudError.limit("VolumeLimitExceeded", f"You have exceeded your maximum storage limit of "
                                   f"{limits.volume_gib} GiB ({used} GiB in use, {gib} GiB requested).")

    def add_at_launch(self, tx: Txn, owner: str, instance_id: str, zone: str, specs: list[LaunchVolume],
                      now: float) -> list[str]:
        """Put the launch's volumes, already attached, in the launch's own transaction."""
        ids = []
        for spec in specs:
            vol = Volume(id=new_id("vol"), owner=owner, zone=zone, size=spec.size, volume_type=spec.volume_type,
                         state="in-use", created=now, snapshot_id=spec.snapshot_id, instance_id=instance_id,
                         device=spec.device, target=spec.target, attach_state="attached", attach_time=now,
                         delete_on_termination=spec.delete_on_termination)
            tx.put(vol)
            ids.append(vol.id)
        return ids

    def add_root_at_launch(self, tx: Txn, owner: str, instance_id: str, zone: str, spec: RootSpec, size: int,
                           image_id: str, now: float) -> Volume:
        """Put the instance's root volume, attached, in the launch's own transaction. Its file
        is made before the instance's domain is first defined (compute prepares the files)."""
        vol = Volume(id=new_id("vol"), owner=owner, zone=zone, size=size, volume_type=spec.volume_type,
                     state="in-use", created=now, instance_id=instance_id, device=spec.device, target=ROOT_TARGET,
                     attach_state="attached", attach_time=now, delete_on_termination=spec.delete_on_termination,
                     image_id=image_id)
        tx.put(vol)
        return vol

    def make_launch_files(self, instance_id: str, ids: list[str]) -> None:
        """Queued before the instance's launch, which so finds the files in place."""
        for vid in ids:
            self._serial((vid, instance_id), self._make_file(vid, expect="in-use"))

    async def _make_file(self, vid: str, expect: str = "creating") -> None:
        vol = self.table.get(vid)
        if vol is None or vol.state != expect:
            return
        path = self.volume_path(vid)
        t0 = time.perf_counter()
        try:
            if vol.snapshot_id:
                await self.storage.copy(self.snapshot_path(vol.snapshot_id), path)
                if (await self.storage.info(path)).virtual_size < vol.size * GIB:
                    await self.storage.resize(path, vol.size)
            else:
                await self.storage.create(path, vol.size)
        except StorageError as e:
            log.error("volume %s: creating %s failed: %s", vid, path, e)
            self._update_volume(vid, lambda v: v.state == expect, state="error", state_message=str(e))
            return
        log.debug("volume %s: file ready in %.0f ms", vid, (time.perf_counter() - t0) * 1000)
        self._update_volume(vid, lambda v: v.state == "creating", state="available")

    # -- DescribeVolumes -----------------------------------------------------------------------
    def describe(self, caller: Caller, query: Query) -> tuple[list[Volume], str | None]:
        ids = list(query.ids)
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "volumes",
                          not_with_ids="The parameter volumeSet cannot be used with the parameter maxResults")
        pool = _by_ids(self._by_owner.get(caller.account), ids, "vol", "Volume", "volume")
        caller.check_dry_run()
        rows = {k: v for k, v in pool.items() if match(v)} if match else pool
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    # -- DeleteVolume --------------------------------------------------------------------------
    async def delete(self, caller: Caller, volume_id: str) -> None:
        vol = self._volume(caller, volume_id)
        if vol.instance_id is not None:
            raise CloudError.conflict("VolumeInUse", f"Volume {vol.id} is currently attached to {vol.instance_id}")
        caller.check_dry_run()
        if vol.state == "deleting":
            return
        with self.store.txn() as tx:
            tx.put(replace(vol, state="deleting"))
        await self.store.sync()
        self._serial((vol.id,), self._remove_file(vol.id))

    async def _remove_file(self, vid: str) -> None:
        vol = self.table.get(vid)
        if vol is None or vol.state != "deleting":
            return
        try:
            await self.storage.delete(self.volume_path(vid))
        except StorageError as e:
            log.error("volume %s: deleting its file failed: %s", vid, e)
            self._update_volume(vid, lambda v: v.state == "deleting", state="error", state_message=str(e))
            return
        with self.store.txn() as tx:
            tx.delete(vol)
            self.tags.remove_all(tx, vid)
        self.store.flush()

    # -- AttachVolume / DetachVolume -----------------------------------------------------------
    async def attach(self, caller: Caller, volume_id: str, instance_id: str, device: str) -> Volume:
        vol = self._volume(caller, volume_id or "")
        inst = self._instance(caller, instance_id or "")
        device = device or ""
        as_root = device in ROOT_DEVICES
        target = ROOT_TARGET if as_root else device_target(device)
        if vol.instance_id is not None:
            raise CloudError.conflict("VolumeInUse", f"{vol.id} is already attached to an instance")
        if vol.state != "available":
            raise CloudError.wrong_state("IncorrectState", f"The volume '{vol.id}' is '{vol.state}', not 'available'")
        if inst.state not in ("running", "stopped"):
            raise CloudError.wrong_state("IncorrectInstanceState",
                                         f"The instance '{inst.id}' is '{inst.state}'; volumes attach to running or "
                                         f"stopped instances")
        if inst.zone != vol.zone:
            raise CloudError("InvalidVolume.ZoneMismatch",
                             f"The volume '{vol.id}' is not in the same availability zone as instance '{inst.id}'")
        if any(v.target == target for v in self._by_instance.get(inst.id).values()) or \
                any(target_of(e.partition("=")[2]) == target for e in inst.ephemeral):
            raise CloudError("InvalidParameterValue", f"Invalid value '{device}' for unixDevice. "
                             f"Attachment point {device} is already in use")
        if as_root:
            # EC2's way back from a lost root disk: a stopped instance whose root was detached
            # takes another volume at its root device name.
            if inst.root_device is None or device != inst.root_device:
                raise CloudError("InvalidParameterValue", f"Invalid value '{device}' for unixDevice. "
                                 f"{device} is the root device name; the root of {inst.id} is "
                                 f"{inst.root_device or 'not a volume'}")
            if inst.state != "stopped":
                raise CloudError.wrong_state("IncorrectInstanceState",
                                             f"The instance '{inst.id}' must be stopped to attach a root volume")
        caller.check_dry_run()
        new = replace(vol, state="in-use", instance_id=inst.id, device=device, target=target,
                      attach_state="attaching", attach_time=time.time(), delete_on_termination=False)
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()
        self._serial((vol.id, inst.id), self._plug(vol.id))
        return new

    async def _plug(self, vid: str) -> None:
        vol = self.table.get(vid)
        if vol is None or vol.attach_state != "attaching" or vol.instance_id is None or vol.target is None:
            return
        inst = self.instances.get(vol.instance_id)
        driver = self.drivers.get(inst.host) if inst is not None else None
        try:
            if vol.image_id is not None:
                await self.ensure_file(vol, self.image_file(vol.image_id))
        except StorageError as e:
            log.error("volume %s: making its file failed: %s", vid, e)
            self._update_volume(vid, lambda v: v.attach_state == "attaching", **_DETACHED)
            return
        # A root volume is not hot-plugged: its instance is stopped, and its next definition has it.
        if inst is not None and driver is not None and inst.state != "terminated" and not is_root(vol):
            try:
                await driver.attach_disk(inst.id, str(self.volume_path(vid)), vol.target)
            except HypervisorError as e:
                # No domain (yet): the next definition rendered for the instance has the disk.
                if not e.not_found:
                    log.error("volume %s: attaching to %s as %s failed: %s", vid, inst.id, vol.target, e)
                    self._update_volume(vid, lambda v: v.attach_state == "attaching", **_DETACHED)
                    return
        self._update_volume(vid, lambda v: v.attach_state == "attaching", attach_state="attached")

    async def detach(self, caller: Caller, volume_id: str, instance_id: str | None = None,
                     device: str | None = None, force: bool = False) -> Volume:
        """Detach from its instance; `instance_id` and `device`, if given, must be where it is."""
        vol = self._volume(caller, volume_id or "")
        if vol.instance_id is None:
            raise CloudError.wrong_state("IncorrectState", f"Volume '{vol.id}' is in the '{vol.state}' state.")
        iid = instance_id
        if iid:
            self._instance(caller, iid)
        if (iid and iid != vol.instance_id) or (device and device != vol.device):
            raise CloudError.not_found("InvalidAttachment.NotFound",
                                       f"Volume '{vol.id}' is not attached to '{iid or vol.instance_id}'"
                                       + (f" as '{device}'" if device else ""))
        if is_root(vol):
            holder = self.instances.get(vol.instance_id or "")
            if holder is not None and holder.state not in ("stopped", "terminated"):
                raise CloudError.wrong_state("IncorrectInstanceState",
                                             f"Unable to detach root volume '{vol.id}' from instance "
                                             f"'{vol.instance_id}'; stop the instance first")
        caller.check_dry_run()
        if vol.attach_state == "detaching" and not force:
            return vol
        new = replace(vol, attach_state="detaching")
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()
        self._serial((vol.id, vol.instance_id), self._unplug(vol.id, force))
        return new

    async def _unplug(self, vid: str, force: bool = False) -> None:
        vol = self.table.get(vid)
        if vol is None or vol.attach_state != "detaching" or vol.instance_id is None:
            return
        inst = self.instances.get(vol.instance_id)
        driver = self.drivers.get(inst.host) if inst is not None else None
        if inst is not None and driver is not None and inst.state != "terminated" and vol.target \
                and not is_root(vol):   # a stopped instance's root: its next definition lacks it
            try:
                await driver.detach_disk(inst.id, vol.target,
                                         timeout=FORCED_DETACH_TIMEOUT_S if force else DETACH_TIMEOUT_S)
            except HypervisorError as e:
                if not e.not_found:
                    if not force:
                        log.error("volume %s: detaching from %s failed: %s", vid, inst.id, e)
                        self._update_volume(vid, lambda v: v.attach_state == "detaching", attach_state="attached")
                        return
                    log.warning("volume %s: forced detach from %s: %s", vid, inst.id, e)
        self._update_volume(vid, lambda v: v.attach_state == "detaching", **_DETACHED)

    def release_instance(self, instance_id: str, tx: Txn | None = None) -> list[str]:
        """The instance is gone (terminated): its volumes are detached, or deleted if flagged
        DeleteOnTermination. With `tx`, the change joins the caller's transaction; without,
        it is its own and flushed. Returns the ids of the volumes released."""
        vols = list(self._by_instance.get(instance_id).values())
        if not vols:
            return []

        def apply(t: Txn) -> None:
            for v in vols:
                if v.delete_on_termination:
                    t.put(replace(v, state="deleting", **_DETACHED_KEEP_STATE))
                else:
                    t.put(replace(v, **_DETACHED))
        if tx is not None:
            apply(tx)
        else:
            with self.store.txn() as own:
                apply(own)
            self.store.flush()
        for v in vols:
            if v.delete_on_termination:
                self._serial((v.id,), self._remove_file(v.id))
        return [v.id for v in vols]

    # -- snapshots -----------------------------------------------------------------------------
    async def create_snapshot(self, caller: Caller, volume_id: str, description: str = "",
                              tags: tuple[tuple[str, str], ...] = ()) -> Snapshot:
        vol = self._volume(caller, volume_id or "")
        if vol.state not in ("available", "in-use"):
            raise CloudError.wrong_state("IncorrectState", f"The volume '{vol.id}' is '{vol.state}'")
        description = description or ""
        if len(description) > 255:
            raise CloudError("InvalidParameterValue", "Snapshot descriptions are limited to 255 characters")
        caller.check_dry_run()
        snap = Snapshot(id=new_id("snap"), owner=caller.account, volume_id=vol.id, volume_size=vol.size,
                        state="pending", started=time.time(), description=description, progress="0%")
        with self.store.txn() as tx:
            tx.put(snap)
            if tags:
                self.tags.put(tx, caller.account, snap.id, "snapshot", list(tags))
        await self.store.sync()
        # With the instance's key: a root volume's file may still be being made by its launch.
        self._serial((vol.id, snap.id, vol.instance_id), self._copy_to_snapshot(snap.id))
        return snap

    async def _copy_to_snapshot(self, sid: str) -> None:
        snap = self.snapshots.get(sid)
        if snap is None or snap.state != "pending":
            return
        try:
            vol = self.table.get(snap.volume_id)
            if vol is not None and vol.image_id is not None:
                await self.ensure_file(vol, self.image_file(vol.image_id))
            await self.storage.copy(self.volume_path(snap.volume_id), self.snapshot_path(sid))
        except StorageError as e:
            log.error("snapshot %s of %s failed: %s", sid, snap.volume_id, e)
            self._update_snapshot(sid, state="error", state_message=str(e))
            return
        self._update_snapshot(sid, state="completed", progress="100%", completed_at=time.time())

    def describe_snapshots(self, caller: Caller, query: Query, owners: tuple[str, ...] = (),
                           restorable_by: tuple[str, ...] = ()) -> tuple[list[Snapshot], str | None]:
        """The caller's snapshots; naming owners or users who may restore them that are not the
        caller (or `self`) selects none, snapshots being private to their owner."""
        ids = list(query.ids)
        match = self.snapshot_filters.compile(query.filters)
        page = query.page(5, 1000, "snapshots", list(owners), list(restorable_by),
                          not_with_ids="The parameter snapshotSet cannot be used with the parameter maxResults")
        pool = _by_ids(self._snaps_by_owner.get(caller.account), ids, "snap", "Snapshot", "snapshot")
        caller.check_dry_run()
        # Snapshots are private: only their owner sees them, and only they may restore them.
        me = {"self", caller.account}
        if (owners and not me & set(owners)) or (restorable_by and not me & set(restorable_by)):
            pool = {}
        rows = {k: s for k, s in pool.items() if match(s)} if match else pool
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    async def delete_snapshot(self, caller: Caller, snapshot_id: str) -> None:
        snap = self._snapshot(caller, snapshot_id)
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.delete(snap)
            self.tags.remove_all(tx, snap.id)
        await self.store.sync()
        # After any copy into it or volume made from it (same chain key).
        self._serial((snap.id,), self._remove_snapshot_file(snap.id))

    async def _remove_snapshot_file(self, sid: str) -> None:
        if self.snapshots.get(sid) is not None:
            return
        try:
            await self.storage.delete(self.snapshot_path(sid))
        except StorageError as e:
            log.error("snapshot %s: deleting its file failed: %s", sid, e)

    # -- recording outcomes --------------------------------------------------------------------
    def _update_volume(self, vid: str, still: Any, **updates: Any) -> Volume | None:
        """Record the end of a step, unless the volume changed meanwhile (then `still` fails).

        Not awaited to disk, as in compute: a lost record leaves the volume in its transitional
        state, and `reconcile` at start-up does the (idempotent) step again.
        """
        vol = self.table.get(vid)
        if vol is None or not still(vol):
            return vol
        new = replace(vol, **updates)
        with self.store.txn() as tx:
            tx.put(new)
        self.store.flush()
        return new

    def _update_snapshot(self, sid: str, **updates: Any) -> None:
        snap = self.snapshots.get(sid)
        if snap is None or snap.state != "pending":
            return
        with self.store.txn() as tx:
            tx.put(replace(snap, **updates))
        self.store.flush()

    # -- background work -----------------------------------------------------------------------
    def _serial(self, keys: Iterable[str | None], coro: Coroutine[Any, Any, None]) -> None:
        self.work.run(keys, coro)

    def reconcile(self) -> list[str]:
        """Re-drive what a previous run left transitional (called once at start-up)."""
        report: list[str] = []
        for v in list(self.table.values()):
            if v.state == "creating":
                report.append(f"{v.id}: was being created; creating its file again")
                self._serial((v.id, *((v.snapshot_id,) if v.snapshot_id else ())), self._make_file(v.id))
            elif v.state == "deleting":
                report.append(f"{v.id}: was being deleted; deleting it")
                self._serial((v.id,), self._remove_file(v.id))
            elif v.attach_state == "attaching" and v.instance_id:
                report.append(f"{v.id}: was being attached to {v.instance_id}; attaching it")
                self._serial((v.id, v.instance_id), self._plug(v.id))
            elif v.attach_state == "detaching" and v.instance_id:
                report.append(f"{v.id}: was being detached from {v.instance_id}; detaching it")
                self._serial((v.id, v.instance_id), self._unplug(v.id))
        for s in list(self.snapshots.values()):
            if s.state == "pending":
                report.append(f"{s.id}: was being taken; copying {s.volume_id} again")
                self._serial((s.volume_id, s.id), self._copy_to_snapshot(s.id))
        for line in report:
            log.warning("reconcile: %s", line)
        return report

    async def idle(self) -> None:
        await self.work.idle()

    async def close(self, timeout: float = 30.0) -> None:
        await self.work.close(timeout)


_DETACHED_KEEP_STATE: dict[str, Any] = dict(instance_id=None, device=None, target=None, attach_state=None,
                                            attach_time=None, delete_on_termination=False)
_DETACHED: dict[str, Any] = dict(state="available", **_DETACHED_KEEP_STATE)


def _in_range(value: int | None, bounds: tuple[int, int], name: str) -> int:
    lo, hi = bounds
    if value is None:
        return lo
    if not lo <= value <= hi:
        raise CloudError("InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid. "
                         f"Expecting a value between {lo} and {hi}.")
    return value


def _by_ids(mine: Mapping[str, R], ids: list[str], prefix: str, kind: str, noun: str) -> Mapping[str, R]:
    """The caller's rows named by `ids` (all of them, when none are named); any malformed or
    unknown id fails the whole call, as EC2's Describe* do."""
    if not ids:
        return mine
    for i in ids:
        if not well_formed(i, prefix):
            raise CloudError(f"Invalid{kind}ID.Malformed", f"Invalid id: \"{i}\" (expecting \"{prefix}-...\")")
    missing = [i for i in ids if i not in mine]
    if missing:
        raise CloudError.not_found(f"Invalid{kind}.NotFound",
                                   f"The {noun} {', '.join(repr(i) for i in missing)} does not exist.")
    return {i: mine[i] for i in ids}
