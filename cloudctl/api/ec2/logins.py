"""The access key id a request claims, read before its signature is checked (for the login throttle)."""
from __future__ import annotations

import re
from collections.abc import Mapping

_CREDENTIAL = re.compile(r"Credential=([^/,\s]{1,128})")


def claimed_access_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The key id of a SigV4 header, a presigned URL or SigV2 fields; "" if none is legible."""
    m = _CREDENTIAL.search(headers.get("Authorization", ""))
    if m:
        return m.group(1)
    cred = params.get("X-Amz-Credential") or params.get("AWSAccessKeyId") or ""
    return cred.split("/", 1)[0][:128]
