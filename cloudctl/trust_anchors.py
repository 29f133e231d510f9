"""The CA anchors read from OpenSSL's hashed directory as chains need them (issue 14: base RSS).

aiohttp builds its verified client context when it is imported (`aiohttp.connector`), and OpenSSL's
default paths then parse the whole CA bundle (SSL_CERT_FILE, or OpenSSL's own default) into that
context's store: ~144 certificates, ~2 MiB of heap kept for the process's life, whether or not the
controller ever fetches over HTTPS. The same defaults also give OpenSSL the CA directory
(SSL_CERT_DIR, or its default), whose hash-named files it reads only when a chain asks for that
subject, and keeps. What verifies is the bundle's anchors and the directory's; when the directory
holds every anchor of the bundle, the bundle adds nothing: aiohttp imported while SSL_CERT_FILE names
an empty file (`os.devnull`) trusts the same anchors, read at the first HTTPS fetch that needs them.

Kept as it was (the bundle parsed at import): a bundle with an anchor the directory lacks (an
operator's own CA file, another layout, a stale rehash, no directory, several directories), or
holding anything but plain certificates. The directory's names are taken to be OpenSSL's subject
hashes, as `openssl rehash` (and so update-ca-certificates) writes them: OpenSSL's own contract for it.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("cloudctl")

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+\Z")   # OpenSSL's lookup names (subject hash . n); CRLs are .rN


def _certs(data: bytes) -> set[bytes] | None:
    """The DER of each PEM certificate in `data`; None if it holds anything else OpenSSL would read
    (a trusted-certificate block with its own trust settings, a CRL, a block that does not parse)."""
    blocks = _PEM.findall(data)
    if len(blocks) != data.count(b"-----BEGIN "):
        return None
    out: set[bytes] = set()
    for kind, body in blocks:
        if kind != b"CERTIFICATE":
            return None
        try:
            out.add(base64.b64decode(body))   # (line breaks are skipped)
        except binascii.Error:
            return None
    return out


def keep_reason(cafile: str | None, capath: str | None) -> str | None:
    """Why the bundle `cafile` must still be parsed at import (None: the hashed directory `capath`
    holds all its anchors, so it verifies what the two did)."""
    if not cafile:
        return "no CA bundle"   # (nothing to save)
    if not capath or not os.path.isdir(capath):
        return "no CA directory"
    try:
        with open(cafile, "rb") as f:
            bundle = _certs(f.read())
    except OSError as e:
        return f"the bundle cannot be read: {e}"
    if bundle is None:
        return "the bundle holds more than plain certificates"
    in_dir: set[bytes] = set()
    for name in os.listdir(capath):
        if _HASHED.match(name):
            try:
                with open(os.path.join(capath, name), "rb") as f:
                    in_dir |= _certs(f.read()) or set()
            except OSError:
                continue
    missing = len(bundle - in_dir)
    return f"{missing} of the bundle's {len(bundle)} anchors are not in {capath}" if missing else None


@contextmanager
def from_directory() -> Iterator[bool]:
    """Inside it, contexts that take OpenSSL's default paths (aiohttp's, built at its import) read no
    bundle when `keep_reason` finds none; yields whether that is so. SSL_CERT_FILE is changed for the
    block's length only (then put back as it was): enter it with one thread, before aiohttp is imported."""
    paths = ssl.get_default_verify_paths()
    why = ("aiohttp is already imported" if "aiohttp.connector" in sys.modules
           else keep_reason(paths.cafile, paths.capath))
    if why is not None:
        log.debug("the CA bundle is parsed at start: %s", why)
        yield False
        return
    own = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield True
    finally:
        if own is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = own   # (the operator's, for what is built later and for children)
