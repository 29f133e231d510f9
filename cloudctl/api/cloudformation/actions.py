"""CloudFormation actions (wire shapes from botocore's `cloudformation` model): each turns the parsed
request into one call on core/cloudformation and its rows into the answer's shape."""
from __future__ import annotations

from typing import Any

from ...core.cloud import Cloud
from ...core.cloudformation import changesets, plan
from ...core.context import Caller
from ...core.errors import CloudError
from ...store.records import CfnEvent, CfnResource, CfnStack
from ..ec2.actions.registry import ts
from ..query.service import Registry

REGISTRY = Registry("cloudformation")
Req = dict[str, Any]
PAGE = 100


def _invalid(message: str) -> CloudError:
    return CloudError("ValidationError", message)


def _refuse(req: Req, allowed: set[str]) -> None:
    """Parameters cloudctl does not implement are refused unless empty (what clients send by default)."""
    for name, value in req.items():
        if name not in allowed and value not in (None, [], "", False, {}):
            raise _invalid(f"cloudctl's CloudFormation does not support the parameter {name}")


async def _body(cloud: Cloud, req: Req) -> str:
    body, url = req.get("TemplateBody"), req.get("TemplateURL")
    if bool(body) == bool(url):
        raise _invalid("Specify exactly one of TemplateBody or TemplateURL.")
    if url:
        return await cloud.cloudformation.fetch(str(url))
    if len(body.encode()) > plan.MAX_BODY:
        raise _invalid(f"1 validation error detected: Value at 'templateBody' failed to satisfy constraint: "
                       f"Member must have length less than or equal to {plan.MAX_BODY}")
    return str(body)


async def _template(cloud: Cloud, body: str) -> plan.Template:
    try:
        return await cloud.cloudformation.parsed(body)
    except plan.TemplateError as e:
        raise _invalid(str(e)) from None


def _page(items: list[Any], token: str | None) -> tuple[list[Any], str | None]:
    start = 0
    if token:
        if not (token.isascii() and token.isdigit()) or int(token) > len(items):   # ('²'.isdigit(), not int)
            raise _invalid("Invalid NextToken")
        start = int(token)
    end = start + PAGE
    return items[start:end], (str(end) if end < len(items) else None)


def _stack(cloud: Cloud, caller: Caller, name: str | None) -> CfnStack:
    if not name:
        raise _invalid("StackName must be specified")
    return cloud.cloudformation.stacks.find(caller.account, name)


@REGISTRY.action("CreateStack")
async def create_stack(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName", "TemplateBody", "TemplateURL", "Parameters", "OnFailure", "DisableRollback",
                  "Tags", "Capabilities", "TimeoutInMinutes"})
    on_failure = req.get("OnFailure")
    if req.get("DisableRollback"):
        if on_failure:
            raise _invalid("You cannot specify both OnFailure and DisableRollback")
        on_failure = "DO_NOTHING"
    params: dict[str, str] = {}
    for p in req.get("Parameters", []):
        if p.get("UsePreviousValue"):
            raise _invalid("UsePreviousValue is only valid for stack updates")
        if "ParameterKey" not in p:
            raise _invalid("ParameterKey must be specified")
        params[p["ParameterKey"]] = str(p.get("ParameterValue", ""))
    tags = {t["Key"]: t.get("Value", "") for t in req.get("Tags", [])}
    body = await _body(cloud, req)
    try:
        s = await cloud.cloudformation.create(caller, req.get("StackName", ""), body, params, on_failure, tags)
    except plan.TemplateError as e:
        raise _invalid(str(e)) from None
    return {"StackId": s.id}


def _stack_view(s: CfnStack) -> dict[str, Any]:
    return {"StackId": s.id, "StackName": s.name, "Description": s.description or None,
            "Parameters": [{"ParameterKey": k, "ParameterValue": "****" if k in s.no_echo else v}
                           for k, v in s.parameters.items()],
            "CreationTime": ts(s.created), "DeletionTime": ts(s.deleted) if s.deleted else None,
            "LastUpdatedTime": ts(s.updated) if s.generation and s.updated else None,
            "StackStatus": s.status, "StackStatusReason": s.reason or None,
            "DisableRollback": s.on_failure == "DO_NOTHING",
            "Outputs": [{"OutputKey": o["key"], "OutputValue": o["value"], "Description": o.get("description") or None,
                         "ExportName": o.get("export")} for o in s.outputs],
            "Tags": [{"Key": k, "Value": v} for k, v in s.tags.items()], "EnableTerminationProtection": False}


@REGISTRY.action("DescribeStacks")
async def describe_stacks(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    if req.get("StackName"):
        return {"Stacks": [_stack_view(_stack(cloud, caller, req["StackName"]))]}
    live = [s for s in cloud.cloudformation.stacks.of_owner(caller.account) if s.status != "DELETE_COMPLETE"]
    got, nxt = _page(live, req.get("NextToken"))
    return {"Stacks": [_stack_view(s) for s in got], "NextToken": nxt}


@REGISTRY.action("ListStacks")
async def list_stacks(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    want = set(req.get("StackStatusFilter", []))
    mine = [s for s in cloud.cloudformation.stacks.of_owner(caller.account) if not want or s.status in want]
    got, nxt = _page(mine, req.get("NextToken"))
    return {"StackSummaries": [
        {"StackId": s.id, "StackName": s.name, "TemplateDescription": s.description or None,
         "CreationTime": ts(s.created), "DeletionTime": ts(s.deleted) if s.deleted else None,
         "StackStatus": s.status, "StackStatusReason": s.reason or None} for s in got], "NextToken": nxt}


@REGISTRY.action("DeleteStack")
async def delete_stack(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName"})
    if not req.get("StackName"):
        raise _invalid("StackName must be specified")
    await cloud.cloudformation.delete(caller, req["StackName"])
    return {}


def _resource_view(s: CfnStack, r: CfnResource) -> dict[str, Any]:
    return {"StackName": s.name, "StackId": s.id, "LogicalResourceId": r.logical,
            "PhysicalResourceId": r.physical or None, "ResourceType": r.type, "Timestamp": ts(r.updated),
            "ResourceStatus": r.status, "ResourceStatusReason": r.reason or None}


@REGISTRY.action("DescribeStackResources")
async def describe_stack_resources(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    stacks = cloud.cloudformation.stacks
    if req.get("StackName"):
        s = _stack(cloud, caller, req["StackName"])
        rows = stacks.resources_of(s.id)
    elif req.get("PhysicalResourceId"):
        found = [(stacks.table.get(r.stack_id), r) for r in stacks.resources.values()
                 if r.physical == req["PhysicalResourceId"]]
        found = [(st, r) for st, r in found if st is not None and st.owner == caller.account]
        if not found:
            raise _invalid(f"Stack for {req['PhysicalResourceId']} does not exist")
        s, _ = found[-1]
        rows = stacks.resources_of(s.id)
    else:
        raise _invalid("Either StackName or PhysicalResourceId must be specified")
    if req.get("LogicalResourceId"):
        rows = [r for r in rows if r.logical == req["LogicalResourceId"]]
    return {"StackResources": [_resource_view(s, r) for r in rows]}


@REGISTRY.action("DescribeStackResource")
async def describe_stack_resource(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    s = _stack(cloud, caller, req.get("StackName"))
    r = cloud.cloudformation.stacks.resource(s.id, req.get("LogicalResourceId", ""))
    if r is None:
        raise _invalid(f"Resource {req.get('LogicalResourceId')} does not exist for stack {req['StackName']}")
    view = _resource_view(s, r)
    view["LastUpdatedTimestamp"] = view.pop("Timestamp")
    return {"StackResourceDetail": view}


@REGISTRY.action("ListStackResources")
async def list_stack_resources(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    s = _stack(cloud, caller, req.get("StackName"))
    got, nxt = _page(cloud.cloudformation.stacks.resources_of(s.id), req.get("NextToken"))
    return {"StackResourceSummaries": [
        {"LogicalResourceId": r.logical, "PhysicalResourceId": r.physical or None, "ResourceType": r.type,
         "LastUpdatedTimestamp": ts(r.updated), "ResourceStatus": r.status,
         "ResourceStatusReason": r.reason or None} for r in got], "NextToken": nxt}


def _event_view(s: CfnStack, e: CfnEvent) -> dict[str, Any]:
    return {"StackId": s.id, "EventId": e.id, "StackName": s.name, "LogicalResourceId": e.logical,
            "PhysicalResourceId": e.physical or None, "ResourceType": e.type, "Timestamp": ts(e.at),
            "ResourceStatus": e.status, "ResourceStatusReason": e.reason or None}


@REGISTRY.action("DescribeStackEvents")
async def describe_stack_events(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    s = _stack(cloud, caller, req.get("StackName"))
    got, nxt = _page(cloud.cloudformation.stacks.events_of(s.id), req.get("NextToken"))
    return {"StackEvents": [_event_view(s, e) for e in got], "NextToken": nxt}


@REGISTRY.action("GetTemplate")
async def get_template(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName", "TemplateStage"})
    if req.get("TemplateStage") not in (None, "Original", "Processed"):
        raise _invalid("TemplateStage must be Original or Processed")
    s = _stack(cloud, caller, req.get("StackName"))
    return {"TemplateBody": s.template, "StagesAvailable": ["Original", "Processed"]}


def _parameters(t: plan.Template) -> list[dict[str, Any]]:
    return [{"ParameterKey": p.name, "DefaultValue": p.default, "NoEcho": p.no_echo, "Description": p.description}
            for p in t.parameters.values()]


@REGISTRY.action("ValidateTemplate")
async def validate_template(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    t = await _template(cloud, await _body(cloud, req))
    return {"Parameters": _parameters(t), "Description": t.description, "Capabilities": [],
            "DeclaredTransforms": []}


@REGISTRY.action("GetTemplateSummary")
async def get_template_summary(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"TemplateBody", "TemplateURL", "StackName"})
    if req.get("StackName"):
        body = _stack(cloud, caller, req["StackName"]).template
    else:
        body = await _body(cloud, req)
    t = await _template(cloud, body)
    params = [{"ParameterKey": p.name, "DefaultValue": p.default, "ParameterType": p.type, "NoEcho": p.no_echo,
               "Description": p.description, "ParameterConstraints": {"AllowedValues": list(p.allowed_values)}}
              for p in t.parameters.values()]
    return {"Parameters": params, "Description": t.description, "Capabilities": [],
            "ResourceTypes": sorted(set(t.resource_types)), "Version": t.version or "2010-09-09",
            "DeclaredTransforms": []}


def _update_parameters(req: Req) -> dict[str, str | None]:
    """Parameters of an update or change set: None for UsePreviousValue."""
    out: dict[str, str | None] = {}
    for p in req.get("Parameters", []):
        if "ParameterKey" not in p:
            raise _invalid("ParameterKey must be specified")
        if p.get("UsePreviousValue"):
            if p.get("ParameterValue") is not None:
                raise _invalid(f"Invalid input for parameter key {p['ParameterKey']}. Cannot specify "
                               f"usePreviousValue as true and non empty value for a parameter")
            out[p["ParameterKey"]] = None
        else:
            out[p["ParameterKey"]] = str(p.get("ParameterValue", ""))
    return out


async def _new_body(cloud: Cloud, req: Req) -> str | None:
    """The update's template, or None with UsePreviousTemplate."""
    if req.get("UsePreviousTemplate"):
        if req.get("TemplateBody") or req.get("TemplateURL"):
            raise _invalid("You cannot specify both usePreviousTemplate and Template Body/Template URL")
        return None
    return await _body(cloud, req)


def _tags(req: Req) -> dict[str, str] | None:
    return {t["Key"]: t.get("Value", "") for t in req["Tags"]} if req.get("Tags") else None


@REGISTRY.action("UpdateStack")
async def update_stack(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName", "TemplateBody", "TemplateURL", "UsePreviousTemplate", "Parameters", "Tags",
                  "Capabilities"})
    s = _stack(cloud, caller, req.get("StackName"))
    try:
        s = await cloud.cloudformation.update(caller, s.id, await _new_body(cloud, req), _update_parameters(req),
                                              _tags(req))
    except plan.TemplateError as e:
        raise _invalid(str(e)) from None
    return {"StackId": s.id}


@REGISTRY.action("CancelUpdateStack")
async def cancel_update_stack(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName"})
    s = _stack(cloud, caller, req.get("StackName"))
    await cloud.cloudformation.cancel_update(caller, s.id)
    return {}


def _change_set(cloud: Cloud, caller: Caller, req: Req) -> Any:
    if not req.get("ChangeSetName"):
        raise _invalid("ChangeSetName must be specified")
    return cloud.cloudformation.changesets.find(caller, req["ChangeSetName"], req.get("StackName"))


@REGISTRY.action("CreateChangeSet")
async def create_change_set(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"StackName", "TemplateBody", "TemplateURL", "UsePreviousTemplate", "Parameters", "Tags",
                  "Capabilities", "ChangeSetName", "ChangeSetType", "Description"})
    if not req.get("StackName") or not req.get("ChangeSetName"):
        raise _invalid("StackName and ChangeSetName must be specified")
    try:
        c = await cloud.cloudformation.changesets.create(
            caller, req["StackName"], req["ChangeSetName"], req.get("ChangeSetType"), await _new_body(cloud, req),
            _update_parameters(req), _tags(req), req.get("Description") or "")
    except plan.TemplateError as e:
        raise _invalid(str(e)) from None
    return {"Id": c.id, "StackId": c.stack_id}


def _change_view(c: dict[str, Any]) -> dict[str, Any]:
    rc: dict[str, Any] = {"Action": c["action"], "LogicalResourceId": c["logical"], "ResourceType": c["type"],
                          "PhysicalResourceId": c["physical"] or None}
    if c["action"] == "Modify":
        rc["Replacement"] = c["replacement"]
        rc["Scope"] = ["Properties"]
        rc["Details"] = [{"Target": {"Attribute": d["attribute"], "Name": d["name"],
                                     "RequiresRecreation": d["recreation"]},
                          "Evaluation": d["evaluation"], "ChangeSource": d["source"]} for d in c["details"]]
    else:
        rc["Scope"], rc["Details"] = [], []
    return {"Type": "Resource", "ResourceChange": rc}


@REGISTRY.action("DescribeChangeSet")
async def describe_change_set(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"ChangeSetName", "StackName", "NextToken"})
    c = _change_set(cloud, caller, req)
    core = cloud.cloudformation
    s = core.stacks.table.get(c.stack_id)
    got, nxt = _page(core.changesets.changes(c), req.get("NextToken"))
    return {"ChangeSetName": c.name, "ChangeSetId": c.id, "StackId": c.stack_id, "StackName": s.name if s else None,
            "Description": c.description or None, "CreationTime": ts(c.created),
            "Parameters": [{"ParameterKey": k, "ParameterValue": v}
                           for k, v in core.changesets.shown_parameters(c).items()],
            "ExecutionStatus": changesets.execution_status(c, s), "Status": c.status,
            "StatusReason": c.reason or None, "Capabilities": [], "NotificationARNs": [],
            "Tags": [{"Key": k, "Value": v} for k, v in c.tags.items()],
            "Changes": [_change_view(x) for x in got], "NextToken": nxt}


@REGISTRY.action("ListChangeSets")
async def list_change_sets(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    s = _stack(cloud, caller, req.get("StackName"))
    core = cloud.cloudformation
    got, nxt = _page(core.stacks.change_sets_of(s.id), req.get("NextToken"))
    return {"Summaries": [
        {"StackId": s.id, "StackName": s.name, "ChangeSetId": c.id, "ChangeSetName": c.name,
         "ExecutionStatus": changesets.execution_status(c, s), "Status": c.status,
         "StatusReason": c.reason or None, "CreationTime": ts(c.created), "Description": c.description or None}
        for c in got], "NextToken": nxt}


@REGISTRY.action("ExecuteChangeSet")
async def execute_change_set(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"ChangeSetName", "StackName"})
    await cloud.cloudformation.changesets.execute(caller, _change_set(cloud, caller, req))
    return {}


@REGISTRY.action("DeleteChangeSet")
async def delete_change_set(cloud: Cloud, caller: Caller, req: Req) -> dict[str, Any]:
    _refuse(req, {"ChangeSetName", "StackName"})
    await cloud.cloudformation.changesets.delete(_change_set(cloud, caller, req))
    return {}
