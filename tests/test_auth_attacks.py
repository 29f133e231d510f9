"""Signature attacks against a served controller: requests signed by botocore's own signers,
then altered or replayed on the wire. Each is refused with the AWS code and changes nothing."""
from __future__ import annotations

import datetime
import time
import urllib.error
import urllib.request
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from support import REGION

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def signed(server: Any, user: dict[str, str], body: str, region: str = REGION, service: str = "ec2",
           at: datetime.datetime | None = None, v2: bool = False) -> AWSRequest:
    req = AWSRequest(method="POST", url=server.endpoint + "/", data=body, headers={"Content-Type": FORM})
    creds = Credentials(user["AccessKeyId"], user["SecretAccessKey"])
    if v2:
        params = dict(p.split("=", 1) for p in body.split("&"))
        req = AWSRequest(method="POST", url=server.endpoint + "/", data=params, headers={"Content-Type": FORM})
        SigV2Auth(creds).add_auth(req)
        return req
    if at is None:
        SigV4Auth(creds, service, region).add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            SigV4Auth(creds, service, region).add_auth(req)
    return req


def send(req: AWSRequest, drop: str | None = None, **replace: str) -> tuple[int, str]:
    prepared = req.prepare()
    headers = {k: v for k, v in prepared.headers.items() if k != drop}
    headers.update(replace)
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    http = urllib.request.Request(prepared.url, data=body, headers=headers, method=prepared.method)
    try:
        with urllib.request.urlopen(http, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def error_code(text: str) -> str:
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def key_names(ec2: Any) -> list[str]:
    return sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])


@pytest.fixture(scope="module")
def victim(server: Any) -> dict[str, str]:
    return server.create_user("attack-victim")


@pytest.fixture(scope="module")
def vec2(server: Any, victim: dict[str, str]) -> Any:
    return server.client(victim)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize("name, make, expect", [
    ("wrong-region", lambda s, u, b: (signed(s, u, b, region="us-east-1"), {}), ("AuthFailure", 401)),
    ("wrong-service", lambda s, u, b: (signed(s, u, b, service="s3"), {}), ("IncompleteSignature", 400)),
    ("expired", lambda s, u, b: (signed(s, u, b, at=now() - datetime.timedelta(minutes=20)), {}),
     ("RequestExpired", 400)),
    ("future", lambda s, u, b: (signed(s, u, b, at=now() + datetime.timedelta(minutes=20)), {}),
     ("RequestExpired", 400)),
    ("wrong-secret", lambda s, u, b: (signed(s, {**u, "SecretAccessKey": "x" * 40}, b), {}), ("AuthFailure", 401)),
    ("unknown-key", lambda s, u, b: (signed(s, {**u, "AccessKeyId": "AKIA0000000000000000"}, b), {}),
     ("AuthFailure", 401)),
    ("tampered-body", lambda s, u, b: (signed(s, u, b + "-signed"), {}), ("AuthFailure", 401)),
])
def test_forged_requests_change_nothing(server: Any, victim: dict[str, str], vec2: Any, name: str,
                                        make: Any, expect: tuple[str, int]) -> None:
    body = f"Action=CreateKeyPair&Version=2016-11-15&KeyName=kp-{name}"
    req, _ = make(server, victim, body)
    if name == "tampered-body":   # signed for one name, sent with another
        req.data = body
    before = key_names(vec2)
    status, text = send(req)
    assert (error_code(text), status) == expect, text
    assert key_names(vec2) == before


def test_x_amz_date_must_be_signed(server: Any, victim: dict[str, str], vec2: Any) -> None:
    req = signed(server, victim, "Action=CreateKeyPair&Version=2016-11-15&KeyName=kp-unsigned-date")
    auth = req.headers["Authorization"]
    del req.headers["Authorization"]     # (setting an existing key would add a second header)
    req.headers["Authorization"] = auth.replace("SignedHeaders=content-type;host;x-amz-date",
                                                "SignedHeaders=content-type;host")
    assert "SignedHeaders=content-type;host," in req.headers["Authorization"]
    status, text = send(req)
    assert (error_code(text), status) == ("IncompleteSignature", 400)
    assert "kp-unsigned-date" not in key_names(vec2)


@pytest.mark.parametrize("v2", [False, True], ids=["sigv4", "sigv2"])
def test_exact_replay_of_a_mutating_request_is_refused(server: Any, victim: dict[str, str], vec2: Any,
                                                       v2: bool) -> None:
    name = f"kp-replay-{'v2' if v2 else 'v4'}"
    req = signed(server, victim, f"Action=CreateKeyPair&Version=2016-11-15&KeyName={name}", v2=v2)
    status, text = send(req)
    assert status == 200, text
    assert name in key_names(vec2)
    vec2.delete_key_pair(KeyName=name)
    again = send(req)                 # an identical request within ~1 s is an honest client's repeat
    assert again[0] == 200
    vec2.delete_key_pair(KeyName=name)
    time.sleep(2.2)
    status, text = send(req)          # the captured request, replayed later within the window
    assert (error_code(text), status) == ("AuthFailure", 401)
    assert name not in key_names(vec2)  # it did not create the key pair a second time


def test_replayed_reads_are_harmless_and_allowed(server: Any, victim: dict[str, str]) -> None:
    req = signed(server, victim, "Action=DescribeKeyPairs&Version=2016-11-15")
    assert send(req)[0] == 200
    assert send(req)[0] == 200


def test_replay_with_a_client_token_returns_the_first_result(server: Any, victim: dict[str, str],
                                                             vec2: Any) -> None:
    """Idempotent requests stay idempotent: the same signed RunInstances twice is one launch."""
    image = vec2.describe_images()["Images"][0]["ImageId"]
    req = signed(server, victim, f"Action=RunInstances&Version=2016-11-15&ImageId={image}&MinCount=1"
                                 f"&MaxCount=1&ClientToken=replay-token-1")
    first, again = send(req), send(req)
    assert first[0] == again[0] == 200
    rid = first[1].split("<reservationId>")[1].split("<")[0]
    assert rid == again[1].split("<reservationId>")[1].split("<")[0]
    found = vec2.describe_instances(Filters=[{"Name": "client-token", "Values": ["replay-token-1"]}])
    assert [r["ReservationId"] for r in found["Reservations"]] == [rid]


def test_admin_token_is_accepted_only_as_a_bearer_token(server: Any) -> None:
    """The admin token counts only in the documented `Authorization: Bearer <token>` form."""
    for value in (server.token, f"bearer {server.token}", f"Token {server.token}", f"Bearer{server.token}"):
        for path in ("/v0/users", "/v0/projects"):   # an admin route, a bare-metal route
            req = urllib.request.Request(server.admin_url + path, headers={"Authorization": value})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 401, (value, path)
    assert isinstance(server.admin("GET", "/v0/users"), list)   # (conftest sends `Bearer <token>`)
