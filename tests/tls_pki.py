"""A throwaway PKI for TLS tests, made per run in the test's temp dir: a CA, a server certificate for
127.0.0.1/localhost, client certificates (one revoked by the CA's CRL), and a stranger CA's client;
and a test server whose URLs and admin calls speak https to its TLS listeners."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support import Server


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def subject(cn: str, org: str = "Open Nebula", country: str = "ES") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert_path), str(self.key_path)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    c, k = directory / f"{stem}.pem", directory / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return Issued(cert, key, c, k)


def _ca(directory: Path, stem: str, cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = subject(cn, "Test CAs")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1)).not_valid_after(_now() + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(directory, stem, cert, key)


def _leaf(directory: Path, stem: str, ca: Issued, name: x509.Name, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(_now() - dt.timedelta(days=1)).not_valid_after(_now() + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return _write(directory, stem, b.sign(ca.key, hashes.SHA256()), key)


@dataclass
class Pki:
    """Everything written under `directory`: ca/ (the CA, and its CRL as IGTF names it), server,
    alice, bob, carol, revoked (in the CRL), stranger (issued by another CA), and stranger_server
    (a server certificate for 127.0.0.1/localhost issued by that other CA)."""

    directory: Path
    ca: Issued = field(init=False)
    ca_dir: Path = field(init=False)
    crl_path: Path = field(init=False)
    server: Issued = field(init=False)
    alice: Issued = field(init=False)
    bob: Issued = field(init=False)
    carol: Issued = field(init=False)
    revoked: Issued = field(init=False)
    stranger: Issued = field(init=False)
    stranger_server: Issued = field(init=False)

    def __post_init__(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self.ca = _ca(d, "ca", "Test Root CA")
        self.server = _leaf(d, "server", self.ca, subject("localhost", "Cloud"), server=True)
        self.alice = _leaf(d, "alice", self.ca, subject("Alice Jörg Example"), server=False)
        self.bob = _leaf(d, "bob", self.ca, subject("Bob Example"), server=False)
        self.carol = _leaf(d, "carol", self.ca, subject("Carol Example"), server=False)
        self.revoked = _leaf(d, "revoked", self.ca, subject("Mallory Revoked"), server=False)
        other = _ca(d, "other-ca", "Another CA")
        self.stranger = _leaf(d, "stranger", other, subject("Alice Jörg Example"), server=False)
        self.stranger_server = _leaf(d, "stranger-server", other, subject("localhost", "Cloud"), server=True)
        crl = (x509.CertificateRevocationListBuilder().issuer_name(self.ca.cert.subject)
               .last_update(_now() - dt.timedelta(hours=1)).next_update(_now() + dt.timedelta(days=7))
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(self.revoked.cert.serial_number)
                                        .revocation_date(_now() - dt.timedelta(minutes=5)).build())
               .sign(self.ca.key, hashes.SHA256()))
        self.ca_dir = d / "ca-dir"
        self.ca_dir.mkdir(exist_ok=True)
        (self.ca_dir / "testca.0").write_bytes(self.ca.cert_path.read_bytes())
        self.crl_path = d / "ca.crl.pem"
        self.crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


class TlsServer(Server):
    """A test server some of whose listeners serve TLS: its URLs are https for those, and its admin
    calls trust the server certificate, as the `cloudctl` CLI does."""

    def _tls(self, listener: str) -> Any:
        own = (self.cfg.get(listener) or {}).get("tls")
        return None if own is False else own or self.cfg.get("tls")

    def url(self, listener: str) -> str:
        plain = super().url(listener)
        return plain.replace("http://", "https://", 1) if self._tls(listener) else plain

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        tls = self._tls("admin")
        ctx = None
        if tls:
            ctx = ssl.create_default_context(cafile=tls["cert"])
            ctx.check_hostname = False
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            return json.loads(resp.read())
