"""Sealing secrets the controller must replay (switch logins, BMC passwords) before they reach a row.

Rows are written to the journal and to every checkpoint, and those files get copied (backups,
bug reports). A sealed value is AES-256-GCM under a key kept in a file of its own, by default
beside the state directory rather than in it, so a copy of the state directory holds only
ciphertext. The associated data names the row and field a value belongs to: a sealed value
copied into another row does not open. Only the code that hands a secret to a driver opens it.
"""
from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import Any

MARK = "sealed"          # a sealed value is {"sealed": "v1:<base64url nonce+ciphertext>"}
_VERSION = "v1:"
_NONCE = 12


class SecretsError(Exception):
    """The key file is missing, unreadable or wrong; phrased as one line for the admin."""


class SealError(Exception):
    """A sealed value does not open under this key (wrong key, or the value was tampered with)."""


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {MARK} and isinstance(value[MARK], str)


class Sealer:
    """Seals and opens values under one key. The cipher (cryptography, ~7 MiB of RSS) is loaded
    when a value is first sealed or opened: a cloud without bare-metal passwords never loads it."""

    def __init__(self, key: bytes, path: Path) -> None:
        self._key = key
        self._cipher: Any = None
        self.path = path

    @property
    def _aead(self) -> Any:
        if self._cipher is None:
            self.load()
        return self._cipher

    def load(self) -> None:
        """Import and make the cipher now (start-up calls it on a thread when there are sealed values)."""
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            self._cipher = AESGCM(self._key)

    def seal(self, clear: str, context: str) -> dict[str, str]:
        nonce = os.urandom(_NONCE)
        ct = self._aead.encrypt(nonce, clear.encode(), context.encode())
        return {MARK: _VERSION + base64.urlsafe_b64encode(nonce + ct).decode()}

    def open(self, value: Any, context: str) -> str:
        """The clear text of a sealed value; a clear string (written before sealing existed) as is."""
        if isinstance(value, str):
            return value
        if not is_sealed(value) or not value[MARK].startswith(_VERSION):
            raise SealError(f"{context}: not a sealed value")
        from cryptography.exceptions import InvalidTag
        try:
            raw = base64.urlsafe_b64decode(value[MARK][len(_VERSION):])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError(f"{context}: does not open with the key in {self.path}") from None


def load_key(path: Path, create: bool) -> Sealer:
    """Read the key file, or make one (0600, exclusive create) when `create` and it is absent.

    Runs at start-up, off the event loop. Refuses a key file others can read, like ssh does.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise SecretsError(f"secrets key file {path} is missing, but the state holds passwords sealed with "
                               f"it; restore that file (or point secrets_key_file at it)") from None
        return _create(path)
    except OSError as e:
        raise SecretsError(f"secrets key file {path}: {e.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SecretsError(f"secrets key file {path} is accessible by others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    try:
        key = base64.urlsafe_b64decode(path.read_text().strip())
    except OSError as e:
        raise SecretsError(f"secrets key file {path}: {e.strerror}") from None
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretsError(f"secrets key file {path} is not a cloudctl key (32 bytes in base64)")
    return Sealer(key, path)


def _create(path: Path) -> Sealer:
    key = os.urandom(32)   # (what AESGCM.generate_key(bit_length=256) returns)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise SecretsError(f"cannot create the secrets key file {path}: {e.strerror}; create its directory "
                           f"or set secrets_key_file") from None
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(key).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return Sealer(key, path)
