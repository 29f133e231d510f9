"""The EC2 endpoint's front for the usual request: what it takes as read without parsing it is
what the parse would have given."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from cloudctl.api.ec2.app import _FORM, _FORM_TYPES


@pytest.mark.parametrize("spelling", sorted(_FORM_TYPES))
def test_the_form_types_taken_as_read_are_the_form(spelling: str) -> None:
    """A Content-Type in `_FORM_TYPES` is the form as aiohttp's own parse reads it."""
    assert make_mocked_request("POST", "/", headers={"Content-Type": spelling}).content_type == _FORM


@pytest.mark.parametrize("spelling", ["application/x-www-form-urlencoded;charset=utf-8",
                                      "Application/X-WWW-Form-Urlencoded", "text/plain", "multipart/form-data"])
def test_other_spellings_are_parsed(spelling: str) -> None:
    """Anything else is not taken as read (the request's parse decides, as before)."""
    assert spelling not in _FORM_TYPES


# ---------------------------------------------------------------------------
# The replay cache through the endpoint: a refused request releases its signature, a served one keeps it

import asyncio  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from pathlib import Path  # noqa: E402

from aiohttp.base_protocol import BaseProtocol  # noqa: E402
from aiohttp.streams import StreamReader  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from cloudctl.api.ec2.actions import ACTIONS  # noqa: E402
from cloudctl.api.ec2.app import Ec2Api, make_verifier  # noqa: E402
from cloudctl.api.ec2.model import load_model  # noqa: E402
from cloudctl.api.ec2.protocol import Protocol  # noqa: E402
from cloudctl.config import load_config  # noqa: E402
from cloudctl.core.cloud import Cloud  # noqa: E402
from cloudctl.core.context import Caller  # noqa: E402
from cloudctl.core.launch import LaunchSpec  # noqa: E402

from support import write_config  # noqa: E402


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


def _signed(access_key: str, secret: str, region: str, body: bytes) -> dict[str, str]:
    req = AWSRequest("POST", "http://127.0.0.1:4567/", data=body, headers={"Content-Type": _FORM + "; charset=utf-8"})
    SigV4Auth(Credentials(access_key, secret), "ec2", region).add_auth(req)
    return {**dict(req.headers.items()), "Host": "127.0.0.1:4567", "Content-Length": str(len(body))}


async def _send(api: Ec2Api, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    content = StreamReader(BaseProtocol(loop), 2 ** 16, loop=loop)
    content.feed_data(body)
    content.feed_eof()
    resp = await api.handle(make_mocked_request("POST", "/", headers=headers, payload=content, loop=loop))
    assert isinstance(resp.body, bytes)
    return resp.status, resp.body


async def test_a_refused_request_releases_its_signature_and_a_served_one_keeps_it(cloud: Cloud, tmp_path: Path) -> None:
    """The same signed bytes sent again past the replay grace (0 s here): refused the first time,
    the second is answered as the first was (its signature released); served the first time,
    the second is a replay."""
    api = Ec2Api(cloud, Protocol(load_model(ACTIONS, tmp_path / "model")), make_verifier(cloud), replay_grace_s=0.0)
    user = await cloud.users.create("u")
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(Caller(user), LaunchSpec(image.id, 1, 1, instance_type="t3.nano"))
    await cloud.compute.idle()
    region = cloud.config.region
    refused = b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"
    headers = _signed(user.access_key, user.secret_key, region, refused)
    for _ in range(2):
        status, body = await _send(api, headers, refused)
        assert status == 400 and b"<Code>InvalidInstanceID.NotFound</Code>" in body
        await asyncio.sleep(0.01)   # (past the 0 s grace on the monotonic clock)
    served = f"Action=CreateTags&Version=2016-11-15&ResourceId.1={insts[0].id}&Tag.1.Key=a&Tag.1.Value=b".encode()
    headers = _signed(user.access_key, user.secret_key, region, served)
    assert (await _send(api, headers, served))[0] == 200
    await asyncio.sleep(0.01)   # (past the 0 s grace on the monotonic clock)
    status, body = await _send(api, headers, served)
    assert status == 401 and b"This request was already received" in body
