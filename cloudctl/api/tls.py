"""The server side of TLS: one ssl.SSLContext per listener that serves it (config.Tls).

Client certificates are verified by OpenSSL during the handshake, against the CAs (and CRLs)
of `client_ca`, read with the marketplace's trust-store loader so that a CA directory is read
the same way everywhere (any file name, IGTF's `*.0`/`*.r0` included); OpenSSL gets them as
one PEM bundle, the only way to hand it CRLs. A certificate that does not verify, or that a
CRL revokes, ends the handshake: the request never reaches the API.
"""
from __future__ import annotations

import os
import re
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..config import Tls
from ..core.marketplace.trust import TrustError, TrustStore

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class TlsConfigError(Exception):
    """A TLS setting that cannot be used, phrased as one line for the admin."""


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    raise _Encrypted


def _crls(path: Path) -> list[x509.CertificateRevocationList]:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        data = f.read_bytes()
        found = [x509.load_pem_x509_crl(m.group(0)) for m in _PEM_CRL.finditer(data)]
        if not found and path.is_file():   # one file given: it may be DER (`openssl ca -gencrl -outform DER`)
            found = [x509.load_der_x509_crl(data)]
        out += found
    return out


def server_context(tls: Tls, where: str) -> ssl.SSLContext:
    """The listener's context; TlsConfigError (naming `where`, e.g. "ec2.tls") if it cannot be made."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key, password=_no_password)
    except _Encrypted:
        raise TlsConfigError(f"{where}.key: {tls.key} is encrypted; give cloudctl an unencrypted key "
                             "(readable only by it)") from None
    except FileNotFoundError as e:
        raise TlsConfigError(f"{where}: no such file {e.filename}") from None
    except ssl.SSLError as e:
        why = "the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(e) else \
            f"not a PEM certificate and key ({e.reason or e})"
        raise TlsConfigError(f"{where}: {tls.cert} / {tls.key}: {why}") from None
    except OSError as e:
        raise TlsConfigError(f"{where}: cannot read {e.filename}: {e.strerror}") from None
    mode = tls.verify_clients
    if mode == "none" or tls.client_ca is None:
        return ctx
    try:
        store = TrustStore.load(tls.client_ca)
        crls = [*store.crls, *(_crls(tls.crl) if tls.crl is not None else [])]
    except TrustError as e:
        raise TlsConfigError(f"{where}.client_ca: {e}") from None
    except (OSError, ValueError) as e:
        raise TlsConfigError(f"{where}.crl: {tls.crl}: {e}") from None
    if tls.crl is not None and not crls:
        raise TlsConfigError(f"{where}.crl: no CRL in {tls.crl}")
    bundle = b"".join(c.public_bytes(Encoding.PEM) for c in store.anchors) + \
        b"".join(c.public_bytes(Encoding.PEM) for c in crls)
    fd, name = tempfile.mkstemp(prefix="cloudctl-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bundle)
        ctx.load_verify_locations(cafile=name)   # (certificates and CRLs alike)
    except ssl.SSLError as e:
        raise TlsConfigError(f"{where}.client_ca: {e.reason or e}") from None
    finally:
        os.unlink(name)
    if crls:
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
    return ctx
