"""AutoScaling on the Query endpoint: launch configurations, groups, simple scaling policies and
the reads Terraform's and Ansible's group resources make. The logic is core/autoscaling's."""
from __future__ import annotations

from ..query.service import QueryServiceSpec
from .actions import REGISTRY

SPEC = QueryServiceSpec(
    name="autoscaling", title="AutoScaling", registry=REGISTRY,
    serves="cloudctl's AutoScaling serves launch configurations, groups (sizes, zones or subnets, health "
           "checks, processes, tags, attached instances and load balancers), simple scaling policies and "
           "scaling activities; there are no lifecycle hooks, warm pools, scheduled actions, instance "
           "refreshes, notifications, metrics collection, or step, target-tracking and predictive policies.",
    # AutoScaling answers its refusals with 400 (a throttle, a missing key and a server error keep theirs).
    statuses={"AlreadyExists": 400, "ResourceInUse": 400, "ScalingActivityInProgress": 400,
              "LimitExceeded": 400, "ValidationError": 400, "InvalidNextToken": 400})

__all__ = ["SPEC"]
