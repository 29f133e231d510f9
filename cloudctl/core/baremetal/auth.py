"""Who is calling and what they may touch: HIL's model of admins and project members."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import field

from ...config import LoginThrottle
from ...slim import dataclass
from ..workpool import WorkPool
from .errors import AuthorizationError

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${salt.hex()}${h.hex()}"


def password_hashing(logins: LoginThrottle) -> WorkPool:
    """The threads that check and hash HIL users' passwords: scrypt is deliberately slow, so on its
    own few threads, never the loop's or the store's."""
    return WorkPool("scrypt", logins.password_workers, logins.password_queue)


# No password hashes to this (its digest is all zeros): an unknown user's password is checked
# against it, with the same parameters, so a miss costs the same whether the user exists or not.
DUMMY_HASH = f"scrypt${'5a' * 16}${'00' * 64}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, salt, want = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=_N, r=_R, p=_P)
    return hmac.compare_digest(got.hex(), want)


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool = False
    projects: frozenset[str] = field(default_factory=frozenset)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise AuthorizationError("this call needs an administrator")

    def may_access(self, project: str | None) -> bool:
        return self.is_admin or (project is not None and project in self.projects)

    def require_project(self, project: str | None) -> None:
        if not self.may_access(project):
            raise AuthorizationError(f"you have no access to project {project!r}" if project
                                     else "this call needs an administrator")


ADMIN = Caller("admin", is_admin=True)
