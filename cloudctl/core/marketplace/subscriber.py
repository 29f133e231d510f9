"""Subscriptions to remote image lists: verify each poll, download, register, expire.

Each poll runs vmcatcher's checks in order and records the outcome on the event log with its
own reason code (vmcatcher's number in the event data). A list that fails any check changes
nothing: the last accepted list stays in force until its own expiry. Images download in the
background into a partial file (resumed with Range), are checked against the declared size and
sha512, and only then enter the image store as public AMIs with stable ids.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from ...config import Marketplace
from ...drivers import fetcher
from ...store.records import Image, Instance, MarketImage, Subscription
from ...store.store import Store, Txn
from .. import x509_dn_forms
from ..errors import CloudError
from ..events import Events
from ..ids import new_id
from ..images import MARKET_OWNER, Images
from ..tags import Tags
from ..users import LIVE_STATES
from . import imagelist, smime
from .trust import TrustError, TrustStore, same_dn, slash_dn

log = logging.getLogger("cloudctl.marketplace")

OWNER = MARKET_OWNER
MAX_LIST_BYTES = 16 << 20
CLOCK_SKEW_S = 60.0          # a list created this far in the future is still taken as created now
# Our reason codes and the vmcatcher error numbers they correspond to.
VMCATCHER = {"signature": 11, "untrusted": 11, "revoked": 11, "trust-anchor-missing": 14, "json": 37,
             "signer-mismatch": 12, "endorser-not-allowed": 13, "identifier": 31, "not-yet-valid": 33,
             "expired": 34, "version-older": 17}
POLICIES = ("accept", "hold")
SHOWN_DROPPED = 20           # dropped image entries named one by one (events, messages); the rest counted


class Rejection(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def stable_image_id(list_id: str, identifier: str, sha512: str) -> str:
    return "ami-" + hashlib.sha256(f"{list_id}\x1f{identifier}\x1f{sha512.lower()}".encode()).hexdigest()[:17]


_ARCH = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64", "i686": "i386", "i586": "i386", "x86": "i386"}


def _arch(arch: str) -> str:
    """EC2's architecture names for what image lists write (sl:arch is free text)."""
    a = arch.strip().lower()
    return _ARCH.get(a, a or "x86_64")


def _older(new: str, old: str) -> bool:
    """vmcatcher refuses a version older than the accepted one (17) and takes an equal one."""
    return imagelist.compare_versions(new, old) < 0


def _check_dns(endorsers: list[list[str]]) -> None:
    """Every DN of the allow-list must read as a name (any form x509_dn_forms reads), or none is taken."""
    for pair in endorsers:
        for dn in pair:
            try:
                x509_dn_forms.parse(dn)
            except x509_dn_forms.DnSyntaxError as e:
                raise CloudError("InvalidParameterValue", f"endorser DN {dn!r}: {e}") from None


class Subscriber:
    def __init__(self, store: Store, images: Images, tags: Tags, events: Events, cfg: Marketplace) -> None:
        self.store = store
        self.images = images
        self.tags = tags
        self.events = events
        self.cfg = cfg
        self.subs = store.table(Subscription)
        self.table = store.table(MarketImage)
        self.partial_dir = images.dir / "marketplace" / "partial"
        self.progress: dict[str, tuple[int, int]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._polling: dict[str, asyncio.Lock] = {}

    # ---- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, url: str, identifier: str, endorsers: list[list[str]], trust: str,
                        policy: str, interval_s: float) -> Subscription:
        if not url.startswith(("http://", "https://")):
            raise CloudError("InvalidParameterValue", f"'{url}' is not an http(s) URL")
        if not identifier.strip():
            raise CloudError("MissingParameter", "the list's expected dc:identifier is required")
        if not endorsers or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in endorsers):
            raise CloudError("InvalidParameterValue", "give at least one endorser as a (subject DN, issuer DN) pair")
        _check_dns(endorsers)
        if policy not in POLICIES:
            raise CloudError("InvalidParameterValue", f"policy must be one of {', '.join(POLICIES)}")
        if interval_s < 1:
            raise CloudError("InvalidParameterValue", "the poll interval must be at least 1 second")
        try:
            await asyncio.to_thread(TrustStore.load, Path(trust))
        except (TrustError, OSError) as e:
            raise CloudError("InvalidParameterValue", f"trust store {trust}: {e}") from None
        if any(s.url == url and s.identifier == identifier for s in self.subs.values()):
            raise CloudError.conflict("EntityAlreadyExists", f"already subscribed to {identifier} at {url}")
        sub = Subscription(id=new_id("sub"), url=url, identifier=identifier,
                           endorsers=[[d.strip(), c.strip()] for d, c in endorsers], trust=trust, policy=policy,
                           interval_s=interval_s, created=time.time())
        with self.store.txn() as tx:
            tx.put(sub)
            self.events.add(tx, "marketplace.list", url, f"subscribed as {sub.id}", "subscribed", subscription=sub.id)
        await self.store.sync()
        return sub

    def get(self, sub_id: str) -> Subscription:
        sub = self.subs.get(sub_id)
        if sub is None:
            raise CloudError.not_found("NoSuchEntity", f"subscription {sub_id} does not exist")
        return sub

    async def set_endorsers(self, sub_id: str, endorsers: list[list[str]]) -> Subscription:
        """Replace the allow-list; images endorsed by a pair no longer on it expire at once."""
        sub = self.get(sub_id)
        if any(len(p) != 2 for p in endorsers):
            raise CloudError("InvalidParameterValue", "endorsers are (subject DN, issuer DN) pairs")
        _check_dns(endorsers)
        with self.store.txn() as tx:
            tx.put(replace(sub, endorsers=[list(p) for p in endorsers]))
        await self.store.sync()
        await self.sweep()
        return self.get(sub_id)

    async def remove(self, sub_id: str) -> None:
        sub = self.get(sub_id)
        with self.store.txn() as tx:
            for row in self._rows_of(sub.id):
                self._expire(tx, row, "unsubscribed")
            tx.delete(sub)
            self.events.add(tx, "marketplace.list", sub.url, f"subscription {sub.id} removed", "unsubscribed",
                            subscription=sub.id)
        await self.store.sync()
        await self.collect()

    async def approve(self, image_id: str) -> MarketImage:
        row = self.table.get(image_id)
        if row is None:
            raise CloudError.not_found("NoSuchEntity", f"marketplace image {image_id} does not exist")
        if row.state not in ("held", "failed"):
            raise CloudError("InvalidParameterValue", f"marketplace image {image_id} is {row.state}, not held")
        with self.store.txn() as tx:
            tx.put(replace(row, state="queued", attempts=0, reason=""))
            self.events.add(tx, "marketplace.image", row.id, f"{row.title}: approved", "approved",
                            subscription=row.subscription)
        await self.store.sync()
        self._start(row.id)
        return self._row(row.id)

    def _row(self, mid: str) -> MarketImage:
        row = self.table.get(mid)
        assert row is not None   # market image rows are never deleted, only marked deregistered
        return row

    def _rows_of(self, sub_id: str) -> list[MarketImage]:
        return [r for r in self.table.values() if r.subscription == sub_id]

    # ---- polling and verification -----------------------------------------------------------

    async def tick(self) -> None:
        """Poll what is due, expire what must expire, collect what is unused."""
        now = time.time()
        for sub in list(self.subs.values()):
            if sub.last_poll is None or now - sub.last_poll >= sub.interval_s:
                try:
                    await self.poll(sub.id)
                except Exception:  # one subscription's failure must not stop the others
                    log.exception("polling %s (%s) failed", sub.id, sub.url)
        await self.sweep()

    async def poll(self, sub_id: str) -> dict[str, Any]:
        lock = self._polling.setdefault(sub_id, asyncio.Lock())
        async with lock:
            sub = self.get(sub_id)
            now = time.time()
            try:
                raw, etag = await self._fetch_list(sub.url, sub.etag if sub.last_result in ("accepted", "unchanged")
                                                   else "")
                if raw is None:   # 304: the accepted list is still the publisher's current one
                    return await self._unchanged(sub, now)
                lst, (entries, dropped), signer = await self._verify(sub, raw, now)
            except Rejection as e:
                return await self._reject(sub, e, now)
            result = await self._accept(sub, raw, lst, entries, signer, now, etag, dropped)
        for row in self.table.values():
            if row.subscription == sub_id and row.state == "queued":
                self._start(row.id)
        return result

    async def _fetch_list(self, url: str, etag: str) -> tuple[bytes | None, str]:
        """The signed list and its ETag; (None, etag) if unchanged since the accepted one."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                async with session.get(url, headers={"If-None-Match": etag} if etag else {}) as resp:
                    if resp.status == 304 and etag:
                        return None, etag
                    if resp.status != 200:
                        raise Rejection("fetch", f"GET {url}: HTTP {resp.status} {resp.reason}")
                    body = await resp.content.read(MAX_LIST_BYTES + 1)
                    new_etag = resp.headers.get("ETag", "")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise Rejection("fetch", f"GET {url}: {e or type(e).__name__}") from None
        if len(body) > MAX_LIST_BYTES:
            raise Rejection("fetch", f"GET {url}: the list is larger than {MAX_LIST_BYTES} bytes")
        return body, new_etag

    async def _unchanged(self, sub: Subscription, now: float) -> dict[str, Any]:
        """Nothing new to verify; expiry of what was accepted is the sweep's business."""
        with self.store.txn() as tx:
            tx.put(replace(self.get(sub.id), last_poll=now, last_result="unchanged",
                           last_message=f"version {sub.version} (not modified)"))
        await self.store.sync()
        return {"accepted": True, "code": "unchanged", "message": f"version {sub.version}", "version": sub.version}

    async def _verify(self, sub: Subscription, raw: bytes, now: float
                      ) -> tuple[imagelist.ImageList, tuple[list[imagelist.ImageEntry], list[imagelist.Dropped]],
                                 list[str]]:
        """vmcatcher's checks, in its order; the first failure names its reason."""
        try:
            signed = await asyncio.to_thread(smime.verify, raw)
        except smime.SignatureError as e:
            raise Rejection("signature", str(e)) from None
        try:
            store = await asyncio.to_thread(TrustStore.load, Path(sub.trust))
            await asyncio.to_thread(store.check, signed.signer, signed.certificates,
                                    dt.datetime.fromtimestamp(now, dt.timezone.utc))
        except TrustError as e:
            raise Rejection(e.code, str(e)) from None
        except OSError as e:
            raise Rejection("trust-anchor-missing", f"trust store {sub.trust}: {e}") from None
        try:
            lst = await asyncio.to_thread(imagelist.parse, signed.content)   # 1000 images: ~20 ms
        except imagelist.ListError as e:
            raise Rejection(e.code, str(e)) from None
        subject, issuer = signed.signer.subject, signed.signer.issuer
        dn, ca = slash_dn(subject), slash_dn(issuer)
        x = lst.endorser.x509
        if not (same_dn(subject, x.dn) and same_dn(issuer, x.ca)):   # as X.509 names, whatever the text form
            raise Rejection("signer-mismatch", f"signed by {dn} (CA {ca}), but the list names {x.dn} (CA {x.ca})")
        if not any(same_dn(subject, a) and same_dn(issuer, b) for a, b in sub.endorsers):
            raise Rejection("endorser-not-allowed", f"endorser {dn} (CA {ca}) is not allowed for this subscription")
        if lst.identifier != sub.identifier:
            raise Rejection("identifier", f"list {lst.identifier} is not the subscribed {sub.identifier}")
        if lst.created_at > now + CLOCK_SKEW_S:
            raise Rejection("not-yet-valid", f"the list was created in the future ({lst.created})")
        if lst.expires_at <= now:
            raise Rejection("expired", f"the list expired at {lst.expires}")
        if sub.version is not None and _older(lst.version, sub.version):
            raise Rejection("version-older", f"version {lst.version} is older than the accepted {sub.version}")
        try:
            entries = await asyncio.to_thread(imagelist.images, lst)
        except imagelist.ListError as e:
            raise Rejection(e.code, str(e)) from None
        return lst, entries, [dn, ca]

    async def _reject(self, sub: Subscription, e: Rejection, now: float) -> dict[str, Any]:
        with self.store.txn() as tx:
            tx.put(replace(self.get(sub.id), last_poll=now, last_result=e.code, last_message=str(e)))
            self.events.add(tx, "marketplace.list", sub.url, f"refused: {e}", e.code, subscription=sub.id,
                            vmcatcher=VMCATCHER.get(e.code))
        await self.store.sync()
        return {"accepted": False, "code": e.code, "message": str(e), "version": sub.version}

    async def _accept(self, sub: Subscription, raw: bytes, lst: imagelist.ImageList,
                      entries: list[imagelist.ImageEntry], signer: list[str], now: float,
                      etag: str = "", dropped: list[imagelist.Dropped] | None = None) -> dict[str, Any]:
        listed: set[str] = set()
        dropped = dropped or []
        with self.store.txn() as tx:
            for d in dropped[:SHOWN_DROPPED]:   # shown with the list's refusals (events, the subscription's message)
                self.events.add(tx, "marketplace.list", sub.url, f"version {lst.version}: image dropped: {d}",
                                "image-fields", subscription=sub.id, identifier=d.identifier, index=d.index)
            if len(dropped) > SHOWN_DROPPED:
                self.events.add(tx, "marketplace.list", sub.url, f"version {lst.version}: "
                                f"{len(dropped) - SHOWN_DROPPED} more image(s) dropped", "image-fields",
                                subscription=sub.id)
            for e in entries:
                mid = stable_image_id(lst.identifier, e.identifier, e.sha512)
                listed.add(mid)
                expires = min(lst.expires_at, imagelist.parse_time(e.expires) if e.expires else lst.expires_at)
                fields = dict(size=e.size, uri=e.uri, title=e.title, description=e.description, arch=_arch(e.arch),
                              version=e.version, list_version=lst.version, endorser=signer[0], expires=expires)
                row = self.table.get(mid)
                if row is None:
                    row = MarketImage(id=mid, subscription=sub.id, list_id=lst.identifier, identifier=e.identifier,
                                      sha512=e.sha512.lower(), created=now,
                                      state="queued" if sub.policy == "accept" else "held", **fields)
                    self.events.add(tx, "marketplace.image", mid, f"{e.title}: new in {lst.identifier}",
                                    "SubscriptionImageNew", subscription=sub.id, identifier=e.identifier,
                                    sha512=row.sha512, state=row.state)
                else:
                    if row.state == "failed" and row.list_version != lst.version:
                        fields.update(state="queued", attempts=0)   # retries are per list version
                    elif row.state == "expired" and self.images.table.get(mid) is not None:
                        fields.update(state="available", reason="")   # endorsed again: launchable again
                        im = self.images.table.get(mid)
                        assert im is not None
                        tx.put(replace(im, state="available"))
                        self.events.add(tx, "marketplace.image", mid, f"{e.title}: endorsed again", "AvailablePostfix",
                                        subscription=sub.id, sha512=row.sha512)
                    elif row.state in ("expired", "deregistered"):
                        fields.update(state="queued", attempts=0, reason="")
                    row = replace(row, **fields)
                    im = self.images.table.get(mid)
                    if im is not None and row.state == "available":
                        tx.put(replace(im, deprecation_time=expires))
                tx.put(row)
            for row in self._rows_of(sub.id):
                if row.id in listed or row.state in ("expired", "deregistered"):
                    continue
                same = any(e.identifier == row.identifier for e in entries)
                self._expire(tx, row, "checksum-changed" if same else "removed")
            tx.put(replace(self.get(sub.id), version=lst.version, list_created=lst.created_at,
                           list_expires=lst.expires_at, endorser=signer, title=lst.title,
                           signed=raw.decode("utf-8", "replace"), etag=etag, last_poll=now, last_result="accepted",
                           last_message=f"version {lst.version}, {len(entries)} image(s)"
                           + "".join(f"; dropped {d}" for d in dropped[:SHOWN_DROPPED])
                           + (f"; {len(dropped) - SHOWN_DROPPED} more dropped" if len(dropped) > SHOWN_DROPPED
                              else "")))
            self.events.add(tx, "marketplace.list", sub.url, f"accepted version {lst.version} "
                            f"({len(entries)} image(s)) signed by {signer[0]}", "accepted", subscription=sub.id,
                            version=lst.version)
        await self.store.sync()
        await self.collect()
        return {"accepted": True, "code": "accepted", "message": f"version {lst.version}", "version": lst.version,
                "dropped": [str(d) for d in dropped[:SHOWN_DROPPED]], "dropped_count": len(dropped)}

    # ---- expiry -----------------------------------------------------------------------------

    def _expire(self, tx: Txn, row: MarketImage, reason: str) -> None:
        """Deprecate now: hidden, no new launches; deregistered by `collect` once unused."""
        if row.state in ("expired", "deregistered"):
            return
        task = self._tasks.pop(row.id, None)
        if task is not None:
            task.cancel()
        now = time.time()
        self.events.add(tx, "marketplace.image", row.id, f"{row.title}: expired ({reason})", "ExpirePrefix",
                        subscription=row.subscription, reason=reason, sha512=row.sha512)
        im = self.images.table.get(row.id)
        if im is not None:
            dep = min(im.deprecation_time or now, now)
            tx.put(replace(im, state="disabled", deprecation_time=dep))
        tx.put(replace(row, state="expired", reason=reason))

    def _drop_image(self, tx: Txn, row: MarketImage) -> None:
        im = self.images.table.get(row.id)
        if im is not None:
            tx.delete(im)
            self.tags.remove_all(tx, im.id)

    async def sweep(self) -> None:
        """Expire images whose list or own expiry passed, or whose endorser is no longer allowed."""
        now = time.time()
        with self.store.txn() as tx:
            for sub in self.subs.values():
                allowed = not sub.endorser or any(
                    same_dn(sub.endorser[0], a) and same_dn(sub.endorser[1], b) for a, b in sub.endorsers)
                list_expired = sub.list_expires is not None and sub.list_expires <= now
                for row in self._rows_of(sub.id):
                    if row.state in ("expired", "deregistered"):
                        continue
                    if list_expired:
                        self._expire(tx, row, "list-expired")
                    elif not allowed:
                        self._expire(tx, row, "endorser-removed")
                    elif row.expires is not None and row.expires <= now:
                        self._expire(tx, row, "image-expired")
        await self.store.sync()
        await self.collect()

    async def collect(self) -> None:
        """Deregister expired images no live instance uses, and delete their files."""
        in_use = {i.image_id for i in self.store.table(Instance).values() if i.state in LIVE_STATES}
        gone: list[tuple[MarketImage, Path | None]] = []
        with self.store.txn() as tx:
            for row in self.table.values():
                if row.state != "expired" or row.id in in_use:
                    continue
                im = self.images.table.get(row.id)
                path = self.images.path_of(im) if im is not None else None
                self._drop_image(tx, row)
                tx.put(replace(row, state="deregistered"))
                self.events.add(tx, "marketplace.image", row.id, f"{row.title}: deregistered, file deleted",
                                "ExpirePostfix", subscription=row.subscription, reason=row.reason)
                gone.append((row, path))
        if not gone:
            return
        await self.store.sync()
        for row, path in gone:
            if path is not None:
                await asyncio.to_thread(path.unlink, True)
            await asyncio.to_thread((self.partial_dir / f"{row.sha512}.part").unlink, True)

    # ---- downloads --------------------------------------------------------------------------

    def _start(self, mid: str) -> None:
        if mid in self._tasks and not self._tasks[mid].done():
            return
        task = asyncio.get_running_loop().create_task(self._download(mid))
        self._tasks[mid] = task
        task.add_done_callback(lambda t, m=mid: self._tasks.pop(m, None) if self._tasks.get(m) is t else None)

    def resume_pending(self) -> None:
        """After a restart: downloads that were queued or running continue from their partial files."""
        for row in self.table.values():
            if row.state in ("queued", "downloading"):
                self._start(row.id)

    async def _set(self, mid: str, **changes: Any) -> MarketImage | None:
        row = self.table.get(mid)
        if row is None:
            return None
        row = replace(row, **changes)
        with self.store.txn() as tx:
            tx.put(row)
        await self.store.sync()
        return row

    def _fail(self, tx: Txn, row: MarketImage, code: str, message: str) -> None:
        tx.put(replace(row, state="failed", reason=f"{code}: {message}"))
        self.events.add(tx, "marketplace.image", row.id, f"{row.title}: download refused: {message}", code,
                        subscription=row.subscription, sha512=row.sha512)

    async def _download(self, mid: str) -> None:
        row = self.table.get(mid)
        if row is None or row.state not in ("queued", "downloading"):   # expired or held meanwhile
            return
        row = await self._set(mid, state="downloading")
        assert row is not None
        part = self.partial_dir / f"{row.sha512}.part"
        final = self.images.dir / "marketplace" / f"{row.sha512}.img"
        await asyncio.to_thread(self.partial_dir.mkdir, parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        free = (await asyncio.to_thread(shutil.disk_usage, self.partial_dir)).free
        if free < row.size - have:
            with self.store.txn() as tx:
                self._fail(tx, row, "no-space", f"{row.size - have} bytes needed, {free} free")
            await self.store.sync()
            return
        got = None
        attempts = row.attempts
        while got is None:
            try:
                got = await fetcher.fetch_resumable(row.uri, part, row.size, row.sha512,
                                                    lambda d, t: self.progress.__setitem__(mid, (d, t)))
            except fetcher.Rejected as e:
                with self.store.txn() as tx:
                    self._fail(tx, self._row(mid), e.code, str(e))
                await self.store.sync()
                return
            except (fetcher.FetchError, OSError) as e:
                attempts += 1
                await self._set(mid, attempts=attempts, reason=str(e))
                if attempts >= self.cfg.download_retries:
                    with self.store.txn() as tx:
                        self._fail(tx, self._row(mid), "download",
                                   f"gave up after {attempts} attempts until a new list version: {e}")
                    await self.store.sync()
                    return
                await asyncio.sleep(min(30.0, 0.5 * 2 ** attempts))
        await self._register(mid, part, final, got)

    async def _register(self, mid: str, part: Path, final: Path, got: fetcher.Fetched) -> None:
        row = self._row(mid)
        self.events.emit("marketplace.image", mid, f"{row.title}: verified ({got.size} bytes, sha512 ok)",
                         "AvailablePrefix", subscription=row.subscription, sha512=row.sha512)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, part, final)
        try:
            fmt = await self.images.disk_format(final)
        except CloudError as e:
            await asyncio.to_thread(final.unlink, True)
            with self.store.txn() as tx:
                self._fail(tx, self._row(mid), "format", e.message)
            await self.store.sync()
            return
        row = self.table.get(mid)
        if row is None or row.state != "downloading":   # expired or removed meanwhile
            await asyncio.to_thread(final.unlink, True)
            return
        sub = self.subs.get(row.subscription)
        im = Image(id=mid, owner=OWNER, name=row.title, path=str(final.relative_to(self.images.dir)),
                   size=got.size, sha256=got.sha256, created=time.time(), description=row.description,
                   public=True, architecture=row.arch, disk_format=fmt, deprecation_time=row.expires)
        tags = [("marketplace:endorser", row.endorser), ("marketplace:list", row.list_id),
                ("marketplace:version", row.list_version), ("marketplace:sha512", row.sha512),
                ("marketplace:image", row.identifier)]
        with self.store.txn() as tx:
            tx.put(im)
            self.tags.put(tx, OWNER, mid, "image", [(k, v[:256]) for k, v in tags])
            tx.put(replace(row, state="available", reason="", attempts=0))
            self.events.add(tx, "marketplace.image", mid, f"{row.title}: available as {mid}", "AvailablePostfix",
                            subscription=row.subscription, sha512=row.sha512,
                            list_version=sub.version if sub else row.list_version)
        await self.store.sync()

    def status(self) -> list[tuple[MarketImage, int, int]]:
        """Each subscribed image with its download progress (bytes done, bytes in all)."""
        out = []
        for row in sorted(self.table.values(), key=lambda r: (r.subscription, r.title, r.created)):
            done, total = self.progress.get(row.id, (row.size if row.state == "available" else 0, row.size))
            out.append((row, done, total))
        return out

    async def close(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
