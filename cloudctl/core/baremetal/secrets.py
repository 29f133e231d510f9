"""The bare-metal passwords sealed at rest: the switch options each family's options model marks
secret (`Secret`, `SecretStr`: logins, enable passwords, tokens) and BMC passwords
(`obm.password`). Site seals them before a row is made; only the switch worker and the OBM calls
open them, when a driver needs them.

At start-up every sealed value is opened once, so a wrong key stops the controller with one line
instead of failing later inside a switch session. Clear passwords left by an older cloudctl are
sealed then, and two checkpoints drop the older state files that held them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from ...store.records import BmNode, BmSwitch
from ...store.store import Store
from ..secrets import Sealer, SealError, SecretsError, is_sealed, load_key

log = logging.getLogger("cloudctl.baremetal")

OBM_SECRETS = ("password", "admin_token", "node_token")   # IPMI login, obmd tokens


def _ctx(table: str, key: str, field: str) -> str:
    return f"{table}/{key}/{field}"


class BmSecrets:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    @classmethod
    async def open(cls, store: Store, key_file: Path) -> BmSecrets:
        """Load (or first make) the key, check it opens what the state holds, seal clear values."""
        switches, nodes = store.table(BmSwitch), store.table(BmNode)
        sealed = [(_ctx(BmSwitch.table, s.name, f), v) for s in switches.values()
                  for f, v in s.options.items() if is_sealed(v)]
        sealed += [(_ctx(BmNode.table, n.name, f), n.obm[f]) for n in nodes.values()
                   for f in OBM_SECRETS if is_sealed(n.obm.get(f))]
        sealer = await asyncio.to_thread(load_key, key_file, not sealed)
        if sealed:   # (the cipher's module, cryptography, is imported here on a thread, not on the loop)
            await asyncio.to_thread(sealer.load)
        for ctx, value in sealed:
            try:
                sealer.open(value, ctx)
            except SealError:
                raise SecretsError(f"secrets key file {key_file} does not open the passwords sealed in the state "
                                   f"({ctx.replace('/', ' ', 1)}): it is not the key they were sealed with; "
                                   f"restore the right key file") from None
        secrets = cls(sealer)
        changed = [s2 for s in switches.values() if (s2 := secrets._sealed_switch(s)) is not s]
        changed += [n2 for n in nodes.values() if (n2 := secrets._sealed_node(n)) is not n]
        if changed:
            with store.txn() as tx:
                for row in changed:
                    tx.put(row)
            await store.sync()
            # The checkpoint written at open and the previous generation still hold the clear
            # text: two new generations make the store prune both.
            await store.checkpoint()
            await store.checkpoint()
            log.info("sealed the clear passwords of %d switches and nodes with the key in %s", len(changed), key_file)
        return secrets

    # -- rows ---------------------------------------------------------------------------------------
    def _sealed_switch(self, row: BmSwitch) -> BmSwitch:
        opts = self.seal_switch_options(row.name, row.type, row.options)
        return row if opts == row.options else dataclasses.replace(row, options=opts)

    def _sealed_node(self, row: BmNode) -> BmNode:
        obm = self.seal_obm(row.name, row.obm)
        return row if obm == row.obm else dataclasses.replace(row, obm=obm)

    def seal_switch_options(self, name: str, family: str, options: dict[str, Any]) -> dict[str, Any]:
        from ...drivers.switch.base import secret_fields  # (at the first switch: issue 14, base RSS)
        return self._seal(BmSwitch.table, name, options, secret_fields(family))

    def seal_obm(self, node: str, obm: dict[str, Any]) -> dict[str, Any]:
        return self._seal(BmNode.table, node, obm, OBM_SECRETS)

    def _seal(self, table: str, key: str, d: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        out = dict(d)
        for f in fields:
            v = out.get(f)
            if isinstance(v, str) and v:
                out[f] = self.sealer.seal(v, _ctx(table, key, f))
        return out

    def switch_options(self, row: BmSwitch) -> dict[str, Any]:
        """The options with the passwords opened: for the switch driver only."""
        from ...drivers.switch.base import secret_fields
        return self._open(BmSwitch.table, row.name, row.options, secret_fields(row.type))

    def obm(self, row: BmNode) -> dict[str, Any]:
        """The OBM fields with the password opened: for the IPMI driver only."""
        return self._open(BmNode.table, row.name, row.obm, OBM_SECRETS)

    def _open(self, table: str, key: str, d: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        out = dict(d)
        for f in fields:
            if f in out:
                out[f] = self.sealer.open(out[f], _ctx(table, key, f))
        return out
