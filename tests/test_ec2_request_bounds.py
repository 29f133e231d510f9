"""What a request can make the EC2 listener do before it is authenticated: too many fields are
refused uncounted by the parser, and a large unauthenticated body is refused for its credentials
without being parsed (a body the parser would refuse as malformed still gets the auth error)."""
from __future__ import annotations

import base64
import datetime
import http.client
import os
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from rawquery import SignedQuery, StateProbe, error_code, form_body
from support import REGION, Server, Servers

MAX_PARAMS = 10_000
# 3.9 MiB of 9,000 fields whose escapes decode to invalid UTF-8: the parser refuses it
# (InvalidParameterValue) and would take ~0.3 s to get there, all of it on the event loop before.
MALFORMED = b"&".join(b"F%d=" % i + b"%FF" * 144 for i in range(9_000))
UNKNOWN = {"AccessKeyId": "AKIAUNKNOWNKEY000001", "SecretAccessKey": "x" * 40}


def post(server: Server, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    """An unsigned POST (or signed by the caller's headers); the status and EC2 error code."""
    u = urlsplit(server.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request("POST", "/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, error_code(resp.status, data) if resp.status != 200 else None


@pytest.fixture(scope="module")
def server(server_with: Servers) -> Server:
    """A server of this module's own: its failed signatures must not count against the shared
    server's source address in the login throttle."""
    return server_with()


@pytest.fixture(scope="module")
def alice(server: Server) -> dict[str, str]:
    return server.create_user("bounds")


@pytest.fixture(scope="module")
def ec2(server: Server, alice: dict[str, str]) -> Any:
    return server.client(alice)


@pytest.fixture(scope="module")
def image_id(ec2: Any) -> str:
    return ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]


@pytest.fixture(scope="module")
def probe(server: Server) -> StateProbe:
    return StateProbe(server.admin_url, server.token)


@pytest.fixture(scope="module")
def signer(server: Server, alice: dict[str, str]) -> SignedQuery:
    return SignedQuery(server.endpoint, alice, REGION)


def test_the_malformed_body_is_refused_by_the_parser_once_signed(signer: SignedQuery) -> None:
    """(What the next tests rely on: signed, this body reaches the parser, which refuses it.)"""
    body = b"Action=DescribeInstances&Version=2016-11-15&" + MALFORMED
    assert len(body) > 3_800_000 and body.count(b"&") < MAX_PARAMS
    status, data = signer.post(body, signer.signed(body))
    assert (status, error_code(status, data)) == (400, "InvalidParameterValue")


@pytest.mark.parametrize("fields", [MAX_PARAMS + 1, 100_000])
def test_too_many_parameters_are_refused_before_anything_else(server: Server, signer: SignedQuery,
                                                              probe: StateProbe, fields: int) -> None:
    before = probe.settle()
    tags = [(f"Tag.{n}.Key", f"k{n}") for n in range(1, fields - 3 + 1)]
    body = form_body("CreateTags", [("ResourceId.1", "i-00000000000000000"), *tags])
    assert body.count(b"&") + 1 == fields
    status, data = signer.post(body, signer.signed(body))
    assert (status, error_code(status, data)) == (400, "InvalidRequest")
    assert f"at most {MAX_PARAMS}" in data.decode()
    assert post(server, body) == (400, "InvalidRequest")     # the same unsigned: no parse either
    assert probe.settle() == before


def test_a_request_under_the_cap_reaches_the_action(signer: SignedQuery, ec2: Any) -> None:
    target = ec2.create_key_pair(KeyName="bounds-under-cap")["KeyPairId"]
    tags = [(f"Tag.{n}.{f}", f"k{n}") for n in range(1, 4_998) for f in ("Key", "Value")]
    status, data = signer.send("CreateTags", [("ResourceId.1", target), *tags])
    assert (status, error_code(status, data)) == (400, "TagLimitExceeded")   # the core's answer
    ec2.delete_key_pair(KeyPairId=target)


def test_unauthenticated_large_bodies_get_the_auth_error_unparsed(server: Server, probe: StateProbe,
                                                                   alice: dict[str, str]) -> None:
    before = probe.settle()
    body = b"Action=RunInstances&Version=2016-11-15&" + MALFORMED
    # No credentials at all.
    assert post(server, body) == (401, "MissingAuthenticationToken")
    # SigV4 with an access key this cloud does not have, or a real one scoped to another region:
    # refused from the headers, before the body is even counted (so not InvalidRequest either).
    wide = form_body("RunInstances", [(f"F{n}", "x") for n in range(MAX_PARAMS + 1)])
    for user, region in ((UNKNOWN, REGION), (alice, "us-east-1")):
        stranger = SignedQuery(server.endpoint, user, region)
        for sent in (body, wide):
            status, data = stranger.post(sent, stranger.signed(sent))
            assert (status, error_code(status, data)) == (401, "AuthFailure")
        stranger.close()
    # SigV2 fields in the body, with an unknown access key.
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ")
    v2 = (f"AWSAccessKeyId={UNKNOWN['AccessKeyId']}&SignatureVersion=2&SignatureMethod=HmacSHA256"
          f"&Timestamp={now}&Signature=bm90IGEgc2lnbmF0dXJl&").encode()
    assert post(server, v2 + body) == (401, "AuthFailure")
    # SigV2 dated outside the window.
    stale = v2.replace(now.encode(), b"2020-01-01T00%3A00%3A00Z")
    assert post(server, stale + body) == (400, "RequestExpired")
    assert probe.settle() == before


def test_a_known_key_with_a_wrong_signature_is_refused_before_the_parse(server: Server,
                                                                      alice: dict[str, str]) -> None:
    forger = SignedQuery(server.endpoint, {**alice, "SecretAccessKey": "not-" + alice["SecretAccessKey"]},
                         REGION)
    body = b"Action=RunInstances&Version=2016-11-15&" + MALFORMED
    status, data = forger.post(body, forger.signed(body))
    assert (status, error_code(status, data)) == (401, "AuthFailure")
    forger.close()


def test_long_fields_parsed_in_steps_arrive_exactly(ec2: Any, image_id: str) -> None:
    """16 KiB of user data is a ~30 KiB field of escapes in the form: parsed in several steps."""
    data = os.urandom(16 * 1024)
    iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, UserData=data)["Instances"][0]["InstanceId"]
    got = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(got) == data
    ec2.terminate_instances(InstanceIds=[iid])
    with pytest.raises(ClientError) as e:   # and one byte more is the core's refusal, not the parser's
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, UserData=data + b"x")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
