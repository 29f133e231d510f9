"""Saved VM templates, per user, and the template each instance was launched with.

OpenNebula's users launch from templates (`one.template.allocate`, then `instantiate`), and read
back the template a VM was given (`one.vm.info`'s TEMPLATE keeps CONTEXT, GRAPHICS, OS, ...).
The body is kept as the text the user gave: this module stores and scopes it (one owner sees
only their own), journaled like every other row; parsing it is the API's business.
"""
from __future__ import annotations

import time

from ..store.records import Instance, VmTemplate, VmUserTemplate
from ..store.store import Store
from .errors import CloudError
from .ids import new_id

MAX_TEMPLATES_PER_OWNER = 1000
MAX_BODY = 256 * 1024
PRUNE_EVERY = 256   # launches between sweeps of the templates of instances forgotten since


class VmTemplates:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(VmTemplate)
        self.launched = store.table(VmUserTemplate)
        self.instances = store.table(Instance)
        self._kept = 0

    async def create(self, owner: str, name: str, body: str) -> VmTemplate:
        if len(body) > MAX_BODY:
            raise CloudError("InvalidParameterValue", f"a template is at most {MAX_BODY} bytes")
        mine = self.owned(owner)
        if len(mine) >= MAX_TEMPLATES_PER_OWNER:
            raise CloudError.limit("TemplateLimitExceeded", f"at most {MAX_TEMPLATES_PER_OWNER} templates per user")
        if name and any(t.name == name for t in mine):
            raise CloudError.conflict("TemplateAlreadyExists", f"NAME is already taken by VMTEMPLATE {name!r}")
        row = VmTemplate(id=new_id("tmpl"), owner=owner, name=name, body=body, created=time.time())
        with self.store.txn() as tx:
            tx.put(row)
        await self.store.sync()
        return row

    def owned(self, owner: str | None) -> list[VmTemplate]:
        """`owner`'s templates (None: everyone's), oldest first."""
        return sorted((t for t in self.table.values() if owner is None or t.owner == owner),
                      key=lambda t: (t.created, t.id))

    def get(self, owner: str | None, template_id: str) -> VmTemplate:
        row = self.table.get(template_id)
        if row is None or (owner is not None and row.owner != owner):
            raise CloudError.not_found("NoSuchTemplate", f"template {template_id} does not exist")
        return row

    async def delete(self, owner: str | None, template_id: str) -> None:
        row = self.get(owner, template_id)
        with self.store.txn() as tx:
            tx.delete(row)
        await self.store.sync()

    async def keep_for_instance(self, instance_id: str, body: str) -> None:
        """Keep `body` as the instance's template; now and then forget those of instances the
        compute service has forgotten (terminated and expired), in the same transaction."""
        self._kept += 1
        gone = [r for r in self.launched.values() if self.instances.get(r.id) is None] \
            if self._kept % PRUNE_EVERY == 0 else []
        with self.store.txn() as tx:
            tx.put(VmUserTemplate(id=instance_id, body=body))
            for r in gone:
                tx.delete(r)
        await self.store.sync()

    def of_instance(self, instance_id: str) -> str | None:
        row = self.launched.get(instance_id)
        return row.body if row is not None else None
