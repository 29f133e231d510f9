"""IAM on the Query endpoint: what a client asks about its own user. Users and keys are the
administrator's (`cloudctl user create`); each user is its own account and sees only itself."""
from __future__ import annotations

from ..query.service import QueryServiceSpec
from .actions import REGISTRY

SPEC = QueryServiceSpec(
    name="iam", title="IAM", registry=REGISTRY,
    serves="cloudctl's IAM answers GetUser (of the caller) and ListAccountAliases only: users and their "
           "access keys are managed by the cloud's administrator (`cloudctl user create`), each user is "
           "its own account, and there are no groups, roles or policies.")

__all__ = ["SPEC"]
