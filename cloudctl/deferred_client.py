"""aiohttp's HTTP client sessions imported at their first use in `cloudctl serve` (issue 14: base RSS).

`from aiohttp import web` runs the package's `__init__` first, and it imports the whole client:
`ClientSession` (aiohttp/client.py), the cookie jar, tracing's attrs classes, web sockets, client
middlewares and digest auth (~0.6 MiB of RSS with a controller's other imports) in a controller
that uses the client only to fetch an image from a URL, read a marketplace list, call obmd or
relay a proxy's statistics page. The connector (and the request classes it imports) stays at start.

`defer()` makes the package module from aiohttp's own spec (`importlib.util.module_from_spec`: its
`__path__`, `__spec__`, `__file__` as an import sets them) and puts it in `sys.modules` with its
`__version__` and a module `__getattr__` (PEP 562) only. Submodules then import as usual (all that
aiohttp's own modules ask of their package in the tested versions is `__version__` and
submodules); the first other name asked of the package (`aiohttp.ClientSession`, `from aiohttp
import ClientError`) runs the real `__init__` (`spec.loader.exec_module`) into the same module,
which then answers as if it had been imported whole, with aiohttp's own `__getattr__`.

Guards, because this rests on how one third-party version is written:
- Only `cloudctl serve` calls it (and bench/served_probes.py, which stands in for it); `import cloudctl`
  never changes how aiohttp imports.
- Only for the aiohttp versions in `TESTED`, read from the `__init__` that would run. Any other
  version, an error while setting it up, or a start-up import that fails under it: the stand-in is
  dropped and aiohttp is imported whole at once, as without this module. An upgrade can cost the
  memory, not a wrong import. `eager_reason` says why, when it is so.
- `aiohttp.connector` is imported at start, as before: it builds the verified client context at
  its import, which `cloudctl serve` does inside `trust_anchors.from_directory` (no CA bundle
  parsed). Deferred too, it would save ~1.1 MiB more at start, but the context would be built at
  the first fetch, outside that block: the bundle parsed then (~2 MiB, on the loop), more than a
  controller that uses the client holds without this module.

The first use runs the rest of the `__init__` on the thread that asks (the loop): 14-18 ms of CPU
once (its thread time, measured at load ~4).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any

# aiohttp versions whose `__init__` and submodules were read and tested with this stand-in
# (tests/test_deferred_client.py). Add a version only after running those tests with it.
TESTED: tuple[str, ...] = ("3.14.5",)
# What `cloudctl serve` imports at start under the stand-in: the server's modules, and the
# connector (its client context is built at import: in `from_directory`, as before).
AT_START = ("aiohttp.web", "aiohttp.connector")
CLIENT = "aiohttp.client"   # (loaded by the real `__init__`: not at start when deferred)

_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.M)

eager_reason: str | None = None   # why the last `defer` imported the package whole (None: deferred)


def defer(package: str = "aiohttp", tested: Iterable[str] = TESTED, at_start: Iterable[str] = AT_START,
          client: str = CLIENT) -> bool:
    """Import `package` with its `__init__` deferred to the first name asked of it that is not a
    submodule, then import `at_start`; if the version is not in `tested`, or anything fails on the
    way, import the package whole instead. True if deferred (and `client` is not loaded). Call with
    one thread, before anything imports the package."""
    global eager_reason
    if package in sys.modules:
        eager_reason = "already imported"
        return False
    try:
        eager_reason = _install(package, tuple(tested))
        if eager_reason is None:
            for name in at_start:
                importlib.import_module(name)
    except Exception as e:   # (the stand-in's own failure, or an import it broke): as without it
        eager_reason = f"{type(e).__name__}: {e}"
    if eager_reason is not None:
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
        importlib.import_module(package)   # (whole: fails as it would have without this module)
        for name in at_start:
            importlib.import_module(name)
        return False
    if client in sys.modules:
        eager_reason = f"{client} was imported at start"
        return False
    return True


def _install(package: str, tested: tuple[str, ...]) -> str | None:
    """Put the stand-in for `package` in `sys.modules`; or say why not."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or not spec.origin or not spec.submodule_search_locations:
        return "not a package with a loader"
    with open(spec.origin, encoding="utf-8") as f:
        found = _VERSION.search(f.read(4096))
    version = found.group(1) if found else None
    if version not in tested:
        return f"version {version} is not one tested ({', '.join(tested)})"
    pkg = importlib.util.module_from_spec(spec)
    pkg.__version__ = version   # type: ignore[attr-defined]   # (aiohttp.http reads it)
    lock = threading.RLock()
    ran: list[bool] = []

    def run_init() -> None:
        with lock:
            if ran:
                return
            ran.append(True)
            assert spec.loader is not None
            try:
                spec.loader.exec_module(pkg)   # (the real `__init__`; its `__getattr__` replaces ours)
            except BaseException:
                ran.clear()   # the next use fails the same way, as a failed import is tried again
                raise

    def __getattr__(name: str) -> Any:  # noqa: N807 (a module's __getattr__, PEP 562)
        if name.startswith("__") and name != "__all__":
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if name != "__all__" and not ran and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")   # (`from . import hdrs`)
        run_init()
        if name in pkg.__dict__:
            return pkg.__dict__[name]
        own = pkg.__dict__.get("__getattr__")   # the package's own (aiohttp's lazy names, its error)
        if own is not None and own is not __getattr__:
            return own(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    pkg.__getattr__ = __getattr__   # type: ignore[attr-defined]
    sys.modules[package] = pkg
    return None


def is_deferred(module: ModuleType) -> bool:
    """Whether `module` is a stand-in whose `__init__` has not run yet."""
    own = module.__dict__.get("__getattr__")
    return own is not None and own.__module__ == __name__
