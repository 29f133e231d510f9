"""Trust decisions kept apart: CA anchors (chain + CRL) and the endorser allow-list (DN pairs).

Anything in the trust store is an anchor, so an endorser certificate must never be put there;
the allow-list is a comparison of distinguished names, not a trust anchor. DNs are compared as
X.509 names (`core/x509_dn_forms.py`): image lists write them in OpenSSL's one-line slash form
(`/DC=org/DC=example/CN=J\\xC3\\xB6rg`, certificate order, what vmcatcher compares), operators
may paste RFC 4514 (reversed, commas) or OpenSSL's display forms, and all name one subject.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ...slim import dataclass
from .. import x509_dn_forms


class TrustError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def slash_dn(name: x509.Name) -> str:
    """OpenSSL's `X509_NAME_oneline` form, as `hv:dn`/`hv:ca` are written for vmcatcher."""
    return x509_dn_forms.oneline(name)


def normalise_dn(dn: str) -> x509_dn_forms.Normal:
    """(OID, normalised value) pairs in certificate order from any textual DN form."""
    return x509_dn_forms.parse(dn)


def same_dn(a: str | x509.Name, b: str | x509.Name) -> bool:
    return x509_dn_forms.same(a, b)


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
