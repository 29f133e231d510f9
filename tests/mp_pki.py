"""Certificates for marketplace tests, generated per test run: a CA, endorsers, a stranger."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def name(*cn: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in cn])


@dataclass
class Identity:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        c, k = directory / f"{stem}.pem", directory / f"{stem}.key"
        c.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        return c, k


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(cn: str = "Test CA") -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    subj = name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "example"),
                (NameOID.COMMON_NAME, cn))
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1)).not_valid_after(_now() + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return Identity(cert, key)


def make_endorser(ca: Identity, cn: str, days: int = 90) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    subj = name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "example"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "Cloud"), (NameOID.COMMON_NAME, cn))
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Identity(cert, key)


def make_crl(ca: Identity, revoked: list[x509.Certificate]) -> bytes:
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
         .last_update(_now() - dt.timedelta(hours=1)).next_update(_now() + dt.timedelta(days=7)))
    for c in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(c.serial_number)
                                      .revocation_date(_now() - dt.timedelta(minutes=5)).build())
    return b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
