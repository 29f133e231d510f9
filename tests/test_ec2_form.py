"""The EC2 form's stepwise parse means exactly what urllib's parse_qsl means, however it is cut,
and the scan before authentication finds the auth fields however the body arrives."""
from __future__ import annotations

import random
from urllib.parse import parse_qsl, unquote_plus

import pytest

from cloudctl.api.ec2 import form

# Pieces that stress the cuts: escapes (valid, short, bad hex, invalid UTF-8, split multi-byte
# characters), '+', separators, literal non-ASCII.
PIECES = ["a", "%", "%4", "%41", "%C3%A9", "\u00e9", "+", "=", "&", "%zz", "%E2%82", "%AC", "\U0001f600",
          "%F0%9F%98%80", "&&", "==", "%%", "%%%41", "%FF"]
AUTH_NAMES = {"AWSAccessKeyId", "Signature", "SignatureVersion", "Timestamp", "X-Amz-Date"}


def stepwise(body: bytes) -> list[tuple[str, str]] | str:
    out: list[tuple[str, str]] = []
    try:
        for _ in form.parse_steps(body, out):
            pass
    except UnicodeDecodeError:
        return "UnicodeDecodeError"
    return out


def reference(body: bytes) -> list[tuple[str, str]] | str:
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return "UnicodeDecodeError"


@pytest.mark.parametrize("step", [1, 2, 3, 4, 7, 16])
def test_stepwise_parse_equals_parse_qsl(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    monkeypatch.setattr(form, "STEP_CHARS", step)
    rng = random.Random(step)
    for _ in range(3000):
        body = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60))).encode()
        assert stepwise(body) == reference(body), body


def test_long_fields_are_parsed_in_many_steps() -> None:
    value = "\u00e9t\u00e9 \U0001f600/" * 5000
    body = b"Action=X&UserData=" + "".join(f"%{b:02X}" for b in value.encode()).encode() + b"&Tail=1"
    out: list[tuple[str, str]] = []
    steps = sum(1 for _ in form.parse_steps(body, out))
    assert out == [("Action", "X"), ("UserData", value), ("Tail", "1")]
    assert steps > len(body) // form.STEP_CHARS


def test_scan_finds_auth_fields_however_the_body_is_cut() -> None:
    rng = random.Random(7)
    names = ["AWSAccessKeyId", "Signature", "SignatureVersion", "Timestamp", "X-Amz-Date", "Action",
             "xSignature", "Signatures"]
    for _ in range(3000):
        fields = [f"{rng.choice(names)}={''.join(rng.choice('ab%2B+=') for _ in range(rng.randint(0, 20)))}"
                  for _ in range(rng.randint(0, 10))]
        body = "&".join(fields).encode()
        expected = {k: unquote_plus(v) for k, _, v in (f.partition("=") for f in fields)
                    if k in AUTH_NAMES}
        scan, pos = form.FormScan(), 0
        while pos < len(body):
            cut = rng.randint(1, 9)
            scan.feed(body[pos:pos + cut])
            pos += cut
        assert scan.auth_fields() == expected, body
        assert scan.separators == body.count(b"&")


def test_scan_keeps_only_the_head_of_a_huge_field() -> None:
    scan = form.FormScan()
    scan.feed(b"Action=X&Signature=" + b"s" * 10_000)
    for _ in range(100):
        scan.feed(b"s" * 10_000)
    scan.feed(b"&AWSAccessKeyId=AK")
    assert scan.auth_fields() == {"Signature": "s" * 1024, "AWSAccessKeyId": "AK"}


def test_param_count() -> None:
    assert form.param_count("", None) == 0
    assert form.param_count("a=1&b=2", None) == 2
    assert form.param_count("a=1", 0) == 2
    assert form.param_count("", 9_999) == form.MAX_PARAMS


@pytest.mark.parametrize("escapes", [True, False])
def test_fields_equal_parse_qsl(escapes: bool) -> None:
    """`fields` (the one-step parse of a small form) gives parse_qsl's pairs, for forms with escapes
    and for forms without any (which it splits by one comprehension)."""
    pieces = PIECES if escapes else [p for p in PIECES if "%" not in p and "+" not in p] + ["Tag.1", "x-y"]
    rng = random.Random(escapes)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        try:
            want: list[tuple[str, str]] | str = parse_qsl(text, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            want = "UnicodeDecodeError"
        try:
            got: list[tuple[str, str]] | str = form.fields(text)
        except UnicodeDecodeError:
            got = "UnicodeDecodeError"
        assert got == want, text
        if not escapes:
            assert "%" not in text and "+" not in text
