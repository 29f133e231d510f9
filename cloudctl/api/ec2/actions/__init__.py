"""EC2 actions: each translates a parsed request into calls on the core and the result back
into the output shape of the EC2 model. No cloud logic lives here.

Every module of this package is imported here, so its `@action` handlers register themselves:
`ACTIONS` is the one list of implemented actions, and the EC2 model the server loads is trimmed
to its names. A new module needs no line here.
"""
from __future__ import annotations

import importlib
import pkgutil

from .registry import ACTIONS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ACTIONS"]
