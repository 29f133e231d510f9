"""The real clients tests drive a served controller with: boto3 for any service it serves, and the
AWS CLI, as a user would run them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from .server import REGION


def boto_client(server: Any, user: dict[str, str], service: str, *, secret: str | None = None,
                **config: Any) -> Any:
    """A boto3 client of `service` on the server's endpoint as `user` (or with another `secret`),
    one attempt per call (a refusal is seen as it was answered); `config`: more botocore Config."""
    return boto3.client(service, endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id=user["AccessKeyId"],
                        aws_secret_access_key=secret or user["SecretAccessKey"],
                        config=BotoConfig(retries={"max_attempts": 1}, **config))


def aws_cli(server: Any, user: dict[str, str], *args: str, timeout: float = 120,
            retries: bool = True, text: bool = False) -> tuple[int, Any, str]:
    """Run `aws --endpoint-url <server> --output json ARGS` as `user`, with no profile or config of
    the machine's: (exit code, parsed JSON output or None, stderr). `retries=False`: one attempt,
    so a refusal is seen as it was answered; `text`: the output as printed (commands such as
    `cloudformation deploy` print progress, not JSON)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": user["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": user["SecretAccessKey"],
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    if not retries:
        env["AWS_MAX_ATTEMPTS"] = "1"
    cli = Path(sys.executable).parent / "aws"
    out = subprocess.run([str(cli), "--endpoint-url", server.endpoint, "--output", "json", *args],
                         env=env, capture_output=True, text=True, timeout=timeout)
    if text:
        return out.returncode, out.stdout, out.stderr
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def aws_ok(server: Any, user: dict[str, str], *args: str) -> Any:
    """`aws_cli` that must succeed: its parsed output (None when it printed nothing)."""
    rc, parsed, err = aws_cli(server, user, *args)
    if rc != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({rc}): {err}")
    return parsed
