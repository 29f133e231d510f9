"""IAM actions (wire shapes from botocore's `iam` model)."""
from __future__ import annotations

from typing import Any

from ...core.cloud import Cloud
from ...core.context import Caller
from ...core.errors import CloudError
from ..ec2.actions.registry import ts
from ..identity import user_arn, user_id
from ..query.service import Registry

REGISTRY = Registry("iam")


@REGISTRY.action("GetUser")
async def get_user(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    # The caller's account holds one user, itself: any other name (another account's user or
    # none at all) is answered alike, as AWS answers a name its account does not have.
    user = caller.user
    name = req.get("UserName", user.name)
    if name != user.name:
        raise CloudError.not_found("NoSuchEntity", f"The user with name {name} cannot be found.")
    return {"User": {"UserId": user_id(user), "Path": "/", "UserName": user.name, "Arn": user_arn(user),
                     "CreateDate": ts(user.created)}}   # (AWS's order)


@REGISTRY.action("ListAccountAliases")
async def list_account_aliases(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    # No aliases: cloudctl has no CreateAccountAlias, and an AWS alias names one account (here,
    # one user) uniquely, so the region's name, shared by every user, would be a false one.
    return {"IsTruncated": False, "AccountAliases": []}   # (AWS's order)
