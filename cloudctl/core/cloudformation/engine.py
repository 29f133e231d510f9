"""Stack operations: create (each dependency level's resources concurrently), roll back, delete
(reverse order, Retain honoured); updates and their rollback in update.py, change sets in
changesets.py. Each runs as a supervised task after the API answers; every step is journaled
(stacks.py), so at start-up an operation in progress resumes where it was."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...drivers import fetcher
from ...store.records import CfnSignal, CfnStack
from ...store.store import Store
from ..context import Caller
from ..errors import CloudError
from ..tasks import Supervisor
from ..users import Users
from . import plan
from .changesets import ChangeSets
from .resources import HANDLERS, Ctx, Failed, load_all
from .resources.waits import signature
from .stacks import NAME, Stacks, arn, failure_message, validation
from .update import Updates, dumps

log = logging.getLogger(__name__)
GROUP = "cloudformation"
URL_MAX = 1_000_000   # a template from a TemplateURL (TemplateBody's 51,200 bytes are checked by the API)
PARSED_KEEP = 8        # parsed templates kept (`Engine.check`): a few stacks' operations at a time
ON_FAILURE = ("ROLLBACK", "DELETE", "DO_NOTHING")


class _Resolver:
    """Ref and Fn::GetAtt over the stack's made resources; Fn::ImportValue over the owner's exports."""

    def __init__(self, engine: Engine, s: CfnStack) -> None:
        self.engine, self.stack = engine, s

    def ref(self, logical: str) -> str:
        r = self.engine.stacks.resource(self.stack.id, logical)
        if r is None or not r.physical:
            raise plan.TemplateError(f"Resource {logical} has no physical id yet")
        return r.physical

    def get_att(self, logical: str, name: str) -> str:
        r = self.engine.stacks.resource(self.stack.id, logical)
        h = HANDLERS.get(r.type) if r else None
        if r is None or h is None or name not in h.attributes or name not in r.attributes:
            raise plan.TemplateError(f"Template error: resource {logical} does not support attribute type "
                                     f"{name} in Fn::GetAtt")
        return str(r.attributes[name])

    def import_value(self, name: str) -> str:
        for s in self.engine.stacks.of_owner(self.stack.owner):
            if s.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"):
                for o in s.outputs:
                    if o.get("export") == name:
                        return str(o["value"])
        raise plan.TemplateError(f"No export named {name} found.")


class Engine:
    def __init__(self, store: Store, region: str, services: Any, users: Users) -> None:
        load_all()
        self.stacks = Stacks(store)
        self.region = region
        self.services = services
        self.users = users
        self.tasks: Supervisor | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self.updates = Updates(self)
        self._parsed: dict[str, plan.Template] = {}   # template text -> parsed, oldest first (`check`)
        self.changesets = ChangeSets(self)

    # -- requests -------------------------------------------------------------------------------
    def check(self, body: str) -> plan.Template:
        """The template parsed and validated, from the cache when this text was parsed lately:
        a stack operation reads its template several times (the request, the background create,
        each update phase), and a 200-resource one cost ~3-20 ms of loop time per parse."""
        tpl = self._parsed.get(body)
        if tpl is None:
            tpl = self._parse(body)
            self._keep(body, tpl)
        return tpl

    async def parsed(self, body: str) -> plan.Template:
        """`check`, with a parse the cache does not hold done on a worker thread: the loop is
        held for at most the interpreter's switch interval, not for the whole parse."""
        tpl = self._parsed.get(body)
        if tpl is None:
            tpl = await asyncio.to_thread(self._parse, body)
            self._keep(body, tpl)
        return tpl

    @staticmethod
    def _parse(body: str) -> plan.Template:
        # (TemplateURL's limit: the API checked a TemplateBody's own, smaller one.) Pure: safe on a thread.
        return plan.parse(body, {t: h.attributes for t, h in HANDLERS.items()}, URL_MAX)

    def _keep(self, body: str, tpl: plan.Template) -> None:
        """The newest few parsed templates (a Template is immutable, so one may be shared)."""
        cache = self._parsed
        cache.pop(body, None)
        cache[body] = tpl
        while len(cache) > PARSED_KEEP:
            del cache[next(iter(cache))]

    async def fetch(self, url: str) -> str:
        """A TemplateURL's body, under the rules of users' image URLs (`user_image_urls`: allowed at
        all; loopback and link-local addresses refused, redirects and DNS answers included, unless
        `user_image_urls_local`), at most 1 MB."""
        cfg = self.services.config
        if not cfg.user_image_urls:
            raise validation("TemplateURL is not enabled on this cloud (user_image_urls); use TemplateBody")

        def cap(done: int, total: int | None) -> None:
            if done > URL_MAX or (total or 0) > URL_MAX:
                raise fetcher.FetchError(f"the template at {url} is larger than {URL_MAX} bytes")

        with tempfile.TemporaryDirectory(dir=cfg.state_dir) as d:
            dest = Path(d) / "template"
            try:
                await fetcher.fetch(url, dest, cap, timeout_s=30, refuse_local=not cfg.user_image_urls_local)
                raw = await asyncio.to_thread(dest.read_bytes)
            except fetcher.FetchError as e:
                raise validation(f"TemplateURL must be a reachable http(s) URL: {e}") from None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise validation("The template at TemplateURL is not UTF-8 text") from None

    async def create(self, caller: Caller, name: str, body: str, params: Mapping[str, str],
                     on_failure: str | None, tags: Mapping[str, str]) -> CfnStack:
        if not NAME.match(name or ""):
            raise validation(f"1 validation error detected: Value '{name}' at 'stackName' failed to satisfy "
                             f"constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*")
        on_failure = on_failure or "ROLLBACK"
        if on_failure not in ON_FAILURE:
            raise validation(f"OnFailure must be one of {', '.join(ON_FAILURE)}")
        if self.stacks.live(caller.account, name) is not None:
            raise CloudError.conflict("AlreadyExistsException", f"Stack [{name}] already exists")
        for k in tags:
            if k.lower().startswith("aws:"):
                raise validation("Tag keys starting with 'aws:' are reserved for internal use")
        tpl = await self.parsed(body)
        sid = arn(self.region, caller.account, name)
        plan.bind(tpl, params, self._pseudo(caller.account, name, sid))   # parameter errors before anything is made
        s = CfnStack(id=sid, owner=caller.account, name=name, created=time.time(), template=body,
                     status="CREATE_IN_PROGRESS", parameters=dict(params), on_failure=on_failure, tags=dict(tags),
                     description=plan.description(tpl), no_echo=plan.no_echo(tpl))
        await self.stacks.add(s)
        self._spawn(s.id, self._create(s.id))
        return s

    async def update(self, caller: Caller, name_or_id: str, body: str | None, params: Mapping[str, str | None],
                     tags: Mapping[str, str] | None) -> CfnStack:
        """UpdateStack: `body` None keeps the template (UsePreviousTemplate), a parameter None keeps
        its value (UsePreviousValue). Refused while the stack is not in a state that can update, and
        when nothing would change, as AWS refuses them."""
        s = self.stacks.find(caller.account, name_or_id)
        self.updates.check_updatable(s)
        if body is not None:
            await self.parsed(body)     # parsed off the loop; the checks below read it from the cache
        body, values = self.inputs(s, body, params, tags)
        changes = self.updates.preview(s, body, values)
        if not changes and not self.updates.outputs_change(s, body, values) and (tags is None or dict(tags)
                                                                                 == dict(s.tags)) \
                and plan.description(self.check(body)) == s.description:
            raise validation("No updates are to be performed.")
        return await self.updates.begin(s, body, values, tags)

    def inputs(self, s: CfnStack, body: str | None, params: Mapping[str, str | None],
               tags: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
        """The template and parameter values an update (or change set) of `s` works from, checked."""
        if body is None:
            body = s.template
        values: dict[str, str] = {}
        for k, v in params.items():
            if v is None:
                if k not in s.parameters:
                    raise validation(f"Invalid input for parameter key {k}. Cannot specify usePreviousValue as "
                                     f"true for a parameter key not in the previous template")
                values[k] = str(s.parameters[k])
            else:
                values[k] = v
        for k in tags or {}:
            if k.lower().startswith("aws:"):
                raise validation("Tag keys starting with 'aws:' are reserved for internal use")
        plan.bind(self.check(body), values, self._pseudo(s.owner, s.name, s.id))
        return body, values

    async def cancel_update(self, caller: Caller, name_or_id: str) -> None:
        await self.updates.cancel(self.stacks.find(caller.account, name_or_id))

    def resolver(self, s: CfnStack) -> _Resolver:
        return _Resolver(self, s)

    async def delete(self, caller: Caller, name_or_id: str) -> None:
        s = self.stacks.table.get(name_or_id)
        if s is None or s.owner != caller.account:
            s = self.stacks.live(caller.account, name_or_id)
        if s is None or s.status in ("DELETE_COMPLETE", "DELETE_IN_PROGRESS"):
            return   # (AWS: deleting a stack that is gone succeeds)
        prior = self._running.get(s.id)
        self._spawn(s.id, self._delete_after(s.id, prior))

    async def signal(self, handle: str, sig: str, body: bytes) -> None:
        """A WaitConditionHandle's URL was sent cfn-signal's JSON body: checked, then journaled."""
        owner = None
        if (r := self.stacks.handle(handle)) is not None:
            s = self.stacks.table.get(r.stack_id)
            owner = self.users.by_account(s.owner) if s is not None else None
        if owner is None or not hmac.compare_digest(signature(owner.secret_key, handle), sig):
            raise CloudError("AccessDenied", "The signature of this wait condition handle URL is not valid")
        try:
            doc = json.loads(body)
            status, unique = str(doc["Status"]), str(doc["UniqueId"])
        except (ValueError, KeyError, TypeError):
            raise CloudError("InvalidRequest", "The body must be JSON with Status, UniqueId, Reason and Data") from None
        if status not in ("SUCCESS", "FAILURE") or not 0 < len(unique) <= 256:
            raise CloudError("InvalidRequest", "Status must be SUCCESS or FAILURE; UniqueId 1-256 characters")
        row = CfnSignal(id=f"{handle}|{unique}", handle=handle, unique_id=unique, status=status, at=time.time(),
                        reason=str(doc.get("Reason", ""))[:4096], data=str(doc.get("Data", ""))[:4096])
        with self.stacks.store.txn() as tx:
            tx.put(row)
        await self.stacks.store.sync()

    # -- background -----------------------------------------------------------------------------
    def start(self, tasks: Supervisor) -> None:
        """Resume what a stop or crash interrupted."""
        self.tasks = tasks
        for s in self.stacks.in_progress():
            if s.status == "CREATE_IN_PROGRESS":
                self._spawn(s.id, self._create(s.id))
            elif s.status == "CREATE_FAILED":   # (stopped between CREATE_FAILED and the next step)
                self._spawn(s.id, self._failed(s, s.reason))
            elif s.status == "ROLLBACK_IN_PROGRESS":
                self._spawn(s.id, self._remove(s.id, "ROLLBACK"))
            elif s.status == "DELETE_IN_PROGRESS":
                self._spawn(s.id, self._remove(s.id, "DELETE"))
            else:
                self.updates.resume(s)
        self.changesets.start()
        tasks.every(GROUP, 3600.0, self.stacks.trim)

    def _spawn(self, sid: str, coro: Any) -> None:
        if self.tasks is None:   # not started (a core test without a supervisor)
            task = asyncio.get_running_loop().create_task(coro)
        else:
            task = self.tasks.spawn(GROUP, coro, f"stack {sid}")
        self._running[sid] = task
        task.add_done_callback(lambda t: self._running.pop(sid, None) if self._running.get(sid) is t else None)

    async def idle(self, sid: str) -> None:
        """Wait for the stack's operation in progress (tests, the delete after a create)."""
        t = self._running.get(sid)
        if t is not None:
            await asyncio.wait([t])

    def _pseudo(self, account: str, name: str, sid: str) -> Any:
        return plan.pseudo(self.region, account, name, sid, self.services)

    def _owner(self, s: CfnStack) -> Caller:
        user = self.users.by_account(s.owner)
        if user is None:
            raise Failed(f"The stack's owner {s.owner} no longer exists")
        return Caller(user)

    def _ctx(self, s: CfnStack, logical: str, attributes: Mapping[str, str] | None = None,
             generation: int = 0) -> Ctx:
        return Ctx(self.services, self._owner(s), s.owner, s.id, s.name, logical, attributes or {}, generation)

    def _bound(self, s: CfnStack) -> Any:
        return plan.bind(self.check(s.template), s.parameters, self._pseudo(s.owner, s.name, s.id))

    async def _create(self, sid: str) -> None:
        s = self.stacks.table.get(sid)
        assert s is not None
        try:
            bound = self._bound(s)
            failed = await plan.walk(bound, lambda lg: self._create_one(s, bound, lg))
            if not failed:
                try:
                    outputs = plan.outputs(bound, _Resolver(self, s))
                except (plan.TemplateError, CloudError, Failed) as e:
                    failed, why = [], str(e)
                    await self._failed(s, why)
                    return
                s = self.stacks.table.get(sid) or s
                await self.stacks.set_stack(s, "CREATE_COMPLETE", outputs=tuple(outputs))
                return
            await self._failed(s, f"The following resource(s) failed to create: [{', '.join(sorted(failed))}]. ")
        except asyncio.CancelledError:
            raise
        except Exception as e:   # a defect: the stack must still end in a state a user can act on
            log.exception("stack %s create", sid)
            await self._failed(s, f"Internal failure: {e}")

    async def _failed(self, s: CfnStack, why: str) -> None:
        s = self.stacks.table.get(s.id) or s
        if s.status != "CREATE_FAILED":   # (else resumed after a stop that came just after it)
            s = await self.stacks.set_stack(s, "CREATE_FAILED", why)
        if s.on_failure == "DO_NOTHING":
            return
        if s.on_failure == "DELETE":
            await self.stacks.set_stack(s, "DELETE_IN_PROGRESS", why)
            await self._remove(s.id, "DELETE")
            return
        await self.stacks.set_stack(s, "ROLLBACK_IN_PROGRESS", why)
        await self._remove(s.id, "ROLLBACK")

    async def _create_one(self, s: CfnStack, bound: Any, logical: str) -> bool:
        row = self.stacks.resource(s.id, logical)
        rtype = plan.type_of(bound, logical)
        if row is not None and row.status == "CREATE_COMPLETE":
            return True
        if row is None or row.status != "CREATE_IN_PROGRESS":
            await self.stacks.set_resource(s, logical, rtype, "CREATE_IN_PROGRESS")
        try:
            props = plan.properties(bound, logical, _Resolver(self, s))
            made = await HANDLERS[rtype].create(self._ctx(s, logical), props)
        except asyncio.CancelledError:
            raise
        except (CloudError, Failed, plan.TemplateError) as e:
            await self.stacks.set_resource(s, logical, rtype, "CREATE_FAILED", failure_message(e))
            return False
        except Exception as e:
            log.exception("stack %s resource %s", s.id, logical)
            await self.stacks.set_resource(s, logical, rtype, "CREATE_FAILED", f"Internal failure: {e}")
            return False
        await self.stacks.set_resource(s, logical, rtype, "CREATE_COMPLETE", physical=made.physical,
                                       attributes=dict(made.attributes), props=dumps(props))
        return True

    async def _delete_after(self, sid: str, prior: asyncio.Task[None] | None) -> None:
        if prior is not None and not prior.done():
            await asyncio.wait([prior])
        s = self.stacks.table.get(sid)
        if s is None or s.status in ("DELETE_COMPLETE", "DELETE_IN_PROGRESS"):
            return
        await self.stacks.set_stack(s, "DELETE_IN_PROGRESS", "User Initiated")
        await self._remove(sid, "DELETE")

    async def _remove(self, sid: str, kind: str) -> None:
        """Delete what the stack made, last level first; `kind` ROLLBACK or DELETE names the end state."""
        s = self.stacks.table.get(sid)
        assert s is not None
        try:
            bound = self._bound(s)
            order = [list(level) for level in reversed(plan.levels(bound))]
            retained = {lg for level in order for lg in level if plan.retain(bound, lg)}
        except plan.TemplateError:
            order, retained = [[r.logical for r in self.stacks.resources_of(sid)]], set()
        failed: list[str] = []
        for level in order:
            oks = await asyncio.gather(*(self._delete_one(s, lg, lg in retained) for lg in level))
            failed = [lg for lg, ok in zip(level, oks) if not ok]
            if failed:
                break
        s = self.stacks.table.get(sid) or s
        if failed:
            why = f"The following resource(s) failed to delete: [{', '.join(sorted(failed))}]. "
            await self.stacks.set_stack(s, f"{kind}_FAILED", why)
        else:
            await self.stacks.set_stack(s, f"{kind}_COMPLETE")

    async def _delete_one(self, s: CfnStack, logical: str, retain: bool) -> bool:
        row = self.stacks.resource(s.id, logical)
        if row is None or row.status in ("DELETE_COMPLETE", "DELETE_SKIPPED"):
            return True
        if retain and row.physical:
            await self.stacks.set_resource(s, logical, row.type, "DELETE_SKIPPED")
            return True
        if row.status != "DELETE_IN_PROGRESS":
            await self.stacks.set_resource(s, logical, row.type, "DELETE_IN_PROGRESS")
        try:
            if row.physical:
                await HANDLERS[row.type].delete(self._ctx(s, logical, row.attributes, row.generation), row.physical)
            if row.other_physical and row.other_physical != row.physical:   # (an update's, not cleaned up)
                await HANDLERS[row.type].delete(self._ctx(s, logical, row.other_attributes, row.other_generation),
                                                row.other_physical)
        except asyncio.CancelledError:
            raise
        except (CloudError, Failed) as e:
            await self.stacks.set_resource(s, logical, row.type, "DELETE_FAILED", failure_message(e))
            return False
        except Exception as e:
            log.exception("stack %s resource %s delete", s.id, logical)
            await self.stacks.set_resource(s, logical, row.type, "DELETE_FAILED", f"Internal failure: {e}")
            return False
        await self.stacks.set_resource(s, logical, row.type, "DELETE_COMPLETE")
        return True

