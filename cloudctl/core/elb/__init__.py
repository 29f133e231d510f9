"""Classic Elastic Load Balancing: the load balancers' rows (service.py), the checks on their
parts (model.py), ELB's health words (health.py) and the proxies that serve them (dataplane.py)."""
from __future__ import annotations

from .service import Elb

__all__ = ["Elb"]
