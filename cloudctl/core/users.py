"""Cloud users: each has an access key pair and is its own account (owner of its resources).

A user may also hold certificate subjects (DNs, econe's x509 login): a request that presents a
verified client certificate with one of them is that user's. By default the certificate is a
second factor: a user holding DNs must sign as always *and* present one of them, and nobody
may sign while presenting another user's certificate. A user marked `x509_only` logs in with
the certificate alone, unsigned, as econe's `:auth: x509` does. A user marked `ec2_only` is
confined to the EC2 listener (econe's `public` driver): no XML-RPC session.
"""
from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from typing import TypeVar

from ..store.records import Instance, User
from ..store.store import Index, MultiIndex, Store
from . import x509names
from .errors import CloudError
from .ids import new_access_key, new_account_id, new_secret_key

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,63}$")
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down"})


class _DnIndex(Index[User]):
    """DN comparison key -> the user holding it (a DN is one user's at most)."""

    def __init__(self) -> None:
        self.names: dict[x509names.DnKey, str] = {}

    def add(self, row: User) -> None:
        for dn in row.dns:
            self.names[x509names.dn_key(dn)] = row.name

    def remove(self, row: User) -> None:
        for dn in row.dns:
            self.names.pop(x509names.dn_key(dn), None)

    def update(self, old: User, new: User) -> None:
        if old.dns != new.dns:
            self.remove(old)
            self.add(new)


class Users:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(User)
        self._by_key: MultiIndex[User] = self.table.add_index(MultiIndex(lambda u: u.access_key))
        self._by_account: MultiIndex[User] = self.table.add_index(MultiIndex(lambda u: u.account_id))
        self._by_dn = self.table.add_index(_DnIndex())

    def by_dn(self, dn: str) -> User | None:
        """The user holding `dn` (any spelling x509names reads; None for text that is no DN)."""
        try:
            name = self._by_dn.names.get(x509names.dn_key(dn))
        except x509names.DnError:
            return None
        return self.table.get(name) if name is not None else None

    def certificate_login(self, dn: str | None) -> User | None:
        """The user an unsigned request presenting `dn` (verified) is: only an `x509_only` user."""
        user = self.by_dn(dn) if dn else None
        return user if user is not None and user.x509_only else None

    def check_certificate(self, user: User, dn: str | None) -> None:
        """Refuse a signed request whose certificate (or lack of one) does not go with its signer.
        CloudError of kind AUTH; the message says which, without naming the other user."""
        if dn:
            holder = self.by_dn(dn)
            if holder is not None and holder.name != user.name:
                raise CloudError.auth("AuthFailure", "The client certificate is another user's")
            if holder is None and user.dns:
                raise CloudError.auth("AuthFailure", "The client certificate is not one of this user's")
        elif user.dns:
            raise CloudError.auth("AuthFailure", "This user logs in with a client certificate as well as "
                                  "a signature; none was presented")

    def _get(self, name: str) -> User:
        user = self.table.get(name)
        if user is None:
            raise CloudError.not_found("NoSuchEntity", f"user {name!r} does not exist")
        return user

    async def _put(self, user: User) -> User:
        with self.store.txn() as tx:
            tx.put(user)
        await self.store.sync()
        return user

    async def add_dn(self, name: str, dn: str) -> User:
        """Give `name` the certificate subject `dn` (stored in econe's spelling)."""
        user = self._get(name)
        shown = _dn(x509names.canonical, dn)
        holder = self.by_dn(shown)
        if holder is not None:
            if holder.name == name:
                return user
            raise CloudError.conflict("EntityAlreadyExists", f"the DN {shown} is user {holder.name!r}'s")
        return await self._put(dataclasses.replace(user, dns=(*user.dns, shown)))

    async def remove_dn(self, name: str, dn: str) -> User:
        user = self._get(name)
        key = _dn(x509names.dn_key, dn)
        kept = tuple(d for d in user.dns if x509names.dn_key(d) != key)
        if len(kept) == len(user.dns):
            raise CloudError.not_found("NoSuchEntity", f"user {name!r} holds no DN {dn}")
        return await self._put(dataclasses.replace(user, dns=kept))

    async def set_flags(self, name: str, x509_only: bool | None = None, ec2_only: bool | None = None) -> User:
        user = self._get(name)
        new = dataclasses.replace(user, x509_only=user.x509_only if x509_only is None else x509_only,
                                  ec2_only=user.ec2_only if ec2_only is None else ec2_only)
        return user if new == user else await self._put(new)

    def by_access_key(self, access_key: str) -> User | None:
        return self._by_key.first(access_key)

    def by_account(self, account_id: str) -> User | None:
        return self._by_account.first(account_id)

    def secret_for(self, access_key: str) -> str | None:
        u = self.by_access_key(access_key)
        return u.secret_key if u else None

    def list(self) -> list[User]:
        return sorted(self.table.values(), key=lambda u: u.name)

    async def create(self, name: str) -> User:
        if not _NAME.match(name):
            raise CloudError("InvalidParameterValue",
                             f"user name {name!r} must be 1-64 letters, digits or _.@+=- "
                             "and start with a letter or digit")
        if self.table.get(name) is not None:
            raise CloudError.conflict("EntityAlreadyExists", f"user {name!r} already exists")
        user = User(name=name, access_key=new_access_key(), secret_key=new_secret_key(),
                    account_id=new_account_id(), created=time.time())
        with self.store.txn() as tx:
            tx.put(user)
        await self.store.sync()
        return user

    async def delete(self, name: str) -> None:
        user = self.table.get(name)
        if user is None:
            raise CloudError.not_found("NoSuchEntity", f"user {name!r} does not exist")
        live = [i.id for i in self.store.table(Instance).values()
                if i.owner == user.account_id and i.state in LIVE_STATES]
        if live:
            raise CloudError.conflict("DeleteConflict", f"user {name!r} still has {len(live)} instance(s), "
                                      f"e.g. {live[0]}; terminate them first")
        with self.store.txn() as tx:
            tx.delete(user)
        await self.store.sync()


def _dn(read: Callable[[str], T], dn: str) -> T:
    """`read(dn)`, a DN that is none refused as the API's bad parameter."""
    try:
        return read(dn)
    except x509names.DnError as e:
        raise CloudError("InvalidParameterValue", f"not a distinguished name: {e}") from None
