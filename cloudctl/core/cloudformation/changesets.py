"""Change sets: an update (or a new stack's create, ChangeSetType CREATE, which makes a
REVIEW_IN_PROGRESS stack as `aws cloudformation deploy` expects) computed for review and run
later. Made CREATE_PENDING, its changes computed by a background task (journaled, recomputed
after a restart), then CREATE_COMPLETE — or FAILED, e.g. when nothing would change."""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...store.records import CfnChangeSet, CfnStack
from ..context import Caller
from ..errors import CloudError
from . import plan
from .resources import Failed
from .stacks import NAME, arn, validation

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
EMPTY = "The submitted information didn't contain changes. Submit different information to create a change set."
KINDS = ("CREATE", "UPDATE")


def not_found(name: str) -> CloudError:
    return CloudError.not_found("ChangeSetNotFound", f"ChangeSet [{name}] does not exist")


def execution_status(c: CfnChangeSet, s: CfnStack | None) -> str:
    """An executed change set's ExecutionStatus follows its stack's operation."""
    if c.execution != "EXECUTE_IN_PROGRESS" or s is None:
        return c.execution
    if s.status.endswith("_IN_PROGRESS"):
        return "EXECUTE_IN_PROGRESS"
    return "EXECUTE_COMPLETE" if s.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE") else "EXECUTE_FAILED"


class ChangeSets:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    def find(self, caller: Caller, name_or_id: str, stack: str | None) -> CfnChangeSet:
        stacks = self.e.stacks
        c = stacks.change_sets.get(name_or_id)
        if c is not None and c.owner == caller.account and c.status != "DELETE_COMPLETE":
            return c
        if not name_or_id.startswith("arn:") and stack:
            try:
                s = stacks.find(caller.account, stack)
            except CloudError:   # (AWS names the stack it has not, before any change set)
                raise validation(f"Stack [{stack}] does not exist") from None
            for c in stacks.change_sets_of(s.id):
                if c.name == name_or_id:
                    return c
        raise not_found(name_or_id)

    async def create(self, caller: Caller, stack_name: str, name: str, kind: str | None, body: str | None,
                     params: Mapping[str, str | None], tags: Mapping[str, str] | None,
                     description: str) -> CfnChangeSet:
        e = self.e
        kind = kind or "UPDATE"
        if kind not in KINDS:
            raise validation(f"ChangeSetType must be one of {', '.join(KINDS)}")
        if body is not None:
            await e.parsed(body)        # parsed off the loop; the checks below read it from the cache
        for what, value in (("changeSetName", name), ("stackName", stack_name)):
            if not NAME.match(value or ""):
                raise validation(f"1 validation error detected: Value '{value}' at '{what}' failed to satisfy "
                                 f"constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*")
        s = e.stacks.live(caller.account, stack_name) if not stack_name.startswith("arn:") else None
        if kind == "CREATE":
            if s is not None and s.status != "REVIEW_IN_PROGRESS":
                raise validation(f"Stack [{stack_name}] already exists and cannot be created again with the "
                                 f"changeSet [{name}].")
            if body is None:
                raise validation("UsePreviousTemplate is only valid for an UPDATE change set")
            if any(v is None for v in params.values()):
                raise validation("UsePreviousValue is only valid for stack updates")
            fresh = s is None
            if s is None:
                sid = arn(e.region, caller.account, stack_name)
                s = CfnStack(id=sid, owner=caller.account, name=stack_name, created=time.time(), template=body,
                             status="REVIEW_IN_PROGRESS", tags=dict(tags or {}))
            for k in tags or {}:
                if k.lower().startswith("aws:"):
                    raise validation("Tag keys starting with 'aws:' are reserved for internal use")
            values = {k: str(v) for k, v in params.items()}
            plan.bind(e.check(body), values, e._pseudo(caller.account, stack_name, s.id))
        else:
            s = e.stacks.find(caller.account, stack_name) if s is None else s
            if s.status == "REVIEW_IN_PROGRESS":
                raise validation(f"Stack [{stack_name}] does not exist")   # (as AWS: it has none yet)
            fresh = False
            body, values = e.inputs(s, body, params, tags)
        if any(c.name == name for c in e.stacks.change_sets_of(s.id)):
            raise CloudError.conflict("AlreadyExistsException", f"ChangeSet [{name}] already exists")
        c = CfnChangeSet(id=f"arn:aws:cloudformation:{e.region}:{caller.account}:changeSet/{name}/{uuid.uuid4()}",
                         stack_id=s.id, owner=caller.account, name=name, created=time.time(), kind=kind,
                         status="CREATE_PENDING", template=body, parameters=values,
                         tags=dict(tags) if tags is not None else dict(s.tags), description=description or "")
        if fresh:
            await e.stacks.add_with_change_set(s, c)
        else:
            await e.stacks.put_change_set(c)
        e._spawn(c.id, self._compute(c.id))
        return c

    async def _compute(self, cid: str) -> None:
        e = self.e
        c = e.stacks.change_sets.get(cid)
        s = e.stacks.table.get(c.stack_id) if c is not None else None
        if c is None or s is None or c.status != "CREATE_PENDING":
            return
        try:
            changes = e.updates.preview(s, c.template, c.parameters)
            empty = not changes and c.kind == "UPDATE" and not e.updates.outputs_change(s, c.template, c.parameters) \
                and dict(c.tags) == dict(s.tags)
            if empty:
                c = replace(c, status="FAILED", reason=EMPTY)
            else:
                c = replace(c, status="CREATE_COMPLETE", execution="AVAILABLE",
                            changes=json.dumps([ch.view() for ch in changes]))
        except (plan.TemplateError, CloudError, Failed) as ex:
            c = replace(c, status="FAILED", reason=ex.message if isinstance(ex, CloudError) else str(ex))
        except Exception as ex:
            log.exception("change set %s", cid)
            c = replace(c, status="FAILED", reason=f"Internal failure: {ex}")
        await e.stacks.put_change_set(c)

    def shown_parameters(self, c: CfnChangeSet) -> dict[str, str]:
        """The change set's parameter values, NoEcho ones masked as DescribeStacks masks them."""
        try:
            hidden = set(plan.no_echo(self.e.check(c.template)))
        except plan.TemplateError:
            hidden = set(c.parameters)
        return {k: "****" if k in hidden else str(v) for k, v in c.parameters.items()}

    def changes(self, c: CfnChangeSet) -> list[dict[str, Any]]:
        return list(json.loads(c.changes or "[]"))

    async def execute(self, caller: Caller, c: CfnChangeSet) -> None:
        e = self.e
        s = e.stacks.table.get(c.stack_id)
        if c.status != "CREATE_COMPLETE" or c.execution != "AVAILABLE" or s is None:
            raise CloudError("InvalidChangeSetStatus", f"ChangeSet [{c.id}] cannot be executed in its current "
                                                       f"status of [{c.status}]")
        if c.kind == "UPDATE":
            e.updates.check_updatable(s)
        elif s.status != "REVIEW_IN_PROGRESS":
            raise CloudError("InvalidChangeSetStatus", f"ChangeSet [{c.id}] cannot be executed in its current "
                                                       f"execution status of [OBSOLETE]")
        # (executing one change set removes the stack's others, as AWS does)
        with e.stacks.store.txn() as tx:
            for other in e.stacks.change_sets_of(s.id):
                if other.id != c.id:
                    tx.delete(other)
            tx.put(replace(c, execution="EXECUTE_IN_PROGRESS"))
        await e.stacks.store.sync()
        await e.updates.begin(s, c.template, c.parameters, c.tags, first=c.kind == "CREATE")

    async def delete(self, c: CfnChangeSet) -> None:
        if execution_status(c, self.e.stacks.table.get(c.stack_id)) == "EXECUTE_IN_PROGRESS":
            raise CloudError("InvalidChangeSetStatus", f"ChangeSet [{c.id}] cannot be deleted in its current "
                                                       f"status of [EXECUTE_IN_PROGRESS]")
        with self.e.stacks.store.txn() as tx:
            tx.delete(c)
        await self.e.stacks.store.sync()

    def start(self) -> None:
        """After a restart: change sets whose changes were not computed yet."""
        for c in list(self.e.stacks.change_sets.values()):
            if c.status == "CREATE_PENDING":
                self.e._spawn(c.id, self._compute(c.id))
