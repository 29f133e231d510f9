"""Trust decisions kept apart: CA anchors (chain + CRL) and the endorser allow-list (DN pairs).

Anything in the trust store is an anchor, so an endorser certificate must never be put there;
the allow-list is a comparison of distinguished names, not a trust anchor. DNs are compared in
one normalised form because image lists write them in OpenSSL's slash form
(`/DC=org/DC=example/CN=x`, certificate order) while `cryptography` prints RFC 4514
(reversed, comma-separated) and Java tools RFC 2253.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

_SHORT = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.DOMAIN_COMPONENT: "DC", NameOID.COUNTRY_NAME: "C",
          NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
          NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.USER_ID: "UID",
          NameOID.SERIAL_NUMBER: "serialNumber"}
_ALIASES = {"E": "EMAILADDRESS", "EMAIL": "EMAILADDRESS", "1.2.840.113549.1.9.1": "EMAILADDRESS",
            "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID", "USERID": "UID"}


class TrustError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def slash_dn(name: x509.Name) -> str:
    """OpenSSL's legacy one-line form, in certificate order, as `hv:dn`/`hv:ca` write it."""
    parts = []
    for rdn in name.rdns:
        parts.append("+".join(f"{_SHORT.get(a.oid, a.oid.dotted_string)}={a.value}" for a in rdn))
    return "/" + "/".join(parts)


def normalise_dn(dn: str) -> tuple[tuple[str, str], ...]:
    """(TYPE, value) pairs in certificate order from a slash-form or RFC 4514/2253 DN."""
    dn = dn.strip()
    if dn.startswith("/"):
        items = [p for p in re.split(r"(?<!\\)/", dn[1:]) if p]
    else:
        items = list(reversed([p.strip() for p in re.split(r"(?<!\\),", dn) if p.strip()]))
    out = []
    for item in items:
        k, _, v = item.partition("=")
        k = k.strip().upper()
        out.append((_ALIASES.get(k, k), v.strip().replace("\\,", ",").replace("\\/", "/")))
    return tuple(out)


def same_dn(a: str, b: str) -> bool:
    return normalise_dn(a) == normalise_dn(b)


_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\r?\n?", re.S)


@dataclass
class TrustStore:
    """CA anchors and CRLs from a PEM bundle or a directory of PEM files (IGTF style: *.0, *.r0)."""

    anchors: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]

    @classmethod
    def load(cls, path: Path) -> "TrustStore":
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        anchors, crls = [], []
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                continue
            for m in _PEM.finditer(data):
                kind = m.group(1)
                try:
                    if kind == b"CERTIFICATE":
                        anchors.append(x509.load_pem_x509_certificate(m.group(0)))
                    elif kind == b"X509 CRL":
                        crls.append(x509.load_pem_x509_crl(m.group(0)))
                except ValueError:
                    continue
        if not anchors:
            raise TrustError("trust-anchor-missing", f"no CA certificate in the trust store {path}")
        return cls(anchors, crls)

    def check(self, signer: x509.Certificate, carried: list[x509.Certificate],
              now: dt.datetime) -> list[x509.Certificate]:
        """Chain the signer to an anchor at `now`, then refuse it if a CA's valid CRL revokes it."""
        verifier = (PolicyBuilder().store(Store(self.anchors)).time(now)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        intermediates = [c for c in carried if c != signer]
        try:
            verified = verifier.verify(signer, intermediates)
        except VerificationError as e:
            raise TrustError("untrusted", f"the signer does not chain to a trusted CA: {e}") from None
        chain = list(verified.chain)
        for cert, issuer in zip(chain, chain[1:]):
            for crl in self.crls:
                if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
                    continue
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    raise TrustError("revoked", f"certificate {slash_dn(cert.subject)} is revoked by "
                                                f"{slash_dn(issuer.subject)}")
        return chain
