"""Users of the bare-metal API (HIL's database auth backend) and how a request is authenticated."""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

from ...config import LoginThrottle as ThrottleConfig
from ...store.records import BmUser
from ..throttle import Throttle, Throttled
from ..workpool import Busy, WorkPool
from .auth import ADMIN, DUMMY_HASH, Caller, check_password, hash_password, password_hashing
from .errors import (
    AuthenticationError,
    BadArgumentError,
    BusyError,
    DuplicateError,
    IllegalStateError,
    NotFoundError,
    TooManyFailuresError,
)
from .names import label
from .site import Site


class BmUsers:
    def __init__(self, site: Site, backend: str, logins: ThrottleConfig, throttle: Throttle | None = None,
                 hashing: WorkPool | None = None) -> None:
        """`throttle` and `hashing`: made by the cloud when it counts them (in /metrics) before the
        service is built; else made here from `logins`."""
        self.site = site
        self.backend = backend
        self._verified: dict[str, str] = {}   # digest of (user, password) -> the hash it matched
        self.throttle = throttle if throttle is not None else Throttle(logins)
        self.hashing = hashing if hashing is not None else password_hashing(logins)

    async def authenticate(self, username: str | None, password: str | None, source: str = "") -> Caller:
        """The caller named by HTTP Basic credentials; the `null` backend makes everyone admin.

        A known and an unknown user's miss take the same path and cost (scrypt against the
        dummy hash); both count towards the backoff of the user name and the source address."""
        if self.backend == "null":
            return ADMIN
        if username is None or password is None:
            raise AuthenticationError("this API needs HTTP Basic credentials")
        try:
            await self.throttle.admit(username, source)
        except Throttled as e:
            raise TooManyFailuresError(f"too many failed logins; retry in {math.ceil(e.retry_after_s)} s",
                                       e.retry_after_s) from None
        user = self.site.users.get(username)
        digest = hashlib.sha256(f"{username}\x00{password}".encode()).hexdigest()
        if user is None or self._verified.get(digest) != user.password_hash:
            try:
                ok = await self.hashing.run(check_password, password, user.password_hash if user else DUMMY_HASH)
            except Busy as e:
                self.throttle.void(username, source)
                raise BusyError("too many logins are being checked; try again shortly", e.retry_after_s) from None
            except BaseException:   # (cancelled: the client went away)
                self.throttle.void(username, source)
                raise
            if not ok or user is None:
                self.throttle.failed(username, source)
                raise AuthenticationError("wrong user name or password")
            self._verified[digest] = user.password_hash   # remembered once it matched
        self.throttle.succeeded(username, source)
        return Caller(user.name, user.is_admin, frozenset(user.projects))

    def close(self) -> None:
        self.hashing.close()

    def user(self, name: str) -> BmUser:
        u = self.site.users.get(name)
        if u is None:
            raise NotFoundError(f"user {name!r} does not exist")
        return u

    def list(self, caller: Caller) -> list[BmUser]:
        caller.require_admin()
        return sorted(self.site.users.values(), key=lambda u: u.name)

    async def create(self, caller: Caller, name: str, password: Any, is_admin: Any) -> None:
        caller.require_admin()
        label("user", name)
        if not isinstance(password, str) or len(password) < 8:
            raise BadArgumentError("password must be a string of at least 8 characters")
        if not isinstance(is_admin, bool):
            raise BadArgumentError("is_admin must be true or false")
        if name in self.site.users.rows:
            raise DuplicateError(f"user {name!r} already exists")
        try:
            pw_hash = await self.hashing.run(hash_password, password)
        except Busy as e:
            raise BusyError("too many passwords are being checked; try again shortly", e.retry_after_s) from None
        await self.site.commit(BmUser(name=name, password_hash=pw_hash, is_admin=is_admin))

    async def delete(self, caller: Caller, name: str) -> None:
        caller.require_admin()
        await self.site.commit(delete=(self.user(name),))

    async def add_project(self, caller: Caller, name: str, project: Any) -> None:
        caller.require_admin()
        u = self.user(name)
        if not isinstance(project, str):
            raise BadArgumentError('expected {"project": ...}')
        self.site.project(project)
        if project in u.projects:
            raise DuplicateError(f"user {name!r} is already in project {project!r}")
        await self.site.commit(dataclasses.replace(u, projects=sorted([*u.projects, project])))

    async def remove_project(self, caller: Caller, name: str, project: Any) -> None:
        caller.require_admin()
        u = self.user(name)
        if not isinstance(project, str) or project not in u.projects:
            raise NotFoundError(f"user {name!r} is not in project {project!r}")
        await self.site.commit(dataclasses.replace(u, projects=[p for p in u.projects if p != project]))

    async def set_admin(self, caller: Caller, name: str, is_admin: Any) -> None:
        caller.require_admin()
        u = self.user(name)
        if not isinstance(is_admin, bool):
            raise BadArgumentError("is_admin must be true or false")
        if name == caller.name:
            # (as HIL: an admin could lock itself out; another admin may do it)
            raise IllegalStateError("Cannot set own admin status")
        await self.site.commit(dataclasses.replace(u, is_admin=is_admin))
