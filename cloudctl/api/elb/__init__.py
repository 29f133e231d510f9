"""Classic Elastic Load Balancing on the Query endpoint (`aws elb …`, signing name
`elasticloadbalancing`, botocore's `elb` model): load balancers whose data plane is one HAProxy
each (core/elb). Each user is its own account: load balancer names are unique per user."""
from __future__ import annotations

from ..query.service import QueryServiceSpec
from .actions import REGISTRY

# ELB's own codes whose HTTP status (botocore's model) is not what the error's kind would give.
_STATUSES = {code: 400 for code in (
    "LoadBalancerNotFound", "DuplicateLoadBalancerName", "TooManyLoadBalancers", "DuplicateListener",
    "ListenerNotFound", "PolicyNotFound", "PolicyTypeNotFound", "DuplicatePolicyName", "TooManyPolicies",
    "SubnetNotFound", "InvalidSecurityGroup", "TooManyTags", "DuplicateTagKeys", "LoadBalancerAttributeNotFound",
    "InvalidInstance", "InvalidSubnet", "ValidationError")}
_STATUSES["InvalidConfigurationRequest"] = 409

SPEC = QueryServiceSpec(
    name="elasticloadbalancing", title="Elastic Load Balancing", registry=REGISTRY,
    serves="cloudctl serves classic load balancers (2012-06-01) with HTTP and TCP listeners (HTTPS and SSL as "
           "TLS pass-through), stickiness policies, health checks, attributes and tags; there are no "
           "certificates, backend-server policies or SSL negotiation policies.",
    statuses=_STATUSES, model="elb")

__all__ = ["SPEC"]
