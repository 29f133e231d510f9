"""A query-protocol service (STS, IAM, …) on the Query endpoint: its model, actions and errors.

A service package (api/sts, api/iam) holds a `Registry` filled by `@REGISTRY.action("Name")`
handlers and a `QueryServiceSpec` saying what it is; `load` trims botocore's model to the
registered actions (cached like EC2's) and checks handlers and model agree.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path

from ...core.errors import CloudError, ErrorKind
from ...slim import dataclass
from ..ec2.model import Ec2Model, ModelError, load_model
from ..service import Handler, Service
from .protocol import QueryProtocol

# The endpoint's refusals (EC2's words, api/ec2/app.py) in the words every query service uses,
# with their HTTP status; the rest keep their code.
_CODES: dict[str, tuple[str, int]] = {
    "AuthFailure": ("SignatureDoesNotMatch", 403),
    "MissingAuthenticationToken": ("MissingAuthenticationToken", 403),
    "RequestLimitExceeded": ("Throttling", 400),
    "InternalError": ("InternalFailure", 500),
    "ServiceUnavailable": ("ServiceUnavailable", 503),
    "UnknownParameter": ("ValidationError", 400),
    "MissingParameter": ("ValidationError", 400),
    "InvalidParameterValue": ("ValidationError", 400),
    "RequestEntityTooLarge": ("RequestEntityTooLarge", 413),
    "RequestTimeout": ("RequestTimeout", 408),
}
_KIND_STATUS = {ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.LIMIT: 409,
                ErrorKind.AUTH: 403, ErrorKind.UNAVAILABLE: 503}


class ServiceError(ModelError):
    """A service's handlers and its model disagree: the server must not start."""


class Registry:
    """One service's actions: `@registry.action("Name")` adds a handler."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.actions: dict[str, Handler] = {}

    def action(self, name: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if self.actions.setdefault(name, fn) is not fn:
                raise ServiceError(f"{self.service} action {name} has two handlers")
            return fn
        return register

    def check(self, model: Ec2Model) -> None:
        """Every action is an async handler with an operation in the model, and the reverse."""
        for name, fn in sorted(self.actions.items()):
            if name not in model.operations:
                raise ServiceError(f"{self.service} action {name} has no operation in botocore's model")
            if not inspect.iscoroutinefunction(fn):
                raise ServiceError(f"{self.service} action {name}: its handler is not an async function")
        for name in sorted(set(model.operations) - set(self.actions)):
            raise ServiceError(f"{self.service} action {name} is in the loaded model but has no handler")


@dataclass(frozen=True)
class QueryServiceSpec:
    """What a service package declares: `name` is the signing name (and botocore's, unless `model`
    says otherwise), `title` how messages name it, `serves` one sentence for a request of an
    operation it does not serve."""

    name: str
    title: str
    registry: Registry
    serves: str
    read_only: tuple[str, ...] = field(default=("Describe", "Get", "List"))
    # The HTTP status of each of its own error codes where the service's model gives one that the
    # error's kind would not (ELB answers LoadBalancerNotFound with 400, not 404).
    statuses: Mapping[str, int] = field(default_factory=dict)
    model: str = ""   # botocore's name for it where that is not the signing name (ELB: `elb`)


class QueryService(Service):
    def __init__(self, spec: QueryServiceSpec, model: Ec2Model) -> None:
        spec.registry.check(model)
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.protocol = self._protocol = QueryProtocol(model, spec.name)
        self.actions = spec.registry.actions
        self.read_only = spec.read_only

    def error(self, code: str, message: str, request_id: str, status: int | None = None,
              kind: ErrorKind | None = None) -> tuple[bytes, int]:
        if code in _CODES:
            code, status = _CODES[code]
        elif code in self.spec.statuses:
            status = self.spec.statuses[code]
        elif status is None:
            status = _KIND_STATUS.get(kind, 400) if kind is not None else 400
        return self._protocol.error(code, message, request_id, status), status

    def unknown_action(self, action: str) -> CloudError:
        if action in self.model.unsupported:
            return CloudError("InvalidAction", f"{self.spec.title} {action} is not supported by cloudctl. "
                              f"{self.spec.serves}")
        return CloudError("InvalidAction", f"The action {action} is not valid for this web service.")


def load(spec: QueryServiceSpec, cache_dir: Path) -> QueryService:
    """The service over its trimmed model (built in a child process on a cold cache: call at start-up)."""
    return QueryService(spec, load_model(spec.registry.actions, cache_dir, spec.model or spec.name))
