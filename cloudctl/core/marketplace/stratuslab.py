"""StratusLab-style per-image metadata: one signed entry per (identifier, endorser e-mail, date).

The identifier is the image's SHA-1 in 27 base64url characters, so any change to the bytes is a
new identifier. Entries are immutable; deprecating or re-endorsing adds a newer entry, and
queries show only the latest entry per (identifier, e-mail) unless a date is asked for ("latest
entry wins"). Status: valid (not expired, not deprecated), expired, deprecated.

Deviation: StratusLab signed enveloped XML-DSig; these entries carry the same RDF/XML terms but
are signed like the image list (S/MIME detached with the endorser's certificate), which the
same verifier and `openssl smime -verify` check.
"""
from __future__ import annotations

import re
import string
import time
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ...slim import dataclass
from ...store.records import MetadataEntry
from ...store.store import Store, Txn
from .imagelist import fmt_time
from .smime import SignatureError, signed_part

_ENC = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
STATUSES = ("valid", "expired", "deprecated", "all")
KEEP_PER_ENDORSEMENT = 50      # older entries beyond this are forgotten


def sha1_to_identifier(hex_sha1: str) -> str:
    """27 symbols of base64url, big-endian, from the 160-bit SHA-1 (StratusLab's MetadataUtils)."""
    n, out = int(hex_sha1, 16), []
    for _ in range(27):
        n, r = divmod(n, 64)
        out.append(_ENC[r])
    return "".join(reversed(out))


def identifier_to_sha1(identifier: str) -> str:
    n = 0
    for ch in identifier:
        n = n * 64 + _ENC.index(ch)
    return f"{n:040x}"


@dataclass(frozen=True, slots=True)
class Endorsement:
    email: str
    subject: str       # slash form, as the image list writes it
    issuer: str


@dataclass(frozen=True, slots=True)
class ImageTerms:
    """What a StratusLab entry says of the image itself (slterms:os, os-version, os-arch, hypervisor,
    version; dcterms:format, dcterms:type as its kind)."""

    arch: str
    os: str = ""
    os_version: str = ""
    format: str = ""
    hypervisor: str = ""
    version: str = ""
    kind: str = "machine"


def entry_xml(identifier: str, checksums: dict[str, str], size: int, created: float, valid: float,
              endorser: Endorsement, title: str, description: str, location: str,
              deprecated: str | None, terms: ImageTerms) -> bytes:
    """The RDF/XML description of one image, in StratusLab's vocabulary (an empty term is left out)."""
    def term(tag: str, value: str) -> str:
        return f"<{tag}>{escape(value)}</{tag}>" if value else ""
    sums = "".join(
        f"<slreq:checksum rdf:parseType=\"Resource\"><slreq:algorithm>{escape(alg)}</slreq:algorithm>"
        f"<slreq:value>{escape(v)}</slreq:value></slreq:checksum>" for alg, v in checksums.items())
    dep = f"<slterms:deprecated>{escape(deprecated)}</slterms:deprecated>" if deprecated else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:slreq="http://mp.stratuslab.eu/slreq#" xmlns:slterms="http://mp.stratuslab.eu/slterms#" '
        'xml:base="http://mp.stratuslab.eu/">'
        f"<rdf:Description rdf:about={quoteattr('#' + identifier)}>"
        f"<dcterms:identifier>{identifier}</dcterms:identifier><slreq:bytes>{size}</slreq:bytes>{sums}"
        f"<slreq:endorsement rdf:parseType=\"Resource\"><dcterms:created>{fmt_time(created)}</dcterms:created>"
        f"<slreq:endorser rdf:parseType=\"Resource\"><slreq:email>{escape(endorser.email)}</slreq:email>"
        f"<slreq:subject>{escape(endorser.subject)}</slreq:subject><slreq:issuer>{escape(endorser.issuer)}"
        f"</slreq:issuer></slreq:endorser></slreq:endorsement>"
        f"{term('dcterms:type', terms.kind)}<dcterms:valid>{fmt_time(valid)}</dcterms:valid>"
        f"<dcterms:title>{escape(title)}</dcterms:title><dcterms:description>{escape(description)}"
        f"</dcterms:description>{term('dcterms:format', terms.format)}"
        f"<slterms:location>{escape(location)}</slterms:location>{term('slterms:version', terms.version)}"
        f"{term('slterms:hypervisor', terms.hypervisor)}{term('slterms:os', terms.os)}"
        f"{term('slterms:os-version', terms.os_version)}{term('slterms:os-arch', terms.arch)}{dep}"
        "</rdf:Description></rdf:RDF>\n").encode()


class MetadataStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(MetadataEntry)

    def add(self, tx: Txn, entry: MetadataEntry) -> None:
        """A new entry; refused (silently kept out) if not newer than the latest for its endorsement."""
        latest = self.latest(entry.identifier, entry.email)
        if latest is not None and latest.created >= entry.created:
            return
        tx.put(entry)
        mine = sorted((e for e in self.table.values()
                       if e.identifier == entry.identifier and e.email == entry.email), key=lambda e: e.created)
        for old in mine[:max(0, len(mine) + 1 - KEEP_PER_ENDORSEMENT)]:
            tx.delete(old)

    def latest(self, identifier: str, email: str) -> MetadataEntry | None:
        found = [e for e in self.table.values() if e.identifier == identifier and e.email == email]
        return max(found, key=lambda e: e.created, default=None)

    def query(self, identifier: str | None = None, email: str | None = None, status: str = "valid",
              created: str | None = None, now: float | None = None) -> list[MetadataEntry]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        now = time.time() if now is None else now
        rows = [e for e in self.table.values() if (identifier is None or e.identifier == identifier)
                and (email is None or e.email == email)]
        if created is not None:
            rows = [e for e in rows if fmt_time(e.created) == created]
        else:
            newest: dict[tuple[str, str], MetadataEntry] = {}
            for e in rows:
                k = (e.identifier, e.email)
                if k not in newest or e.created > newest[k].created:
                    newest[k] = e
            rows = list(newest.values())
        return sorted((e for e in rows if status == "all" or entry_status(e, now) == status),
                      key=lambda e: (e.identifier, e.email, e.created))


def entry_status(e: MetadataEntry, now: float) -> str:
    if e.deprecated:
        return "deprecated"
    return "valid" if e.valid > now else "expired"


_NS = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dcterms": "http://purl.org/dc/terms/",
       "slterms": "http://mp.stratuslab.eu/slterms#"}
# JSON key -> the entry's element (what StratusLab's marketplace lists for an image)
_TERMS = {"title": "dcterms:title", "kind": "dcterms:type", "format": "dcterms:format", "os": "slterms:os",
          "osVersion": "slterms:os-version", "arch": "slterms:os-arch", "hypervisor": "slterms:hypervisor",
          "version": "slterms:version"}


def entry_document(e: MetadataEntry) -> bytes:
    """The entry's RDF/XML, as signed (the first part of its S/MIME message)."""
    try:
        return signed_part(e.signed.encode())
    except SignatureError:
        return b""


def _terms(e: MetadataEntry) -> dict[str, str]:
    try:
        root = ET.fromstring(entry_document(e))
    except ET.ParseError:
        return {}
    desc = root.find("rdf:Description", _NS)
    if desc is None:
        return {}
    return {k: desc.findtext(tag, "", _NS) for k, tag in _TERMS.items() if desc.find(tag, _NS) is not None}


def entry_json(e: MetadataEntry, base_url: str, now: float | None = None) -> dict[str, Any]:
    return {"identifier": e.identifier, "email": e.email, "created": fmt_time(e.created),
            "valid": fmt_time(e.valid), "deprecated": e.deprecated, "status": entry_status(e, now or time.time()),
            "endorser": {"subject": e.subject, "issuer": e.issuer}, "location": e.location,
            "sha512": e.sha512, "url": f"{base_url}/metadata/{e.identifier}/{e.email}/{fmt_time(e.created)}",
            **_terms(e)}


def entries_xml(rows: list[MetadataEntry]) -> bytes:
    """A query's answer as XML (`Accept: application/xml`, or StratusLab's `?media=xml`): each
    entry's RDF/XML document, as signed, inside one `<metadata>` element."""
    docs = [re.sub(rb"^\s*<\?xml[^>]*\?>\s*", b"", entry_document(e)).strip() for e in rows]
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata>\n' + b"\n".join(d for d in docs if d) \
        + b"\n</metadata>\n"
