"""What a request claims before its signature is checked: the access key id (for the login
throttle) and the service its SigV4 scope names (for the format of the answer)."""
from __future__ import annotations

import re
from collections.abc import Mapping

_CREDENTIAL = re.compile(r"Credential=([^/,\s]{1,128})")
_SCOPE_SERVICE = re.compile(r"/([a-z0-9-]{1,40})/aws4_request(?:[,\s]|$)")


def claimed_access_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The key id of a SigV4 header, a presigned URL or SigV2 fields; "" if none is legible."""
    m = _CREDENTIAL.search(headers.get("Authorization", ""))
    if m:
        return m.group(1)
    cred = params.get("X-Amz-Credential") or params.get("AWSAccessKeyId") or ""
    return cred.split("/", 1)[0][:128]


def claimed_service(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The service a SigV4 credential scope names; "ec2" if none is legible (SigV2 has no scope)."""
    m = _SCOPE_SERVICE.search(headers.get("Authorization", "")[:1024])
    if m is None:
        m = _SCOPE_SERVICE.search((params.get("X-Amz-Credential") or "")[:256])
    return m.group(1) if m else "ec2"
