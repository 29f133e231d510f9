"""The files a real guest needs: its root disk, a config drive, a console log.

What gets prepared follows the admin's domain template: a template that names `$root_disk`
gets the instance's root volume file (a qcow2 overlay over the image, made by the volumes;
instances launched before root disks were volumes keep an overlay in their own directory),
one that names `$config_drive` gets a cloud-init drive. Simulated hosts (libvirt's test
driver) name neither and cost nothing here. The files live under one directory per instance,
removed when the instance is terminated; the root volume lives in the volume store.
"""
from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..config import InstanceType
from ..drivers.storage.base import StorageDriver
from ..store.records import Image, Instance
from ..xmltext import escape
from .configdrive import build_config_drive

ROOT = "root.qcow2"
DRIVE = "config.iso"
CONSOLE = "console.log"


class InstanceFiles:
    def __init__(self, base: Path, storage: StorageDriver) -> None:
        self.base = base
        self.storage = storage
        self._prefix = os.path.join(str(base), "")   # + an instance id: os.path.join's answer
        self._needs: dict[str, bool] = {}   # per template text: does it name any file made here?

    def dir(self, iid: str) -> Path:
        return self.base / iid

    async def prepare(self, inst: Instance, itype: InstanceType, image: Image | None, image_path: Path | None,
                      template: str, public_keys: list[str], hostname: str, gateway: str | None,
                      prefixlen: int | None, dns: list[str] | None = None,
                      root_volume: Callable[[], Awaitable[Path]] | None = None) -> dict[str, str]:
        """Create what the template asks for (once) and return its placeholders' values.

        `root_volume` makes and returns the file of the instance's root volume; without it (an
        instance launched by an older version) the root disk is the overlay in its directory.
        """
        values = self._paths(inst.id)
        if not self._makes_files(template):
            return values
        d = Path(values["instance_dir"])
        await asyncio.to_thread(_mkdir, d)
        if "$root_disk" in template and root_volume is not None:
            values["root_disk"] = str(await root_volume())
        elif "$root_disk" in template:
            root = d / ROOT
            if not root.exists():
                if image_path is None:
                    raise FileNotFoundError(f"image {inst.image_id} of {inst.id} is gone; cannot create its disk")
                await self.storage.create(root, max(itype.disk_gib, inst.root_gib or 0), backing=image_path)
            values["root_disk"] = str(root)
        if "$config_drive" in template:
            drive = d / DRIVE
            user_data = base64.b64decode(inst.user_data) if inst.user_data else None
            ip = f"{inst.private_ip}/{prefixlen}" if inst.private_ip and prefixlen else inst.private_ip
            # Rebuilt at every start: user data and keys may have changed while it was stopped.
            await asyncio.to_thread(build_config_drive, drive, instance_id=inst.id, hostname=hostname,
                                    user_data=user_data, public_keys=public_keys, local_ipv4=ip,
                                    mac=inst.mac, gateway=gateway, dns=dns)
            values["config_drive"] = str(drive)
        return {k: escape(v) for k, v in values.items()}

    def plain(self, iid: str, template: str) -> dict[str, str] | None:
        """`prepare`'s answer when the template names no file made here (nothing to make, so
        nothing to await and none of its arguments to compute); None when it names one."""
        return None if self._makes_files(template) else self._paths(iid)

    def _paths(self, iid: str) -> dict[str, str]:
        # (strings joined, not Paths: a launch on simulated hosts spent more in pathlib than in the rest)
        text = self._prefix + iid
        return {"instance_dir": text, "console_log": text + "/" + CONSOLE}

    def _makes_files(self, template: str) -> bool:
        needs = self._needs.get(template)
        if needs is None:
            needs = self._needs[template] = any(f"${k}" in template for k in ("root_disk", "config_drive",
                                                                              "console_log"))
        return needs

    async def remove(self, iid: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.dir(iid), True)

    def root_disk(self, iid: str) -> Path | None:
        p = self.dir(iid) / ROOT
        return p if p.exists() else None


def _mkdir(d: Path) -> None:
    # Traversable by the hypervisor's qemu user, which opens the disks in it.
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o711)
