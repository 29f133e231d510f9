"""EC2 key pairs: created (private key returned once, never stored) or imported."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..store.records import KeyPair
from ..store.store import MultiIndex, Store
from .context import Caller
from .errors import CloudError, not_found
from .filters import FilterSet
from .ids import new_id
from .query import Query
from .tags import Tags

if TYPE_CHECKING:
    from .sshkeys import KeyMaterial


class KeyPairs:
    def __init__(self, store: Store, tags: Tags, max_per_owner: int | None = None) -> None:
        self.store = store
        self.max_per_owner = max_per_owner
        self.tags = tags
        self.table = store.table(KeyPair)
        self._by_owner: MultiIndex[KeyPair] = self.table.add_index(MultiIndex(lambda k: k.owner))
        self.filters = FilterSet({
            "key-name": lambda k: k.name,
            "key-pair-id": lambda k: k.id,
            "fingerprint": lambda k: k.fingerprint,
            "key-type": lambda k: k.key_type,
        }, tags_of=lambda k: tags.of(k.id))
        tags.register("key-pair", self._check_owner)

    def _check_owner(self, caller: Caller, key_id: str) -> None:
        k = self.table.get(key_id)
        if k is None or k.owner != caller.account:
            raise CloudError.not_found("InvalidKeyPair.NotFound", f"The key pair '{key_id}' does not exist")

    def by_name(self, owner: str, name: str) -> KeyPair | None:
        for k in self._by_owner.get(owner).values():
            if k.name == name:
                return k
        return None

    def _check_new(self, caller: Caller, name: str) -> None:
        if not name or len(name) > 255 or not name.isprintable():
            raise CloudError("InvalidParameterValue", "Key pair names must be 1-255 printable ASCII characters")
        if self.by_name(caller.account, name) is not None:
            raise CloudError.conflict("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
        if self.max_per_owner is not None and len(self._by_owner.get(caller.account)) >= self.max_per_owner:
            raise CloudError.limit("ResourceLimitExceeded",
                                   f"You have reached the limit of {self.max_per_owner} key pairs.")

    async def _save(self, caller: Caller, name: str, km: KeyMaterial,
                    tags: Sequence[tuple[str, str]]) -> KeyPair:
        # Checked again: another request may have taken the name while the key was generated.
        self._check_new(caller, name)
        kp = KeyPair(id=new_id("key"), owner=caller.account, name=name, fingerprint=km.fingerprint,
                     public_key=km.public_openssh, key_type=km.key_type, created=time.time())
        with self.store.txn() as tx:
            tx.put(kp)
            if tags:
                self.tags.put(tx, caller.account, kp.id, "key-pair", list(tags))
        await self.store.sync()
        return kp

    async def create(self, caller: Caller, name: str, key_type: str | None, key_format: str | None,
                     tags: Sequence[tuple[str, str]] = ()) -> tuple[KeyPair, str]:
        """A new key pair and its private key (PEM), which is not kept. `tags` are checked pairs."""
        self._check_new(caller, name)
        key_type = key_type or "rsa"
        if key_type not in ("rsa", "ed25519"):
            raise CloudError("InvalidParameterValue", f"Invalid key type '{key_type}'; expected rsa or ed25519")
        if (key_format or "pem") != "pem":
            raise CloudError("InvalidParameterValue", f"Key format '{key_format}' is not supported; use pem")
        caller.check_dry_run()
        km = await asyncio.get_running_loop().run_in_executor(None, _generate, key_type)
        kp = await self._save(caller, name, km, tags)
        assert km.private_pem is not None
        return kp, km.private_pem

    async def import_(self, caller: Caller, name: str, material: bytes,
                      tags: Sequence[tuple[str, str]] = ()) -> KeyPair:
        self._check_new(caller, name)
        try:
            km = await asyncio.get_running_loop().run_in_executor(None, _parse_public, material)
        except ValueError as e:
            raise CloudError("InvalidKey.Format", f"Key is not in valid OpenSSH public key format: {e}") from None
        caller.check_dry_run()
        return await self._save(caller, name, km, tags)

    def resolve(self, caller: Caller, names: Sequence[str], ids: Sequence[str]) -> list[KeyPair]:
        mine = self._by_owner.get(caller.account)
        if not names and not ids:
            return sorted(mine.values(), key=lambda k: k.name)
        out: dict[str, KeyPair] = {}
        for n in names:
            k = self.by_name(caller.account, n)
            if k is None:
                raise not_found("KeyPair", n)
            out[k.id] = k
        for i in ids:
            k = mine.get(i)
            if k is None:
                raise CloudError.not_found("InvalidKeyPair.NotFound", f"The key pair ID '{i}' does not exist")
            out[k.id] = k
        return sorted(out.values(), key=lambda k: k.name)

    def describe(self, caller: Caller, query: Query, names: Sequence[str] = ()) -> list[KeyPair]:
        """The caller's key pairs by id (`query.ids`) and/or name, filtered; never paged."""
        match = self.filters.compile(query.filters)
        keys = self.resolve(caller, names, query.ids)
        caller.check_dry_run()
        return [k for k in keys if match(k)]

    async def delete(self, caller: Caller, name: str | None, key_id: str | None) -> None:
        if not name and not key_id:
            raise CloudError("MissingParameter", "The request must contain the parameter KeyName or KeyPairId")
        k = self.by_name(caller.account, name) if name else self._by_owner.get(caller.account).get(key_id or "")
        caller.check_dry_run()
        if k is None:
            return  # EC2 answers success for a key that is already gone
        with self.store.txn() as tx:
            tx.delete(k)
            self.tags.remove_all(tx, k.id)
        await self.store.sync()


# sshkeys brings cryptography (~7 MiB of RSS): imported with the first key pair made or imported, on a
# worker thread (an import on the loop would hold it for the ~0.1 s it takes), where the work runs anyway.
def _generate(key_type: str) -> KeyMaterial:
    from . import sshkeys
    return sshkeys.generate(key_type)


def _parse_public(material: bytes) -> KeyMaterial:
    from . import sshkeys
    return sshkeys.parse_public(material)
