"""What the Query endpoint needs of one service it serves, chosen by the signature's credential
scope (``…/<region>/<service>/aws4_request``): its wire protocol, its actions and its error format.

EC2 is one (api/ec2/service.py); STS, IAM and later AutoScaling, ELB and CloudFormation are
query-protocol services (api/query/service.py), one package each. The endpoint (api/ec2/app.py)
does the rest the same for all: body limits, signature, replay cache, login throttle, pacing.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from ..core.cloud import Cloud
from ..core.context import Caller
from ..core.errors import CloudError, ErrorKind

Handler = Callable[[Cloud, Caller, dict[str, Any]], Awaitable[dict[str, Any]]]


class WireProtocol(Protocol):
    """A service's request parser and answer writer (model-driven; see EC2's and query's)."""

    def has_operation(self, op: str) -> bool: ...
    def parse(self, op: str, params: Mapping[str, str]) -> dict[str, Any]: ...
    def serialize_iter(self, op: str, result: Mapping[str, Any], request_id: str,
                       slice_items: int = 100) -> Iterator[bytes]: ...
    def is_last(self, op: str, piece: bytes) -> bool: ...


class Service:
    """One service on the Query endpoint. Errors arrive in the endpoint's vocabulary (EC2's codes
    for what every service refuses alike: AuthFailure, InvalidAction, RequestLimitExceeded, …)
    or as the core's CloudErrors; `error` writes them as this service does."""

    name: str                        # the signing name in the credential scope
    protocol: WireProtocol
    actions: Mapping[str, Handler]
    read_only: tuple[str, ...]       # action-name prefixes whose exact replay is harmless
    ready = True                     # False: `prepare` first loads what its requests need

    async def prepare(self) -> None:
        """Load what the service's requests need (its code, its model) off the event loop; the
        endpoint awaits it before a request's action when `ready` is False (api/query/services.py)."""

    def error(self, code: str, message: str, request_id: str, status: int | None = None,
              kind: ErrorKind | None = None) -> tuple[bytes, int]:
        """The error document and HTTP status (`status`: the endpoint's, if it chose one)."""
        raise NotImplementedError

    def unknown_action(self, action: str) -> CloudError:
        """The refusal for an Action this service does not serve."""
        return CloudError("InvalidAction", f"The action {action} is not valid for this web service.")
