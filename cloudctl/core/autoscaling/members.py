"""Which instances are in which group: `ScalingMember` rows, indexed per group and per account,
plus the `aws:autoscaling:groupName` tag the instances carry while they are members."""
from __future__ import annotations

import time

from ...store.records import Instance, ScalingMember
from ...store.store import MultiIndex, Store, Txn
from ..tags import Tags
from .model import GROUP_TAG, key


class Members:
    def __init__(self, store: Store, tags: Tags) -> None:
        self.store = store
        self.tags = tags
        self.table = store.table(ScalingMember)
        self._by_group: MultiIndex[ScalingMember] = self.table.add_index(
            MultiIndex(lambda m: key(m.owner, m.group)))
        self._by_owner: MultiIndex[ScalingMember] = self.table.add_index(MultiIndex(lambda m: m.owner))

    def of_group(self, owner: str, group: str) -> list[ScalingMember]:
        return list(self._by_group.get(key(owner, group)).values())

    def count(self, owner: str, group: str) -> int:
        return len(self._by_group.get(key(owner, group)))

    def of_owner(self, owner: str) -> dict[str, ScalingMember]:
        return self._by_owner.get(owner)

    def get(self, instance_id: str) -> ScalingMember | None:
        return self.table.get(instance_id)

    def add(self, tx: Txn, inst: Instance, group: str, launch_configuration: str | None,
            template: str | None, protected: bool) -> ScalingMember:
        m = ScalingMember(id=inst.id, owner=inst.owner, group=group, zone=inst.zone,
                          launched=inst.launch_time or time.time(), launch_configuration=launch_configuration,
                          template=template, protected=protected)
        tx.put(m)
        self.tags.put(tx, inst.owner, inst.id, "instance", [(GROUP_TAG, group)])
        return m

    def remove(self, tx: Txn, m: ScalingMember) -> None:
        tx.delete(m)
        row = next((t for t in self.tags.rows_of(m.id) if t.tag_key == GROUP_TAG), None)
        if row is not None:
            tx.delete(row)
