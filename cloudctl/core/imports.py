"""ImportImage: a disk image the controller fetches over HTTP(S) and registers as the caller's image.

The call records an `active` task (journaled) and answers; the download runs afterwards, and
its end is recorded on the task: `completed` with the new image's id, or `deleted` with a
`StatusMessage` saying why (nothing is registered then, and no file is left behind). A task
still `active` at start-up was interrupted: its download starts again from the beginning.
CancelImportTask makes an active task `deleting`, then `deleted` once its download stopped.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..drivers import fetcher
from ..drivers.storage.base import StorageError
from ..slim import dataclass
from ..store.records import ImportTask
from ..store.store import MultiIndex, Store
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .ids import new_id
from .images import Images
from .pagination import decode_token, page_size, paginate
from .query import Query
from .tags import Tags

log = logging.getLogger("cloudctl.imports")

PREFIX = "import-ami"
_ID = re.compile(r"^import-ami-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
#: Declared formats -> what `qemu-img info` calls them. Only self-contained ones: VMDK descriptors
#: and differencing VHD/VHDX name other files, which qemu would open for the guest.
FORMATS = {"RAW": "raw", "QCOW2": "qcow2"}
SECTOR = 512


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """ImportImage of one disk image at `url`. `disk_format` is as the user declared it (any
    case), None to take what the file turns out to be; `tags` are checked (key, value) pairs."""
    url: str
    disk_format: str | None = None
    description: str = ""
    architecture: str = "x86_64"
    platform: str = "Linux"
    client_token: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


class ImageImports:
    def __init__(self, store: Store, tags: Tags, images: Images, allow_urls: bool) -> None:
        self.store = store
        self.tags = tags
        self.images = images
        self.allow_urls = allow_urls
        self.table = store.table(ImportTask)
        self._by_owner: MultiIndex[ImportTask] = self.table.add_index(MultiIndex(lambda t: t.owner))
        self.filters = FilterSet({
            "task-state": lambda t: t.state,
            "import-task-id": lambda t: t.id,
            "image-id": lambda t: t.image_id,
        }, tags_of=lambda t: tags.of(t.id))
        tags.register("import-image-task", self._check_owner)
        # In memory only: how far each download got (bytes done, bytes declared); 0 after a restart.
        self.progress: dict[str, tuple[int, int | None]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def _refuse_local(self) -> bool:
        """Users' URLs never reach the controller's own loopback or link-local neighbours (SSRF),
        unless the admin allows it (`user_image_urls_local`, e.g. a test HTTP server)."""
        return not self.images.allow_local_urls

    def _check_owner(self, caller: Caller, task_id: str) -> None:
        self._task(caller, task_id)

    def _task(self, caller: Caller, task_id: str) -> ImportTask:
        if not _ID.match(task_id or ""):
            raise CloudError("InvalidConversionTaskId.Malformed", f"Invalid id: \"{task_id}\" "
                             f"(expecting \"{PREFIX}-...\")")
        t = self._by_owner.get(caller.account).get(task_id)
        if t is None:
            raise CloudError.not_found("InvalidConversionTaskId", f"The import task ID '{task_id}' does not exist")
        return t

    # -- ImportImage ---------------------------------------------------------------------------
    async def start(self, caller: Caller, req: ImportRequest) -> ImportTask:
        token = req.client_token
        if token is not None and not (0 < len(token) <= 64 and token.isascii()):
            raise CloudError("InvalidParameterValue", "ClientToken must be 1-64 ASCII characters")
        if token:
            prior = next((t for t in self._by_owner.get(caller.account).values() if t.client_token == token), None)
            if prior is not None:
                caller.check_dry_run()
                return prior
        url = req.url
        if not url.startswith(("http://", "https://")) or len(url) > 2048:
            raise CloudError("InvalidParameterValue", "The disk image Url must be an http:// or https:// URL")
        if not self.allow_urls:
            raise CloudError("InvalidParameterValue",
                             "Importing images from URLs is reserved to the cloud's admins here")
        try:
            fetcher.check_url(url, self._refuse_local)
        except fetcher.FetchError as e:
            raise CloudError("InvalidParameterValue", str(e)) from None
        fmt = (req.disk_format or "").upper() or None
        if fmt is not None and fmt not in FORMATS:
            raise CloudError("InvalidParameterValue", f"Unsupported disk format '{req.disk_format}'; "
                             f"supported: {', '.join(FORMATS)}")
        arch = req.architecture
        if arch != "x86_64":
            raise CloudError("InvalidParameterValue", f"Architecture '{arch}' is not supported (x86_64 only)")
        platform = req.platform
        if platform != "Linux":
            raise CloudError("InvalidParameterValue", f"Platform '{platform}' is not supported (Linux only)")
        description = req.description
        if len(description) > 255:
            raise CloudError("InvalidParameterValue", "Descriptions are limited to 255 characters")
        pairs = list(req.tags)
        caller.check_dry_run()
        task = ImportTask(id=new_id(PREFIX), owner=caller.account, url=url, state="active", created=time.time(),
                          description=description, disk_format=fmt, architecture=arch, platform=platform,
                          client_token=token or None, status_message="pending",
                          file=f"{new_id('img')}.img")
        with self.store.txn() as tx:
            tx.put(task)
            if pairs:
                self.tags.put(tx, caller.account, task.id, "import-image-task", pairs)
        await self.store.sync()
        self._launch(task.id)
        return task

    def _launch(self, task_id: str) -> None:
        self.progress[task_id] = (0, None)
        job = asyncio.get_running_loop().create_task(self._run(task_id))
        self._running[task_id] = job
        job.add_done_callback(lambda _t: self._running.pop(task_id, None))

    async def _run(self, task_id: str) -> None:
        task = self.table.get(task_id)
        if task is None or task.state != "active" or task.file is None:
            return
        dest = self.images.dir / task.file
        self._settle(task_id, "active", status_message="downloading")
        try:
            await asyncio.to_thread(self.images.dir.mkdir, parents=True, exist_ok=True)
            got = await fetcher.fetch(task.url, dest, lambda done, total: self._progress(task_id, done, total),
                                      refuse_local=self._refuse_local)
            self._settle(task_id, "active", status_message="validating")
            fmt, vsize = await self._validate(task, dest, got.size)
        except asyncio.CancelledError:
            await self._discard(dest)
            self._settle(task_id, "deleting", state="deleted")
            raise
        except (fetcher.FetchError, OSError, StorageError, CloudError) as e:
            log.warning("import %s from %s failed: %s", task_id, task.url, e)
            await self._discard(dest)
            self._settle(task_id, "active", "deleting", state="deleted",
                         status_message=f"ClientError: Disk validation failed [{_reason(e)}]")
            return
        except Exception as e:   # a bug must not leave the task active for ever
            log.exception("import %s failed", task_id)
            await self._discard(dest)
            self._settle(task_id, "active", "deleting", state="deleted", status_message=f"ServerError: {e}")
            return
        now = self.table.get(task_id)
        if now is None or now.state != "active":      # cancelled while it was being validated
            await self._discard(dest)
            self._settle(task_id, "deleting", state="deleted")
            return
        image = self.images.image_row(task.owner, task.id, task.file, got.size, got.sha256, fmt, vsize,
                                      task.description, task.architecture)
        with self.store.txn() as tx:
            tx.put(image)
            tx.put(replace(now, state="completed", status_message="", image_id=image.id, size=got.size))
        self.store.flush()
        log.info("import %s: registered %s (%d bytes, %s)", task_id, image.id, got.size, fmt)

    async def _validate(self, task: ImportTask, path: Path, size: int) -> tuple[str, int]:
        """The format qemu-img finds, checked against what the user declared, and the virtual size."""
        if self.images.storage is None:
            raise CloudError("InvalidParameterValue", "no storage driver to probe the disk image with")
        fmt, vsize = await self.images.probe(path)     # refuses images that name other files
        known = {v: k for k, v in FORMATS.items()}
        if fmt not in known:
            raise CloudError("InvalidParameterValue", f"unsupported disk image format {fmt}")
        if fmt == "raw" and (size == 0 or size % SECTOR):
            # qemu-img calls anything it does not recognise raw: a real raw disk is whole sectors.
            raise CloudError("InvalidParameterValue",
                             f"not a disk image: {size} bytes of unrecognised data (not whole {SECTOR}-byte sectors)")
        if task.disk_format is not None and FORMATS[task.disk_format] != fmt:
            raise CloudError("InvalidParameterValue",
                             f"declared format {task.disk_format} but the file is {known[fmt]}")
        return fmt, vsize

    async def _discard(self, dest: Path) -> None:
        for p in (dest, dest.with_name(dest.name + ".part")):
            await asyncio.to_thread(p.unlink, True)

    def _progress(self, task_id: str, done: int, total: int | None) -> None:
        self.progress[task_id] = (done, total)

    def _settle(self, task_id: str, *expect: str, **updates: Any) -> None:
        """Record a step of the task unless it moved on meanwhile; not awaited to disk (a lost
        record leaves the task active, and start-up runs it again)."""
        t = self.table.get(task_id)
        if t is None or t.state not in expect:
            return
        with self.store.txn() as tx:
            tx.put(replace(t, **updates))
        self.store.flush()

    # -- DescribeImportImageTasks / CancelImportTask -------------------------------------------
    def describe(self, caller: Caller, query: Query) -> tuple[list[ImportTask], str | None]:
        ids = query.ids
        match = self.filters.compile(query.filters)
        limit = page_size(query.max_results, 1, 500)
        fp = query.fingerprint("import-image-tasks")
        after = decode_token(query.next_token, fp)
        pool = {i: self._task(caller, i) for i in ids} if ids else self._by_owner.get(caller.account)
        caller.check_dry_run()
        rows = {k: t for k, t in pool.items() if match(t)} if match else pool
        keys, token = paginate(sorted(rows), after, limit, fp)
        return [rows[k] for k in keys], token

    def progress_of(self, t: ImportTask) -> str | None:
        """EC2's Progress: a percentage while active, absent otherwise."""
        if t.state != "active":
            return None
        done, total = self.progress.get(t.id, (0, None))
        return str(min(99, done * 100 // total)) if total else "0"

    async def cancel(self, caller: Caller, task_id: str, reason: str | None) -> tuple[ImportTask, ImportTask]:
        t = self._task(caller, task_id)
        if t.state != "active":
            raise CloudError.wrong_state("IncorrectState", f"The import task '{task_id}' is {t.state}; only an active "
                                         f"task can be cancelled")
        caller.check_dry_run()
        new = replace(t, state="deleting", status_message=f"Cancelled: {reason}" if reason else "Cancelled by the user")
        with self.store.txn() as tx:
            tx.put(new)
        await self.store.sync()
        job = self._running.get(task_id)
        if job is not None:
            job.cancel()
        else:
            self._settle(task_id, "deleting", state="deleted")
        return t, new

    # -- start-up and shutdown -----------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Restart what a previous run left downloading; finish what it left being cancelled.
        (Also after a journal rollback undid a task's last step: tasks still running are left.)"""
        report = []
        for t in list(self.table.values()):
            if t.id in self._running:
                continue
            if t.state == "active":
                report.append(f"{t.id}: was downloading {t.url}; starting it again")
                self._launch(t.id)
            elif t.state == "deleting":
                report.append(f"{t.id}: was being cancelled; cancelled")
                self._settle(t.id, "deleting", state="deleted")
        for line in report:
            log.warning("reconcile: %s", line)
        return report

    async def close(self) -> None:
        """Stop the downloads; their tasks stay active and start again at the next start."""
        jobs = list(self._running.values())
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _reason(e: Exception) -> str:
    return e.message if isinstance(e, CloudError) else str(e)
