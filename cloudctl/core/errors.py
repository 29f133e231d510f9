"""Errors the cloud reports to its users.

Codes are EC2's vocabulary (the semantics cloudctl implements); how a code travels — HTTP status,
XML — is the API layer's business. The `kind` says what sort of refusal it is, so the front ends
that do not speak EC2 (XML-RPC, HIL, admin) map errors by kind rather than by matching code strings.
"""
from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    INVALID = "invalid"            # the request is wrong; retrying it unchanged fails again
    NOT_FOUND = "not_found"        # a resource it names does not exist (for this caller)
    CONFLICT = "conflict"          # it clashes with something that exists (duplicate, in use)
    WRONG_STATE = "wrong_state"    # the resource is not in a state that allows it
    CAPACITY = "capacity"          # the cloud has no room for it now
    LIMIT = "limit"                # the caller's quota does not allow it
    AUTH = "auth"                  # the caller may not do it
    UNAVAILABLE = "unavailable"    # the cloud could not do it now; nothing changed, retry later


class CloudError(Exception):
    """A refusal: EC2 `code` and `message` as users see them, and its `kind` (INVALID unless a
    helper constructor says otherwise)."""

    def __init__(self, code: str, message: str, kind: ErrorKind = ErrorKind.INVALID) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = kind

    @classmethod
    def not_found(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.NOT_FOUND)

    @classmethod
    def conflict(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.CONFLICT)

    @classmethod
    def wrong_state(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.WRONG_STATE)

    @classmethod
    def capacity(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.CAPACITY)

    @classmethod
    def limit(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.LIMIT)

    @classmethod
    def auth(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.AUTH)

    @classmethod
    def unavailable(cls, code: str, message: str) -> CloudError:
        return cls(code, message, ErrorKind.UNAVAILABLE)


def not_found(kind: str, ids: list[str] | str) -> CloudError:
    """`Invalid<Kind>ID.NotFound`, the code waiters and Terraform treat as 'gone'."""
    ids = [ids] if isinstance(ids, str) else ids
    noun = {"InstanceID": "instance ID", "AMIID": "image id", "KeyPair": "key pair"}.get(kind, kind)
    quoted = ", ".join(f"'{i}'" for i in ids)
    if kind == "KeyPair":
        return CloudError.not_found("InvalidKeyPair.NotFound", f"The key pair {quoted} does not exist")
    if kind == "AMIID":
        return CloudError.not_found("InvalidAMIID.NotFound", f"The image id '[{', '.join(ids)}]' does not exist")
    return CloudError.not_found(f"Invalid{kind}.NotFound", f"The {noun} {quoted} does not exist")


def invalid(message: str) -> CloudError:
    return CloudError("InvalidParameterValue", message)
