"""aiohttp's HTTP client, loaded at its first use instead of with `aiohttp.web` (issue 14: base RSS).

`import aiohttp.web` runs the package's `__init__`, which imports the whole client (sessions,
connectors, cookie jar, tracing, digest auth): ~4.3 MiB of RSS that the controller does not use
until an image is fetched, a marketplace list is read, obmd is called or the ELB admin probes
haproxy. `defer_client` puts the package in `sys.modules` with its `__path__` and `__version__`
only (all `aiohttp.web` and its modules read from the package), so submodules import as usual;
the first other attribute asked of the package (`aiohttp.ClientSession`, `from aiohttp import
ClientError`) runs the real `__init__` into the same module object and answers from it. Nothing
changes for a caller but when the client's modules are loaded.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
from typing import Any

_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.M)


def defer_client() -> bool:
    """Install the deferred package unless aiohttp is already imported (or its `__init__` does not
    look as expected); True if installed. Call before anything imports aiohttp."""
    if "aiohttp" in sys.modules:
        return False
    spec = importlib.util.find_spec("aiohttp")
    if spec is None or spec.loader is None or spec.origin is None or not spec.submodule_search_locations:
        return False
    try:
        with open(spec.origin, encoding="utf-8") as f:
            found = _VERSION.search(f.read(4096))
    except OSError:
        return False
    if found is None:
        return False
    pkg = importlib.util.module_from_spec(spec)
    pkg.__version__ = found.group(1)   # type: ignore[attr-defined]   # (aiohttp.http reads it)
    lock = threading.RLock()
    loaded: list[bool] = []

    def load_all() -> None:
        with lock:
            if not loaded:
                loaded.append(True)
                assert spec.loader is not None   # (the real __init__ replaces __getattr__ with its own)
                try:
                    spec.loader.exec_module(pkg)
                except BaseException:
                    loaded.clear()   # the next use fails the same way, as a failed import does
                    raise

    def __getattr__(name: str) -> Any:   # noqa: N807 (a module's __getattr__, PEP 562)
        if name.startswith("__") and name != "__all__":
            raise AttributeError(f"module 'aiohttp' has no attribute {name!r}")
        if name != "__all__" and importlib.util.find_spec(f"aiohttp.{name}") is not None:
            return importlib.import_module(f"aiohttp.{name}")   # `from aiohttp import web`
        load_all()
        if name in pkg.__dict__:
            return pkg.__dict__[name]
        own = pkg.__dict__.get("__getattr__")   # aiohttp's own (its lazy names, its error)
        if own is not None and own is not __getattr__:
            return own(name)
        raise AttributeError(f"module 'aiohttp' has no attribute {name!r}")

    pkg.__getattr__ = __getattr__   # type: ignore[attr-defined]
    sys.modules["aiohttp"] = pkg
    return True

