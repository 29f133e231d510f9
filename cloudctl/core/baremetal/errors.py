"""The bare-metal API's errors, named as HIL named them so its users recognize them."""
from __future__ import annotations


class BmError(Exception):
    """Base: `type(e).__name__` is the error's name on the wire."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class NotFoundError(BmError): ...
class DuplicateError(BmError): ...
class BlockedError(BmError): ...
class ProjectMismatchError(BmError): ...
class IllegalStateError(BmError): ...
class AuthorizationError(BmError): ...        # authenticated, not allowed
class AuthenticationError(BmError): ...       # no or wrong credentials
class BadArgumentError(BmError): ...
class OBMError(BmError): ...


class RetryLaterError(BmError):
    """Not checked now; the client may retry after `retry_after_s` (HTTP Retry-After)."""

    def __init__(self, msg: str, retry_after_s: float) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class TooManyFailuresError(RetryLaterError): ...   # this address (or user from it) is backing off
class BusyError(RetryLaterError): ...              # the password checkers' wait list is full
