"""Signature verification against requests signed by botocore itself (the clients we serve)."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import botocore.auth
import pytest
from aiohttp.test_utils import make_mocked_request
from botocore.auth import SigV2Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from cloudctl.api.ec2.auth import AUTH_PARAMS, AuthError, SignatureVerifier, Verified

from spellings import authorization_variants, query_variants
from support.mangle import mangle as mangled

AK = "AKIDCLOUDCTLTEST0001"
SK = "s3cr3t/Key+With=Odd/Chars0123456789abcd"
HOST = "127.0.0.1:4567"
BASE = f"http://{HOST}/"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
NOW = dt.datetime(2026, 11, 23, 10, 0, 0)  # naive UTC, as botocore's clock returns it
NOW_TS = NOW.replace(tzinfo=dt.timezone.utc).timestamp()
BODY = b"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"


@pytest.fixture(autouse=True)
def frozen_signing_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: NOW)
    yield


def verifier(clock_offset: float = 0.0, secrets: dict[str, str] | None = None) -> SignatureVerifier:
    table = {AK: SK} if secrets is None else secrets
    return SignatureVerifier(table.get, clock=lambda: NOW_TS + clock_offset)


class Wire:
    """A request as the server sees it: raw path/query, case-insensitive headers, raw body."""

    def __init__(self, method: str, url: str, headers: Mapping[str, Any], body: bytes) -> None:
        parts = urlsplit(url)
        self.method = method
        self.path = parts.path or "/"
        self.query = parts.query
        self.headers: CIMultiDict[str] = CIMultiDict(
            (k, v.decode() if isinstance(v, bytes) else v) for k, v in headers.items())
        self.headers.setdefault("Host", parts.netloc)  # what urllib3 puts on the wire
        self.body = body

    @property
    def params(self) -> dict[str, str]:
        merged = dict(parse_qsl(self.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if self.body and ctype.startswith("application/x-www-form-urlencoded"):
            merged.update(parse_qsl(self.body.decode(), keep_blank_values=True))
        return merged

    def verify(self, v: SignatureVerifier) -> str:
        """The access key that signed the request (raises AuthError)."""
        return self.verified(v).access_key

    def verified(self, v: SignatureVerifier) -> Verified:
        return v.verify(method=self.method, path=self.path, query_string=self.query,
                        headers=self.headers, body=self.body, params=self.params)


def prepared(req: AWSRequest) -> Wire:
    p = req.prepare()
    body = p.body or b""
    if isinstance(body, str):
        body = body.encode()
    return Wire(p.method, p.url, dict(p.headers), body)


def sign_v4(body: bytes = BODY, *, method: str = "POST", url: str = BASE, region: str = "us-east-1",
            secret: str = SK, key: str = AK, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None, service: str = "ec2") -> Wire:
    hdrs = {"Host": HOST, "Content-Type": FORM} if headers is None else headers
    req = AWSRequest(method=method, url=url, data=body if method == "POST" else None,
                     params=params or {}, headers=hdrs)
    SigV4Auth(Credentials(key, secret), service, region).add_auth(req)
    return prepared(req)


def sign_presigned(params: dict[str, str], expires: int = 300, *, method: str = "GET",
                   data: Any = None) -> Wire:
    req = AWSRequest(method=method, url=BASE, params=params, data=data, headers={"Host": HOST})
    SigV4QueryAuth(Credentials(AK, SK), "ec2", "us-east-1", expires=expires).add_auth(req)
    return prepared(req)


def sign_v2(method: str, params: dict[str, str], host: str = HOST) -> Wire:
    headers = {"Host": host}
    if method == "POST":
        headers["Content-Type"] = FORM
        req = AWSRequest(method="POST", url=f"http://{host}/", data=dict(params), headers=headers)
    else:
        req = AWSRequest(method="GET", url=f"http://{host}/", params=dict(params), headers=headers)
    SigV2Auth(Credentials(AK, SK)).add_auth(req)
    return prepared(req)


def sign_v2_by_hand(method: str, params: dict[str, str], digest: Callable[..., Any],
                    sig_method: str, host: str = HOST, secret: str = SK) -> Wire:
    """Independent SigV2 signer (botocore only does HmacSHA256) used for the HmacSHA1 cases."""
    params = {**params, "AWSAccessKeyId": AK, "SignatureVersion": "2",
              "SignatureMethod": sig_method, "Timestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}
    enc = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    sts = f"{method}\n{host.lower()}\n/\n{enc}"
    params["Signature"] = base64.b64encode(hmac.new(secret.encode(), sts.encode(), digest).digest()).decode()
    wire_qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params.items())
    if method == "GET":
        return Wire("GET", f"http://{host}/?{wire_qs}", {"Host": host}, b"")
    return Wire("POST", f"http://{host}/", {"Host": host, "Content-Type": FORM}, wire_qs.encode())


def expect(code: str, status: int, fn: Callable[[], object]) -> AuthError:
    with pytest.raises(AuthError) as info:
        fn()
    assert (info.value.code, info.value.status) == (code, status), info.value
    return info.value


def test_auth_params_cover_both_schemes() -> None:
    assert {"AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "Timestamp",
            "Expires", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
            "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"} == AUTH_PARAMS


# -- SigV4, Authorization header ------------------------------------------------------------

def test_v4_header_ok() -> None:
    wire = sign_v4()
    assert wire.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert "content-type;host;x-amz-date" in wire.headers["Authorization"]
    assert wire.verify(verifier()) == AK


def test_v4_wrong_secret() -> None:
    wire = sign_v4(secret="not-the-secret")
    err = expect("AuthFailure", 401, lambda: wire.verify(verifier()))
    assert err.message == "AWS was not able to validate the provided access credentials"


def test_v4_unknown_key() -> None:
    wire = sign_v4(key="AKIDNOBODY")
    err = expect("AuthFailure", 401, lambda: wire.verify(verifier()))
    assert err.message == "AWS was not able to validate the provided access credentials"


def test_v4_tampered_body() -> None:
    wire = sign_v4()
    wire.body = wire.body[:-1] + b"1"  # i-...ef0 -> i-...ef1
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_tampered_host_port() -> None:
    wire = sign_v4()
    wire.headers["Host"] = "127.0.0.1:4568"
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_host_signed_with_port_as_received() -> None:
    wire = sign_v4(headers={"Content-Type": FORM})  # no explicit Host: botocore uses the URL's
    assert wire.headers["Host"] == HOST
    assert wire.verify(verifier()) == AK


def test_v4_tampered_content_type() -> None:
    wire = sign_v4()
    wire.headers["Content-Type"] = "application/x-www-form-urlencoded"
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_header_whitespace_is_trimmed_as_signed() -> None:
    wire = sign_v4(headers={"Host": HOST, "Content-Type": FORM, "X-Custom": "  a   b  "})
    assert wire.verify(verifier()) == AK


@pytest.mark.parametrize("offset", [20 * 60, -20 * 60])
def test_v4_outside_window(offset: int) -> None:
    wire = sign_v4()
    err = expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=offset)))
    assert err.message == "Request has expired. Timestamp date is 20261123T100000Z"


@pytest.mark.parametrize("offset", [14 * 60, -14 * 60])
def test_v4_inside_window(offset: int) -> None:
    assert sign_v4().verify(verifier(clock_offset=offset)) == AK


@pytest.mark.parametrize("region", ["zone-1", "eu-west-1", "us-east-1", "cloudctl"])
def test_v4_any_region(region: str) -> None:
    wire = sign_v4(region=region)
    assert f"/{region}/ec2/aws4_request" in wire.headers["Authorization"]
    assert wire.verify(verifier()) == AK


def test_v4_wrong_service_scope() -> None:
    wire = sign_v4(service="s3")
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


def test_v4_scope_names_one_of_the_services_served() -> None:
    served = SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS, services=("ec2", "sts", "iam"))
    for service in ("ec2", "sts", "iam"):
        verified = sign_v4(service=service).verified(served)
        assert (verified.access_key, verified.service) == (AK, service)
    assert sign_v4(service="sts").verified(served).replay_key != sign_v4().verified(served).replay_key
    err = expect("IncompleteSignature", 400, lambda: sign_v4(service="s3").verify(served))
    assert err.message == ("Credential should be scoped to a service this endpoint serves "
                           "('ec2', 'iam', 'sts'), not 's3'.")
    # The signing key is the scope's: a signature made for STS does not pass as EC2's.
    wire = sign_v4(service="sts")
    wire.headers["Authorization"] = wire.headers["Authorization"].replace("/sts/", "/ec2/")
    expect("AuthFailure", 401, lambda: wire.verify(served))


def test_v4_scope_date_must_match_request_date() -> None:
    wire = sign_v4()
    wire.headers["X-Amz-Date"] = "20261124T100000Z"
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


def test_v4_date_header_instead_of_x_amz_date() -> None:
    hdrs = {"Host": HOST, "Content-Type": FORM, "Date": "Mon, 01 Jan 2001 00:00:00 GMT"}
    wire = sign_v4(headers=hdrs)
    assert "X-Amz-Date" not in wire.headers
    assert wire.headers["Date"] == "Mon, 23 Nov 2026 10:00:00 -0000"
    assert wire.verify(verifier()) == AK
    expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=3600)))


def test_v4_repeated_header_values_are_folded() -> None:
    req = AWSRequest(method="POST", url=BASE, data=BODY, headers={"Host": HOST, "Content-Type": FORM})
    req.headers["X-Thing"] = "a"
    req.headers["X-Thing"] = " b   c "  # HTTPHeaders appends: two values, folded to "a,b c"
    SigV4Auth(Credentials(AK, SK), "ec2", "us-east-1").add_auth(req)
    wire = Wire("POST", BASE, CIMultiDict(req.headers.items()), BODY)
    assert wire.headers.getall("X-Thing") == ["a", " b   c "]
    assert wire.verify(verifier()) == AK
    wire.headers.popall("X-Thing")
    wire.headers["X-Thing"] = "a"
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_path_is_double_encoded_like_botocore() -> None:
    wire = sign_v4(url=f"http://{HOST}/some%20path/./x/../y/", body=BODY)
    assert wire.path == "/some%20path/./x/../y/"
    assert wire.verify(verifier()) == AK
    wire.path = "/some path/y/"  # a decoded path is not what was signed
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_content_sha256_header_must_match_body() -> None:
    wire = sign_v4(headers={"Host": HOST, "Content-Type": FORM,
                            "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert wire.verify(verifier()) == AK
    wire.body = BODY.replace(b"DescribeInstances", b"TerminateInstances")
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v4_unsigned_payload_refused_with_body() -> None:
    wire = sign_v4(headers={"Host": HOST, "Content-Type": FORM,
                            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


def test_v4_query_string_canonical_encoding() -> None:
    params = {"Action": "DescribeInstances", "Version": "2016-11-15",
              "Filter.1.Name": "tag:Name", "Filter.1.Value.1": "a b/c~d*e+f=g&h",
              "Filter.1.Value.2": "h\u00e9llo \u20ac \U0001f600", "Filter.2.Name": "~x/y z"}
    wire = sign_v4(method="GET", params=params, body=b"")
    assert "%2F" in wire.query and "~" in wire.query and "%E2%82%AC" in wire.query
    assert wire.params == params
    assert wire.verify(verifier()) == AK

    # The same request as aiohttp hands it over: yarl re-quotes raw_query_string ('%2F' -> '/').
    req = make_mocked_request("GET", f"{wire.path}?{wire.query}", headers=wire.headers)
    assert req.rel_url.raw_query_string != wire.query
    v = verifier()
    for raw_query in (req.rel_url.raw_query_string, req.raw_path.partition("?")[2]):
        assert v.verify(method="GET", path=req.raw_path.partition("?")[0], query_string=raw_query,
                        headers=req.headers, body=b"", params=dict(req.query)).access_key == AK

    # A client that writes spaces as '+' and lowercase hex on the wire, but signs canonically.
    sloppy = wire.query.replace("%20", "+").replace("%2F", "%2f")
    assert sloppy != wire.query
    assert Wire("GET", f"{BASE}?{sloppy}", dict(wire.headers), b"").verify(verifier()) == AK

    # ...but changing a value is caught.
    bad = wire.query.replace("tag%3AName", "tag%3AOther")
    expect("AuthFailure", 401,
           lambda: Wire("GET", f"{BASE}?{bad}", dict(wire.headers), b"").verify(verifier()))


def test_v4_query_sorted_by_key_then_value() -> None:
    wire = sign_v4(method="GET", url=f"{BASE}?b=2&a=2&a=1&A=3", body=b"")
    assert wire.verify(verifier()) == AK


def test_v4_raw_query_as_botocore_signs_a_prebuilt_url() -> None:
    # Given a URL (not params), botocore signs the raw pairs verbatim, e.g. an unencoded '*'.
    wire = sign_v4(method="GET", url=f"{BASE}?Action=DescribeRegions&RegionName.1=*", body=b"")
    assert wire.verify(verifier()) == AK


def test_v4_real_boto3_client(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[Any] = []

    class Captured(Exception):
        pass

    def grab(request: Any, **_: Any) -> None:
        captured.append(request)
        raise Captured

    client = boto3.client("ec2", region_name="zone-1", endpoint_url=BASE,
                          aws_access_key_id=AK, aws_secret_access_key=SK)
    client.meta.events.register("before-send.ec2.*", grab)
    with pytest.raises(Captured):
        client.describe_instances(InstanceIds=["i-0123456789abcdef0"],
                                  Filters=[{"Name": "tag:Name", "Values": ["web server/é"]}])
    req = captured[0]
    body = req.body if isinstance(req.body, bytes) else req.body.encode()
    wire = Wire(req.method, req.url, dict(req.headers), body)
    assert wire.headers["Content-Type"] == FORM
    assert wire.verify(verifier()) == AK
    assert wire.params["Action"] == "DescribeInstances"


def test_v4_key_cache_only_holds_verified_keys() -> None:
    v = verifier()
    expect("AuthFailure", 401, lambda: sign_v4(secret="bogus", region="r1").verify(v))
    assert not v._keys  # noqa: SLF001 - forged requests must not churn the cache
    sign_v4().verify(v)
    sign_v4().verify(v)
    assert len(v._keys) == 1  # noqa: SLF001
    for i in range(300):
        sign_v4(region=f"r{i}").verify(v)
    assert len(v._keys) <= 256  # noqa: SLF001


def test_v4_cached_key_signs_as_a_fresh_one() -> None:
    """Once a key is cached (signing with a copy of an HMAC keyed once), the same requests verify
    to the same replay keys as on a fresh verifier, and a tampered one is still refused."""
    warm = verifier()
    sign_v4().verify(warm)   # (the key is cached from here)
    for body in (BODY, BODY + b"&InstanceId.2=i-0123456789abcdef1"):
        wire = sign_v4(body)
        assert wire.verified(warm) == wire.verified(verifier())
        wire.body = body + b"&DryRun=true"
        expect("AuthFailure", 401, lambda: wire.verify(warm))


def test_v4_secret_rotation_not_served_from_cache() -> None:
    table = {AK: SK}
    v = SignatureVerifier(table.get, clock=lambda: NOW_TS)
    assert sign_v4().verify(v) == AK
    table[AK] = "rotated"
    expect("AuthFailure", 401, lambda: sign_v4().verify(v))
    assert sign_v4(secret="rotated").verify(v) == AK


# -- malformed / missing -------------------------------------------------------------------

def test_missing_auth() -> None:
    wire = Wire("POST", BASE, {"Content-Type": FORM}, BODY)
    err = expect("MissingAuthenticationToken", 401, lambda: wire.verify(verifier()))
    assert err.message


@pytest.mark.parametrize("header", [
    "garbage",
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256 Credential=AKID",
    f"AWS4-HMAC-SHA256 Credential={AK}/20261123/us-east-1/ec2/aws4_request, Signature=ab",
    f"AWS4-HMAC-SHA256 Credential={AK}/20261123/us-east-1/ec2, SignedHeaders=host, Signature=ab",
    f"AWS4-HMAC-SHA256 Credential={AK}/20261123/us-east-1/ec2/aws4_request, "
    "SignedHeaders=content-type;x-amz-date, Signature=ab",
    "AWS AKID:c2lnbmF0dXJl",
    "AWS4-ECDSA-P256-SHA256 Credential=x",
])
def test_garbage_authorization(header: str) -> None:
    wire = sign_v4()
    wire.headers["Authorization"] = header
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


def test_v4_missing_date() -> None:
    wire = sign_v4()
    del wire.headers["X-Amz-Date"]
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


def test_two_auth_mechanisms_refused() -> None:
    wire = sign_v4(method="GET", params={"Action": "DescribeRegions", "X-Amz-Signature": "00"},
                   body=b"")
    expect("IncompleteSignature", 400, lambda: wire.verify(verifier()))


# -- SigV4, presigned query ----------------------------------------------------------------

PRESIGN_PARAMS = {"Action": "DescribeRegions", "Version": "2016-11-15", "RegionName.1": "eu west/1"}


def test_presigned_get_ok() -> None:
    wire = sign_presigned(PRESIGN_PARAMS, expires=300)
    assert "X-Amz-Signature=" in wire.query and "Authorization" not in wire.headers
    assert wire.verify(verifier()) == AK
    assert wire.verify(verifier(clock_offset=299)) == AK


def test_presigned_expired() -> None:
    wire = sign_presigned(PRESIGN_PARAMS, expires=300)
    err = expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=301)))
    assert "20261123T100000Z" in err.message
    expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=-20 * 60)))


def test_presigned_tampered() -> None:
    wire = sign_presigned(PRESIGN_PARAMS)
    wire.query = wire.query.replace("DescribeRegions", "DescribeImages")
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))
    wire = sign_presigned(PRESIGN_PARAMS)
    wire.query = wire.query.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_presigned_refuses_smuggled_body() -> None:
    wire = sign_presigned(PRESIGN_PARAMS)
    wire.method = "GET"
    wire.body = b"Action=TerminateInstances&InstanceId.1=i-1"
    wire.headers["Content-Type"] = FORM
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_presigned_post_body_moved_to_query() -> None:
    wire = sign_presigned({}, method="POST", data={"Action": "DescribeRegions", "Version": "2016-11-15"})
    assert wire.body == b"" and "Action=DescribeRegions" in wire.query
    assert wire.verify(verifier()) == AK


def test_presigned_by_boto3_generate_presigned_url() -> None:
    client = boto3.client("ec2", region_name="eu-west-1", endpoint_url=BASE,
                          aws_access_key_id=AK, aws_secret_access_key=SK)
    url = client.generate_presigned_url("describe_regions", Params={"RegionNames": ["a b"]},
                                        ExpiresIn=60)
    assert url.startswith(BASE) and "X-Amz-Credential=" in url
    # botocore signs query-protocol presigned URLs with the operation's method, POST (boto3#756);
    # AWS then refuses them as GET, and so do we: the method is part of what was signed.
    wire = Wire("POST", url, {}, b"")
    assert wire.verify(verifier()) == AK
    expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=61)))
    wire.method = "GET"
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_presigned_unsigned_payload_accepted_without_body() -> None:
    # S3-style presigners sign UNSIGNED-PAYLOAD rather than the empty body's hash.
    class UnsignedPayload(SigV4QueryAuth):
        def payload(self, request: Any) -> str:
            return "UNSIGNED-PAYLOAD"

    req = AWSRequest(method="GET", url=BASE, params=dict(PRESIGN_PARAMS), headers={"Host": HOST})
    UnsignedPayload(Credentials(AK, SK), "ec2", "zone-1", expires=60).add_auth(req)
    assert prepared(req).verify(verifier()) == AK


def test_presigned_bad_expires() -> None:
    wire = sign_presigned(PRESIGN_PARAMS, expires=8 * 24 * 3600)
    expect("InvalidParameterValue", 400, lambda: wire.verify(verifier()))


# -- SigV2 ---------------------------------------------------------------------------------

V2_PARAMS = {"Action": "DescribeInstances", "Version": "2016-11-15",
             "Filter.1.Name": "tag:Name", "Filter.1.Value.1": "web server/é~*"}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v2_botocore_hmac_sha256(method: str) -> None:
    wire = sign_v2(method, V2_PARAMS)
    assert wire.params["SignatureMethod"] == "HmacSHA256"
    assert (wire.body == b"") == (method == "GET")
    v = SignatureVerifier({AK: SK}.get)  # botocore stamps Timestamp with the real clock
    assert wire.verify(v) == AK


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("digest", "name"), [(hashlib.sha1, "HmacSHA1"),
                                              (hashlib.sha256, "HmacSHA256")])
def test_v2_by_hand(method: str, digest: Callable[..., Any], name: str) -> None:
    wire = sign_v2_by_hand(method, V2_PARAMS, digest, name)
    assert wire.verify(verifier()) == AK


def test_v2_hand_signer_agrees_with_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth.time, "gmtime", lambda *a: NOW.timetuple())
    ours = sign_v2_by_hand("GET", V2_PARAMS, hashlib.sha256, "HmacSHA256").params["Signature"]
    theirs = sign_v2("GET", V2_PARAMS).params["Signature"]
    assert ours == theirs


def test_v2_host_is_lowercased() -> None:
    wire = sign_v2_by_hand("GET", V2_PARAMS, hashlib.sha256, "HmacSHA256", host="EC2.Example:8773")
    assert wire.verify(verifier()) == AK


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v2_tampered(method: str) -> None:
    wire = sign_v2_by_hand(method, V2_PARAMS, hashlib.sha1, "HmacSHA1")
    if method == "GET":
        wire.query = wire.query.replace("DescribeInstances", "TerminateInstances")
    else:
        wire.body = wire.body.replace(b"DescribeInstances", b"TerminateInstances")
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))
    wire = sign_v2_by_hand(method, V2_PARAMS, hashlib.sha1, "HmacSHA1")
    wire.headers["Host"] = "127.0.0.1:4568"
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))
    wire = sign_v2_by_hand(method, V2_PARAMS, hashlib.sha1, "HmacSHA1", secret="wrong")
    expect("AuthFailure", 401, lambda: wire.verify(verifier()))


def test_v2_unencoded_plus_in_signature() -> None:
    # Old clients leave '+' of the base64 signature unencoded; the query parser turns it into ' '.
    for i in range(64):
        wire = sign_v2_by_hand("GET", {**V2_PARAMS, "Nonce": str(i)}, hashlib.sha256, "HmacSHA256")
        if "%2B" in wire.query:
            wire.query = wire.query.replace("%2B", "+")
            assert " " in wire.params["Signature"]
            assert wire.verify(verifier()) == AK
            return
    pytest.skip("no signature containing '+' produced")


def test_v2_stale_timestamp() -> None:
    wire = sign_v2_by_hand("GET", V2_PARAMS, hashlib.sha256, "HmacSHA256")
    err = expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=20 * 60)))
    assert "2026-11-23T10:00:00Z" in err.message
    expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=-20 * 60)))


def test_v2_expires() -> None:
    params = {**V2_PARAMS, "AWSAccessKeyId": AK, "SignatureVersion": "2",
              "SignatureMethod": "HmacSHA256", "Expires": "2026-11-23T10:05:00Z"}
    enc = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    sig = base64.b64encode(hmac.new(SK.encode(), f"GET\n{HOST}\n/\n{enc}".encode(),
                                    hashlib.sha256).digest()).decode()
    wire = Wire("GET", f"{BASE}?{enc}&Signature={quote(sig, safe='')}", {}, b"")
    assert wire.verify(verifier(clock_offset=299)) == AK
    expect("RequestExpired", 400, lambda: wire.verify(verifier(clock_offset=301)))


@pytest.mark.parametrize(("change", "code"), [
    ({"SignatureVersion": "1"}, "InvalidParameterValue"),
    ({"SignatureMethod": "HmacMD5"}, "InvalidParameterValue"),
    ({"Timestamp": "yesterday"}, "InvalidParameterValue"),
])
def test_v2_unsupported(change: dict[str, str], code: str) -> None:
    wire = sign_v2_by_hand("GET", V2_PARAMS, hashlib.sha256, "HmacSHA256")
    params = {**wire.params, **change}
    wire.query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    expect(code, 400, lambda: wire.verify(verifier()))


def test_mangled_requests_only_raise_auth_errors() -> None:
    """Whatever a client sends, the verifier answers with an AuthError, never a crash (a 500)."""
    import random

    rng = random.Random(1234)
    pristine = sign_v4(method="GET", params={"Action": "DescribeRegions"}, body=b"")
    presigned = sign_presigned(PRESIGN_PARAMS)
    v2 = sign_v2_by_hand("GET", V2_PARAMS, hashlib.sha256, "HmacSHA256")

    def mangle(text: str) -> str:
        return mangled(rng, text, 4)

    for _ in range(3000):
        for original in (pristine, presigned, v2):
            wire = Wire(original.method, BASE, dict(original.headers), original.body)
            wire.query = original.query
            target = rng.choice(["auth", "date", "query", "host", "path"])
            if target == "auth" and "Authorization" in wire.headers:
                wire.headers["Authorization"] = mangle(wire.headers["Authorization"])
            elif target == "date" and "X-Amz-Date" in wire.headers:
                wire.headers["X-Amz-Date"] = mangle(wire.headers["X-Amz-Date"])
            elif target == "query" and wire.query:
                wire.query = mangle(wire.query)
            elif target == "host":
                wire.headers["Host"] = mangle(wire.headers["Host"])
            else:
                wire.path = mangle(wire.path)
            try:
                wire.verify(verifier())
            except AuthError:
                pass

# -- replay keys: one per signed request, however it is written -----------------------------

MUTATING = b"Action=CreateTags&Version=2016-11-15&ResourceId.1=i-0123456789abcdef0" \
           b"&Tag.1.Key=Name&Tag.1.Value=web%20server%2Fa"


def rewritten(wire: Wire, *, query: str | None = None, body: bytes | None = None,
              **headers: str) -> Wire:
    """The same request with its query, body or some headers written differently."""
    out = Wire(wire.method, BASE, dict(wire.headers), wire.body if body is None else body)
    out.path = wire.path
    out.query = wire.query if query is None else query
    for name, value in headers.items():
        out.headers[name.replace("_", "-")] = value
    return out


def test_replay_key_v4_header_same_for_every_accepted_variant() -> None:
    wire = sign_v4(MUTATING)
    first = wire.verified(verifier())
    signature = wire.headers["Authorization"].rpartition("Signature=")[2]
    assert first == Verified(AK, f"v4h:{AK}:{signature}")
    variants = [rewritten(wire, Authorization=a) for a in authorization_variants(wire.headers["Authorization"])]
    variants.append(rewritten(wire, X_Amz_Content_SHA256=hashlib.sha256(MUTATING).hexdigest()))
    for variant in variants:
        assert variant.verified(verifier()) == first, variant.headers["Authorization"]
    # Duplicated commas are not accepted at all (so they need no replay key).
    doubled = wire.headers["Authorization"].replace(", ", ",, ")
    expect("IncompleteSignature", 400, lambda: rewritten(wire, Authorization=doubled).verify(verifier()))


def test_replay_key_v4_presigned_same_for_every_accepted_variant() -> None:
    wire = sign_presigned(dict(parse_qsl(MUTATING.decode())))
    first = wire.verified(verifier())
    assert first.access_key == AK and first.replay_key.startswith(f"v4q:{AK}:")
    queries = query_variants(wire.query)
    assert len(queries) >= 6
    for query in queries:
        assert rewritten(wire, query=query).verified(verifier()) == first, query


def test_replay_key_v2_same_for_every_accepted_variant() -> None:
    base = dict(parse_qsl(MUTATING.decode()))
    for i in range(64):   # a signature with a '+' in it, to write that '+' other ways
        wire = sign_v2("POST", {**base, "Tag.1.Value": f"web server/{i}"}, host="localhost:4567")
        if "%2B" in wire.body.decode():
            break
    else:
        pytest.skip("no signature containing '+' produced")
    v = SignatureVerifier({AK: SK}.get)  # botocore stamps Timestamp with the real clock
    first = wire.verified(v)
    assert first == Verified(AK, f"v2:{AK}:{wire.params['Signature']}")
    form = wire.body.decode()
    pairs = form.split("&")
    half = len(pairs) // 2
    variants = [rewritten(wire, body=q.encode()) for q in query_variants(form)]
    variants += [
        rewritten(wire, body=form.replace("%2B", "+").encode()),              # '+' sent raw: a space
        rewritten(wire, body=f"{form}&{pairs[0]}".encode()),                  # a pair repeated
        rewritten(wire, query="&".join(pairs[:half]), body="&".join(pairs[half:]).encode()),
        rewritten(wire, query=form, body=b""),                                # all in the query
        rewritten(wire, Host="LOCALHOST:4567"),                               # host case
        rewritten(wire, Host="LocalHost:4567"),
    ]
    for variant in variants:
        assert variant.verified(v) == first, (variant.query, variant.body, variant.headers["Host"])


def test_replay_keys_differ_between_requests_and_users() -> None:
    one, other = sign_v4(MUTATING), sign_v4(MUTATING + b"x")
    assert one.verified(verifier()).replay_key != other.verified(verifier()).replay_key
    mine = sign_v4(MUTATING).verified(verifier())
    theirs = sign_v4(MUTATING, key="AKIDOTHER", secret=SK).verified(verifier(secrets={"AKIDOTHER": SK}))
    assert mine.replay_key != theirs.replay_key


def test_replay_cache_grace_expiry_and_release() -> None:
    from cloudctl.api.ec2.auth import ReplayCache
    t = [1000.0]
    cache = ReplayCache(window_s=900, grace_s=2.0, clock=lambda: t[0])
    cache.check("sig-a")
    t[0] += 1.0
    cache.check("sig-a")                     # same second: an honest repeat
    t[0] += 2.0
    expect("AuthFailure", 401, lambda: cache.check("sig-a"))
    assert cache.check("sig-b") is True      # a first sighting: a refusal may release it
    cache.forget("sig-b")                    # refused requests release their signature
    t[0] += 10
    assert cache.check("sig-b") is True
    assert cache.check("sig-b") is False     # a repeat within the grace holds nothing to release
    t[0] += 1801                             # past both sides of the window: forgotten
    cache.check("sig-c")
    assert len(cache) == 1
    cache.check("sig-a")
