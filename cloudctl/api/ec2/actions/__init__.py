"""EC2 actions: each translates a parsed request into calls on the core and the result back
into the output shape of the EC2 model. No cloud logic lives here."""
from __future__ import annotations

from . import catalog, images, instances, keypairs, tags  # noqa: F401  (registers the actions)
from . import addresses, imports, security_groups, volumes, vpcs  # noqa: F401
from .registry import ACTIONS

__all__ = ["ACTIONS"]
