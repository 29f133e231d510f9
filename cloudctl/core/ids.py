"""Resource identifiers in AWS's shape: a prefix and 17 hex digits (`i-0123456789abcdef0`)."""
from __future__ import annotations

import os
import re
import secrets
import string

_ID = re.compile(r"^[a-z]+-[0-9a-f]{8}(?:[0-9a-f]{9})?$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(9).hex()[:17]}"


def well_formed(resource_id: str, prefix: str) -> bool:
    return resource_id.startswith(prefix + "-") and _ID.match(resource_id) is not None


def new_access_key() -> str:
    return "AKCC" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def new_secret_key() -> str:
    return secrets.token_urlsafe(30)[:40]


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def new_mac() -> str:
    """A locally administered unicast MAC derived from random bits."""
    b = os.urandom(5)
    return "02:" + ":".join(f"{x:02x}" for x in b)
