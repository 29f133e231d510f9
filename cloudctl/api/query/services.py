"""The query-protocol services the Query endpoint serves besides EC2: one package each, one line here.

Each is loaded at its first request (issue 14: base RSS), on a worker thread: its package
(handlers, and the core service they import) and its trimmed botocore model, from a warm model
cache (api/ec2/model.py) 1-5 ms of CPU for STS, IAM and ELB, ~30 ms for AutoScaling and ~55 ms
for CloudFormation with their core. A service whose model is not cached yet at start (a fresh
install, a new botocore) has it built at start, as before, so that it is not built at a first
request: by a child process that imports their packages (this one does not).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ...core.errors import CloudError, ErrorKind
from ..service import Handler, Service, WireProtocol
from .service import QueryService, QueryServiceSpec, load

# Signing name -> the package under cloudctl/api that serves it, and botocore's name for its model.
PACKAGES: dict[str, tuple[str, str]] = {
    "sts": ("sts", "sts"),
    "iam": ("iam", "iam"),
    "autoscaling": ("autoscaling", "autoscaling"),
    "elasticloadbalancing": ("elb", "elb"),
    "cloudformation": ("cloudformation", "cloudformation"),
}


# The core modules a service's requests build on and its package does not import itself (core/cloud.py
# builds these services at their first use): imported with the package, off the event loop.
_CORE: dict[str, tuple[str, ...]] = {
    "autoscaling": ("cloudctl.core.autoscaling",),
    "cloudformation": ("cloudctl.core.cloudformation.engine",),   # (and its load_all: the resource types)
}


def spec(name: str) -> QueryServiceSpec:
    """The spec of the service with this signing name (imports its package)."""
    got: QueryServiceSpec = importlib.import_module(f"cloudctl.api.{PACKAGES[name][0]}").SPEC
    return got


def __getattr__(attr: str) -> tuple[QueryServiceSpec, ...]:
    """`SPECS`: every service's spec, for the tests and docs that walk them all (imports them all)."""
    if attr == "SPECS":
        return tuple(spec(name) for name in PACKAGES)
    raise AttributeError(attr)


class LazyService(Service):
    """A query service loaded by `prepare` (on a worker thread: the endpoint awaits it once a
    request's signature is verified), or at the first look at its protocol, actions or errors
    (a request refused before that: ~1-7 ms on the loop). Until then the endpoint knows its
    signing name only, which the signature checks need."""

    def __init__(self, name: str, cache_dir: Path, on_load: Callable[[QueryService], None] | None = None) -> None:
        self.name = name
        self._cache_dir = cache_dir
        self.on_load = on_load   # told of the service once loaded (the metrics' known actions)
        self._service: QueryService | None = None
        self._lock = threading.Lock()   # (a metrics scrape or a test may look from another thread)

    @property
    def loaded(self) -> bool:
        return self._service is not None

    @property   # type: ignore[override]
    def ready(self) -> bool:
        return self._service is not None

    async def prepare(self) -> None:
        """Load on a worker thread: the imports take ~30 ms of CPU for AutoScaling and ~55 ms for
        CloudFormation (with their core), which the loop would otherwise wait for."""
        if self._service is None:
            await asyncio.to_thread(self._load_all)

    def _load_all(self) -> None:
        for module in _CORE.get(self.name, ()):
            loader = getattr(importlib.import_module(module), "load_all", None)
            if loader is not None:   # (CloudFormation's resource types)
                loader()
        self.get()

    def get(self) -> QueryService:
        svc = self._service
        if svc is None:
            with self._lock:
                svc = self._service
                if svc is None:
                    svc = load(spec(self.name), self._cache_dir)
                    if self.on_load is not None:
                        self.on_load(svc)
                    self._service = svc
        return svc

    @property
    def protocol(self) -> WireProtocol:   # type: ignore[override]
        return self.get().protocol

    @property
    def actions(self) -> Mapping[str, Handler]:   # type: ignore[override]
        return self.get().actions

    @property
    def read_only(self) -> tuple[str, ...]:   # type: ignore[override]
        return self.get().read_only

    def error(self, code: str, message: str, request_id: str, status: int | None = None,
              kind: ErrorKind | None = None) -> tuple[bytes, int]:
        return self.get().error(code, message, request_id, status, kind)

    def unknown_action(self, action: str) -> CloudError:
        return self.get().unknown_action(action)


def _model_cached(name: str, cache_dir: Path) -> bool:
    """Whether the cache holds a model of this service for the installed botocore (api/ec2/model.py's
    file names); which actions it covers is known only once the package is imported."""
    try:
        version = importlib.metadata.version("botocore")
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(Path(cache_dir).glob(f"{PACKAGES[name][1]}-model-{version}-*.json"))


def _build_models(names: list[str], cache_dir: Path) -> None:
    """Build these services' models into the cache in a child process, which imports their
    packages to learn their actions (the same child api/ec2/model.py runs then builds each)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3])   # (the checkout or site-packages holding cloudctl)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    subprocess.run([sys.executable, "-m", "cloudctl.api.query.services", str(cache_dir), *names], env=env,
                   capture_output=True, check=False)


def load_all(cache_dir: Path, on_load: Callable[[QueryService], None] | None = None,
             names: Iterable[str] = PACKAGES) -> dict[str, LazyService]:
    """Each service by signing name, loaded at its first use. Those without a cached model have it
    built now, in a child process (blocks: call at start-up); if that fails, they are loaded here,
    as before, so that the failure stops the start with its reason. `on_load(service)` is told of
    each service loaded."""
    out = {name: LazyService(name, cache_dir, on_load) for name in names}
    cold = [name for name in out if not _model_cached(name, cache_dir)]
    if cold:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        _build_models(cold, cache_dir)
        for name in cold:
            if not _model_cached(name, cache_dir):
                out[name].get()
    return out


if __name__ == "__main__":   # the child of _build_models: python -m cloudctl.api.query.services DIR NAME...
    for _name in sys.argv[2:]:
        load(spec(_name), Path(sys.argv[1]))
