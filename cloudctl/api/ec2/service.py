"""EC2 as one service of the Query endpoint (api/service.py): its protocol, its actions, its errors."""
from __future__ import annotations

from ...core.errors import ErrorKind
from ..service import Service
from .actions import ACTIONS
from .actions.registry import FORMS
from .protocol import Protocol

# HTTP status per error code; everything else deterministic is 400 (botocore retries 5xx).
STATUS = {
    "AuthFailure": 401, "MissingAuthenticationToken": 401, "UnauthorizedOperation": 403,
    "OptInRequired": 403, "DryRunOperation": 412, "InternalError": 500, "Unavailable": 503, "ServiceUnavailable": 503,
    "RequestLimitExceeded": 503, "RequestEntityTooLarge": 413, "RequestTimeout": 408,
}


class Ec2Service(Service):
    def __init__(self, protocol: Protocol) -> None:
        self.name = "ec2"
        self.protocol = protocol
        self.actions = ACTIONS
        self.forms = FORMS   # (actions whose usual form skips `protocol.parse`: registry.FORMS)
        self.read_only = ("Describe", "Get")
        self._errors = protocol

    def error(self, code: str, message: str, request_id: str, status: int | None = None,
              kind: ErrorKind | None = None) -> tuple[bytes, int]:
        """EC2's `<Response><Errors>` document; the status by code (the core's codes are EC2's)."""
        return self._errors.error(code, message, request_id), status or STATUS.get(code, 400)
