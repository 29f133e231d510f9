"""CreateTags, DeleteTags, DescribeTags."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from .. import requests
from .registry import action


@action("CreateTags")
async def create_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.tags.create(caller, req["Resources"], requests.pairs(req["Tags"]))
    return {}


@action("DeleteTags")
async def delete_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    # A Tag without a Value removes the key whatever its value; with one (even ""), only that value.
    tags = [(t.get("Key") or "", t["Value"] if "Value" in t else None) for t in req.get("Tags") or ()]
    await cloud.tags.delete(caller, req["Resources"], tags)
    return {}


@action("DescribeTags")
async def describe_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    tags, token = cloud.tags.describe(caller, requests.query(req))
    return {"Tags": [{"ResourceId": t.resource_id, "ResourceType": t.resource_type, "Key": t.tag_key,
                      "Value": t.value} for t in tags], "NextToken": token}
