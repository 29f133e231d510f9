"""CloudFormation (2010-05-15) on the Query endpoint: stacks made, described and deleted by the
engine in core/cloudformation. Each user is its own account: stack names are unique per user."""
from __future__ import annotations

from ..query.service import QueryServiceSpec
from .actions import REGISTRY

SPEC = QueryServiceSpec(
    name="cloudformation", title="CloudFormation", registry=REGISTRY,
    serves="cloudctl's CloudFormation creates, updates (in place or by replacement, rolled back on failure), "
           "describes and deletes stacks (JSON or YAML templates, by body or URL) of EC2, AutoScaling, classic "
           "ELB and wait-condition resources, with change sets; there are no stack sets or drift detection.",
    # CloudFormation answers its refusals with 400 (its model's status for each).
    statuses={"ValidationError": 400, "AlreadyExistsException": 400, "LimitExceededException": 400,
              "InsufficientCapabilitiesException": 400, "TokenAlreadyExistsException": 400,
              "ChangeSetNotFound": 404, "InvalidChangeSetStatus": 400})

__all__ = ["SPEC"]
