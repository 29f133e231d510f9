"""Fixtures: a real cloudctl server in a subprocess, driven by real clients (boto3, AWS CLI).

Only fixtures and hooks live here; the helpers they use (and tests import) are in `support`."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from support import Server, Servers, write_config

# Hypothesis: `dev` (the default) tries few examples, always the same ones, so a run is quick and
# repeatable; `ci` (CI=true, or HYPOTHESIS_PROFILE=ci) keeps today's count and a fresh draw each run.
# Per-test counts that a test sets itself (test_fuzz_ec2.py, `make fuzz`) win over both. No
# deadline in either: an example's time says how loaded the box is (a 2-core CI runner with a
# second worker), not whether the code is right; it failed tests that were right.
settings.register_profile("dev", max_examples=5, derandomize=True, database=None, deadline=None)
settings.register_profile("ci", max_examples=12, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def server_with(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Servers]:
    """`server_with(**config overrides)`: a started server shared by a module's tests (stopped
    after them). A listener named in the overrides binds loopback port 0 unless it says otherwise."""
    servers = Servers(lambda: tmp_path_factory.mktemp("server"), model_cache)
    yield servers
    servers.stop()


@pytest.fixture
def new_server(tmp_path: Path, model_cache: Path) -> Iterator[Servers]:
    """Factory for servers private to one test (for crash and restart tests)."""
    n = iter(range(1 << 30))

    def where() -> Path:
        d = tmp_path / f"srv{next(n)}"
        d.mkdir()
        return d

    servers = Servers(where, model_cache)
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("shared-server")
    s = Server(write_config(d, model_cache)).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def alice(server: Server) -> dict[str, str]:
    return server.create_user("alice")


@pytest.fixture(scope="session")
def bob(server: Server) -> dict[str, str]:
    return server.create_user("bob")


@pytest.fixture(scope="session")
def ec2(server: Server, alice: dict[str, str]) -> Any:
    return server.client(alice)


@pytest.fixture(scope="session")
def image_id(ec2: Any) -> str:
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
    assert len(images) == 1
    return images[0]["ImageId"]
