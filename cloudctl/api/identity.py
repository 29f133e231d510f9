"""How a cloudctl user looks to AWS clients that ask who they are (STS, IAM).

Each cloudctl user is its own account (core/users.py): the account id is the one EC2 already
answers as OwnerId, the user is `arn:aws:iam::<account>:user/<name>` (partition `aws`, as the
ARNs EC2 answers), and the user id is AWS's form (AIDA + 17 characters) derived from the account
and the name, so it is the same at every start and differs for a user deleted and made again.
"""
from __future__ import annotations

import base64
import hashlib

from ..store.records import User


def user_arn(user: User) -> str:
    return f"arn:aws:iam::{user.account_id}:user/{user.name}"


def user_id(user: User) -> str:
    digest = hashlib.sha256(f"{user.account_id}:{user.name}".encode()).digest()
    return "AIDA" + base64.b32encode(digest).decode("ascii")[:17]
