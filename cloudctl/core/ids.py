"""Resource identifiers in AWS's shape: a prefix and 17 hex digits (`i-0123456789abcdef0`).

Random parts come from one buffered source: `os.urandom` read 4 KiB at a time (the kernel's CSPRNG,
as before, so ids stay unpredictable), then handed out as hex digits, each digit once. A launch made
six `os.urandom` system calls (and uuid4 two more) for its ids; now ~1 in 450 ids makes one.
"""
from __future__ import annotations

import os
import re
import secrets
import string
import threading

_ID = re.compile(r"^[a-z]+-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_CHUNK = 4096   # bytes read from the kernel at a time: 8,192 hex digits
# A version 4 UUID from 16 random bytes: the version in the 7th byte's high half, the variant
# (RFC 4122: 10) in the 9th's two high bits, as `uuid.UUID(bytes=..., version=4)` sets them.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))
_UUIDS = _CHUNK // 16   # made from one read
_UUID_COLUMNS = [k + (k >= 8) + (k >= 12) + (k >= 16) + (k >= 20) for k in range(32)]   # digit -> its place


class _HexSource:
    """Random hex digits from `os.urandom`, buffered. Thread-safe; a forked child starts empty
    (it must not hand out the digits its parent also holds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = ""
        self._pos = 0
        self._uuids: list[str] = []   # UUIDs made from a read of their own (`uuid`), each handed out once

    def take(self, n: int) -> str:
        with self._lock:
            pos = self._pos
            end = pos + n
            if end > len(self._buf):
                self._buf = os.urandom(max(_CHUNK, n)).hex()
                pos, end = 0, n
            self._pos = end
            return self._buf[pos:end]

    def uuid(self) -> str:
        """A version 4 UUID's text (every API request's id): made 256 at a time from one read of
        the kernel's, each from 32 digits of its own, so a request's costs a lock and a pop."""
        with self._lock:
            if not self._uuids:
                raw = bytearray(os.urandom(_CHUNK))
                raw[6::16] = raw[6::16].translate(_VERSION_4)   # (each UUID's 7th byte: 4x)
                raw[8::16] = raw[8::16].translate(_RFC_4122)     # (its 9th: 10xxxxxx)
                digits = raw.hex().encode()
                text = bytearray(b"-" * (37 * _UUIDS))   # (each UUID's 36 characters and a space)
                for k, at in enumerate(_UUID_COLUMNS):   # (its k-th digit, of every UUID at once)
                    text[at::37] = digits[k::32]
                text[36::37] = b" " * _UUIDS
                self._uuids = text.decode().split()
            return self._uuids.pop()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._buf = ""
        self._pos = 0
        self._uuids = []


_hex = _HexSource()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_hex._after_fork)


def random_hex(n: int) -> str:
    """`n` random hex digits (4 bits each, from the kernel's CSPRNG)."""
    return _hex.take(n)


def new_id(prefix: str) -> str:
    return prefix + "-" + _hex.take(17)


def new_uuid() -> str:
    """A random (version 4) UUID in its canonical text form, like `str(uuid.uuid4())`."""
    return _hex.uuid()


def well_formed(resource_id: str, prefix: str) -> bool:
    return resource_id.startswith(prefix + "-") and _ID.match(resource_id) is not None


def new_access_key() -> str:
    return "AKCC" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def new_secret_key() -> str:
    return secrets.token_urlsafe(30)[:40]


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def new_mac() -> str:
    """A locally administered unicast MAC derived from random bits."""
    h = _hex.take(10)
    return f"02:{h[0:2]}:{h[2:4]}:{h[4:6]}:{h[6:8]}:{h[8:10]}"
