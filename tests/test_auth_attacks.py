"""Signature attacks against a served controller: requests signed by botocore's own signers,
then altered or replayed on the wire. Each is refused with the AWS code and changes nothing."""
from __future__ import annotations

import datetime
import hashlib
import time
import urllib.error
import urllib.request
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV2Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from rawquery import StateProbe
from spellings import authorization_variants, query_variants
from support import REGION, Server, Servers

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
    return deliver(prepared.method, prepared.url, body, headers)


def deliver(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, str]:
    http = urllib.request.Request(url, data=body, headers=headers, method=method)
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


def test_replayed_reads_are_harmless_and_allowed(server: Any, victim: dict[str, str]) -> None:
    req = signed(server, victim, "Action=DescribeKeyPairs&Version=2016-11-15")
    assert send(req)[0] == 200
    assert send(req)[0] == 200


def test_replay_with_a_client_token_returns_the_first_result(server: Any, victim: dict[str, str],
                                                             vec2: Any) -> None:
    """Idempotent requests stay idempotent: the same signed RunInstances twice is one launch."""
    image = vec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
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
        for path in ("/v0/users", "/hil/v0/projects"):   # an admin route, a bare-metal route
            req = urllib.request.Request(server.admin_url + path, headers={"Authorization": value})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 401, (value, path)
    assert isinstance(server.admin("GET", "/v0/users"), list)   # (conftest sends `Bearer <token>`)


# -- replays written another way --------------------------------------------------------------

# The replay grace of the `quick` server, so replays can be tried without long sleeps. (Below
# 1 s an honest client's identical call within the same second may be refused too: the tests
# here repeat a mutating call only at once, as a retry would; on a loaded box "at once" took over
# 0.5 s, so the grace leaves room for that.)
GRACE = 1.5


@pytest.fixture(scope="module")
def quick(server_with: Servers) -> Server:
    return server_with(ec2={"replay_grace_s": GRACE})


@pytest.fixture(scope="module")
def replayer(quick: Server) -> dict[str, str]:
    return quick.create_user("replayer")


@pytest.fixture
def tagged_key(quick: Server, replayer: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A key pair to tag: a replayed CreateTags would put back the tag the test removes."""
    return quick.client(replayer).create_key_pair(KeyName=request.node.name[:200])["KeyPairId"]


def names_of(ec2: Any, resource: str) -> list[str]:
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])["Tags"]
    return [t["Value"] for t in tags if t["Key"] == "Name"]


def refused_and_unchanged(server: Server, attempts: list[tuple[str, str, bytes | None, dict[str, str]]]
                          ) -> None:
    """After the grace window, every attempt is refused as a replay and the state is unchanged."""
    probe = StateProbe(server.admin_url, server.token)
    before = probe.settle()
    time.sleep(GRACE + 0.2)
    for method, url, body, headers in attempts:
        status, text = deliver(method, url, body, headers)
        assert (error_code(text), status) == ("AuthFailure", 401), (url, body, headers, text)
        assert "already received" in text
    assert probe.settle() == before


@pytest.mark.parametrize("v2", [False, True], ids=["sigv4", "sigv2"])
def test_exact_replay_of_a_mutating_request_is_refused(quick: Server, replayer: dict[str, str], tagged_key: str,
                                                       v2: bool) -> None:
    ec2 = quick.client(replayer)
    req = signed(quick, replayer, f"Action=CreateTags&Version=2016-11-15&ResourceId.1={tagged_key}"
                                  "&Tag.1.Key=Name&Tag.1.Value=exact", v2=v2)
    first, again = send(req), send(req)   # an identical request at once is an honest client's repeat
    assert (first[0], again[0]) == (200, 200), again[1]
    assert names_of(ec2, tagged_key) == ["exact"]
    ec2.delete_tags(Resources=[tagged_key])
    prepared = req.prepare()
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    # the captured request, replayed later within the signing window, does not tag it again
    refused_and_unchanged(quick, [("POST", prepared.url, body, dict(prepared.headers.items()))])
    assert names_of(ec2, tagged_key) == []


def test_replayed_run_instances_with_its_header_rewritten_is_refused(quick: Server,
                                                                      replayer: dict[str, str]) -> None:
    """The reported attack: one captured RunInstances, replayed with only its spacing changed."""
    ec2 = quick.client(replayer)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    req = signed(quick, replayer, f"Action=RunInstances&Version=2016-11-15&ImageId={image}"
                                  "&MinCount=1&MaxCount=1")
    assert send(req)[0] == 200
    prepared = req.prepare()
    headers = dict(prepared.headers.items())
    variants = [{**headers, "Authorization": a} for a in authorization_variants(headers["Authorization"])]
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    variants.append({**headers, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    refused_and_unchanged(quick, [("POST", prepared.url, body, h) for h in variants])
    assert len([i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]) == 1


def test_replayed_presigned_create_tags_with_its_query_rewritten_is_refused(
        quick: Server, replayer: dict[str, str], tagged_key: str) -> None:
    ec2 = quick.client(replayer)
    req = AWSRequest(method="GET", url=quick.endpoint + "/", params={
        "Action": "CreateTags", "Version": "2016-11-15", "ResourceId.1": tagged_key,
        "Tag.1.Key": "Name", "Tag.1.Value": "presigned replay/1"})
    creds = Credentials(replayer["AccessKeyId"], replayer["SecretAccessKey"])
    SigV4QueryAuth(creds, "ec2", REGION, expires=300).add_auth(req)
    url = req.prepare().url
    assert deliver("GET", url, None, {})[0] == 200
    assert names_of(ec2, tagged_key) == ["presigned replay/1"]
    ec2.delete_tags(Resources=[tagged_key])
    base, _, query = url.partition("?")
    variants = query_variants(query)
    assert len(variants) >= 6
    refused_and_unchanged(quick, [("GET", f"{base}?{q}", None, {}) for q in variants])
    assert names_of(ec2, tagged_key) == []


def test_replayed_sigv2_create_tags_rewritten_is_refused(quick: Server, replayer: dict[str, str],
                                                          tagged_key: str) -> None:
    ec2 = quick.client(replayer)
    port = quick.endpoint.rpartition(":")[2]
    host = f"localhost:{port}"           # signed with a host name, to replay it in other case
    creds = Credentials(replayer["AccessKeyId"], replayer["SecretAccessKey"])
    for i in range(64):                  # a signature with a '+', to replay it as ' ' and '%2b'
        req = AWSRequest(method="POST", url=f"http://{host}/", headers={"Content-Type": FORM}, data={
            "Action": "CreateTags", "Version": "2016-11-15", "ResourceId.1": tagged_key,
            "Tag.1.Key": "Name", "Tag.1.Value": f"v2 replay/{i}"})
        SigV2Auth(creds).add_auth(req)
        form = req.prepare().body
        if "%2B" in form:
            break
    else:
        pytest.skip("no signature containing '+' produced")
    url = quick.endpoint + "/"
    headers = {"Content-Type": FORM, "Host": host}
    assert deliver("POST", url, form.encode(), headers)[0] == 200
    assert names_of(ec2, tagged_key) == [f"v2 replay/{i}"]
    ec2.delete_tags(Resources=[tagged_key])
    pairs = form.split("&")
    half = len(pairs) // 2
    attempts = [("POST", url, q.encode(), headers) for q in query_variants(form)]
    attempts += [
        ("POST", url, form.replace("%2B", "+").encode(), headers),            # '+' read as a space
        ("POST", url, f"{form}&{pairs[0]}".encode(), headers),                # a pair repeated
        ("POST", f"{url}?{'&'.join(pairs[:half])}", "&".join(pairs[half:]).encode(), headers),
        ("POST", f"{url}?{form}", b"", headers),                              # all in the query
        ("POST", url, form.encode(), {**headers, "Host": host.upper()}),      # host case
    ]
    refused_and_unchanged(quick, attempts)
    assert names_of(ec2, tagged_key) == []


def test_a_failing_repeat_does_not_release_a_successful_request(quick: Server, replayer: dict[str, str]) -> None:
    """Sent again at once, a captured CreateKeyPair fails (Duplicate); that refusal must not erase
    the first, successful sighting, or the capture could be replayed later and hand its sender the
    private key of a key pair made anew."""
    ec2 = quick.client(replayer)
    req = signed(quick, replayer, "Action=CreateKeyPair&Version=2016-11-15&KeyName=captured")
    first, again = send(req), send(req)
    assert first[0] == 200 and (again[0], error_code(again[1])) == (400, "InvalidKeyPair.Duplicate")
    ec2.delete_key_pair(KeyName="captured")
    prepared = req.prepare()
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    refused_and_unchanged(quick, [("POST", prepared.url, body, dict(prepared.headers.items()))])
    assert "captured" not in key_names(ec2)
