"""Switch families are declared in one place: a driver class naming its `family` registers it, and
its options model marks its own secret fields. Whatever a family marks secret (`Secret` or
`SecretStr`) is sealed in the journal and checkpoints and never shown by `GET /switch/<name>`,
for a family added later (one defined here, an HTTP switch with an API token) as much as for the
built-in ones. The core runs in-process with the real admin and HIL app on a socket, so the
test-only family is registered in the same process that serves it."""
from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudctl.api.admin import AdminApi
from cloudctl.config import Config, load_config
from cloudctl.core.baremetal.auth import ADMIN
from cloudctl.core.cloud import Cloud
from cloudctl.drivers.switch.base import (
    DriverOptions,
    PortVlans,
    Secret,
    SwitchDriver,
    driver_class,
    families,
    secret_fields,
)

from support import write_config

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5mG3Sdm2PpJ4d6wAHkq2fbTEH3bM1Vn4cA0gFNxsK1"


class TokenOptions(DriverOptions):
    url: str
    api_token: Secret                      # marked secret
    community: SecretStr | None = None     # typed secret
    site: str = "lab"


class TokenSwitch(SwitchDriver):
    """A test-only family: a switch managed over HTTP with a token. It never connects here."""
    family = "test-token"
    options_model = TokenOptions
    options: TokenOptions

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        return None

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        return None

    async def read_port(self, port: str) -> PortVlans:
        return PortVlans()

    async def list_ports(self) -> list[str]:
        return []

    async def save(self) -> None:
        return None

    async def close(self) -> None:
        return None


def secret(what: str) -> str:
    return f"{what}-{secrets.token_hex(8)}"


def samples() -> dict[str, dict[str, Any]]:
    """Registration bodies for every family, each secret field with its own value."""
    ssh = {"hostname": "127.0.0.1", "username": "admin", "host_key": HOST_KEY}
    return {
        "cisco": {**ssh, "password": secret("cisco-pw"), "enable_password": secret("cisco-en")},
        "dell": {**ssh, "password": secret("dell-pw"), "enable_password": secret("dell-en")},
        "dell10g": {**ssh, "password": secret("dell10g-pw"), "enable_password": secret("dell10g-en")},
        "arista": {**ssh, "password": secret("arista-pw"), "enable_password": secret("arista-en")},
        "brocade": {**ssh, "password": secret("brocade-pw"), "enable_password": secret("brocade-en")},
        "ovs": {**ssh, "bridge": "br-lab", "password": secret("ovs-pw")},
        "test-token": {"url": "https://sw.example/api", "api_token": secret("token"),
                       "community": secret("community")},
    }


def test_families_register_by_name() -> None:
    assert driver_class("test-token") is TokenSwitch
    assert {"cisco", "dell", "dell10g", "arista", "brocade", "ovs", "test-token"} <= set(families())
    assert driver_class("nosuch") is None and secret_fields("nosuch") == ()
    assert secret_fields("test-token") == ("api_token", "community")
    assert secret_fields("cisco") == ("password", "enable_password")
    assert secret_fields("ovs") == ("password",)
    for family in ("dell10g", "arista", "brocade"):
        assert secret_fields(family) == ("password", "enable_password")
    with pytest.raises(TypeError, match="test-token.*already registered by"):
        type("Again", (TokenSwitch,), {"family": "test-token"})
    with pytest.raises(TypeError, match="options_model is not a DriverOptions model"):
        type("NoModel", (SwitchDriver,), {"family": "test-bare"})
    assert driver_class("test-bare") is None


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Cloud, str]]:
    """The core in-process and its admin API (the HIL routes included) on a loopback socket."""
    cloud = await Cloud.open(config, "http://127.0.0.1:0")
    srv = TestServer(AdminApi(cloud, "tok", lambda: {}).app())
    try:
        await srv.start_server()
        yield cloud, str(srv.make_url("/hil/v0"))
    finally:
        await srv.close()
        await cloud.stop()


async def call(session: aiohttp.ClientSession, base: str, method: str, path: str, body: Any = None) -> Any:
    async with session.request(method, base + path, json=body, headers={"Authorization": "Bearer tok"}) as r:
        assert r.status == 200, (method, path, r.status, await r.text())
        return await r.json(content_type=None)


def state_bytes(state_dir: Path) -> bytes:
    files = [p for p in state_dir.iterdir() if p.name.startswith(("journal.", "checkpoint."))]
    assert {p.name.split(".")[0] for p in files} == {"journal", "checkpoint"}
    return b"".join(p.read_bytes() for p in files)


async def test_every_familys_secret_fields_are_sealed_and_hidden(tmp_path: Path, model_cache: Path) -> None:
    config = load_config(write_config(tmp_path, model_cache, baremetal={"audit_on_start": "off"}))
    bodies = samples()
    assert set(bodies) == set(families()), "a new family needs a sample body here"
    for family, body in bodies.items():
        assert set(secret_fields(family)) <= set(body), f"{family}: every secret field needs a value here"
    clear = {v for family, body in bodies.items() for f, v in body.items() if f in secret_fields(family)}
    assert len(clear) == sum(len(secret_fields(f)) for f in bodies) >= 7

    async with running(config) as (cloud, base), aiohttp.ClientSession() as s:
        # Half before a checkpoint, half after it: both the checkpoint and the journal are read.
        for n, (family, body) in enumerate(sorted(bodies.items())):
            await call(s, base, "PUT", f"/switch/sw{n}", {"type": family, **body})
            if n == 1:
                await cloud.store.checkpoint()
        shown = [await call(s, base, "GET", f"/switch/sw{n}") for n in range(len(bodies))]   # HIL's answer
        views = [cloud.baremetal.site.show_switch(ADMIN, f"sw{n}") for n in range(len(bodies))]   # the core's
        await cloud.store.sync()
    by_type = {v.switch.type: dict(v.options) for v in views}
    assert by_type["test-token"] == {"url": "https://sw.example/api", "site": "lab"}
    assert by_type["ovs"]["bridge"] == "br-lab" and "password" not in by_type["ovs"]
    for value in clear:
        assert value not in json.dumps(shown) and value not in json.dumps(list(by_type.values()))

    raw = state_bytes(config.state_dir)
    assert raw.count(b'"sealed"') >= len(clear)
    for value in clear:
        assert value.encode() not in raw, value

    # Restarted from that state, a driver gets its secrets back in clear, typed as its model says.
    tok = bodies["test-token"]
    name = next(v.switch.name for v in views if v.switch.type == "test-token")
    async with running(config) as (cloud, _):
        driver = cloud.baremetal.ops.driver(name)
        assert isinstance(driver, TokenSwitch)
        assert driver.options.api_token == tok["api_token"]
        assert driver.options.community is not None
        assert driver.options.community.get_secret_value() == tok["community"]
