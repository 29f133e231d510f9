"""CreateTags, DeleteTags, DescribeTags."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from .registry import action


@action("CreateTags")
async def create_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.tags.create(caller, req["Resources"], req["Tags"])
    return {}


@action("DeleteTags")
async def delete_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.tags.delete(caller, req["Resources"], req.get("Tags"))
    return {}


@action("DescribeTags")
async def describe_tags(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    tags, token = cloud.tags.describe(caller, req.get("Filters"), req.get("MaxResults"), req.get("NextToken"))
    return {"Tags": [{"ResourceId": t.resource_id, "ResourceType": t.resource_type, "Key": t.tag_key,
                      "Value": t.value} for t in tags], "NextToken": token}
