"""Users of the bare-metal API (HIL's database auth backend) and how a request is authenticated."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import Any

from ...store.records import BmUser
from .auth import ADMIN, Caller, check_password, hash_password
from .errors import AuthenticationError, BadArgumentError, DuplicateError, NotFoundError
from .names import label
from .site import Site


class BmUsers:
    def __init__(self, site: Site, backend: str) -> None:
        self.site = site
        self.backend = backend
        self._verified: dict[str, str] = {}   # digest of (user, password) -> the hash it matched

    async def authenticate(self, username: str | None, password: str | None) -> Caller:
        """The caller named by HTTP Basic credentials; the `null` backend makes everyone admin."""
        if self.backend == "null":
            return ADMIN
        if username is None or password is None:
            raise AuthenticationError("this API needs HTTP Basic credentials")
        user = self.site.users.get(username)
        if user is None:
            raise AuthenticationError("wrong user name or password")
        digest = hashlib.sha256(f"{username}\x00{password}".encode()).hexdigest()
        if self._verified.get(digest) != user.password_hash:
            # scrypt is deliberately slow: off the loop, and remembered once it matched.
            if not await asyncio.to_thread(check_password, password, user.password_hash):
                raise AuthenticationError("wrong user name or password")
            self._verified[digest] = user.password_hash
        return Caller(user.name, user.is_admin, frozenset(user.projects))

    def user(self, name: str) -> BmUser:
        u = self.site.users.get(name)
        if u is None:
            raise NotFoundError(f"user {name!r} does not exist")
        return u

    def list(self, caller: Caller) -> dict[str, Any]:
        caller.require_admin()
        return {u.name: {"is_admin": u.is_admin, "projects": sorted(u.projects)}
                for u in sorted(self.site.users.values(), key=lambda u: u.name)}

    async def create(self, caller: Caller, name: str, password: Any, is_admin: Any) -> None:
        caller.require_admin()
        label("user", name)
        if not isinstance(password, str) or len(password) < 8:
            raise BadArgumentError("password must be a string of at least 8 characters")
        if not isinstance(is_admin, bool):
            raise BadArgumentError("is_admin must be true or false")
        if name in self.site.users.rows:
            raise DuplicateError(f"user {name!r} already exists")
        pw_hash = await asyncio.to_thread(hash_password, password)
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
        await self.site.commit(dataclasses.replace(u, is_admin=is_admin))
