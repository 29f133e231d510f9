"""STS on the Query endpoint: who the caller is. cloudctl has no roles and no temporary
credentials (each user is its own account, with one long-term key), so GetCallerIdentity is all."""
from __future__ import annotations

from ..query.service import QueryServiceSpec
from .actions import REGISTRY

SPEC = QueryServiceSpec(
    name="sts", title="STS", registry=REGISTRY,
    serves="cloudctl's STS answers GetCallerIdentity only: each cloudctl user is its own account with "
           "one long-term access key, and there are no roles, federation or temporary credentials.")

__all__ = ["SPEC"]
