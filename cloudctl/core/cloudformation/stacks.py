"""Stack, resource and event rows: lookups for the API and the journaled changes the engine makes.
Every status change is one transaction synced before the engine goes on, so a restart sees the
stack where the crash left it."""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace

from ...store.records import CfnChangeSet, CfnEvent, CfnResource, CfnStack
from ...store.store import MultiIndex, Store
from ..errors import CloudError
from .resources.waits import handle_of

NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}\Z")
DELETED_KEPT_S = 90 * 86400.0


def validation(message: str) -> CloudError:
    return CloudError("ValidationError", message)


def arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:cloudformation:{region}:{account}:stack/{name}/{uuid.uuid4()}"


def _handle_key(r: CfnResource) -> str | None:
    if r.type != "AWS::CloudFormation::WaitConditionHandle" or not r.physical:
        return None
    return handle_of(r.physical)


class Stacks:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = store.table(CfnStack)
        self.resources = store.table(CfnResource)
        self.events = store.table(CfnEvent)
        self._by_owner: MultiIndex[CfnStack] = self.table.add_index(MultiIndex(lambda r: r.owner))
        self._res_of: MultiIndex[CfnResource] = self.resources.add_index(MultiIndex(lambda r: r.stack_id))
        self._events_of: MultiIndex[CfnEvent] = self.events.add_index(MultiIndex(lambda r: r.stack_id))
        # (a signal arrives unauthenticated until its HMAC is checked: found by its handle, not by a scan)
        self._by_handle: MultiIndex[CfnResource] = self.resources.add_index(MultiIndex(_handle_key))
        self.change_sets = store.table(CfnChangeSet)
        self._sets_of: MultiIndex[CfnChangeSet] = self.change_sets.add_index(MultiIndex(lambda r: r.stack_id))
        self._seq: dict[str, int] = {}

    # -- reads ----------------------------------------------------------------------------------
    def handle(self, handle: str) -> CfnResource | None:
        """The WaitConditionHandle resource whose signal URL names `handle`."""
        return self._by_handle.first(handle)

    def of_owner(self, owner: str) -> list[CfnStack]:
        return sorted(self._by_owner.get(owner).values(), key=lambda s: -s.created)

    def live(self, owner: str, name: str) -> CfnStack | None:
        """The owner's stack of this name that is not deleted."""
        for s in self._by_owner.get(owner).values():
            if s.name == name and s.status != "DELETE_COMPLETE":
                return s
        return None

    def find(self, owner: str, name_or_id: str) -> CfnStack:
        """By id (a deleted stack too) or by name (live only), as DescribeStacks finds them."""
        s = self.table.get(name_or_id)
        if s is not None and s.owner == owner:
            return s
        s = self.live(owner, name_or_id)
        if s is None:
            raise validation(f"Stack with id {name_or_id} does not exist")
        return s

    def resources_of(self, stack_id: str) -> list[CfnResource]:
        return sorted(self._res_of.get(stack_id).values(), key=lambda r: r.logical)

    def resource(self, stack_id: str, logical: str) -> CfnResource | None:
        return self.resources.get(f"{stack_id}|{logical}")

    def change_sets_of(self, stack_id: str) -> list[CfnChangeSet]:
        """Oldest first (ListChangeSets' order)."""
        return sorted((c for c in self._sets_of.get(stack_id).values() if c.status != "DELETE_COMPLETE"),
                      key=lambda c: c.created)

    def events_of(self, stack_id: str) -> list[CfnEvent]:
        """Newest first."""
        return sorted(self._events_of.get(stack_id).values(), key=lambda e: -e.seq)

    def in_progress(self) -> list[CfnStack]:
        """Stacks an operation was working on: *_IN_PROGRESS, and a failed create whose rollback
        or delete had not been journaled yet when the process stopped."""
        return [s for s in self.table.values() if s.status.endswith("_IN_PROGRESS")
                or (s.status == "CREATE_FAILED" and s.on_failure != "DO_NOTHING")]

    # -- changes --------------------------------------------------------------------------------
    def _event(self, s: CfnStack, logical: str, rtype: str, status: str, physical: str, reason: str) -> CfnEvent:
        seq = self._seq.get(s.id)
        if seq is None:
            seq = max((e.seq for e in self._events_of.get(s.id).values()), default=0)
        self._seq[s.id] = seq + 1
        return CfnEvent(id=str(uuid.uuid4()), stack_id=s.id, seq=seq + 1, at=time.time(), logical=logical,
                        type=rtype, status=status, physical=physical, reason=reason)

    async def add(self, s: CfnStack) -> None:
        with self.store.txn() as tx:
            tx.put(s)
            tx.put(self._event(s, s.name, "AWS::CloudFormation::Stack", s.status, s.id, "User Initiated"))
        await self.store.sync()

    async def set_stack(self, s: CfnStack, status: str, reason: str = "", **fields: object) -> CfnStack:
        now = time.time()
        s = replace(s, status=status, reason=reason, updated=now,
                    deleted=now if status == "DELETE_COMPLETE" else s.deleted, **fields)  # type: ignore[arg-type]
        with self.store.txn() as tx:
            tx.put(s)
            tx.put(self._event(s, s.name, "AWS::CloudFormation::Stack", status, s.id, reason))
        await self.store.sync()
        return s

    async def set_resource(self, s: CfnStack, logical: str, rtype: str, status: str, reason: str = "",
                           physical: str | None = None, attributes: dict[str, str] | None = None,
                           **fields: object) -> CfnResource:
        """The resource's new status (and physical id, attributes, update journal `fields`) and its
        event, in one synced transaction."""
        old = self.resource(s.id, logical)
        if physical is None:
            physical = old.physical if old else ""
        if attributes is None:
            attributes = dict(old.attributes) if old else {}
        if old is None:
            r = CfnResource(id=f"{s.id}|{logical}", stack_id=s.id, logical=logical, type=rtype, status=status,
                            updated=time.time(), physical=physical, reason=reason, attributes=attributes,
                            **fields)  # type: ignore[arg-type]
        else:
            r = replace(old, type=rtype, status=status, updated=time.time(), physical=physical, reason=reason,
                        attributes=attributes, **fields)  # type: ignore[arg-type]
        with self.store.txn() as tx:
            tx.put(r)
            tx.put(self._event(s, logical, rtype, status, r.physical, reason))
        await self.store.sync()
        return r

    async def put_resources(self, rows: list[CfnResource]) -> None:
        """Journal fields of resources changed with no event (an update's bookkeeping)."""
        if rows:
            with self.store.txn() as tx:
                for r in rows:
                    tx.put(r)
            await self.store.sync()

    async def other_event(self, s: CfnStack, r: CfnResource, status: str, reason: str = "",
                          **fields: object) -> CfnResource:
        """An event about a replacement's other physical resource (its cleanup delete); the row
        keeps its own status, its journal `fields` change in the same transaction."""
        new = replace(r, **fields) if fields else r  # type: ignore[arg-type]
        with self.store.txn() as tx:
            tx.put(new)
            tx.put(self._event(s, r.logical, r.type, status, r.other_physical, reason))
        await self.store.sync()
        return new

    async def drop_resource(self, s: CfnStack, r: CfnResource, status: str, reason: str = "") -> None:
        """A resource the stack no longer has (removed by an update, or added by one rolled back):
        its last event, and the row goes."""
        with self.store.txn() as tx:
            tx.delete(r)
            tx.put(self._event(s, r.logical, r.type, status, r.physical, reason))
        await self.store.sync()

    async def put_change_set(self, c: CfnChangeSet) -> None:
        with self.store.txn() as tx:
            tx.put(c)
        await self.store.sync()

    async def add_with_change_set(self, s: CfnStack, c: CfnChangeSet) -> None:
        """A REVIEW_IN_PROGRESS stack and its first change set, together."""
        with self.store.txn() as tx:
            tx.put(s)
            tx.put(c)
            tx.put(self._event(s, s.name, "AWS::CloudFormation::Stack", s.status, s.id, "User Initiated"))
        await self.store.sync()

    async def trim(self) -> None:
        """Deleted stacks (and their resources and events) go after 90 days, as in AWS."""
        cut = time.time() - DELETED_KEPT_S
        old = [s for s in self.table.values() if s.deleted is not None and s.deleted < cut]
        if not old:
            return
        with self.store.txn() as tx:
            for s in old:
                for r in list(self._res_of.get(s.id).values()):
                    tx.delete(r)
                for e in list(self._events_of.get(s.id).values()):
                    tx.delete(e)
                for c in list(self._sets_of.get(s.id).values()):
                    tx.delete(c)
                tx.delete(s)
                self._seq.pop(s.id, None)
        await self.store.sync()


def failure_message(e: Exception) -> str:
    """A resource event's reason for a failure: the service's own message and code, as AWS shows it."""
    if isinstance(e, CloudError):
        return f"{e.message} (Service: {e.code})"
    return str(e)
