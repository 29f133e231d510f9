"""Verification of AWS request signatures (SigV4 header, SigV4 presigned query, SigV2).

The server must not import botocore (memory budget), so the canonicalisation rules botocore
uses when *signing* are re-implemented here for *verifying*.  Every decision that differs from a
literal reading of botocore is explained where it is made.

Wiring (aiohttp)::

    raw_path, _, raw_query = request.raw_path.partition("?")
    verified = verifier.verify(method=request.method, path=raw_path, query_string=raw_query,
                               headers=request.headers, body=await request.read(), params=params)
    user, replay_key = verified.access_key, verified.replay_key

Use ``request.raw_path`` (the request line as received).  ``request.path`` is decoded and
``request.query_string`` is *decoded* by yarl; ``request.rel_url.raw_query_string`` is
re-quoted by yarl but works too (query components are normalised before signing); the path is
double-encoded in SigV4, so it must be the raw one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_plus, unquote_to_bytes

from .logins import claimed_access_key

# OpenSSL's HMAC object: a copy of one keyed once skips the key setup (and OpenSSL 3's lookup of
# the digest by name) that hmac.digest does per call.
try:
    from _hashlib import hmac_new as _hmac_new
except ImportError:   # pragma: no cover - CPython without OpenSSL
    _hmac_new = None

__all__ = ["AUTH_PARAMS", "AuthError", "ReplayCache", "SignatureVerifier", "Verified"]

AUTH_PARAMS: frozenset[str] = frozenset({
    # SigV2
    "AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "Timestamp", "Expires",
    # SigV4 presigned query
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
})

_ALGORITHM = "AWS4-HMAC-SHA256"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # AWS's own ceiling for X-Amz-Expires
_KEY_CACHE_MAX = 256
_UNRESERVED = "-_.~"  # RFC 3986 unreserved punctuation; letters and digits are always safe
_CANONICAL_COMPONENT = re.compile(r"[A-Za-z0-9\-_.~]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# The Authorization header as botocore writes it, its values in characters the general parse
# (`_v4_header_parts`: split on ',', each part stripped, cut at its first '=') reads as they are.
_V4H = re.compile(r"AWS4-HMAC-SHA256 Credential=([A-Za-z0-9/_.-]{1,256}), SignedHeaders=([a-z0-9;-]{1,512}), "
                  r"Signature=([0-9a-f]{64})")
_HEX_DIGITS = "0123456789abcdef"
_AUTH_FAILURE = "AWS was not able to validate the provided access credentials"


class AuthError(Exception):
    """An authentication failure carrying the EC2 error code and HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class Verified(NamedTuple):
    """A request whose signature matched.

    ``replay_key`` names the signature by what was verified, not by how it was written: the
    scheme, the access key and the MAC the server computed (SigV4: lowercase hex; SigV2:
    base64).  Every textual variant the verifier accepts for one signed request (spacing and
    field order in the Authorization header, parameter order or percent-encoding, '+' or
    '%2B', query or body, host case) matched the same MAC, so they share this key.
    """

    access_key: str
    replay_key: str
    service: str = "ec2"   # the credential scope's service (SigV2 has no scope: EC2)


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignature", message, 400)


def _auth_failure() -> AuthError:
    # One message for unknown key, bad signature and body mismatch: the client learns nothing.
    return AuthError("AuthFailure", _AUTH_FAILURE, 401)


def _expired(stamp: str) -> AuthError:
    return AuthError("RequestExpired", f"Request has expired. Timestamp date is {stamp}", 400)


def _invalid(param: str, value: str, hint: str = "") -> AuthError:
    msg = f"Value ({value}) for parameter {param} is invalid."
    return AuthError("InvalidParameterValue", f"{msg} {hint}" if hint else msg, 400)


def _missing(param: str) -> AuthError:
    return AuthError("MissingParameter", f"The request must contain the parameter {param}", 400)


def _canonical_component(raw: str) -> str:
    """Decode then RFC 3986-encode one query key/value, so any client encoding compares equal.

    '+' is a space, as in the form/query parser that produced ``params``: what is signed must
    mean what the server will act on.
    """
    if _CANONICAL_COMPONENT.fullmatch(raw):
        return raw
    return quote(unquote_to_bytes(raw.replace("+", " ")), safe=_UNRESERVED)


def _split_query(query_string: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def _canonical_path(path: str) -> str:
    """Mirror botocore for non-S3 services: drop dot segments and empty segments, then encode
    the already percent-encoded path once more (SigV4's double encoding)."""
    path = path.partition("?")[0]
    if path == "/" or not path:
        return "/"
    segments: list[str] = []
    for seg in path.split("/"):
        if seg and seg != ".":
            if seg == "..":
                if segments:
                    segments.pop()
            else:
                segments.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and segments else ""
    return quote(first + "/".join(segments) + last, safe="/~")


_last_amz_date: tuple[str, float | None] = ("", None)


def _parse_amz_date(stamp: str) -> float | None:
    """Epoch seconds of an ISO 8601 basic UTC stamp; hand-rolled because strptime costs ~8 µs.
    The last stamp's value is kept: a client's requests within one second carry the same one."""
    global _last_amz_date
    last = _last_amz_date
    if last[0] == stamp:
        return last[1]
    when = _amz_date_seconds(stamp)
    _last_amz_date = (stamp, when)
    return when


def _amz_date_seconds(stamp: str) -> float | None:
    if len(stamp) != 16 or stamp[8] != "T" or stamp[15] != "Z":
        return None
    digits = stamp[:8] + stamp[9:15]
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return datetime(int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                        int(stamp[11:13]), int(stamp[13:15]), tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _parse_sigv2_time(value: str) -> float | None:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _http_date_to_amz(value: str) -> str:
    """The SigV4 timestamp of an RFC 7231 Date header (botocore signs with '-0000', which the
    stdlib returns as a naive datetime: that is UTC, not local time)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise _incomplete(f"Date header '{value[:40]}' is not an HTTP date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]


class _V4Parts(NamedTuple):
    akid: str
    scope_date: str
    region: str
    signature: str
    signed_headers: str
    amz_date: str
    pairs: list[tuple[str, str]]   # the raw query pairs (presigned only)
    service: str                   # the credential scope's, one the verifier serves


class Prechecked(NamedTuple):
    """What precheck found: the scheme and, for SigV4, the auth fields it checked (so verify,
    for the same request, need not take them apart again)."""
    scheme: str
    v4: _V4Parts | None

    @property
    def service(self) -> str:
        """The service the request is signed for (SigV2 has no scope: EC2)."""
        return self.v4.service if self.v4 is not None else "ec2"


class _V2Parts(NamedTuple):
    akid: str
    digest: str
    host: str
    secret: str


def _body_hash(body: bytes, known: str | None) -> str:
    if known is not None:
        return known
    return hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256


class SignatureVerifier:
    """Checks that a request was signed with the secret of the access key it names."""

    __slots__ = ("_secret_for", "_services", "_region", "_window", "_clock", "_keys", "_macs", "_creds",
                 "_heads")

    def __init__(self, secret_for: Callable[[str], str | None], *, service: str = "ec2",
                 region: str | None = None, window_s: int = 900, clock: Callable[[], float] = time.time,
                 services: Collection[str] = ()) -> None:
        """``services``: every service a SigV4 scope may name (default: ``service`` alone)."""
        self._secret_for = secret_for
        self._services = tuple(sorted(services)) if services else (service,)
        self._region = region     # None: any region in the scope (unit tests of the algorithm)
        self._window = window_s
        self._clock = clock
        # (secret, yyyymmdd, region, service) -> signing key.  Only keys that just verified a
        # request are stored, so forged requests naming random regions cannot churn the cache.
        self._keys: dict[tuple[str, str, str, str], bytes] = {}
        self._macs: dict[bytes, Any] = {}   # signing key -> HMAC keyed with it, to copy (`_sign`)
        # A SigV4 credential (Authorization's `Credential=`) that verified a request -> what
        # `_v4h_at_once` needs of it: (key id, scope date, service, secret, HMAC keyed with its
        # signing key, the scope's lines of the string to sign). Only verified ones: bounded.
        self._creds: dict[str, tuple[str, str, str, str, Any, str]] = {}
        # An Authorization header less its signature (the last 64 characters) that matched `_V4H`
        # and verified a request -> (the key id it claims, `claimed_access_key`'s; its Credential,
        # its SignedHeaders, those split): `_v4h_at_once` without the regex and the names' checks
        # for the next request signed so (a client's every request: only the signature changes).
        # Only verified ones: bounded.
        self._heads: dict[str, tuple[str, str, str, list[str]]] = {}

    # -- entry points ------------------------------------------------------------------------

    def verify(self, *, method: str, path: str, query_string: str, headers: Mapping[str, str],
               body: bytes, params: Mapping[str, str], body_sha256: str | None = None,
               prechecked: Prechecked | None = None) -> Verified:
        """Return who signed a correctly signed request, else raise AuthError.

        ``body_sha256``: the body's hex SHA-256 if the caller already has it (hashed off the
        event loop for a large body); computed here otherwise. ``prechecked``: what precheck
        found for this same request, moments ago.
        """
        scheme = self.scheme(headers, params)
        known = prechecked.v4 if prechecked is not None and prechecked.scheme == scheme else None
        if scheme == "v4h":
            return self._verify_v4h(known or self._v4_header_parts(headers), method, path,
                                    _split_query(query_string), headers, body, body_sha256)
        if scheme == "v4q":
            v4q = known or self._v4_query_parts(query_string)
            secret = self._v4_secret(v4q.akid, v4q.signed_headers)
            declared = headers.get("X-Amz-Content-SHA256")
            if declared is not None:
                if declared == _UNSIGNED_PAYLOAD:
                    if body:
                        raise _incomplete("UNSIGNED-PAYLOAD is not accepted for a request with a body")
                elif not (_HEX64.fullmatch(declared)
                          and hmac.compare_digest(declared, _body_hash(body, body_sha256))):
                    raise _auth_failure()
                candidates: tuple[str, ...] = (declared,)
            elif body:
                candidates = (_body_hash(body, body_sha256),)
            else:
                # botocore's SigV4QueryAuth signs the hash of the (empty) body; S3-style presigners
                # sign UNSIGNED-PAYLOAD.  With no body the two are equally safe, so accept both.
                candidates = (_EMPTY_SHA256, _UNSIGNED_PAYLOAD)
            return self._check_v4("v4q", secret, v4q.akid, v4q.scope_date, v4q.region, v4q.service, v4q.signature,
                                  method, path, v4q.pairs, "X-Amz-Signature", headers,
                                  v4q.signed_headers, v4q.amz_date, candidates)
        return self._verify_v2(method, path, headers, params)

    def known_head(self, authorization: str) -> tuple[str, str, str, list[str]] | None:
        """What `_heads` keeps of an Authorization header written as one that verified a request
        before, but for its signature (its first member: the key id `claimed_access_key` reads
        from it); None for any other."""
        return self._heads.get(authorization[:-64])

    def verify_header(self, *, method: str, path: str, headers: Mapping[str, str], body: bytes,
                      head: tuple[str, str, str, list[str]] | None = None) -> Verified:
        """`verify` (and `precheck`'s checks) for a request whose scheme the caller knows is
        "v4h": an Authorization header, no query string, no auth field among its parameters.
        The same checks and errors, the header taken apart once. ``head``: `known_head`'s answer
        for this request's Authorization header, if the caller has it (else looked up here)."""
        verified = self._v4h_at_once(method, path, headers, body, head)
        if verified is not None:
            return verified
        return self._verify_v4h(self._v4_header_parts(headers), method, path, [], headers, body, None)

    def _v4h_at_once(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                     head: tuple[str, str, str, list[str]] | None = None) -> Verified | None:
        """`verify_header`'s outcome for the usual request when it passes, in one function: an
        Authorization header written as botocore writes it (`_V4H`), X-Amz-Date signed, no
        X-Amz-Content-SHA256, a credential that verified a request before (`_creds`: its scope's
        checks, the signing key and its HMAC, kept) and whose key's secret is still the signer's.
        None for anything else, a signature that does not match included: the general path then
        checks it from the start and raises what it raises. Never accepts what that path refuses:
        the same checks, on values the general parse reads the same. A header written as one
        that verified before but for its signature (`_heads`) is the regex's match when that
        signature is 64 lowercase hex digits: its parts and checks are taken as kept."""
        authorization = headers.get("Authorization") or ""
        if head is None:
            head = self._heads.get(authorization[:-64])
        if head is not None:
            _, credential, signed_headers, names = head
            signature = authorization[-64:]
            if signature.strip(_HEX_DIGITS):   # (what `_V4H` reads as the signature, or None)
                return None
            fresh = False
        else:
            m = _V4H.fullmatch(authorization)
            if m is None:
                return None
            credential, signed_headers, signature = m.groups()
            names = signed_headers.split(";")
            if "x-amz-date" not in names or "host" not in names or not all(names):
                return None
            fresh = True
        amz_date = headers.get("X-Amz-Date")
        if amz_date is None or "X-Amz-Content-SHA256" in headers:
            return None
        kept = self._creds.get(credential)
        if kept is None:
            verified = self._v4h_first(method, path, headers, body, credential, signed_headers, signature, amz_date)
            if verified is not None and fresh:
                self._keep_head(authorization, credential, signed_headers, names)
            return verified
        akid, scope_date, service, secret, mac, scope_lines = kept
        if scope_date != amz_date[:8]:
            return None
        when = _parse_amz_date(amz_date)
        if when is None or abs(self._clock() - when) > self._window or self._secret_for(akid) != secret:
            return None
        getall = getattr(headers, "getall", None)
        if getall is None:   # (a plain mapping: `_check_v4` reads it)
            return None
        lines: list[str] = []
        for name in names:
            values = getall(name, ())
            if len(values) == 1:
                lines.append(f"{name}:{' '.join(values[0].split())}")
            else:
                lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
        try:
            canonical = (f"{method.upper()}\n{_canonical_path(path)}\n\n" + "\n".join(lines) + "\n\n"
                         f"{signed_headers}\n{hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256}"
                         ).encode("utf-8", "surrogateescape")
            to_sign = f"{_ALGORITHM}\n{amz_date}{scope_lines}{hashlib.sha256(canonical).hexdigest()}"
            mac = mac.copy()
            mac.update(to_sign.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            return None
        expected = mac.hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return None
        if fresh:
            self._keep_head(authorization, credential, signed_headers, names)
        return Verified(akid, f"v4h:{akid}:{expected}", service)

    def _keep_head(self, authorization: str, credential: str, signed_headers: str, names: list[str]) -> None:
        """Keep a verified header's parts but its signature (`_heads`), with the key id
        `claimed_access_key` reads from it (the same for any signature: it ends at the comma
        before SignedHeaders)."""
        heads = self._heads
        if len(heads) >= _KEY_CACHE_MAX:
            heads.clear()
        heads[authorization[:-64]] = (claimed_access_key({"Authorization": authorization}, {}), credential,
                                      signed_headers, names)

    def _v4h_first(self, method: str, path: str, headers: Mapping[str, str], body: bytes, credential: str,
                   signed_headers: str, signature: str, amz_date: str) -> Verified | None:
        """`_v4h_at_once` for a credential not kept yet: None where the scope's and the key's
        checks raise or the signing key is not cached yet (one that verified before); else the
        general path's own verification (raising what it raises), and the credential kept once
        it passes."""
        if _hmac_new is None:
            return None
        try:
            akid, scope_date, region, service = self._check_scope(credential, amz_date)
            secret = self._v4_secret(akid, signed_headers)
        except AuthError:
            return None
        key = self._keys.get((secret, scope_date, region, service))
        if key is None:   # (the general path derives it, and keeps it once it verifies)
            return None
        verified = self._verify_v4h(self._v4_header_parts(headers), method, path, [], headers, body, None)
        if len(self._creds) >= _KEY_CACHE_MAX:
            self._creds.clear()
        self._creds[credential] = (akid, scope_date, service, secret, _hmac_new(key, digestmod="sha256"),
                                   f"\n{scope_date}/{region}/{service}/aws4_request\n")
        return verified

    def _verify_v4h(self, v4h: _V4Parts, method: str, path: str, query_pairs: list[tuple[str, str]],
                    headers: Mapping[str, str], body: bytes, body_sha256: str | None) -> Verified:
        secret = self._v4_secret(v4h.akid, v4h.signed_headers)
        declared = headers.get("X-Amz-Content-SHA256")
        if declared is None:
            payload_hash = _body_hash(body, body_sha256)
        elif declared == _UNSIGNED_PAYLOAD:
            # The form body carries the Action and all its parameters: never let it go unsigned.
            if body:
                raise _incomplete("UNSIGNED-PAYLOAD is not accepted for a request with a body")
            payload_hash = declared
        else:   # (its form was checked with the header's other parts)
            if not hmac.compare_digest(declared, _body_hash(body, body_sha256)):
                raise _auth_failure()
            payload_hash = declared
        return self._check_v4("v4h", secret, v4h.akid, v4h.scope_date, v4h.region, v4h.service, v4h.signature,
                              method, path, query_pairs, None, headers,
                              v4h.signed_headers, v4h.amz_date, (payload_hash,))

    def precheck(self, *, query_string: str, headers: Mapping[str, str],
                 params: Mapping[str, str]) -> Prechecked:
        """Every check that needs neither the body nor (SigV2) all its parameters; the scheme.

        Run before a large body is hashed or parsed, so a request that names no credentials,
        an unknown access key, another service or region, or a date outside the window costs
        no more than its headers. ``params``: the query's parameters plus the auth parameters
        found in the body (see form.FormScan). It raises what verify would raise for them.
        """
        scheme = self.scheme(headers, params)
        if scheme == "v2":
            self._v2_parts(headers, params)
            return Prechecked(scheme, None)
        v4 = self._v4_header_parts(headers) if scheme == "v4h" else self._v4_query_parts(query_string)
        self._v4_secret(v4.akid, v4.signed_headers)
        return Prechecked(scheme, v4)

    @staticmethod
    def scheme(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
        """Which scheme signs the request: "v4h" (header), "v4q" (presigned) or "v2"."""
        if headers.get("Authorization") is not None:
            if "X-Amz-Signature" in params or ("Signature" in params and "AWSAccessKeyId" in params):
                raise _incomplete("Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                                  "parameter, Signature query string parameter or the "
                                  "Authorization header should be specified")
            return "v4h"
        if "X-Amz-Algorithm" in params or "X-Amz-Signature" in params or "X-Amz-Credential" in params:
            return "v4q"
        if "Signature" in params or "AWSAccessKeyId" in params or "SignatureVersion" in params:
            return "v2"
        raise AuthError("MissingAuthenticationToken", "Request is missing Authentication Token", 401)

    # -- SigV4 -------------------------------------------------------------------------------

    def _v4_header_parts(self, headers: Mapping[str, str]) -> _V4Parts:
        """The Authorization header's fields, checked for form, scope and date."""
        authorization = headers["Authorization"]
        algorithm, _, rest = authorization.strip().partition(" ")
        if algorithm != _ALGORITHM:
            raise _incomplete(f"Unsupported Authorization scheme '{algorithm[:40]}'; "
                              f"expected {_ALGORITHM}")
        fields: dict[str, str] = {}
        for item in rest.split(","):
            name, eq, value = item.strip().partition("=")
            if not eq or name in fields:
                raise _incomplete(f"Authorization header is malformed: '{item.strip()[:80]}'")
            fields[name] = value.strip()
        for name in ("Credential", "SignedHeaders", "Signature"):
            if not fields.get(name):
                raise _incomplete(f"Authorization header requires '{name}' parameter.")
        credential, signed_headers = fields["Credential"], fields["SignedHeaders"]

        amz_date = headers.get("X-Amz-Date")
        signed = signed_headers.lower().split(";")
        if amz_date is not None and "x-amz-date" not in signed:
            raise _incomplete("'X-Amz-Date' must be a signed header")
        if amz_date is None and "date" not in signed:
            raise _incomplete("'Date' must be a signed header when it dates the request")
        if amz_date is None:
            date_header = headers.get("Date")
            if date_header is None:
                raise _incomplete("Authorization header requires existence of either a "
                                  "'X-Amz-Date' or a 'Date' header.")
            amz_date = _http_date_to_amz(date_header)
        akid, scope_date, region, service = self._check_scope(credential, amz_date)
        when = _parse_amz_date(amz_date)
        if when is None:
            raise _incomplete(f"X-Amz-Date '{amz_date[:40]}' is not in ISO 8601 basic format "
                              "(YYYYMMDD'T'HHMMSS'Z')")
        if abs(self._clock() - when) > self._window:
            raise _expired(amz_date)
        declared = headers.get("X-Amz-Content-SHA256")
        if declared is not None and declared != _UNSIGNED_PAYLOAD and not _HEX64.fullmatch(declared):
            raise _incomplete(f"Unsupported X-Amz-Content-SHA256 value '{declared[:70]}'")
        return _V4Parts(akid, scope_date, region, fields["Signature"], signed_headers, amz_date, [], service)

    def _v4_query_parts(self, query_string: str) -> _V4Parts:
        """The presigned query's auth parameters, checked for form, scope, date and expiry."""
        pairs = _split_query(query_string)
        auth: dict[str, str] = {}
        for key, value in pairs:
            name = unquote_plus(key)
            if name.startswith("X-Amz-"):
                auth[name] = unquote_plus(value)
        algorithm = auth.get("X-Amz-Algorithm")
        if algorithm is None:
            raise _incomplete("Presigned requests must carry X-Amz-Algorithm, X-Amz-Credential, "
                              "X-Amz-Date, X-Amz-SignedHeaders and X-Amz-Signature in the URL")
        if algorithm != _ALGORITHM:
            raise _invalid("X-Amz-Algorithm", algorithm[:40], f"Valid value: {_ALGORITHM}")
        for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"):
            if not auth.get(name):
                raise _incomplete(f"Presigned request requires the {name} query parameter.")
        amz_date = auth["X-Amz-Date"]
        akid, scope_date, region, service = self._check_scope(auth["X-Amz-Credential"], amz_date)
        when = _parse_amz_date(amz_date)
        if when is None:
            raise _incomplete(f"X-Amz-Date '{amz_date[:40]}' is not in ISO 8601 basic format "
                              "(YYYYMMDD'T'HHMMSS'Z')")
        expires_raw = auth.get("X-Amz-Expires")
        expires = self._window
        if expires_raw is not None:
            if not (expires_raw.isascii() and expires_raw.isdigit()) \
                    or not 1 <= int(expires_raw) <= _MAX_PRESIGN_EXPIRES:
                raise _invalid("X-Amz-Expires", expires_raw[:20],
                               f"It must be an integer from 1 to {_MAX_PRESIGN_EXPIRES}.")
            expires = int(expires_raw)
        now = self._clock()
        if now > when + expires or when - now > self._window:
            raise _expired(amz_date)
        return _V4Parts(akid, scope_date, region, auth["X-Amz-Signature"], auth["X-Amz-SignedHeaders"],
                        amz_date, pairs, service)

    def _check_scope(self, credential: str, amz_date: str) -> tuple[str, str, str, str]:
        parts = credential.rsplit("/", 4)
        if len(parts) != 5 or not all(parts) or parts[4] != "aws4_request":
            raise _incomplete(f"Credential '{credential[:120]}' is malformed; expected "
                              "<access key>/<YYYYMMDD>/<region>/<service>/aws4_request")
        akid, scope_date, region, service, _ = parts
        if service not in self._services:
            if len(self._services) == 1:
                raise _incomplete(f"Credential should be scoped to correct service: '{self._services[0]}'.")
            served = ", ".join(f"'{s}'" for s in self._services)
            raise _incomplete(f"Credential should be scoped to a service this endpoint serves ({served}), "
                              f"not '{service[:40]}'.")
        if self._region is not None and region != self._region:
            raise AuthError("AuthFailure", f"Credential should be scoped to a valid region, not "
                            f"'{region[:40]}'; this cloud's region is '{self._region}'.", 401)
        if scope_date != amz_date[:8]:
            raise _incomplete(f"Date in Credential scope ({scope_date[:16]}) does not match "
                              f"YYYYMMDD from the request date ({amz_date[:40]})")
        return akid, scope_date, region, service

    def _v4_secret(self, akid: str, signed_headers: str) -> str:
        """The signing secret of ``akid``, once the signed-header list is known to be usable."""
        names = signed_headers.split(";")
        if "host" not in names:
            raise _incomplete("'Host' must be a signed header")
        if not all(names):
            raise _incomplete(f"SignedHeaders '{signed_headers[:120]}' is malformed")
        secret = self._secret_for(akid)
        if secret is None:
            raise _auth_failure()
        return secret

    def _check_v4(self, scheme: str, secret: str, akid: str, scope_date: str, region: str, service: str,
                  signature: str, method: str, path: str, query_pairs: list[tuple[str, str]],
                  drop: str | None, headers: Mapping[str, str], signed_headers: str, amz_date: str,
                  payload_hashes: tuple[str, ...]) -> Verified:
        getall = getattr(headers, "getall", None)
        lines: list[str] = []
        for name in signed_headers.split(";"):
            values = _header_values(headers, name) if getall is None else getall(name, ())
            if len(values) == 1:
                lines.append(f"{name}:{' '.join(values[0].split())}")
            else:  # repeated headers are folded the way botocore folds them
                lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")

        tail = "\n" + "\n".join(lines) + "\n\n" + signed_headers + "\n"
        scope = f"{scope_date}/{region}/{service}/aws4_request"
        cache_key = (secret, scope_date, region, service)
        provided = signature.encode("utf-8", "surrogatepass")
        try:  # everything here is client text: undecodable bytes mean "no match", not a 500
            queries = self._canonical_queries(query_pairs, drop) if query_pairs else ("",)
            head = f"{method.upper()}\n{_canonical_path(path)}\n"
            key = self._keys.get(cache_key)
            fresh = key is None
            if key is None:
                key = self._derive_key(secret, scope_date, region, service)
            for query in queries:
                for payload_hash in payload_hashes:
                    canonical = (head + query + tail + payload_hash).encode("utf-8", "surrogateescape")
                    to_sign = (f"{_ALGORITHM}\n{amz_date}\n{scope}\n"
                               f"{hashlib.sha256(canonical).hexdigest()}")
                    expected = self._sign(key, fresh, to_sign.encode("utf-8", "surrogateescape"))
                    if hmac.compare_digest(expected.encode("ascii"), provided):
                        if fresh:
                            self._remember(cache_key, key)
                        return Verified(akid, f"{scheme}:{akid}:{expected}", service)
        except UnicodeEncodeError:
            pass
        raise _auth_failure()

    @staticmethod
    def _canonical_queries(pairs: list[tuple[str, str]], drop: str | None) -> tuple[str, ...]:
        """The spec's canonical query string, plus (if different) the raw pairs sorted as received.

        The second form is what botocore signs when handed a URL whose query it did not encode
        itself; it only matters when the caller passes the query exactly as it came off the wire.
        """
        normalised: list[tuple[str, str]] = []
        raw: list[tuple[str, str]] = []
        for key, value in pairs:
            ckey = _canonical_component(key)
            if ckey == drop:
                continue
            normalised.append((ckey, _canonical_component(value)))
            raw.append((key, value))
        normalised.sort()
        raw.sort()
        first = "&".join(f"{k}={v}" for k, v in normalised)
        if raw == normalised:
            return (first,)
        return (first, "&".join(f"{k}={v}" for k, v in raw))

    def _sign(self, key: bytes, fresh: bool, message: bytes) -> str:
        """The hex HMAC-SHA256 of `message` under a signing key: for a cached key (not `fresh`),
        from a copy of an HMAC keyed with it once (about a third of hmac.digest's cost)."""
        if fresh or _hmac_new is None:
            return hmac.digest(key, message, "sha256").hex()
        mac = self._macs.get(key)
        if mac is None:
            if len(self._macs) >= _KEY_CACHE_MAX:   # (keys the cache dropped: rebuilt when used again)
                self._macs.clear()
            mac = self._macs[key] = _hmac_new(key, digestmod="sha256")
        mac = mac.copy()
        mac.update(message)
        return str(mac.hexdigest())

    def _derive_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        key = hmac.digest(f"AWS4{secret}".encode("utf-8"), date.encode("utf-8"), "sha256")
        key = hmac.digest(key, region.encode("utf-8", "surrogateescape"), "sha256")
        key = hmac.digest(key, service.encode("utf-8"), "sha256")
        return hmac.digest(key, b"aws4_request", "sha256")

    def _remember(self, cache_key: tuple[str, str, str, str], key: bytes) -> None:
        keys = self._keys
        if len(keys) >= _KEY_CACHE_MAX:
            try:  # oldest first; tolerate a concurrent evictor if ever called from threads
                del keys[next(iter(keys))]
            except (KeyError, RuntimeError, StopIteration):
                pass
        keys[cache_key] = key

    # -- SigV2 -------------------------------------------------------------------------------

    def _v2_parts(self, headers: Mapping[str, str], params: Mapping[str, str]) -> _V2Parts:
        """The SigV2 parameters, checked for form and date, and the signer's secret."""
        version = params.get("SignatureVersion")
        if version is None:
            raise _missing("SignatureVersion")
        if version != "2":
            raise _invalid("SignatureVersion", version[:20], "Valid value: 2")
        sig_method = params.get("SignatureMethod")
        if sig_method is None:
            raise _missing("SignatureMethod")
        digest = {"HmacSHA256": "sha256", "HmacSHA1": "sha1"}.get(sig_method)
        if digest is None:
            raise _invalid("SignatureMethod", sig_method[:40], "Valid values: HmacSHA256, HmacSHA1")
        for name in ("AWSAccessKeyId", "Signature"):
            if not params.get(name):
                raise _missing(name)
        akid = params["AWSAccessKeyId"]

        timestamp = params.get("Timestamp")
        expires = params.get("Expires")
        if timestamp is not None and expires is not None:
            raise AuthError("InvalidParameterCombination",
                            "The parameters Timestamp and Expires are mutually exclusive", 400)
        now = self._clock()
        if timestamp is not None:
            when = _parse_sigv2_time(timestamp)
            if when is None:
                raise _invalid("Timestamp", timestamp[:40], "Use ISO 8601, e.g. 2026-11-23T10:00:00Z")
            if abs(now - when) > self._window:
                raise _expired(timestamp)
        elif expires is not None:
            when = _parse_sigv2_time(expires)
            if when is None:
                raise _invalid("Expires", expires[:40], "Use ISO 8601, e.g. 2026-11-23T10:00:00Z")
            if now > when:
                raise _expired(expires)
        else:
            raise _missing("Timestamp")

        host = headers.get("Host")
        if not host:
            raise _incomplete("SigV2 requests must carry a Host header")
        secret = self._secret_for(akid)
        if secret is None:
            raise _auth_failure()
        return _V2Parts(akid, digest, host, secret)

    def _verify_v2(self, method: str, path: str, headers: Mapping[str, str],
                   params: Mapping[str, str]) -> Verified:
        akid, digest, host, secret = self._v2_parts(headers, params)
        # Base64 never contains a space; a raw '+' in a query string was decoded as one.
        provided = params["Signature"].replace(" ", "+").encode("utf-8", "surrogatepass")
        path = path.partition("?")[0] or "/"
        secret_bytes = secret.encode("utf-8")
        try:  # client text throughout: undecodable bytes mean "no match", not a 500
            query = "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(str(params[k]), safe=_UNRESERVED)}"
                             for k in sorted(params) if k != "Signature")
            # The spec lowercases the host; botocore signs the URL's netloc as written.
            for candidate in dict.fromkeys((host.lower(), host)):
                to_sign = f"{method.upper()}\n{candidate}\n{path}\n{query}".encode("utf-8")
                expected = base64.b64encode(hmac.digest(secret_bytes, to_sign, digest))
                if hmac.compare_digest(expected, provided):
                    return Verified(akid, f"v2:{akid}:{expected.decode('ascii')}")
        except UnicodeEncodeError:
            pass
        raise _auth_failure()

class ReplayCache:
    """Refuses a second use of the same signature within the signing window.


    A captured mutating request could otherwise be sent again for up to 15 minutes. Clients
    sign with a one-second clock, so an honest client repeating an identical request within
    the same second (a retry, a delete-then-delete-again) produces the same signature: a
    duplicate arriving within `grace_s` of the first sighting is let through as such, later
    ones are replays. A refused first sighting releases its signature (it changed nothing); a
    refused repeat within the grace does not, or an attacker could erase a successful request's
    record by sending it again at once while it fails (a Duplicate, say) and replay it later. Only
    signatures that verified are stored, as 32-byte digests, until their window has passed.
    Keys are Verified.replay_key (what was verified, not how it was written), so a captured
    request rewritten in another form the verifier accepts is still a replay.
    """

    def __init__(self, window_s: float = 900, grace_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._grace = grace_s
        self._clock = clock
        self._seen: dict[bytes, float] = {}   # digest -> first seen; insertion-ordered

    def check(self, replay_key: str) -> bool:
        """Admit a signature, or raise AuthFailure for a replay; True if this is its first sighting
        (the only one `forget` may release)."""
        now = self._clock()
        seen = self._seen
        horizon = now - 2 * self._window     # the window spans both sides of the server's clock
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] > horizon:
                break
            del seen[oldest]
        key = hashlib.sha256(replay_key.encode()).digest()
        first = seen.get(key)
        if first is None:
            seen[key] = now
            return True
        if now - first > self._grace:
            raise AuthError("AuthFailure", "This request was already received (its signature was used "
                            "before); sign each request afresh.", 401)
        return False

    def forget(self, replay_key: str) -> None:
        """Release a signature whose first sighting was refused (it changed nothing)."""
        self._seen.pop(hashlib.sha256(replay_key.encode()).digest(), None)

    def __len__(self) -> int:
        return len(self._seen)
