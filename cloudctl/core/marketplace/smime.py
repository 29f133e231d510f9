"""S/MIME detached signatures over image lists: sign with `cryptography`, verify with `asn1crypto`.

`cryptography` signs PKCS#7 but cannot verify it, so verification parses the CMS structure
itself: the signer is found by issuer and serial number (not "the first certificate in the
bag"), the messageDigest attribute is compared with the signed part (raw and CRLF-canonical:
text-mode signers canonicalise line ends) and the signature checked over the DER SET OF the
signed attributes. Chain and CRL checks are separate (`chain.py`): a valid signature by an
untrusted certificate is a different failure, with a different reason code.
"""
from __future__ import annotations

import base64
import hashlib
import re

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from ...slim import dataclass

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class SignatureError(Exception):
    """The message is not a valid S/MIME signature over its content."""


@dataclass(frozen=True, slots=True)
class Signed:
    content: bytes                     # the signed part, MIME headers stripped
    signer: x509.Certificate
    certificates: list[x509.Certificate]   # every certificate the message carries (chain candidates)


def sign(body: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """A `multipart/signed` S/MIME message with `body` as its first part."""
    return (pkcs7.PKCS7SignatureBuilder().set_data(body).add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]))


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(signed part, DER signature) of a multipart/signed message."""
    head, sep, _ = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw[:4096] else raw.partition(b"\r\n\r\n")
    if not sep:
        raise SignatureError("not a MIME message (no header/body separator)")
    headers = re.sub(rb"\r?\n[ \t]+", b" ", head).decode("latin-1")
    m = re.search(r'(?im)^content-type:\s*multipart/signed\b.*?boundary="?([^";\r\n]+)"?', headers)
    if not m:
        raise SignatureError("not an S/MIME multipart/signed message")
    delim = b"--" + m.group(1).strip().encode("latin-1")
    pieces = re.split(rb"(?:\r?\n|^)" + re.escape(delim), raw)
    # pieces: [headers+preamble, part1, part2, ...terminator]
    if len(pieces) < 4:
        raise SignatureError("multipart/signed message without two parts")
    part1, part2 = pieces[1], pieces[2]
    part1 = re.sub(rb"^[ \t]*\r?\n", b"", part1, count=1)
    part2 = re.sub(rb"^[ \t]*\r?\n", b"", part2, count=1)
    h2, s2, b2 = part2.partition(b"\r\n\r\n") if b"\r\n\r\n" in part2 else part2.partition(b"\n\n")
    if not s2 or b"pkcs7-signature" not in h2.lower():
        raise SignatureError("second part is not a PKCS#7 signature")
    try:
        der = base64.b64decode(b"".join(b2.split()), validate=True)
    except ValueError:
        raise SignatureError("signature part is not valid base64") from None
    return part1, der


def signed_part(raw: bytes) -> bytes:
    """The signed first part of a multipart/signed message, unverified (for showing what was signed)."""
    return _split(raw)[0]


def _canonical(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _strip_mime_headers(part: bytes) -> bytes:
    """Content signed with PKCS7_TEXT starts with its own MIME headers; JSON never does."""
    if part.lstrip()[:1] in (b"{", b"["):
        return part
    _, sep, body = part.partition(b"\r\n\r\n") if b"\r\n\r\n" in part else part.partition(b"\n\n")
    return body if sep else part


def _opaque(raw: bytes) -> bytes | None:
    """The DER of an opaque signed message (`openssl smime -sign -nodetach`: application/pkcs7-mime
    with the content inside), or of a PEM `PKCS7` block; None for anything else."""
    m = re.search(rb"-----BEGIN PKCS7-----(.+?)-----END PKCS7-----", raw, re.S)
    if m:
        body = m.group(1)
    else:
        head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw[:4096] else raw.partition(b"\n\n")
        headers = re.sub(rb"\r?\n[ \t]+", b" ", head).decode("latin-1")
        if not sep or not re.search(r"(?im)^content-type:\s*application/(x-)?pkcs7-mime\b", headers):
            return None
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except ValueError:
        raise SignatureError("the PKCS#7 message is not valid base64") from None


def verify(raw: bytes) -> Signed:
    """Check the signature and messageDigest; return the content and the signer certificate.

    Both S/MIME forms vmcatcher reads: multipart/signed (detached, `openssl smime -sign`) and
    opaque signed data (`openssl smime -sign -nodetach`), where the content is inside the PKCS#7."""
    der = opaque = _opaque(raw)
    if der is None:
        part, der = _split(raw)
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise SignatureError("PKCS#7 content is not SignedData")
        sd = info["content"]
        certs_asn = [c.chosen for c in (sd["certificates"] or []) if c.name == "certificate"]
        signer_infos = list(sd["signer_infos"])
        if opaque is not None:
            part = sd["encap_content_info"]["content"].native
            if not isinstance(part, bytes):
                raise SignatureError("the PKCS#7 message carries no content (a detached signature without its part)")
    except (ValueError, TypeError, KeyError) as e:
        raise SignatureError(f"malformed PKCS#7: {e}") from None
    if len(signer_infos) != 1:
        raise SignatureError(f"expected one signer, found {len(signer_infos)}")
    si = signer_infos[0]
    sid = si["sid"]
    if sid.name != "issuer_and_serial_number":
        raise SignatureError("signer identified by key id, not issuer and serial")
    ias = sid.chosen
    certs = [x509.load_der_x509_certificate(c.dump()) for c in certs_asn]
    signer = next((c for c, a in zip(certs, certs_asn)
                   if a.serial_number == ias["serial_number"].native and a.issuer == ias["issuer"]), None)
    if signer is None:
        raise SignatureError("the signer's certificate is not in the message")
    alg = si["digest_algorithm"]["algorithm"].native
    if alg not in _HASHES:
        raise SignatureError(f"unsupported digest algorithm {alg}")
    hash_alg = _HASHES[alg]()
    attrs = si["signed_attrs"]
    candidates = [part, _canonical(part)]
    if attrs.native is not None and len(attrs):
        digest = next((a["values"][0].native for a in attrs if a["type"].native == "message_digest"), None)
        if digest is None:
            raise SignatureError("signed attributes carry no messageDigest")
        content = next((c for c in candidates if hashlib.new(alg, c).digest() == digest), None)
        if content is None:
            raise SignatureError("messageDigest does not match the content (altered after signing)")
        signed_bytes = attrs.untag().dump(force=True)
    else:
        content = part
        signed_bytes = part
    _check_signature(signer, si["signature"].native, signed_bytes, hash_alg)
    return Signed(_strip_mime_headers(content), signer, certs)


def _check_signature(cert: x509.Certificate, sig: bytes, data: bytes, alg: hashes.HashAlgorithm) -> None:
    pub = cert.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), alg)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(alg))
        else:
            raise SignatureError(f"unsupported signer key type {type(pub).__name__}")
    except InvalidSignature:
        raise SignatureError("the signature does not verify with the signer's key") from None
