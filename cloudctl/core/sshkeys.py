"""Key pair crypto for CreateKeyPair / ImportKeyPair, with fingerprints computed the way AWS does.

AWS uses three different fingerprints, and tools compare them against ours:
  * RSA created by AWS:   SHA-1 of the DER PKCS#8 *private* key, colon hex;
  * RSA imported:         MD5 of the DER SubjectPublicKeyInfo, colon hex
                          (not `ssh-keygen -E md5`, which hashes the SSH wire blob);
  * ED25519 (either way): base64 SHA-256 of the SSH wire blob, with '=' padding
                          (`ssh-keygen -l` prints the same digest without padding).

Everything here is pure and thread-safe: callers run generate() in a worker thread.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..slim import dataclass

__all__ = ["KeyMaterial", "generate", "parse_public"]

RSA_GENERATED_BITS = 2048
RSA_MIN_BITS = 1024
RSA_MAX_BITS = 4096
MAX_MATERIAL_BYTES = 16 * 1024  # a 4096-bit key in any accepted form is under 2 KiB

_SUPPORTED = ("ssh-rsa", "ssh-ed25519")
# An OpenSSH key type followed by its base64 blob; the blob of every SSH key starts with the
# 4-byte length of the type name, which base64-encodes to "AAAA".
_OPENSSH_LINE = re.compile(r"(?:^|\s)((?:ssh|ecdsa|sk)-[A-Za-z0-9@.\-]+)\s+(AAAA[A-Za-z0-9+/]+={0,3})(?=\s|$)")
_RFC4716_BEGIN = "---- BEGIN SSH2 PUBLIC KEY ----"
_RFC4716_END = "---- END SSH2 PUBLIC KEY ----"
_BAD_FORMAT = ("Key is not in valid OpenSSH public key format (expected 'ssh-rsa AAAA...', "
               "'ssh-ed25519 AAAA...', an RFC 4716 SSH2 public key, or a PEM/DER public key)")


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """What the key pair record keeps; the private key is handed out once and never stored."""

    key_type: str            # "rsa" | "ed25519"
    public_openssh: str      # "ssh-rsa AAAA..." one line, no comment
    fingerprint: str         # as AWS computes it (see module docstring)
    private_pem: str | None  # only for generated keys


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def _openssh_line(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode("ascii")


def _ed25519_fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")


def generate(key_type: str = "rsa", key_format: str = "pem") -> KeyMaterial:
    """Create a key pair as CreateKeyPair returns it (~50 ms for RSA: call from a thread)."""
    if key_format != "pem":
        raise ValueError(f"unsupported key format '{key_format}': only 'pem' is supported")
    if key_type == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_GENERATED_BITS)
        pkcs8_der = private.private_bytes(serialization.Encoding.DER,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode("ascii")
        return KeyMaterial(key_type="rsa", public_openssh=_openssh_line(private.public_key()),
                           fingerprint=_colon_hex(hashlib.sha1(pkcs8_der, usedforsecurity=False).digest()),
                           private_pem=pem)
    if key_type == "ed25519":
        private_ed = ed25519.Ed25519PrivateKey.generate()
        line = _openssh_line(private_ed.public_key())
        # AWS hands out ED25519 private keys in OpenSSH format even for KeyFormat=pem.
        pem = private_ed.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()).decode("ascii")
        return KeyMaterial(key_type="ed25519", public_openssh=line,
                           fingerprint=_ed25519_fingerprint(line), private_pem=pem)
    raise ValueError(f"unsupported key type '{key_type}': use 'rsa' or 'ed25519'")


def parse_public(material: bytes) -> KeyMaterial:
    """Parse ImportKeyPair's PublicKeyMaterial (already base64-decoded by the API layer)."""
    if not material or not material.strip():
        raise ValueError("public key material is empty")
    if len(material) > MAX_MATERIAL_BYTES:
        raise ValueError(f"public key material is too large ({len(material)} bytes)")
    return _from_public_key(_load(material, nested=False))


def _load(material: bytes, *, nested: bool) -> object:
    if material[:1] == b"\x30":  # ASN.1 SEQUENCE: raw DER (or text that happens to start with '0')
        key = _load_der(material)
        if key is not None:
            return key
    if material[:3] == b"\x00\x00\x00":  # a bare SSH wire-format blob
        return _load_blob(material, None)
    try:
        text = material.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ValueError(_BAD_FORMAT) from None
    if text.startswith(_RFC4716_BEGIN):
        return _load_blob(_rfc4716_blob(text), None)
    if text.startswith("-----BEGIN"):
        return _load_pem(text)
    matches = _OPENSSH_LINE.findall(text)
    if len(matches) > 1:
        raise ValueError("expected exactly one public key, found several")
    if matches:
        key_type, b64 = matches[0]
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise ValueError(_BAD_FORMAT) from None
        return _load_blob(blob, key_type)
    if not nested:
        # Base64 DER, or a key file base64-encoded once more than needed (easy to do with
        # `--public-key-material file://` instead of `fileb://`).
        try:
            decoded = base64.b64decode("".join(text.split()), validate=True)
        except binascii.Error:
            raise ValueError(_BAD_FORMAT) from None
        if decoded:
            return _load(decoded, nested=True)
    raise ValueError(_BAD_FORMAT)


def _rfc4716_blob(text: str) -> bytes:
    lines = [line.strip() for line in text.splitlines()]
    try:
        end = lines.index(_RFC4716_END)
    except ValueError:
        raise ValueError(f"SSH2 public key has no '{_RFC4716_END}' line") from None
    body: list[str] = []
    continued = False
    for line in lines[1:end]:
        if continued or ":" in line:  # "Tag: value" headers, continued by a trailing '\'
            continued = line.endswith("\\")
            continue
        body.append(line)
    try:
        return base64.b64decode("".join(body), validate=True)
    except binascii.Error:
        raise ValueError("SSH2 public key body is not valid base64") from None


def _blob_type(blob: bytes) -> str:
    if len(blob) < 4:
        raise ValueError(_BAD_FORMAT)
    n = int.from_bytes(blob[:4], "big")
    if not 0 < n <= 64 or len(blob) < 4 + n:
        raise ValueError(_BAD_FORMAT)
    try:
        return blob[4:4 + n].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(_BAD_FORMAT) from None


def _load_blob(blob: bytes, declared: str | None) -> object:
    """Load an SSH wire-format public key, refusing other algorithms before parsing them."""
    key_type = _blob_type(blob)
    if declared is not None and declared != key_type:
        raise ValueError(f"key type '{declared}' does not match the key data ('{key_type}')")
    if key_type not in _SUPPORTED:
        raise ValueError(f"unsupported key type '{key_type}': only RSA and ED25519 keys "
                         "can be imported")
    line = key_type.encode("ascii") + b" " + base64.b64encode(blob)
    try:
        return serialization.load_ssh_public_key(line)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{_BAD_FORMAT}: {exc}") from None


def _load_pem(text: str) -> object:
    header = text.splitlines()[0]
    if "PRIVATE KEY" in header:
        raise ValueError("this is a private key; import the public key instead")
    try:
        return serialization.load_pem_public_key(text.encode("ascii"))
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"unsupported key type: {exc}") from None
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"not a valid PEM public key ({header[:60]})") from None


def _load_der(der: bytes) -> object | None:
    """The key in a DER SubjectPublicKeyInfo / PKCS#1 structure, None if it is not one."""
    try:
        return serialization.load_der_public_key(der)
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"unsupported key type: {exc}") from None
    except ValueError:
        return None


def _from_public_key(key: object) -> KeyMaterial:
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise ValueError(f"RSA key is {key.key_size} bits; AWS accepts "
                             f"{RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
        spki = key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return KeyMaterial(key_type="rsa", public_openssh=_openssh_line(key),
                           fingerprint=_colon_hex(hashlib.md5(spki, usedforsecurity=False).digest()),
                           private_pem=None)
    if isinstance(key, ed25519.Ed25519PublicKey):
        line = _openssh_line(key)
        return KeyMaterial(key_type="ed25519", public_openssh=line,
                           fingerprint=_ed25519_fingerprint(line), private_pem=None)
    name = type(key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"
    raise ValueError(f"unsupported key type {name}: only RSA and ED25519 keys can be imported")
