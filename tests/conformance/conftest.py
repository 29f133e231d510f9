"""The conformance tier: the tools people drive clouds with, unmodified, against a served cloudctl.

Each module starts one server from the default config (the subnets of `make run`, which map
public addresses on launch) and gives the tool a user's keys, the endpoint and region `cloudctl-1`,
as a user following the README would. A tool that is not installed fails its test, except
Terraform with the hashicorp/aws provider, which cannot be downloaded here: its test is skipped
with the reason where the machine lacks either."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from support import REGION, Server, Servers


@dataclass(frozen=True)
class Cloud:
    """What a user is handed: the endpoint, the region and a user's keys."""

    server: Server
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The AWS variables every tool reads (no shared config or profile files are consulted)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def cloud(server_with: Servers, request: pytest.FixtureRequest) -> Cloud:
    s = server_with()
    user = s.create_user(request.module.__name__.rpartition(".")[2].replace("_", "-"))
    return Cloud(s, s.endpoint, user["AccessKeyId"], user["SecretAccessKey"])
