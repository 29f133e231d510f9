"""Errors the cloud reports to its users.

Codes are EC2's vocabulary (the semantics cloudctl implements); how a code travels — HTTP status,
XML — is the API layer's business.
"""
from __future__ import annotations


class CloudError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def not_found(kind: str, ids: list[str] | str) -> CloudError:
    """`Invalid<Kind>ID.NotFound`, the code waiters and Terraform treat as 'gone'."""
    ids = [ids] if isinstance(ids, str) else ids
    noun = {"InstanceID": "instance ID", "AMIID": "image id", "KeyPair": "key pair"}.get(kind, kind)
    quoted = ", ".join(f"'{i}'" for i in ids)
    if kind == "KeyPair":
        return CloudError("InvalidKeyPair.NotFound", f"The key pair {quoted} does not exist")
    if kind == "AMIID":
        return CloudError("InvalidAMIID.NotFound", f"The image id '[{', '.join(ids)}]' does not exist")
    return CloudError(f"Invalid{kind}.NotFound", f"The {noun} {quoted} does not exist")


def invalid(message: str) -> CloudError:
    return CloudError("InvalidParameterValue", message)
