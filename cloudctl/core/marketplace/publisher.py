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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ...config import Publish
from ...store.records import Image, MetadataEntry, PublishedList
from ...store.store import Store
from .. import x509_dn_forms
from ..errors import CloudError
from ..events import Events
from ..images import Images
from . import imagelist, smime
from .stratuslab import Endorsement, ImageTerms, MetadataStore, entry_xml, sha1_to_identifier
from .trust import slash_dn

HYPERVISOR = "kvm"


def _digests(path: Any) -> tuple[str, str]:
    """(sha1, sha512) in one pass: the list needs sha512, StratusLab identifiers sha1."""
    h1, h512 = hashlib.sha1(), hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h1.update(chunk)
            h512.update(chunk)
    return h1.hexdigest(), h512.hexdigest()


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
        self.list_id = cfg.list_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "cloudctl:" + _id_dn(self.cert.subject)))
        self.table = store.table(PublishedList)
        self.metadata = MetadataStore(store)
        self.email = cfg.email or _cert_email(self.cert) or "endorser@invalid"
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

    def os_of(self, ami: str) -> tuple[str, str]:
        """(OS name, OS version) from the image's `os` and `os-version` tags; Linux and unknown without."""
        tags = self.images.tags.of(ami)
        return tags.get("os", "").strip() or "Linux", tags.get("os-version", "").strip()

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
                    raise CloudError.not_found("NoSuchEntity", f"image {ami} does not exist")
                if im.state != "available" or im.image_type != "machine":
                    raise CloudError("InvalidParameterValue", f"image {ami} is not an available machine image")
                if not im.public:   # a user's private image is not the cloud's to give away
                    raise CloudError("InvalidParameterValue",
                                     f"image {ami} is private; only public images are published")
                if ami not in ids:
                    ids.append(ami)
                deprecated.pop(ami, None)
            sha1 = dict(cur.sha1) if cur else {}
            for ami in ids:
                if ami not in sums or ami not in sha1:
                    im = self.images.table.get(ami)
                    assert im is not None
                    sha1[ami], sums[ami] = await asyncio.to_thread(_digests, self.images.path_of(im))
            return await self._sign(cur, ids, sums, sha1, deprecated, f"published {', '.join(add) or 'unchanged'}")

    async def deprecate(self, ami: str, reason: str) -> PublishedList:
        """A new version without the image; subscribers expire it."""
        if not reason.strip():
            raise CloudError("MissingParameter", "deprecating an image needs a reason")
        async with self._lock:
            cur = self.current
            if cur is None or ami not in cur.image_ids:
                raise CloudError.not_found("NoSuchEntity", f"image {ami} is not in the published list")
            ids = [i for i in cur.image_ids if i != ami]
            return await self._sign(cur, ids, cur.sha512, cur.sha1, {**cur.deprecated, ami: reason},
                                    f"deprecated {ami}: {reason}")

    async def resign_if_due(self) -> PublishedList | None:
        cur = self.current
        if cur is None or cur.expires - time.time() > self.cfg.resign_before_days * 86400:
            return None
        async with self._lock:
            cur = self.current
            assert cur is not None
            # An image deregistered since drops out, as a deprecation would.
            ids = [i for i in cur.image_ids if self.images.table.get(i) is not None]
            return await self._sign(cur, ids, cur.sha512, cur.sha1, cur.deprecated, "re-signed")

    async def _sign(self, cur: PublishedList | None, ids: list[str], sums: Mapping[str, str], sha1: Mapping[str, str],
                    deprecated: Mapping[str, str], why: str) -> PublishedList:
        now = time.time()
        version = _next_version(cur.version if cur else None, now)
        expires = now + self.cfg.validity_days * 86400
        doc = self._document(ids, sums, version, now, expires)
        signed = await asyncio.to_thread(smime.sign, imagelist.dump(doc), self.cert, self.key)
        row = PublishedList(id=self.list_id, version=version, created=now, expires=expires, image_ids=ids,
                            sha512=sums, sha1=sha1, deprecated=deprecated, signed=signed.decode())
        if cur is not None:
            row = replace(cur, version=version, created=now, expires=expires, image_ids=ids, sha512=sums, sha1=sha1,
                          deprecated=deprecated, signed=signed.decode())
        entries = await self._entries(row, now)
        with self.store.txn() as tx:
            tx.put(row)
            for entry in entries:
                self.metadata.add(tx, entry)
            self.events.add(tx, "marketplace.publish", self.list_id, f"version {version}: {why}",
                            "published", version=version, images=len(ids))
        await self.store.sync()
        return row

    async def _entries(self, row: PublishedList, now: float) -> list[MetadataEntry]:
        """New StratusLab-style endorsements: every listed image (valid until the list expires),
        and images deprecated since their latest entry (with the reason)."""
        endorser = Endorsement(self.email, slash_dn(self.cert.subject), slash_dn(self.cert.issuer))
        out = []
        todo = [(a, None) for a in row.image_ids] + [(a, r) for a, r in row.deprecated.items()]
        for ami, reason in todo:
            im = self.images.table.get(ami)
            if im is None or ami not in row.sha1:
                continue
            ident = sha1_to_identifier(row.sha1[ami])
            latest = self.metadata.latest(ident, endorser.email)
            if reason is not None and latest is not None and latest.deprecated:
                continue
            created = float(int(now))
            if latest is not None and latest.created >= created:
                created = latest.created + 1
            os_name, os_version = self.os_of(ami)
            xml = entry_xml(ident, {"SHA-1": row.sha1[ami], "SHA-256": im.sha256, "SHA-512": row.sha512[ami]},
                            im.size, created, row.expires, endorser, im.name, im.description,
                            self.image_url(ami), reason,
                            ImageTerms(arch=im.architecture, os=os_name, os_version=os_version,
                                       format=im.disk_format, hypervisor=HYPERVISOR, version=str(int(im.created))))
            signed = await asyncio.to_thread(smime.sign, xml, self.cert, self.key)
            out.append(MetadataEntry(id=f"{ident}/{endorser.email}/{imagelist.fmt_time(created)}", identifier=ident,
                                     email=endorser.email, created=created, valid=row.expires,
                                     subject=endorser.subject, issuer=endorser.issuer, location=self.image_url(ami),
                                     sha512=row.sha512[ami], image_id=ami, signed=signed.decode(),
                                     deprecated=reason))
        return out

    def _document(self, ids: list[str], sums: Mapping[str, str], version: str, now: float,
                  expires: float) -> dict[str, Any]:
        entries = []
        for ami in ids:
            im = self.images.table.get(ami)
            assert im is not None
            os_name, os_version = self.os_of(ami)
            entry = {
                "dc:identifier": self.image_uuid(ami), "dc:title": im.name, "dc:description": im.description,
                "hv:uri": self.image_url(ami), "hv:size": im.size, "sl:checksum:sha512": sums[ami],
                "hv:version": str(int(im.created)), "hv:format": im.disk_format, "hv:hypervisor": HYPERVISOR,
                "sl:arch": im.architecture, "sl:os": os_name, "sl:comments": ami,
            }
            if os_version:   # never an empty sl:osversion: subscribers (vmcatcher, AppDB) read "" as a version
                entry["sl:osversion"] = os_version
            entries.append({"hv:image": entry})
        return {
            "dc:identifier": self.list_id, "dc:title": self.cfg.title, "dc:description": self.cfg.description,
            "dc:source": self.public_url, "dc:date:created": imagelist.fmt_time(now),
            "dc:date:expires": imagelist.fmt_time(expires), "hv:uri": self.list_url, "hv:version": version,
            "hv:endorser": {"hv:x509": {"dc:creator": self.cfg.creator, "hv:email": self.cfg.email,
                                        "hv:dn": slash_dn(self.cert.subject), "hv:ca": slash_dn(self.cert.issuer)}},
            "hv:images": entries,
        }


def _id_dn(name: x509.Name) -> str:
    """The subject as list ids were derived from it before `hv:dn` took OpenSSL's escaped form
    (raw values, `+` inside an RDN): kept so a publisher's list id never changes on upgrade."""
    def sn(oid: x509.ObjectIdentifier) -> str:
        return x509_dn_forms.short_name(oid.dotted_string) if oid.dotted_string in _ID_NAMED else oid.dotted_string
    return "/" + "/".join("+".join(f"{sn(a.oid)}={a.value!s}" for a in rdn) for rdn in name.rdns)


# the attribute types named (not dotted) in those ids: emailAddress DC C O OU CN L ST UID serialNumber
_ID_NAMED = frozenset({"1.2.840.113549.1.9.1", "0.9.2342.19200300.100.1.25", "2.5.4.6", "2.5.4.10", "2.5.4.11",
                       "2.5.4.3", "2.5.4.7", "2.5.4.8", "0.9.2342.19200300.100.1.1", "2.5.4.5"})


def _cert_email(cert: x509.Certificate) -> str | None:
    found = cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    return str(found[0].value) if found else None


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True
