"""The conformance tier: the tools people drive clouds with, unmodified, against a served cloudctl.

Each module starts one server from the default config (the subnets of `make run`, which map
public addresses on launch) and gives the tool a user's keys, the endpoint and region `cloudctl-1`,
as a user following the README would. A tool that is not installed fails its test, except
Terraform with the hashicorp/aws provider, which cannot be downloaded here: its test is skipped
with the reason where the machine lacks either. Helpers are in `toolrun`."""
from __future__ import annotations

import pytest

from support import Servers
from toolrun import Cloud


@pytest.fixture(scope="module")
def cloud(server_with: Servers, request: pytest.FixtureRequest) -> Cloud:
    s = server_with()
    user = s.create_user(request.module.__name__.rpartition(".")[2].replace("_", "-"))
    return Cloud(s, s.endpoint, user["AccessKeyId"], user["SecretAccessKey"])
