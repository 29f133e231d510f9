"""Machine images: files in the image store, registered with their size and sha256."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..drivers import fetcher
from ..drivers.storage.base import GIB, StorageDriver, StorageError
from ..slim import dataclass
from ..store.records import Image, Instance, Volume
from ..store.store import MultiIndex, Store
from .context import Caller
from .errors import CloudError, not_found
from .filters import FilterSet
from .ids import new_id, well_formed
from .query import Query
from .tags import Tags
from .users import LIVE_STATES

log = logging.getLogger("cloudctl.images")

CLOUD_OWNER = "cloudctl"     # owner id of the images the cloud itself provides
MARKET_OWNER = "marketplace"  # owner id of images from subscribed image lists
PREFIX = {"machine": "ami", "kernel": "aki", "ramdisk": "ari"}
_TYPE_OF_PREFIX = {v: k for k, v in PREFIX.items()}
# AWS's AMI name alphabet: letters, digits and ( ) [ ] space . / - ' @ _ (no control characters).
_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]*")


ROOT_DEVICE_NAME = "/dev/vda"   # the root device of every image here (core.volumes.ROOT_DEVICE)


def root_device_type(im: Image) -> str:
    """Machine images launch EBS-backed (their root disk becomes a volume); kernels and ramdisks
    are files the hypervisor reads, not disks."""
    return "ebs" if im.image_type == "machine" else "instance-store"


@dataclass(frozen=True, slots=True)
class ImageRegistration:
    """RegisterImage: `location` is a file in the image store, or an http(s) URL to fetch (for
    clouds that let users do so); `tags` are checked (key, value) pairs."""
    name: str
    location: str | None
    description: str = ""
    architecture: str = "x86_64"
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class Images:
    def __init__(self, store: Store, tags: Tags, image_store: Path, allow_urls: bool,
                 storage: StorageDriver, allow_local_urls: bool = False) -> None:
        self.storage = storage
        self.allow_urls = allow_urls   # may users make the controller fetch URLs (RegisterImage)?
        self.allow_local_urls = allow_local_urls   # ...at loopback/link-local addresses?
        self.store = store
        self.tags = tags
        self.dir = image_store
        self.table = store.table(Image)
        self._by_owner: MultiIndex[Image] = self.table.add_index(MultiIndex(lambda i: i.owner))
        self._public: MultiIndex[Image] = self.table.add_index(
            MultiIndex(lambda i: "public" if i.public else None))
        self.filters = FilterSet({
            "image-id": lambda i: i.id,
            "name": lambda i: i.name,
            "description": lambda i: i.description,
            "state": lambda i: i.state,
            "owner-id": lambda i: i.owner,
            "owner-alias": lambda i: CLOUD_OWNER if i.owner == CLOUD_OWNER else None,
            "is-public": lambda i: i.public,
            "architecture": lambda i: i.architecture,
            "image-type": lambda i: i.image_type,
            "kernel-id": lambda i: i.kernel_id,
            "ramdisk-id": lambda i: i.ramdisk_id,
            "virtualization-type": lambda i: "hvm",
            "root-device-type": lambda i: root_device_type(i),
            "root-device-name": lambda i: ROOT_DEVICE_NAME,
            "block-device-mapping.device-name": lambda i: ROOT_DEVICE_NAME if i.image_type == "machine" else None,
            "block-device-mapping.volume-type": lambda i: "gp2" if i.image_type == "machine" else None,
            "block-device-mapping.delete-on-termination": lambda i: True if i.image_type == "machine" else None,
            "hypervisor": lambda i: "xen",
        }, tags_of=lambda i: tags.of(i.id))
        tags.register("image", self._check_owner)
        self._captures: set[asyncio.Task[None]] = set()
        # Downloads in flight or done since start: image id -> (bytes done, total, error).
        self.progress: dict[str, tuple[int, int | None, str]] = {}

    def _check_owner(self, caller: Caller, image_id: str) -> None:
        im = self.table.get(image_id)
        if im is None or im.owner != caller.account:
            raise not_found("AMIID", image_id)

    async def disk_format(self, path: Path) -> str:
        """raw, qcow2, ... as `qemu-img info` probes it (kernels and ramdisks come out raw)."""
        return (await self.probe(path))[0]

    async def probe(self, path: Path) -> tuple[str, int]:
        """(format, virtual size in bytes) as `qemu-img info` finds them."""
        try:
            info = await self.storage.info(path)
        except StorageError as e:
            raise CloudError("InvalidParameterValue",
                             f"{path.name} is not a disk image qemu-img can read: {e}") from None
        if info.references:
            # qemu would open that file for the guest: a way to read the host's files.
            raise CloudError("InvalidParameterValue", f"{path.name} refers to another file ({info.references[0]}); "
                             f"images must be self-contained (flatten it with qemu-img convert)")
        return info.format, info.virtual_size

    @staticmethod
    def min_root_gib(image: Image) -> int:
        """The smallest root volume that holds the image's disk (1 when its size is unknown)."""
        return max(1, -(-image.virtual_size // GIB))

    def path_of(self, image: Image) -> Path:
        return self.dir / image.path

    def file_of(self, image_id: str) -> Path | None:
        """The file of a registered image, None if it is gone (or not yet downloaded)."""
        im = self.table.get(image_id)
        return self.path_of(im) if im is not None and im.state == "available" else None

    def visible(self, caller: Caller, image_id: str, image_type: str | None = "machine") -> Image:
        """An image the caller may use: their own or a public one, of the given type (any if None)."""
        if image_type is None:
            image_type = _TYPE_OF_PREFIX.get(image_id.partition("-")[0], "machine")
        prefix = PREFIX[image_type]
        if not well_formed(image_id, prefix):
            raise CloudError("InvalidAMIID.Malformed", f"Invalid id: \"{image_id}\" (expecting \"{prefix}-...\")")
        im = self.table.get(image_id)
        if im is None or not (im.public or im.owner == caller.account):
            raise not_found("AMIID", image_id)
        return im

    def boot_files(self, image: Image, kernel_id: str | None = None,
                   ramdisk_id: str | None = None) -> tuple[Path | None, Path | None]:
        """The kernel and initrd a machine image boots with, if it boots from a kernel image."""
        out: list[Path | None] = []
        for wanted in (kernel_id or image.kernel_id, ramdisk_id or image.ramdisk_id):
            im = self.table.get(wanted) if wanted else None
            out.append(self.path_of(im) if im is not None else None)
        return out[0], out[1]

    def _boot_ids(self, caller: Caller, kernel_id: str | None, ramdisk_id: str | None) -> None:
        if kernel_id:
            self.visible(caller, kernel_id, "kernel")
        if ramdisk_id:
            self.visible(caller, ramdisk_id, "ramdisk")
        if ramdisk_id and not kernel_id:
            raise CloudError("InvalidParameterCombination", "A RamdiskId needs a KernelId")

    def check_user_name(self, owner: str, name: str) -> None:
        """A name a user gives an image: AWS's length, alphabet and per-owner uniqueness."""
        if not _AMI_NAME.fullmatch(name):
            raise CloudError("InvalidParameterValue", "AMI names may contain only letters, digits, spaces and "
                             "( ) [ ] . / - ' @ _")
        self.check_name(owner, name)

    def _store_file(self, location: str) -> str | None:
        """`location` relative to the image store if it names a file inside it (runs on a thread)."""
        try:
            root = self.dir.resolve()
            path = (root / location).resolve()
            return str(path.relative_to(root)) if path.is_relative_to(root) and path.is_file() else None
        except (OSError, ValueError):   # NUL bytes, names too long, loops: no such file
            return None

    def check_name(self, owner: str, name: str) -> None:
        if not 3 <= len(name) <= 128:
            raise CloudError("InvalidParameterValue", "AMI names must be between 3 and 128 characters long")
        if any(i.name == name for i in self._by_owner.get(owner).values()):
            raise CloudError.conflict("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")

    async def _register(self, owner: str, name: str, rel_path: str, description: str, public: bool,
                        tag_pairs: list[tuple[str, str]] | None = None, image_type: str = "machine",
                        kernel_id: str | None = None, ramdisk_id: str | None = None) -> Image:
        path = self.dir / rel_path
        loop = asyncio.get_running_loop()
        size, digest = await loop.run_in_executor(None, hash_file, path)
        fmt, vsize = await self.probe(path)
        self.check_name(owner, name)  # again, after the await
        im = Image(id=new_id(PREFIX[image_type]), owner=owner, name=name, path=rel_path, size=size,
                   sha256=digest, created=time.time(), description=description, public=public,
                   disk_format=fmt, image_type=image_type, kernel_id=kernel_id, ramdisk_id=ramdisk_id,
                   virtual_size=vsize)
        with self.store.txn() as tx:
            tx.put(im)
            if tag_pairs:
                self.tags.put(tx, owner, im.id, "image", tag_pairs)
        await self.store.sync()
        return im

    async def register(self, caller: Caller, reg: ImageRegistration) -> Image:
        """RegisterImage: `reg.location` names a file already in the image store (or a URL)."""
        name = reg.name
        location = reg.location
        if location and location.startswith(("http://", "https://")):
            if not self.allow_urls:
                raise CloudError("InvalidParameterValue",
                                 "Registering images from URLs is reserved to the cloud's admins here")
            self.check_user_name(caller.account, name)
            caller.check_dry_run()
            return await self.fetch(caller.account, name, location, reg.description,
                                    kernel_id=reg.kernel_id, ramdisk_id=reg.ramdisk_id)
        if not location:
            raise CloudError("MissingParameter", "The request must contain the parameter ImageLocation")
        self.check_user_name(caller.account, name)
        arch = reg.architecture
        if arch != "x86_64":
            raise CloudError("InvalidParameterValue", f"Architecture '{arch}' is not supported (x86_64 only)")
        rel = await asyncio.to_thread(self._store_file, location)
        # A file only other accounts' private images use is not the caller's to register (it
        # would expose their data); the answer is the same as for a missing file. A file a
        # public image uses stays open to all, whoever else registered it privately.
        users = [i for i in self.table.values() if i.path == rel] if rel is not None else []
        taken = bool(users) and not any(i.public or i.owner == caller.account for i in users)
        if rel is None or taken:
            shown = location if len(location) <= 200 else location[:200] + "..."
            raise CloudError("InvalidParameterValue", f"ImageLocation '{shown}' is not a file in the image store")
        self._boot_ids(caller, reg.kernel_id, reg.ramdisk_id)
        caller.check_dry_run()
        return await self._register(caller.account, name, rel, reg.description, False, list(reg.tags),
                                    kernel_id=reg.kernel_id, ramdisk_id=reg.ramdisk_id)

    def image_row(self, owner: str, name: str, rel_path: str, size: int, sha256: str, disk_format: str,
                  virtual_size: int, description: str, architecture: str = "x86_64") -> Image:
        """A new, available machine image of a file already in the store (ImportImage); the
        caller puts it, in its own transaction."""
        return Image(id=new_id("ami"), owner=owner, name=name, path=rel_path, size=size, sha256=sha256,
                     created=time.time(), description=description, disk_format=disk_format,
                     architecture=architecture, virtual_size=virtual_size)

    async def capture(self, owner: str, name: str, description: str, disk: Path,
                      kernel_id: str | None, ramdisk_id: str | None,
                      tag_pairs: list[tuple[str, str]] | None, copy: Callable[[Path, Path], Awaitable[None]]) -> Image:
        """CreateImage: record a `pending` image at once, flatten the disk into the store after.

        The answer carries the new id; DescribeImages shows `available` (or `failed`) once the
        copy is done, which is what the ImageAvailable waiter polls for.
        """
        self.check_name(owner, name)
        rel = f"{new_id('img')}.qcow2"
        im = Image(id=new_id("ami"), owner=owner, name=name, path=rel, size=0, sha256="", created=time.time(),
                   description=description, state="pending", disk_format="qcow2",
                   kernel_id=kernel_id, ramdisk_id=ramdisk_id)
        with self.store.txn() as tx:
            tx.put(im)
            if tag_pairs:
                self.tags.put(tx, owner, im.id, "image", tag_pairs)
        await self.store.sync()
        self._background(self._finish_capture(im.id, disk, copy))
        return im

    @property
    def pending(self) -> int:
        """Captures and downloads still running."""
        return len(self._captures)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._captures.add(task)
        task.add_done_callback(self._captures.discard)

    def _settle(self, image_id: str, updates: dict[str, Any]) -> None:
        """Record how a pending image ended (available or failed); nobody awaits it."""
        im = self.table.get(image_id)
        if im is not None:
            with self.store.txn() as tx:
                tx.put(replace(im, **updates))
            self.store.flush()

    async def _finish_capture(self, image_id: str, disk: Path, copy: Callable[[Path, Path], Awaitable[None]]) -> None:
        im = self.table.get(image_id)
        if im is None:
            return
        dst = self.dir / im.path
        updates: dict[str, Any]
        try:
            await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
            await copy(disk, dst)
            size, digest = await asyncio.to_thread(hash_file, dst)
            _, vsize = await self.probe(dst)
            updates = {"state": "available", "size": size, "sha256": digest, "virtual_size": vsize}
        except Exception as e:  # the image says failed; nothing else depends on it
            log.error("CreateImage %s from %s failed: %s", image_id, disk, e)
            updates = {"state": "failed"}
        self._settle(image_id, updates)

    async def import_stream(self, name: str, description: str, chunks: AsyncIterator[bytes],
                            expected_sha256: str | None = None, image_type: str = "machine",
                            kernel_id: str | None = None, ramdisk_id: str | None = None) -> Image:
        """Admin import: stream a file into the store (hashing as it arrives), then register it."""
        self.check_name(CLOUD_OWNER, name)
        if image_type not in PREFIX:
            raise CloudError("InvalidParameterValue", f"image type must be one of {', '.join(PREFIX)}")
        for wanted, kind in ((kernel_id, "kernel"), (ramdisk_id, "ramdisk")):
            found = self.table.get(wanted) if wanted else None
            if wanted and (found is None or found.image_type != kind):
                raise CloudError("InvalidParameterValue", f"{wanted} is not a registered {kind} image")
        self.dir.mkdir(parents=True, exist_ok=True)
        img_id_file = f"{new_id('img')}.img"
        tmp = self.dir / (img_id_file + ".part")
        loop = asyncio.get_running_loop()
        h = hashlib.sha256()
        f = await loop.run_in_executor(None, open, tmp, "wb")
        try:
            async for chunk in chunks:
                h.update(chunk)
                await loop.run_in_executor(None, f.write, chunk)
            await loop.run_in_executor(None, _close_synced, f)
            if expected_sha256 and h.hexdigest() != expected_sha256.lower():
                raise CloudError("InvalidParameterValue",
                                 f"sha256 mismatch: expected {expected_sha256}, received {h.hexdigest()}")
            await loop.run_in_executor(None, os.replace, tmp, self.dir / img_id_file)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        return await self._register(CLOUD_OWNER, name, img_id_file, description, True,
                                    image_type=image_type, kernel_id=kernel_id, ramdisk_id=ramdisk_id)

    async def fetch(self, owner: str, name: str, url: str, description: str = "", public: bool = False,
                    sha256: str | None = None, sha512: str | None = None, image_type: str = "machine",
                    kernel_id: str | None = None, ramdisk_id: str | None = None) -> Image:
        """Register an image downloaded from `url`: `pending` now, `available` once it is
        here and verified (`failed` otherwise); `progress` tells how far it got."""
        self.check_name(owner, name)
        # Users' URLs may not point the controller at itself or at the link-local range (SSRF);
        # the admin's may (they are the admin's own servers).
        refuse_local = owner != CLOUD_OWNER and not self.allow_local_urls
        try:
            fetcher.check_url(url, refuse_local)
        except fetcher.FetchError as e:
            raise CloudError("InvalidParameterValue", str(e)) from None
        rel = f"{new_id('img')}.img"
        im = Image(id=new_id(PREFIX.get(image_type, "ami")), owner=owner, name=name, path=rel, size=0,
                   sha256="", created=time.time(), description=description, public=public, state="pending",
                   image_type=image_type, kernel_id=kernel_id, ramdisk_id=ramdisk_id)
        with self.store.txn() as tx:
            tx.put(im)
        await self.store.sync()
        self.progress[im.id] = (0, None, "")
        self._background(self._download(im.id, url, sha256, sha512, refuse_local))
        return im

    async def _download(self, image_id: str, url: str, sha256: str | None, sha512: str | None,
                        refuse_local: bool = False) -> None:
        im = self.table.get(image_id)
        if im is None:
            return
        dest = self.dir / im.path
        updates: dict[str, Any]
        try:
            await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
            got = await fetcher.fetch(url, dest, lambda done, total: self._progress(image_id, done, total),
                                      sha256, sha512, refuse_local=refuse_local)
            fmt, vsize = await self.probe(dest)
            updates = {"state": "available", "size": got.size, "sha256": got.sha256, "disk_format": fmt,
                       "virtual_size": vsize}
            self.progress[image_id] = (got.size, got.size, "")
        except (fetcher.FetchError, OSError, CloudError) as e:
            log.error("image %s from %s: %s", image_id, url, e)
            updates = {"state": "failed", "description": f"{im.description} [failed: {e}]".strip()}
            done, total, _ = self.progress.get(image_id, (0, None, ""))
            self.progress[image_id] = (done, total, str(e))
        self._settle(image_id, updates)

    def _progress(self, image_id: str, done: int, total: int | None) -> None:
        self.progress[image_id] = (done, total, "")

    async def seed(self, name: str, source: Path, description: str) -> Image | None:
        """Register a config-listed image once (copied into the store) if it is not there yet."""
        if any(i.name == name for i in self._by_owner.get(CLOUD_OWNER).values()):
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        rel = f"{name}{source.suffix}"
        await asyncio.get_running_loop().run_in_executor(None, shutil.copyfile, source, self.dir / rel)
        return await self._register(CLOUD_OWNER, name, rel, description, True)

    def describe(self, caller: Caller, query: Query, owners: Sequence[str] = (),
                 include_deprecated: bool = False) -> tuple[list[Image], str | None]:
        """The images the caller may see that `query` selects; `owners` are account ids or "self"."""
        ids = query.ids
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "images", list(owners), include_deprecated)
        if ids and page.limit is not None:
            raise CloudError("InvalidParameterCombination",
                             "The parameter ImageIds cannot be used with the parameter MaxResults")
        if ids:
            found = {}
            missing = []
            for i in ids:
                try:
                    found[i] = self.visible(caller, i, None)
                except CloudError as e:
                    if e.code.endswith("Malformed"):
                        raise
                    missing.append(i)
            if missing:
                raise not_found("AMIID", missing)
            pool = found
        else:
            pool = {**self._public.get("public"), **self._by_owner.get(caller.account)}
        caller.check_dry_run()
        if owners:
            want = {caller.account if o == "self" else o for o in owners}
            pool = {k: i for k, i in pool.items() if i.owner in want}
        if not ids and not include_deprecated:
            # As EC2: deprecated images are left out of listings, except for their owner.
            now = time.time()
            pool = {k: i for k, i in pool.items() if i.owner == caller.account
                    or i.deprecation_time is None or i.deprecation_time > now}
        rows = {k: i for k, i in pool.items() if match(i)}
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    async def deregister(self, caller: Caller, image_id: str) -> None:
        im = self.visible(caller, image_id, None)
        if im.owner != caller.account:
            raise not_found("AMIID", image_id)
        users = [i.id for i in self.store.table(Instance).values()
                 if i.image_id == image_id and i.state in LIVE_STATES]
        users += [m.id for m in self.table.values() if image_id in (m.kernel_id, m.ramdisk_id)]
        # Root volumes are overlays over the image's file, kept ones too (DeleteOnTermination=false).
        users += [v.id for v in self.store.table(Volume).values()
                  if v.image_id == image_id and v.state not in ("deleting", "deleted")]
        if users:
            raise CloudError("InvalidParameterValue",
                             f"Image {image_id} is in use by {len(users)} instance(s), image(s) or root volume(s) "
                             f"(e.g. {users[0]}); remove them before deregistering it")
        caller.check_dry_run()
        with self.store.txn() as tx:
            tx.delete(im)
            self.tags.remove_all(tx, im.id)
        await self.store.sync()


def _close_synced(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
