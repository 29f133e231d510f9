"""The Query endpoint: HTTP in, signature check, model-driven parse, action, XML out.

EC2's, and on the same listener every service in `services` (STS, IAM, …; api/service.py): a
SigV4 request goes to the service its credential scope names, and is answered in that service's
format; SigV2 has no scope and is EC2's. Limits, signatures, replay cache and throttle are shared.

A verified client certificate (api/client_certs.py) takes part as core/users.py says: with a
signature it must be one of the signer's (or the signer must hold none and it be nobody's);
unsigned, it logs in an `x509_only` user alone, as econe's x509 auth (EC2's format, like SigV2).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from ...core.cloud import Cloud
from ...core.context import Caller
from ...core.errors import CloudError
from ...core.ids import new_uuid
from ...core.throttle import Throttle, Throttled
from ...store.journal import JournalError
from ..client_certs import ClientCerts
from ..listener import BodyRefused, direct, streamed
from ..service import Service
from ..turns import Turns
from . import form
from .auth import AUTH_PARAMS, AuthError, Prechecked, ReplayCache, SignatureVerifier, Verified
from .logins import claimed_access_key, claimed_service
from .protocol import ParamError, Protocol, is_streamed
from .service import STATUS, Ec2Service

log = logging.getLogger("cloudctl.ec2")

__all__ = ["STATUS", "Ec2Api", "make_verifier"]

_FORM = "application/x-www-form-urlencoded"
# Content-Type headers whose type is _FORM as the request reads it (`content_type`), as clients
# write them: taken as such, without the header's parse (any other spelling is parsed).
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded; charset=utf-8", _FORM})
MAX_BODY = 4 * 1024 * 1024   # a declared length over it refused by the listener, the rest here
SIGNAL_MAX = 64 * 1024       # a wait condition signal (cfn-signal sends a few hundred bytes)
_HASH_ON_LOOP = 256 * 1024   # larger bodies are hashed on a worker thread (~1 ms per MiB)
_READ_PIECE = 64 * 1024      # a body is read, counted and scanned this much per turn of the loop
_NONE: dict[str, str] = {}
_PRESIGNED = frozenset({"X-Amz-Algorithm", "X-Amz-Signature", "X-Amz-Credential"})
# What web.Response(content_type="text/xml", charset="UTF-8") writes, given as is: the
# response copies it without taking the type apart.
_XML = CIMultiDict({hdrs.CONTENT_TYPE: "text/xml; charset=UTF-8"})


class Ec2Api:
    def __init__(self, cloud: Cloud, protocol: Protocol, verifier: SignatureVerifier,
                 answer_slice_items: int = 20, replay_grace_s: float = 2.0,
                 client_timeout_s: float = 60.0, services: Mapping[str, Service] | None = None,
                 certs: ClientCerts | None = None) -> None:
        self.cloud = cloud
        self.certs = certs or ClientCerts(cloud.config.x509)
        self.ec2 = Ec2Service(protocol)
        # by the name a credential scope gives (the verifier accepts no other)
        self.services: dict[str, Service] = {"ec2": self.ec2, **(services or {})}
        self.client_timeout_s = client_timeout_s   # for the body, which the handler reads
        # 0: each answer in one go, unpaced (the comparison point in bench/monitor.py)
        self.slice_items = answer_slice_items or sys.maxsize
        self.turns = Turns() if answer_slice_items else None
        self.protocol = protocol
        self.verifier = verifier
        self.replays = ReplayCache(grace_s=replay_grace_s)
        self.logins = Throttle(cloud.config.login_throttle)   # signature failures, per address and key id
        self.requests: Counter[tuple[str, str]] = Counter()   # (action, outcome) for metrics ("sts:…" for STS)
        self.observe: Callable[[str, str, str, float], None] | None = None   # service, action, outcome, seconds

    def _count(self, svc: Service, action: str, outcome: str, t0: float) -> None:
        self.requests[(action if svc is self.ec2 else f"{svc.name}:{action}", outcome)] += 1
        if self.observe is not None:
            self.observe(svc.name, action, outcome, time.perf_counter() - t0)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        # The body is read here (_read_body), not by the listener: in pieces, each looked at as it
        # arrives and in its own turn of the loop (aiohttp's read() takes all that has arrived,
        # up to 4 MiB, at once).
        for method in ("POST", "GET"):
            streamed(app, app.router.add_route(method, "/{tail:.*}", self.handle), MAX_BODY)
            direct(app, method, self.handle, MAX_BODY)   # (the same, past the router when served)
        # CloudFormation wait condition handles: presigned URLs guests PUT cfn-signal's JSON to.
        app.router.add_route("PUT", "/cfn-signal/{handle}", self.cfn_signal)
        return app

    def _error(self, svc: Service, code: str, message: str, request_id: str, action: str, t0: float,
               status: int | None = None, e: CloudError | None = None) -> web.Response:
        self._count(svc, action, code, t0)
        body, status = svc.error(code, message, request_id, status, e.kind if e is not None else None)
        return web.Response(body=body, status=status, headers=_XML)

    def refuse(self, request: web.Request, e: BodyRefused) -> web.StreamResponse:
        """A body refused by the listener (api/listener.py: too large or too slow), as EC2 says it."""
        return self._error(self.ec2, e.code, e.message, new_uuid(), "-", time.perf_counter())

    async def cfn_signal(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > SIGNAL_MAX:
            return web.Response(status=413, text="too large")
        body = await request.read()   # (at most the app's client_max_size without a length)
        if len(body) > SIGNAL_MAX:
            return web.Response(status=413, text="too large")
        try:
            await self.cloud.cloudformation.signal(request.match_info["handle"],
                                                   request.query.get("Signature", ""), body)
        except CloudError as e:
            return web.Response(status=403 if e.code == "AccessDenied" else 400, text=e.message)
        return web.Response(status=200)

    def _refused(self, held: list[str], resp: web.Response) -> web.Response:
        """A refusal's answer; the replay key it recorded first (`held`), if any, released.
        Refused requests changed nothing: an honest retry (re-signed within the same second, so
        with the same signature) must not be taken for a replay."""
        if held and resp.status >= 300:
            self.replays.forget(held[0])
        return resp

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request, from its headers to its answer. (One coroutine: a request's every resumption
        goes through each coroutine it awaits in.)"""
        held: list[str] = []   # the replay key this request recorded first in the replay cache, if any
        t0 = time.perf_counter()
        request_id = new_uuid()
        action = "-"
        login: tuple[str, str] | None = None   # (key id, address) while its signature is being checked
        pre: Prechecked | None = None          # the credentials' checks that need no body
        svc: Service = self.ec2                # whose format the answer is in: the scope's service
        try:
            # The raw path and query: the signature covers the bytes as sent, before decoding.
            raw_path, _, raw_query = request.raw_path.partition("?")
            source = request.remote or ""
            dn = self.certs.dn(request)   # a verified client certificate's subject, or None
            headers = request.headers
            content = request.content
            got: list[bytes] | None = None   # the body, once read (and the turn taken) by the quick path
            quick: tuple[dict[str, str], Verified] | None = None
            if not raw_query and "Authorization" in headers \
                    and (headers.get(hdrs.CONTENT_TYPE) in _FORM_TYPES or request.content_type == _FORM) \
                    and content.is_eof() and content.total_bytes <= form.STEP_CHARS:
                # The usual request (boto3's, the CLI's): a small form signed in the header, all
                # of it arrived with the headers. Checked in one synchronous go (`_at_once`); what
                # that does not pass goes the general way below, from its start.
                got = self._read_now(content)
                if self.turns is not None and not self.turns.pass_on(request, t0):   # (see below)
                    await self.turns.wait(t0, request)
                quick = self._at_once(request.method, raw_path, headers, source, got)
            if quick is not None:
                params, verified = quick
            else:
                query = _query_params(raw_query)
                if "Authorization" in headers or not _PRESIGNED.isdisjoint(query):
                    # SigV4: the credentials are all in the headers and the query, so their form,
                    # scope, date and key are checked before the body is even looked at.
                    login = (claimed_access_key(headers, query), source)
                    svc = self.services.get(claimed_service(headers, query), self.ec2)
                    if (wait := self.logins.admission(*login)) is not None:
                        await wait
                    pre = self.verifier.precheck(query_string=raw_query, headers=headers, params=query)
                # (a request refused before its body is read: aiohttp drains the body after the answer)
                scan = form.FormScan() if request.content_type == _FORM else None
                if got is None:
                    chunks = await self._read_body(request, scan)
                    if self.turns is not None:
                        # A burst of requests would otherwise all be checked, parsed and run (up to
                        # their handlers' first await) in one turn of the loop: each starts in its own.
                        if not self.turns.pass_on(request, t0):   # (free: taken and passed on, as wait() would)
                            await self.turns.wait(t0, request)
                else:
                    chunks = got
                    if scan is not None:
                        for chunk in chunks:
                            scan.feed(chunk)
                if not chunks:
                    scan = None
                count = form.param_count(raw_query, scan.separators if scan else None)
                if count > form.MAX_PARAMS:
                    raise CloudError("InvalidRequest", f"The request has more than {form.MAX_PARAMS} "
                                     "parameters (query and body together); at most "
                                     f"{form.MAX_PARAMS} are accepted")
                seen = {**query, **scan.auth_fields()} if scan else query
                if dn is not None and pre is None and "Authorization" not in headers \
                        and AUTH_PARAMS.isdisjoint(seen):
                    # Unsigned, with a verified certificate: econe's x509 login, for x509-only users.
                    user = self.cloud.users.certificate_login(dn)
                    if user is None:
                        raise AuthError("AuthFailure", "No user logs in by this client certificate without a "
                                        "signature", 401)
                    params = await _form_params(query, b"".join(chunks) if scan else b"")
                    verified = None
                else:
                    if login is None:
                        login = (claimed_access_key(headers, seen), source)
                        if (wait := self.logins.admission(*login)) is not None:
                            await wait
                    if pre is None:   # (SigV2, or SigV4 fields found only in the body)
                        svc = self.services.get(claimed_service(headers, seen), self.ec2)
                        pre = self.verifier.precheck(query_string=raw_query, headers=headers, params=seen)
                    elif self.verifier.scheme(headers, seen) != pre.scheme:   # (the body's fields too)
                        raise AuthError("IncompleteSignature", "Only one auth mechanism allowed", 400)
                    body = b"".join(chunks)   # (credentials that may be good: worth a look at the body)
                    params, verified = await self._authenticate(request, raw_path, raw_query, pre, query, seen,
                                                                body, body if scan else b"")
                    self.logins.succeeded(*login)
                    login = None
            replay_key: str | None = None
            if verified is not None:
                svc = self.services[verified.service]
                if not svc.ready:   # (a service loaded at its first request: on a worker thread)
                    await svc.prepare()
                user = self.cloud.users.by_access_key(verified.access_key)
                if user is None:  # deleted between the signature check and now
                    raise AuthError("AuthFailure", "AWS was not able to validate the provided access credentials",
                                    401)
                try:
                    self.cloud.users.check_certificate(user, dn)
                except CloudError as e:
                    raise AuthError(e.code, e.message, 401) from None
                replay_key = verified.replay_key
            action = params.pop("Action", "") or "-"
            if action == "-":
                raise CloudError("MissingAction", "The request must contain the parameter Action")
            handler = svc.actions.get(action)
            if handler is None or not svc.protocol.has_operation(action):
                raise svc.unknown_action(action)
            if not action.startswith(svc.read_only) and not params.get("ClientToken"):
                # (a request with a ClientToken is idempotent: its replay returns the first result)
                # Keyed on what was verified: the same signature written another way is a replay.
                if replay_key is not None and self.replays.check(replay_key):   # (a repeat: nothing to release)
                    held.append(replay_key)
            params.pop("Version", None)
            if not AUTH_PARAMS.isdisjoint(params):
                for k in AUTH_PARAMS.intersection(params):
                    del params[k]
            read = self.ec2.forms.get(action) if svc is self.ec2 else None
            flat = None if read is None else read[0](params)
            if flat is None:
                req = svc.protocol.parse(action, params)
                dry_run = bool(req.pop("DryRun", False))
            else:   # (the usual form of an action that reads it at once: registry.FORMS)
                (req, dry_run), handler = flat, read[1]
            caller = Caller(user, dry_run=dry_run)
            if self.turns is not None:   # the core's long reads take turns with the answers' slices
                turns = self.turns
                caller.turn = lambda: turns.turn(t0)
            result = await handler(self.cloud, caller, req)
            turns = self.turns if is_streamed(result) else None   # (small answers: one quick piece)
            # (EC2's answer not streamed: in one piece without serialize_iter's generator, unless
            # a member deeper down is rendered in slices)
            first = self.protocol.serialize_whole(action, result, request_id) \
                if turns is None and svc is self.ec2 else None
            if first is not None:
                second = None
            else:
                pieces = svc.protocol.serialize_iter(action, result, request_id, self.slice_items)
                # (an answer not streamed: its pieces as `_slice` gives them, without its coroutine)
                first = next(pieces, None) if turns is None else await self._slice(pieces, turns, t0, request)
                assert first is not None   # serialize_iter yields at least one piece
                second = None if svc.protocol.is_last(action, first) else \
                    next(pieces, None) if turns is None else await self._slice(pieces, turns, t0)
        except BodyRefused:   # (answered by the listener, which closes the connection)
            if login is not None:
                self.logins.void(*login)
            raise
        except CloudError as e:
            if login is not None:   # refused before its signature was checked (its form: too large, bad UTF-8)
                self.logins.void(*login)
            return self._refused(held, self._error(svc, e.code, e.message, request_id, action, t0, e=e))
        except ParamError as e:
            return self._refused(held, self._error(svc, e.code, e.message, request_id, action, t0))
        except Throttled as e:
            resp = self._error(svc, "RequestLimitExceeded", "Too many failed authentications; retry in "
                               f"{math.ceil(e.retry_after_s)} s.", request_id, action, t0)
            resp.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after_s)))
            return self._refused(held, resp)
        except AuthError as e:
            if login is not None:   # the signature check failed
                (self.logins.failed if e.code == "AuthFailure" else self.logins.void)(*login)
            return self._refused(held, self._error(svc, e.code, e.message, request_id, action, t0, e.status))
        except JournalError as e:
            log.error("request %s (%s): %s", request_id, action, e)
            return self._refused(held, self._error(
                svc, "ServiceUnavailable", "The controller cannot write its journal (disk full or read-only?); "
                "nothing was changed. Retry later.", request_id, action, t0))
        except Exception:
            if login is not None:
                self.logins.void(*login)
            log.exception("request %s (%s) failed", request_id, action)
            return self._refused(held, self._error(svc, "InternalError", "An internal error has occurred.",
                                                   request_id, action, t0))
        except BaseException:   # (cancelled: the client went away before its signature was checked)
            if login is not None:
                self.logins.void(*login)
            raise
        self._count(svc, action, "ok", t0)
        if second is None:
            return web.Response(body=first, headers=_XML)
        return await self._stream(request, first, second, pieces, turns, t0)

    @staticmethod
    def _read_now(content: StreamReader) -> list[bytes]:
        """A body that came whole with the headers, as `_read_body` would return it."""
        try:
            whole = content.read_nowait()
        except ConnectionResetError:
            raise BodyRefused.lost() from None
        return [whole] if whole else []

    def _at_once(self, method: str, raw_path: str, headers: CIMultiDictProxy[str], source: str,
                 chunks: list[bytes]) -> tuple[dict[str, str], Verified] | None:
        """The general path's checks and outcome for a small form signed in the header, without
        a query string, when it passes them: the login throttle admits it at once, its signature
        verifies, its fields parse and name no auth field. None for anything else (nothing is
        changed then: the general path checks it again from the start, and answers)."""
        body = b"".join(chunks)
        if body.count(b"&") >= form.MAX_PARAMS:
            return None
        # (a header written as one that verified before but for its signature: its key id kept)
        head = self.verifier.known_head(headers.get("Authorization") or "")
        admitted = self.logins.at_once(claimed_access_key(headers, _NONE) if head is None else head[0], source)
        if admitted is None:
            return None
        try:
            verified = self.verifier.verify_header(method=method, path=raw_path, headers=headers, body=body,
                                                   head=head)
            params = dict(form.fields(body.decode())) if body else {}
        except (AuthError, UnicodeDecodeError):
            return None
        if not AUTH_PARAMS.isdisjoint(params):
            return None
        self.logins.passed(admitted)
        return params, verified

    async def _read_body(self, request: web.Request, scan: form.FormScan | None) -> list[bytes]:
        """The body's chunks, each fed to `scan` as it arrives (up to the parameter cap: past it
        the rest is only drained, the request is refused anyway); refused past MAX_BODY bytes
        and if the client takes longer than the client timeout to send it."""
        content = request.content
        if content.is_eof() and content.total_bytes <= _READ_PIECE:
            # All of a small body came with the headers (the usual request): nothing to wait
            # for, so no timer to arm, and one piece, as the loop below would read it.
            try:
                whole = content.read_nowait()
            except ConnectionResetError:
                raise BodyRefused.lost() from None
            if not whole:
                return []
            if scan is not None:
                scan.feed(whole)
            return [whole]
        chunks: list[bytes] = []
        size, keep = 0, True
        try:
            async with asyncio.timeout(self.client_timeout_s):
                while chunk := await request.content.read(_READ_PIECE):
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise BodyRefused.too_large(MAX_BODY)
                    if keep:
                        chunks.append(chunk)
                        if scan is not None:
                            scan.feed(chunk)
                            keep = scan.separators < form.MAX_PARAMS
                    if request.content.at_eof():   # (the whole body: no next piece to wait for)
                        break
                    # What has arrived may be the whole body: read() returns at once then, so
                    # each piece gets its own turn of the loop.
                    await asyncio.sleep(0)
        except TimeoutError:
            raise BodyRefused.too_slow() from None
        except ConnectionResetError:   # (aiohttp's "Connection lost" mid-body)
            raise BodyRefused.lost() from None
        return chunks

    async def _authenticate(self, request: web.Request, raw_path: str, raw_query: str, pre: Prechecked,
                            query: dict[str, str], seen: dict[str, str], body: bytes,
                            form_body: bytes) -> tuple[dict[str, str], Verified]:
        """The request's parameters and who signed it. Its fields were counted and the signature's
        scope, date and access key checked from the headers and the auth fields alone (``seen``);
        here a SigV4 signature is verified before the form is parsed (its body hashed off the
        loop), and the form is parsed in steps. SigV2 signs the parsed fields, so its form is
        parsed first, then verified."""
        scheme = pre.scheme
        digest = None
        if scheme != "v2" and len(body) > _HASH_ON_LOOP:   # (hashlib lets go of the GIL)
            digest = await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
        verify = self.verifier.verify
        verified = None if scheme == "v2" else verify(   # SigV4 holds before the form is parsed
            method=request.method, path=raw_path, query_string=raw_query, headers=request.headers, body=body,
            params=seen, body_sha256=digest, prechecked=pre)
        params = _small_form_params(query, form_body) if len(form_body) <= form.STEP_CHARS \
            else await _form_params(query, form_body)
        if verified is None:   # SigV2 signs the parsed fields
            return params, verify(method=request.method, path=raw_path, query_string=raw_query,
                                  headers=request.headers, body=body, params=params, prechecked=pre)
        # SigV4 signs the query and the body's hash, not the fields: what the parsed fields can
        # still change is the scheme (an auth field written with escapes, which the look before
        # parsing did not see), and then only to refuse the request.
        if self.verifier.scheme(request.headers, params) != scheme:
            raise AuthError("IncompleteSignature", "Only one auth mechanism allowed", 400)
        return params, verified

    async def _slice(self, pieces: Iterator[bytes], turns: Turns | None, since: float,
                     token: object = None) -> bytes | None:
        """The answer's next piece (None after the last), rendered in its turn (see Turns);
        `token`: the request, for its first piece (see Turns.pass_on).

        The handler read the answer's state before the first slice (see core.instance_facts),
        so a change made between two slices never shows up in half of the answer.
        """
        if turns is None:
            return next(pieces, None)
        if turns.take_free(token):   # (what `turn` does when the turn is free, without its coroutines)
            try:
                return next(pieces, None)
            finally:
                turns.release()
        async with turns.turn(since):
            return next(pieces, None)

    async def _stream(self, request: web.Request, first: bytes, second: bytes,
                      rest: Iterator[bytes], turns: Turns | None, since: float) -> web.StreamResponse:
        """Send a large answer piece by piece, letting other requests run in between."""
        resp = web.StreamResponse(headers={"Content-Type": "text/xml;charset=UTF-8"})
        await resp.prepare(request)
        await resp.write(first)
        await resp.write(second)
        while (piece := await self._slice(rest, turns, since)) is not None:
            await resp.write(piece)
        await resp.write_eof()
        return resp


async def _form_params(query: dict[str, str], form_body: bytes) -> dict[str, str]:
    """The query's parameters and the form body's, parsed in steps (a turn of the loop each)."""
    if len(form_body) <= form.STEP_CHARS:   # (one step: parse_steps would not yield)
        return _small_form_params(query, form_body)
    params = dict(query)
    if form_body:
        fields: list[tuple[str, str]] = []
        try:
            for _ in form.parse_steps(form_body, fields):
                await asyncio.sleep(0)
        except UnicodeDecodeError:
            raise CloudError("InvalidParameterValue", "The request is not valid UTF-8") from None
        params.update(fields)
    return params


def _small_form_params(query: dict[str, str], form_body: bytes) -> dict[str, str]:
    """`_form_params` for a body of at most one step, without its coroutine and generator."""
    params = dict(query)
    if form_body:
        try:
            params.update(form.fields(form_body.decode()))
        except UnicodeDecodeError:
            raise CloudError("InvalidParameterValue", "The request is not valid UTF-8") from None
    return params


def _query_params(raw_query: str) -> dict[str, str]:
    """The query's parameters (the query is small: the request line is at most 8 KiB)."""
    # Percent-escapes that decode to invalid UTF-8 are refused, not replaced by U+FFFD: a
    # name or tag stored differently from what the client sent would be silent corruption.
    try:
        return dict(form.fields(raw_query))
    except UnicodeDecodeError:
        raise CloudError("InvalidParameterValue", "The request is not valid UTF-8") from None


def make_verifier(cloud: Cloud, services: tuple[str, ...] = ()) -> SignatureVerifier:
    """The verifier for this cloud's keys and region; SigV4 scopes may name EC2 or `services`."""
    return SignatureVerifier(lambda ak: cloud.users.secret_for(ak), region=cloud.config.region,
                             services=("ec2", *services))
