"""`SignatureVerifier.verify_header`'s one-step check (`_v4h_at_once`: a credential that verified
before, its scope's checks and signing HMAC kept) answers as the general SigV4 path does: the
same `Verified`, or nothing, and then the general path's error, byte for byte."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from test_auth import AK, BODY, NOW_TS, SK, Wire, frozen_signing_clock, sign_v4  # noqa: F401 - a fixture

from cloudctl.api.ec2.auth import AuthError, SignatureVerifier, Verified

from spellings import authorization_variants
from support.mangle import mangle as mangled

Outcome = Verified | tuple[str, str, int]


def _outcome(fn: Callable[[], Verified]) -> Outcome:
    try:
        return fn()
    except AuthError as e:
        return (e.code, e.message, e.status)


def _header(v: SignatureVerifier, wire: Wire) -> Outcome:
    return _outcome(lambda: v.verify_header(method=wire.method, path=wire.path, headers=wire.headers,
                                            body=wire.body))


def _general(v: SignatureVerifier, wire: Wire) -> Outcome:
    return _outcome(lambda: wire.verified(v))


def _warm(table: dict[str, str], offset: float = 0.0, **kw: object) -> SignatureVerifier:
    """A verifier that has verified a request by the header twice (its credential kept), its
    clock then moved by `offset`."""
    now = [NOW_TS]
    v = SignatureVerifier(table.get, clock=lambda: now[0], **kw)   # type: ignore[arg-type]
    for _ in range(2):   # (the first derives the signing key, the second keeps the credential)
        assert isinstance(_header(v, sign_v4()), Verified)
    assert len(v._creds) == 1   # noqa: SLF001
    now[0] += offset
    return v


def _copy(wire: Wire, body: bytes | None = None, **headers: str) -> Wire:
    out = Wire(wire.method, f"http://{wire.headers['Host']}{wire.path}", dict(wire.headers),
               wire.body if body is None else body)
    for name, value in headers.items():
        out.headers[name.replace("_", "-")] = value
    return out


def test_a_kept_credential_verifies_in_one_step() -> None:
    v = SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS)
    wire = sign_v4()
    assert v._v4h_at_once(wire.method, wire.path, wire.headers, wire.body) is None   # noqa: SLF001 (not kept yet)
    first = _header(v, wire)   # (the key derived and cached by the general path)
    assert not v._creds   # noqa: SLF001
    assert v._v4h_at_once(wire.method, wire.path, wire.headers, wire.body) == first   # noqa: SLF001 (now kept)
    assert list(v._creds) == [wire.headers["Authorization"].split("Credential=")[1].split(",")[0]]   # noqa: SLF001
    other = sign_v4(BODY + b"&InstanceId.2=i-0123456789abcdef1")
    got = v._v4h_at_once(other.method, other.path, other.headers, other.body)   # noqa: SLF001
    assert got is not None and got == _general(SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS), other)
    signature = other.headers["Authorization"].rpartition("Signature=")[2]
    assert got == Verified(AK, f"v4h:{AK}:{signature}")


def _variants(wire: Wire) -> list[Wire]:
    sha = hashlib.sha256(wire.body).hexdigest()
    auth = wire.headers["Authorization"]
    out = [_copy(wire, Authorization=a) for a in authorization_variants(auth)]
    out += [
        _copy(wire, body=wire.body + b"&DryRun=true"),                        # tampered body
        _copy(wire, body=b""),
        _copy(wire, Host="127.0.0.1:4568"),                                   # tampered signed header
        _copy(wire, Content_Type="text/plain"),
        _copy(wire, Content_Type="application/x-www-form-urlencoded;  charset=utf-8"),
        _copy(wire, X_Amz_Content_SHA256=sha),                                # declared: general path
        _copy(wire, X_Amz_Content_SHA256="0" * 64),
        _copy(wire, X_Amz_Content_SHA256="UNSIGNED-PAYLOAD"),
        _copy(wire, X_Amz_Date="20261123T100001Z"),                           # another moment
        _copy(wire, X_Amz_Date="20261124T100000Z"),                           # another day than the scope's
        _copy(wire, X_Amz_Date="20261123T101600Z"),                           # outside the window
        _copy(wire, X_Amz_Date="2026-11-23T10:00:00Z"),
        _copy(wire, Authorization=auth.replace("/ec2/", "/sts/")),
        _copy(wire, Authorization=auth.replace("/us-east-1/", "/eu-west-1/")),
        _copy(wire, Authorization=auth.replace(AK, "AKIDSOMEONEELSE00001")),
        _copy(wire, Authorization=auth.replace("SignedHeaders=", "SignedHeaders=user-agent;")),
        _copy(wire, Authorization=auth.replace(";x-amz-date", "")),
        _copy(wire, Authorization=auth.replace("host;", "")),
        _copy(wire, Authorization=auth.replace("content-type;", "content-type;;")),
        _copy(wire, Authorization=auth.replace("Signature=", "Signature=0")),
        _copy(wire, Authorization=auth[:-1] + ("0" if auth[-1] != "0" else "1")),
        _copy(wire, Authorization=auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")),
        _copy(wire, Authorization=auth.replace("SignedHeaders", "Signedheaders")),
        _copy(wire, Authorization=auth.upper()),
    ]
    twice = _copy(wire)
    twice.headers.add("Host", "127.0.0.1:4567")   # (a repeated signed header: folded)
    dated = _copy(wire)
    del dated.headers["X-Amz-Date"]
    dated.headers["Date"] = "Mon, 23 Nov 2026 10:00:00 GMT"
    return [*out, twice, dated]


@pytest.mark.parametrize("offset", [0.0, 899.0, -899.0, 901.0, -901.0])
def test_every_variant_answers_as_the_general_path(offset: float) -> None:
    """What the one step passes is what the general path accepts, with the same `Verified`;
    for anything else the answer is the general path's error (verify_header falls back)."""
    for wire in [sign_v4(), sign_v4(BODY + b"&Filter.1.Name=tag%3AName&Filter.1.Value.1=a+b")]:
        for variant in [wire, *_variants(wire)]:
            warm = _warm({AK: SK}, offset)
            want = _general(SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS + offset), variant)
            assert _header(warm, variant) == want, variant.headers


def test_a_region_or_service_not_served_is_refused_as_before() -> None:
    kw = {"region": "us-east-1", "services": ("ec2", "sts")}
    wire = sign_v4()
    auth = wire.headers["Authorization"]
    for variant in [wire, _copy(wire, Authorization=auth.replace("/us-east-1/", "/eu-west-1/")),
                    _copy(wire, Authorization=auth.replace("/ec2/", "/iam/")),
                    sign_v4(service="sts"), sign_v4(region="eu-west-1")]:
        want = _general(SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS, **kw), variant)   # type: ignore[arg-type]
        assert _header(_warm({AK: SK}, **kw), variant) == want


def test_a_secret_changed_or_a_key_deleted_is_not_served_from_the_kept_credential() -> None:
    table = {AK: SK}
    v = _warm(table)
    assert isinstance(_header(v, sign_v4()), Verified)
    table[AK] = "rotated"
    assert _header(v, sign_v4()) == ("AuthFailure", "AWS was not able to validate the provided access credentials", 401)
    assert isinstance(_header(v, sign_v4(secret="rotated")), Verified)
    del table[AK]
    assert _header(v, sign_v4(secret="rotated")) == \
        ("AuthFailure", "AWS was not able to validate the provided access credentials", 401)


def test_mangled_requests_answer_as_the_general_path() -> None:
    rng = random.Random(77)
    pristine = sign_v4()

    def mangle(text: str) -> str:
        return mangled(rng, text, 3)

    warm = _warm({AK: SK})
    fresh = SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS)
    for _ in range(1500):
        target = rng.choice(["Authorization", "X-Amz-Date", "Host", "Content-Type"])
        variant = _copy(pristine, **{target.replace("-", "_"): mangle(pristine.headers[target])})
        assert _header(warm, variant) == _general(fresh, variant), variant.headers


@pytest.mark.parametrize("kept", ["_creds", "_heads"])
def test_kept_credentials_and_heads_are_bounded_and_only_verified_ones(kept: str) -> None:
    v = _warm({AK: SK})
    assert len(getattr(v, kept)) == 1
    for i in range(300):
        _header(v, sign_v4(secret="bogus", region=f"r{i}"))
    assert len(getattr(v, kept)) == 1   # forged requests keep nothing
    if kept == "_heads":
        assert v.known_head(sign_v4(secret="bogus").headers["Authorization"]) is not None   # (the same head)
        assert v.known_head(sign_v4(secret="bogus", region="r0").headers["Authorization"]) is None
    for i in range(300):
        for _ in range(2):   # (the first derives the key, the second keeps the credential)
            assert isinstance(_header(v, sign_v4(region=f"r{i}")), Verified)
    assert 0 < len(getattr(v, kept)) <= 256


def test_plain_mapping_headers_go_the_general_way() -> None:
    """Headers without `getall` (a plain dict, as `verify_header`'s type allows) are verified by
    the general path, which reads them as such."""
    v = _warm({AK: SK})
    wire = sign_v4()
    plain = dict(wire.headers)
    assert v._v4h_at_once(wire.method, wire.path, plain, wire.body) is None   # noqa: SLF001
    fresh = SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS)
    for headers in (plain, {k.lower() if k != "Authorization" else k: x for k, x in plain.items()}):
        got = _outcome(lambda: v.verify_header(method=wire.method, path=wire.path, headers=headers, body=wire.body))
        assert got == _outcome(lambda: fresh.verify(method=wire.method, path=wire.path, query_string="",
                                                    headers=headers, body=wire.body, params={}))


def test_a_kept_header_head_verifies_without_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header written as one that verified before but for its signature (`_heads`) is read from
    what was kept: no regex; another signature of 64 lowercase hex digits verifies as the general
    path verifies it, any other answers as the general path does."""
    from cloudctl.api.ec2 import auth as auth_module
    from cloudctl.api.ec2.logins import claimed_access_key

    v = _warm({AK: SK})
    wire = sign_v4()
    head = v.known_head(wire.headers["Authorization"])
    assert head is not None and head[0] == claimed_access_key(wire.headers, {}) == AK
    assert len(v._heads) == 1   # noqa: SLF001

    class NoRegex:
        def fullmatch(self, text: str) -> None:
            raise AssertionError("the kept head was not used")

    fresh = SignatureVerifier({AK: SK}.get, clock=lambda: NOW_TS)
    other = sign_v4(BODY + b"&InstanceId.2=i-0123456789abcdef1")
    assert v.known_head(other.headers["Authorization"]) == head
    with monkeypatch.context() as m:
        m.setattr(auth_module, "_V4H", NoRegex())
        got = _header(v, other)
        assert isinstance(got, Verified) and got == _general(fresh, other)
        assert v.verify_header(method=other.method, path=other.path, headers=other.headers, body=other.body,
                               head=head) == got
    auth = other.headers["Authorization"]
    signature = auth[-64:]
    for bad in (signature.upper(), "g" + signature[1:], "\u00e9" + signature[1:], " " + signature[1:],
                signature[:-1] + "0" if signature[-1] != "0" else signature[:-1] + "1"):
        variant = _copy(other, Authorization=auth[:-64] + bad)
        assert v.known_head(variant.headers["Authorization"]) == head
        assert _header(v, variant) == _general(fresh, variant) != got, bad
