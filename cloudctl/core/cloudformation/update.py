"""Stack updates: the changes a new template and parameters make (what a change set shows), and
their execution — each resource added, changed in place or replaced in dependency order, then a
cleanup deleting the replaced and removed ones; on a failure the touched resources are set back
and what the update made is deleted. Every step is journaled on the resource rows (`touched`,
`change`, `prior_props`, `other_physical`) and the stack's status names the phase, so a restart
resumes the update, its cleanup or its rollback where it stopped."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any

from ...slim import dataclass
from ...store.records import CfnResource, CfnStack
from ..errors import CloudError
from . import plan, replacement
from .replacement import PENDING
from .resources import HANDLERS, Failed
from .resources.updaters import UPDATERS
from .stacks import failure_message, validation

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
UPDATABLE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE")
NAME_PROPERTY = {"AWS::EC2::SecurityGroup": "GroupName", "AWS::AutoScaling::LaunchConfiguration":
                 "LaunchConfigurationName", "AWS::AutoScaling::AutoScalingGroup": "AutoScalingGroupName",
                 "AWS::ElasticLoadBalancing::LoadBalancer": "LoadBalancerName", "AWS::EC2::KeyPair": "KeyName",
                 "AWS::EC2::LaunchTemplate": "LaunchTemplateName"}
GONE = ("DELETE_COMPLETE", "DELETE_SKIPPED")
MAKES_NOTHING = ("AWS::CloudFormation::WaitCondition", "AWS::CloudFormation::WaitConditionHandle")


@dataclass(frozen=True, slots=True)
class Change:
    """One resource's change, as DescribeChangeSet shows it."""
    action: str                # Add | Modify | Remove
    logical: str
    rtype: str
    physical: str = ""
    replacement: str = ""      # True | False | Conditional (Modify only)
    details: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "logical": self.logical, "type": self.rtype, "physical": self.physical,
                "replacement": self.replacement, "details": [dict(d) for d in self.details]}


def props_of(r: CfnResource) -> dict[str, Any]:
    return dict(json.loads(r.props)) if r.props else {}


def dumps(props: Mapping[str, Any]) -> str:
    return json.dumps(props, sort_keys=True, default=str)


def custom_named(rtype: str, logical: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """AWS's refusal when a replacement would need a second resource of the same custom name."""
    key = NAME_PROPERTY.get(rtype)
    if key and new.get(key) not in (None, "") and str(new.get(key)) == str(old.get(key)):
        return (f"CloudFormation cannot update a stack when a custom-named resource requires replacing. "
                f"Rename {new[key]} and update the stack again.")
    return None


class _Preview:
    """Ref/GetAtt during a change set's preview: what exists, or a placeholder for what the
    update will make (added or replaced resources)."""

    def __init__(self, real: Any, pending: set[str]) -> None:
        self.real, self.pending = real, pending

    def ref(self, logical: str) -> str:
        return f"{PENDING}{logical}}}}}" if logical in self.pending else str(self.real.ref(logical))

    def get_att(self, logical: str, name: str) -> Any:
        return f"{PENDING}{logical}.{name}}}}}" if logical in self.pending else self.real.get_att(logical, name)

    def import_value(self, name: str) -> str:
        return str(self.real.import_value(name))


class Updates:
    """The update half of the engine (it holds the engine for its stacks, handlers and tasks)."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # -- what would change -----------------------------------------------------------------------
    def preview(self, s: CfnStack, body: str, params: Mapping[str, str]) -> list[Change]:
        """The changes `body` with `params` makes to stack `s` (every resource an Add for a stack
        with none). TemplateError/CloudError for a template or parameters that cannot be used."""
        e = self.e
        bound = plan.bind(e.check(body), params, e._pseudo(s.owner, s.name, s.id))
        rows = {r.logical: r for r in e.stacks.resources_of(s.id) if r.status not in GONE}
        pending: set[str] = set()
        resolver = _Preview(e.resolver(s), pending)
        changes: list[Change] = []
        for level in plan.levels(bound):
            for lg in level:
                rtype, row = plan.type_of(bound, lg), rows.get(lg)
                if row is None:
                    pending.add(lg)
                    changes.append(Change("Add", lg, rtype))
                    continue
                if row.type != rtype:
                    raise validation(f"Update of resource type is not permitted. The new template modifies "
                                     f"resource type of the following resources: [{lg}]")
                new = plan.properties(bound, lg, resolver)
                d = replacement.diff(rtype, props_of(row), new)
                if d is None:
                    continue
                if d.replace:
                    pending.add(lg)
                table = replacement.IN_PLACE.get(rtype, {})
                details = tuple({"attribute": "Properties", "name": p,
                                 "recreation": "Never" if table.get(p) else
                                 ("Conditionally" if p in d.dynamic else "Always"),
                                 "evaluation": "Dynamic" if p in d.dynamic else "Static",
                                 "source": "ResourceReference" if p in d.dynamic else "DirectModification"}
                                for p in d.changed)
                changes.append(Change("Modify", lg, rtype, row.physical, d.replacement, details))
        for lg, row in sorted(rows.items()):
            if lg not in bound.resources:
                changes.append(Change("Remove", lg, row.type, row.physical))
        return changes

    def outputs_change(self, s: CfnStack, body: str, params: Mapping[str, str]) -> bool:
        """Whether only the outputs differ (an update with no resource change still updates them)."""
        e = self.e
        try:
            bound = plan.bind(e.check(body), params, e._pseudo(s.owner, s.name, s.id))
            return plan.outputs(bound, e.resolver(s)) != [dict(o) for o in s.outputs]
        except (plan.TemplateError, CloudError, Failed):
            return True

    # -- start -----------------------------------------------------------------------------------
    def check_updatable(self, s: CfnStack) -> None:
        if s.status not in UPDATABLE:
            raise validation(f"Stack:{s.id} is in {s.status} state and can not be updated.")

    async def begin(self, s: CfnStack, body: str, params: Mapping[str, str], tags: Mapping[str, str] | None,
                    first: bool = False) -> CfnStack:
        """Journal the update's start (the prior template kept for a rollback) and run it."""
        e = self.e
        tpl = e.check(body)
        gen = s.generation + 1
        fill = []
        if not first:   # (rows made before properties were journaled: theirs as the old template gives them)
            try:
                old = e._bound(s)
                for r in e.stacks.resources_of(s.id):
                    if not r.props and r.status not in GONE and r.logical in old.resources:
                        fill.append(replace(r, props=dumps(plan.properties(old, r.logical, e.resolver(s)))))
            except (plan.TemplateError, CloudError, Failed):
                pass
        await e.stacks.put_resources(fill)
        status = "CREATE_IN_PROGRESS" if first else "UPDATE_IN_PROGRESS"
        s = await e.stacks.set_stack(
            s, status, "User Initiated", template=body, parameters=dict(params),
            prior_template="" if first else s.template, prior_parameters={} if first else dict(s.parameters),
            prior_no_echo=() if first else s.no_echo, generation=gen if not first else s.generation,
            description=plan.description(tpl), no_echo=plan.no_echo(tpl),
            tags=dict(tags) if tags is not None else dict(s.tags))
        if first:
            e._spawn(s.id, e._create(s.id))
        else:
            e._spawn(s.id, self.run(s.id))
        return s

    # -- the update ------------------------------------------------------------------------------
    async def run(self, sid: str) -> None:
        e = self.e
        s = e.stacks.table.get(sid)
        assert s is not None
        try:
            bound = e._bound(s)
            failed = await plan.walk(bound, lambda lg: self._one(s, bound, lg))
            if failed:
                await self.rollback(sid, f"The following resource(s) failed to update: [{', '.join(sorted(failed))}]. ")
                return
            try:
                outputs = plan.outputs(bound, e.resolver(s))
            except (plan.TemplateError, CloudError, Failed) as ex:
                await self.rollback(sid, str(ex))
                return
            s = e.stacks.table.get(sid) or s
            await e.stacks.set_stack(s, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", outputs=tuple(outputs))
            await self.cleanup(sid)
        except asyncio.CancelledError:
            raise
        except Exception as ex:   # a defect: still end where a user can act
            log.exception("stack %s update", sid)
            await self.rollback(sid, f"Internal failure: {ex}")

    async def _one(self, s: CfnStack, bound: Any, lg: str) -> bool:
        e, gen = self.e, s.generation
        rtype = plan.type_of(bound, lg)
        row = e.stacks.resource(s.id, lg)
        if row is not None and row.status in GONE:
            row = None
        if row is not None and row.touched == gen and row.status in ("UPDATE_COMPLETE", "CREATE_COMPLETE"):
            return True   # (done before a restart)
        try:
            new = plan.properties(bound, lg, e.resolver(s))
            if row is None or (row.touched == gen and row.change == "Add"):
                return await self._add(s, lg, rtype, new)
            if row.touched == gen and row.change == "Modify":
                return await self._modify(s, row, props_of_prior(row), new, resumed=True)
            if row.touched == gen and row.change == "Replace":
                return await self._replace(s, row, new, resumed=True)
            d = replacement.diff(rtype, props_of(row), new)
            if d is None:
                return True
            if d.replace:
                why = custom_named(rtype, lg, props_of(row), new)
                if why:
                    await e.stacks.set_resource(s, lg, rtype, "UPDATE_FAILED", why)
                    return False
                return await self._replace(s, row, new)
            return await self._modify(s, row, props_of(row), new)
        except asyncio.CancelledError:
            raise
        except (CloudError, Failed, plan.TemplateError) as ex:
            await e.stacks.set_resource(s, lg, rtype, "UPDATE_FAILED", failure_message(ex))
            return False
        except Exception as ex:
            log.exception("stack %s resource %s update", s.id, lg)
            await e.stacks.set_resource(s, lg, rtype, "UPDATE_FAILED", f"Internal failure: {ex}")
            return False

    async def _add(self, s: CfnStack, lg: str, rtype: str, props: Mapping[str, Any]) -> bool:
        e, gen = self.e, s.generation
        row = e.stacks.resource(s.id, lg)
        if row is None or row.status != "CREATE_IN_PROGRESS" or row.touched != gen:
            await e.stacks.set_resource(s, lg, rtype, "CREATE_IN_PROGRESS", physical="", attributes={},
                                        touched=gen, change="Add", generation=gen, prior_props="",
                                        other_physical="", other_attributes={}, props=dumps(props))
        try:
            made = await HANDLERS[rtype].create(e._ctx(s, lg, generation=gen), props)
        except (CloudError, Failed) as ex:
            await e.stacks.set_resource(s, lg, rtype, "CREATE_FAILED", failure_message(ex))
            return False
        await e.stacks.set_resource(s, lg, rtype, "CREATE_COMPLETE", physical=made.physical,
                                    attributes=dict(made.attributes))
        return True

    async def _modify(self, s: CfnStack, row: CfnResource, old: Mapping[str, Any], new: Mapping[str, Any],
                      resumed: bool = False) -> bool:
        e = self.e
        if not resumed or row.status != "UPDATE_IN_PROGRESS":
            row = await e.stacks.set_resource(s, row.logical, row.type, "UPDATE_IN_PROGRESS", touched=s.generation,
                                              change="Modify", prior_props=row.props if not resumed
                                              else row.prior_props, props=dumps(new))
        got = await UPDATERS[row.type](e._ctx(s, row.logical, row.attributes, row.generation), row.physical, old, new)
        await e.stacks.set_resource(s, row.logical, row.type, "UPDATE_COMPLETE",
                                    attributes=dict(got) if got is not None else None)
        return True

    async def _replace(self, s: CfnStack, row: CfnResource, new: Mapping[str, Any], resumed: bool = False) -> bool:
        e, gen = self.e, s.generation
        if not resumed:
            row = await e.stacks.set_resource(
                s, row.logical, row.type, "UPDATE_IN_PROGRESS",
                "Requested update requires the creation of a new physical resource; hence creating one.",
                physical="", attributes={}, touched=gen, change="Replace", prior_props=row.props, props=dumps(new),
                other_physical=row.physical, other_attributes=dict(row.attributes),
                other_generation=row.generation, generation=gen)
        made = await HANDLERS[row.type].create(e._ctx(s, row.logical, generation=gen), new)
        if made.physical == row.other_physical:
            raise Failed("The replacement resource has the physical id of the resource it replaces")
        await e.stacks.set_resource(s, row.logical, row.type, "UPDATE_COMPLETE", physical=made.physical,
                                    attributes=dict(made.attributes))
        return True

    # -- cleanup ---------------------------------------------------------------------------------
    async def cleanup(self, sid: str, rolled_back: bool = False) -> None:
        """Delete what the update left behind: replaced resources' old physical ones and removed
        resources (or, after a rollback, what the update made)."""
        e = self.e
        s = e.stacks.table.get(sid)
        assert s is not None
        current = e._bound(s)
        try:
            other = plan.bind(e.check(s.prior_template), s.prior_parameters, e._pseudo(s.owner, s.name, s.id)) \
                if s.prior_template else None
        except plan.TemplateError:
            other = None
        order: list[str] = []
        for b in (other, current):
            if b is not None:
                order += [lg for level in reversed(plan.levels(b)) for lg in level if lg not in order]
        rows = {r.logical: r for r in e.stacks.resources_of(sid)}
        order += [lg for lg in sorted(rows) if lg not in order]
        for lg in order:
            r = e.stacks.resource(sid, lg)
            if r is None or r.status in GONE:
                continue
            if lg not in current.resources or (rolled_back and r.touched == s.generation and r.change == "Add"):
                keep = other is not None and not rolled_back and lg in other.resources and plan.retain(other, lg)
                await self._drop(s, r, keep)
            elif r.other_physical:
                await self._delete_other(s, r)
        s = e.stacks.table.get(sid) or s
        done = "UPDATE_ROLLBACK_COMPLETE" if rolled_back else "UPDATE_COMPLETE"
        await e.stacks.set_stack(s, done, prior_template="", prior_parameters={}, prior_no_echo=())

    async def _adopt(self, s: CfnStack, r: CfnResource) -> tuple[str, dict[str, str]]:
        """What an interrupted create (a cancel, a crash) of this row may have made: the handler
        run again under the same name and ClientToken finds it (or makes it, to be deleted)."""
        if r.type in MAKES_NOTHING:
            return "", {}
        try:
            made = await HANDLERS[r.type].create(self.e._ctx(s, r.logical, generation=r.generation), props_of(r))
        except (CloudError, Failed, plan.TemplateError):
            return "", {}
        return made.physical, dict(made.attributes)

    async def _drop(self, s: CfnStack, r: CfnResource, keep: bool) -> None:
        e = self.e
        if not r.physical and r.status == "CREATE_IN_PROGRESS":   # (an add that was interrupted)
            physical, attrs = await self._adopt(s, r)
            if physical:
                r = await e.stacks.set_resource(s, r.logical, r.type, "DELETE_IN_PROGRESS", physical=physical,
                                                attributes=attrs)
        if keep:
            await e.stacks.drop_resource(s, r, "DELETE_SKIPPED")
            return
        if r.status != "DELETE_IN_PROGRESS":
            r = await e.stacks.set_resource(s, r.logical, r.type, "DELETE_IN_PROGRESS")
        try:
            if r.physical:
                await HANDLERS[r.type].delete(e._ctx(s, r.logical, r.attributes, r.generation), r.physical)
            if r.other_physical:
                await self._delete_other(s, r)
                r = e.stacks.resource(s.id, r.logical) or r
        except (CloudError, Failed) as ex:
            await e.stacks.drop_resource(s, r, "DELETE_FAILED", failure_message(ex))
            return
        await e.stacks.drop_resource(s, r, "DELETE_COMPLETE")

    async def _delete_other(self, s: CfnStack, r: CfnResource) -> None:
        e = self.e
        if r.other_physical == r.physical:
            await e.stacks.put_resources([_cleared(r)])
            return
        r = await e.stacks.other_event(s, r, "DELETE_IN_PROGRESS")
        try:
            await HANDLERS[r.type].delete(e._ctx(s, r.logical, r.other_attributes, r.other_generation),
                                          r.other_physical)
        except (CloudError, Failed) as ex:
            await e.stacks.other_event(s, r, "DELETE_FAILED", failure_message(ex), other_physical="",
                                       other_attributes={})
            return
        await e.stacks.other_event(s, r, "DELETE_COMPLETE", other_physical="", other_attributes={})

    # -- rollback --------------------------------------------------------------------------------
    async def rollback(self, sid: str, why: str) -> None:
        """Journal the rollback's start (the templates swapped: the stack's is the old one again)
        and set back every resource the update touched."""
        e = self.e
        s = e.stacks.table.get(sid)
        assert s is not None
        if s.status != "UPDATE_ROLLBACK_IN_PROGRESS":
            s = await e.stacks.set_stack(s, "UPDATE_ROLLBACK_IN_PROGRESS", why, template=s.prior_template,
                                         parameters=dict(s.prior_parameters), prior_template=s.template,
                                         prior_parameters=dict(s.parameters), no_echo=s.prior_no_echo,
                                         prior_no_echo=s.no_echo,
                                         description=plan.description(e.check(s.prior_template)))
        await self.revert(sid)

    async def revert(self, sid: str) -> None:
        e = self.e
        s = e.stacks.table.get(sid)
        assert s is not None
        try:
            bound = e._bound(s)
            failed = await plan.walk(bound, lambda lg: self._revert_one(s, lg))
            s = e.stacks.table.get(sid) or s
            if failed:
                await e.stacks.set_stack(s, "UPDATE_ROLLBACK_FAILED", f"The following resource(s) failed to update: "
                                                                      f"[{', '.join(sorted(failed))}]. ")
                return
            try:
                outputs = tuple(plan.outputs(bound, e.resolver(s)))
            except (plan.TemplateError, CloudError, Failed):
                outputs = s.outputs
            await e.stacks.set_stack(s, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", outputs=outputs)
            await self.cleanup(sid, rolled_back=True)
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            log.exception("stack %s update rollback", sid)
            s = e.stacks.table.get(sid) or s
            await e.stacks.set_stack(s, "UPDATE_ROLLBACK_FAILED", f"Internal failure: {ex}")

    async def _revert_one(self, s: CfnStack, lg: str) -> bool:
        e = self.e
        r = e.stacks.resource(s.id, lg)
        if r is None or r.touched != s.generation or r.change not in ("Modify", "Replace"):
            return True
        interrupted = r.status == "UPDATE_IN_PROGRESS"   # (not failed: its create may have made something)
        try:
            if not interrupted:
                r = await e.stacks.set_resource(s, lg, r.type, "UPDATE_IN_PROGRESS")
            if r.change == "Modify":
                await UPDATERS[r.type](e._ctx(s, lg, r.attributes, r.generation), r.physical, props_of(r),
                                       props_of_prior(r))
                await e.stacks.set_resource(s, lg, r.type, "UPDATE_COMPLETE", props=r.prior_props, change="Reverted")
            else:   # back to the old physical resource; the new one is deleted at cleanup
                new, attrs = r.physical, dict(r.attributes)
                if not new and interrupted:
                    new, attrs = await self._adopt(s, r)
                await e.stacks.set_resource(s, lg, r.type, "UPDATE_COMPLETE", physical=r.other_physical,
                                            attributes=dict(r.other_attributes), generation=r.other_generation,
                                            other_physical=new, other_attributes=attrs,
                                            other_generation=r.generation, props=r.prior_props, change="Reverted")
        except asyncio.CancelledError:
            raise
        except (CloudError, Failed, KeyError) as ex:
            await e.stacks.set_resource(s, lg, r.type, "UPDATE_FAILED", failure_message(ex))
            return False
        return True

    # -- cancel ----------------------------------------------------------------------------------
    async def cancel(self, s: CfnStack) -> None:
        """CancelUpdateStack: stop the update where it is and roll it back."""
        e = self.e
        if s.status != "UPDATE_IN_PROGRESS":
            raise validation("CancelUpdateStack cannot be called from current stack status.")
        task = e._running.get(s.id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        s = e.stacks.table.get(s.id) or s
        if s.status == "UPDATE_IN_PROGRESS":
            s = await e.stacks.set_stack(s, "UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated",
                                         template=s.prior_template, parameters=dict(s.prior_parameters),
                                         prior_template=s.template, prior_parameters=dict(s.parameters),
                                         no_echo=s.prior_no_echo, prior_no_echo=s.no_echo)
            e._spawn(s.id, self.revert(s.id))

    def resume(self, s: CfnStack) -> bool:
        """At start-up: carry on the phase the stack was in. False: not an update phase."""
        e = self.e
        if s.status == "UPDATE_IN_PROGRESS":
            e._spawn(s.id, self.run(s.id))
        elif s.status == "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS":
            e._spawn(s.id, self.cleanup(s.id))
        elif s.status == "UPDATE_ROLLBACK_IN_PROGRESS":
            e._spawn(s.id, self.revert(s.id))
        elif s.status == "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS":
            e._spawn(s.id, self.cleanup(s.id, rolled_back=True))
        else:
            return False
        return True


def props_of_prior(r: CfnResource) -> dict[str, Any]:
    return dict(json.loads(r.prior_props)) if r.prior_props else {}


def _cleared(r: CfnResource) -> CfnResource:
    return replace(r, other_physical="", other_attributes={})

