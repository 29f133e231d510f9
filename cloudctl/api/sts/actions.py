"""STS actions (wire shapes from botocore's `sts` model)."""
from __future__ import annotations

from typing import Any

from ...core.cloud import Cloud
from ...core.context import Caller
from ..identity import user_arn, user_id
from ..query.service import Registry

REGISTRY = Registry("sts")


@REGISTRY.action("GetCallerIdentity")
async def get_caller_identity(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    # (members in the order AWS sends them, as in its documented example)
    return {"Arn": user_arn(caller.user), "UserId": user_id(caller.user), "Account": caller.account}
