"""Launch configurations: what a group's launches ask for, checked when made (the image, type,
key pair and security groups exist for the account) and immutable afterwards, as in AWS."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from ...slim import dataclass
from ...store.records import LaunchConfiguration
from ...store.store import MultiIndex, Store
from ..context import Caller
from ..errors import CloudError
from ..images import Images
from ..keypairs import KeyPairs
from ..launch import BlockDevice, LaunchSpec
from ..security_groups import SecurityGroups
from .model import already_exists, arn, check_name, in_use, key, limit_exceeded, page, validation


@dataclass(frozen=True, slots=True)
class LaunchConfigInput:
    """CreateLaunchConfiguration in the core's terms (the API turns the wire request into it)."""
    name: str
    image_id: str
    instance_type: str
    key_name: str | None = None
    security_groups: tuple[str, ...] = ()
    user_data: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    associate_public_ip: bool | None = None
    monitoring: bool = True
    block_devices: tuple[BlockDevice, ...] = ()


class LaunchConfigs:
    def __init__(self, store: Store, region: str, images: Images, keypairs: KeyPairs,
                 security_groups: SecurityGroups, instance_type: Callable[[str], object],
                 in_use_by: Callable[[str, str], str | None], max_per_owner: int) -> None:
        self.store = store
        self.region = region
        self.images = images
        self.keypairs = keypairs
        self.security_groups = security_groups
        self.instance_type = instance_type
        self.in_use_by = in_use_by   # (owner, name) -> a group using it, or None
        self.max_per_owner = max_per_owner
        self.table = store.table(LaunchConfiguration)
        self._by_owner: MultiIndex[LaunchConfiguration] = self.table.add_index(MultiIndex(lambda r: r.owner))

    def get(self, owner: str, name: str) -> LaunchConfiguration | None:
        return self.table.get(key(owner, name))

    def count(self, owner: str) -> int:
        return len(self._by_owner.get(owner))

    def named(self, owner: str, name: str) -> LaunchConfiguration:
        lc = self.get(owner, name)
        if lc is None:
            raise validation(f"Launch configuration name not found - Launch configuration {name} not found")
        return lc

    def _check(self, caller: Caller, spec: LaunchConfigInput) -> None:
        """What the configuration names exists for the caller; EC2's refusals in AutoScaling's words."""
        try:
            self.images.visible(caller, spec.image_id)
            if spec.kernel_id:
                self.images.visible(caller, spec.kernel_id, "kernel")
            if spec.ramdisk_id:
                self.images.visible(caller, spec.ramdisk_id, "ramdisk")
            self.instance_type(spec.instance_type)
            if spec.key_name and self.keypairs.by_name(caller.account, spec.key_name) is None:
                raise validation(f"The key pair '{spec.key_name}' does not exist")
            ids = [g for g in spec.security_groups if g.startswith("sg-")]
            names = [g for g in spec.security_groups if not g.startswith("sg-")]
            self.security_groups.for_launch(caller, ids, names, {})
        except CloudError as e:
            if e.code == "ValidationError":
                raise
            raise validation(e.message) from None
        if spec.user_data is not None and len(spec.user_data) > 21847:
            raise validation("UserData must be at most 21847 characters (16 KiB base64-encoded)")

    async def create(self, caller: Caller, spec: LaunchConfigInput) -> LaunchConfiguration:
        check_name("launchConfigurationName", spec.name)
        if self.get(caller.account, spec.name) is not None:
            raise already_exists(f"Launch Configuration by this name already exists - A launch configuration "
                                 f"already exists with the name {spec.name}")
        if self.count(caller.account) >= self.max_per_owner:
            raise limit_exceeded(f"Launch configuration limit exceeded: you may have {self.max_per_owner}")
        self._check(caller, spec)
        caller.check_dry_run()
        devices = tuple({"device": d.device, "size": d.size, "volume_type": d.volume_type,
                         "snapshot_id": d.snapshot_id, "delete_on_termination": d.delete_on_termination}
                        for d in spec.block_devices)
        lc = LaunchConfiguration(
            id=key(caller.account, spec.name), owner=caller.account, name=spec.name,
            arn=arn(self.region, caller.account, "launchConfiguration", str(uuid.uuid4()),
                    f"launchConfigurationName/{spec.name}"),
            image_id=spec.image_id, instance_type=spec.instance_type, created=time.time(), key_name=spec.key_name,
            security_groups=spec.security_groups, user_data=spec.user_data, kernel_id=spec.kernel_id,
            ramdisk_id=spec.ramdisk_id, associate_public_ip=spec.associate_public_ip, monitoring=spec.monitoring,
            block_devices=devices)
        with self.store.txn() as tx:
            tx.put(lc)
        await self.store.sync()
        return lc

    def describe(self, caller: Caller, names: Sequence[str], max_records: int | None,
                 token: str | None) -> tuple[list[LaunchConfiguration], str | None]:
        mine = self._by_owner.get(caller.account)
        keys = sorted(n for n in (r.name for r in mine.values()) if not names or n in names)
        got, nxt = page(keys, max_records, token, "launch-configurations", 50, 100, sorted(names))
        return [mine[key(caller.account, n)] for n in got], nxt

    async def delete(self, caller: Caller, name: str) -> None:
        lc = self.named(caller.account, name)
        user = self.in_use_by(caller.account, name)
        if user is not None:
            raise in_use(f"Cannot delete launch configuration {name} because it is attached to "
                         f"AutoScalingGroup {user}")
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.delete(lc)
        await self.store.sync()

    @staticmethod
    def spec(lc: LaunchConfiguration) -> LaunchSpec:
        """A launch from this configuration (zone, subnet, token, owner and tags added by the group)."""
        sgs = lc.security_groups
        devices = tuple(BlockDevice(device=d["device"], size=d.get("size"), volume_type=d.get("volume_type"),
                                    snapshot_id=d.get("snapshot_id"),
                                    delete_on_termination=d.get("delete_on_termination", True))
                        for d in lc.block_devices)
        spec = LaunchSpec(image_id=lc.image_id, instance_type=lc.instance_type, kernel_id=lc.kernel_id,
                          ramdisk_id=lc.ramdisk_id, key_name=lc.key_name, user_data=lc.user_data,
                          group_ids=tuple(g for g in sgs if g.startswith("sg-")),
                          group_names=tuple(g for g in sgs if not g.startswith("sg-")), block_devices=devices)
        if lc.associate_public_ip is not None:
            spec = replace(spec, public_ip=lc.associate_public_ip)
        return spec
