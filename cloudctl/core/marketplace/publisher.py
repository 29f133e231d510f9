"""This cloud as an endorser: a signed HEPiX list of chosen images, re-signed before it expires.

Every change (an image added, one deprecated, a re-signing) is a new `hv:version`, larger than
the last, so subscribers that refuse older versions accept each one. Image identifiers are
UUIDs derived from (list id, AMI id): stable for as long as the image exists.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ...config import Publish
from ...store.records import Image, PublishedList
from ...store.store import Store
from ..errors import CloudError
from ..events import Events
from ..images import Images
from . import imagelist, smime
from .trust import slash_dn


def _sha512(path: Any) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _next_version(previous: str | None, now: float) -> str:
    """A YYYYmmddHHMMSS stamp (as AppDB writes), one more than the last if the clock has not moved on."""
    stamp = int(time.strftime("%Y%m%d%H%M%S", time.gmtime(now)))
    if previous is not None and previous.isdigit():
        stamp = max(stamp, int(previous) + 1)
    return str(stamp)


class Publisher:
    def __init__(self, store: Store, images: Images, events: Events, cfg: Publish, public_url: str) -> None:
        self.store = store
        self.images = images
        self.events = events
        self.cfg = cfg
        self.public_url = public_url.rstrip("/")
        self.cert = x509.load_pem_x509_certificate(cfg.cert.read_bytes())
        key = serialization.load_pem_private_key(cfg.key.read_bytes(), password=None)
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError("marketplace.publish.key must be an RSA or EC private key")
        self.key = key
        self.list_id = cfg.list_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "cloudctl:" + slash_dn(self.cert.subject)))
        self.table = store.table(PublishedList)
        self._lock = asyncio.Lock()

    @property
    def current(self) -> PublishedList | None:
        return self.table.get(self.list_id)

    @property
    def list_url(self) -> str:
        return f"{self.public_url}/imagelist/{self.list_id}"

    def image_uuid(self, ami: str) -> str:
        return str(uuid.uuid5(uuid.UUID(self.list_id) if _is_uuid(self.list_id) else uuid.NAMESPACE_URL,
                              f"{self.list_id}:{ami}"))

    def image_url(self, ami: str) -> str:
        return f"{self.public_url}/images/{self.image_uuid(ami)}"

    def ami_of(self, image_uuid: str) -> Image | None:
        """The image behind a published image URL, if it is in the current list."""
        cur = self.current
        for ami in cur.image_ids if cur else []:
            if self.image_uuid(ami) == image_uuid:
                return self.images.table.get(ami)
        return None

    async def publish(self, add: list[str]) -> PublishedList:
        """Add images (AMI ids) to the list and sign a new version; with none, re-sign as is."""
        async with self._lock:
            cur = self.current
            ids = list(cur.image_ids) if cur else []
            sums = dict(cur.sha512) if cur else {}
            deprecated = dict(cur.deprecated) if cur else {}
            for ami in add:
                im = self.images.table.get(ami)
                if im is None:
                    raise CloudError("NoSuchEntity", f"image {ami} does not exist")
                if im.state != "available" or im.image_type != "machine":
                    raise CloudError("InvalidParameterValue", f"image {ami} is not an available machine image")
                if not im.public:   # a user's private image is not the cloud's to give away
                    raise CloudError("InvalidParameterValue", f"image {ami} is private; only public images are published")
                if ami not in ids:
                    ids.append(ami)
                deprecated.pop(ami, None)
            for ami in ids:
                if ami not in sums:
                    im = self.images.table.get(ami)
                    assert im is not None
                    sums[ami] = await asyncio.to_thread(_sha512, self.images.path_of(im))
            return await self._sign(cur, ids, sums, deprecated, f"published {', '.join(add) or 'unchanged'}")

    async def deprecate(self, ami: str, reason: str) -> PublishedList:
        """A new version without the image; subscribers expire it."""
        if not reason.strip():
            raise CloudError("MissingParameter", "deprecating an image needs a reason")
        async with self._lock:
            cur = self.current
            if cur is None or ami not in cur.image_ids:
                raise CloudError("NoSuchEntity", f"image {ami} is not in the published list")
            ids = [i for i in cur.image_ids if i != ami]
            sums = {k: v for k, v in cur.sha512.items() if k != ami}
            return await self._sign(cur, ids, sums, {**cur.deprecated, ami: reason}, f"deprecated {ami}: {reason}")

    async def resign_if_due(self) -> PublishedList | None:
        cur = self.current
        if cur is None or cur.expires - time.time() > self.cfg.resign_before_days * 86400:
            return None
        async with self._lock:
            cur = self.current
            assert cur is not None
            # An image deregistered since drops out, as a deprecation would.
            ids = [i for i in cur.image_ids if self.images.table.get(i) is not None]
            return await self._sign(cur, ids, {k: cur.sha512[k] for k in ids}, cur.deprecated, "re-signed")

    async def _sign(self, cur: PublishedList | None, ids: list[str], sums: dict[str, str],
                    deprecated: dict[str, str], why: str) -> PublishedList:
        now = time.time()
        version = _next_version(cur.version if cur else None, now)
        expires = now + self.cfg.validity_days * 86400
        doc = self._document(ids, sums, version, now, expires)
        signed = await asyncio.to_thread(smime.sign, imagelist.dump(doc), self.cert, self.key)
        row = PublishedList(id=self.list_id, version=version, created=now, expires=expires, image_ids=ids,
                            sha512=sums, deprecated=deprecated, signed=signed.decode())
        if cur is not None:
            row = replace(cur, version=version, created=now, expires=expires, image_ids=ids, sha512=sums,
                          deprecated=deprecated, signed=signed.decode())
        with self.store.txn() as tx:
            tx.put(row)
            self.events.add(tx, "marketplace.publish", self.list_id, f"version {version}: {why}",
                            "published", version=version, images=len(ids))
        await self.store.sync()
        return row

    def _document(self, ids: list[str], sums: dict[str, str], version: str, now: float,
                  expires: float) -> dict[str, Any]:
        entries = []
        for ami in ids:
            im = self.images.table.get(ami)
            assert im is not None
            entries.append({"hv:image": {
                "dc:identifier": self.image_uuid(ami), "dc:title": im.name, "dc:description": im.description,
                "hv:uri": self.image_url(ami), "hv:size": im.size, "sl:checksum:sha512": sums[ami],
                "hv:version": str(int(im.created)), "hv:format": im.disk_format, "hv:hypervisor": "kvm",
                "sl:arch": im.architecture, "sl:os": "Linux", "sl:osversion": "", "sl:comments": ami,
            }})
        return {
            "dc:identifier": self.list_id, "dc:title": self.cfg.title, "dc:description": self.cfg.description,
            "dc:source": self.public_url, "dc:date:created": imagelist.fmt_time(now),
            "dc:date:expires": imagelist.fmt_time(expires), "hv:uri": self.list_url, "hv:version": version,
            "hv:endorser": {"hv:x509": {"dc:creator": self.cfg.creator, "hv:email": self.cfg.email,
                                        "hv:dn": slash_dn(self.cert.subject), "hv:ca": slash_dn(self.cert.issuer)}},
            "hv:images": entries,
        }


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True
