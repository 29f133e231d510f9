"""Cloud users: each has an access key pair and is its own account (owner of its resources)."""
from __future__ import annotations

import re
import time

from ..store.records import Instance, User
from ..store.store import MultiIndex, Store
from .errors import CloudError
from .ids import new_access_key, new_account_id, new_secret_key

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,63}$")
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down"})


class Users:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(User)
        self._by_key: MultiIndex[User] = self.table.add_index(MultiIndex(lambda u: u.access_key))
        self._by_account: MultiIndex[User] = self.table.add_index(MultiIndex(lambda u: u.account_id))

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
