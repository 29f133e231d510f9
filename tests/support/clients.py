"""The real clients tests drive a served controller with: the AWS CLI, as a user would run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .server import REGION


def aws_cli(server: Any, user: dict[str, str], *args: str, timeout: float = 120,
            retries: bool = True) -> tuple[int, Any, str]:
    """Run `aws --endpoint-url <server> --output json ARGS` as `user`, with no profile or config of
    the machine's: (exit code, parsed JSON output or None, stderr). `retries=False`: one attempt,
    so a refusal is seen as it was answered."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": user["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": user["SecretAccessKey"],
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    if not retries:
        env["AWS_MAX_ATTEMPTS"] = "1"
    cli = Path(sys.executable).parent / "aws"
    out = subprocess.run([str(cli), "--endpoint-url", server.endpoint, "--output", "json", *args],
                         env=env, capture_output=True, text=True, timeout=timeout)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def aws_ok(server: Any, user: dict[str, str], *args: str) -> Any:
    """`aws_cli` that must succeed: its parsed output (None when it printed nothing)."""
    rc, parsed, err = aws_cli(server, user, *args)
    if rc != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({rc}): {err}")
    return parsed
