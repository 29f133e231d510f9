"""The console's sign-in with an x509 client certificate, where TLS login is configured (docs/tls.md):
the admin listener on TLS asks for client certificates of a CA; a real TLS client presents one.
As with EC2: a verified certificate alone signs in an `x509_only` user; a user who holds DNs and
is not x509-only signs in with access key and secret *and* one of their certificates."""
from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from http.client import HTTPResponse
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import HTTPErrorProcessor, HTTPSHandler, Request, build_opener

import pytest

from support import write_config
from tls_pki import Issued, Pki, TlsServer

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, pki: Pki) -> Iterator[TlsServer]:
    tls = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path), "client_ca": str(pki.ca_dir)}
    s = TlsServer(write_config(tmp_path_factory.mktemp("console-x509"), model_cache, admin={"tls": tls},
                               console={"enabled": True}))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def users(srv: TlsServer, pki: Pki) -> dict[str, dict[str, str]]:
    """alice: x509-only by her certificate; bob: holds his DN, signs in with keys and certificate."""
    out = {n: srv.create_user(n) for n in ("alice", "bob")}
    srv.admin("POST", "/v0/users/alice/dns", {"cert": pki.alice.pem})
    srv.admin("PATCH", "/v0/users/alice", {"x509_only": True})
    srv.admin("POST", "/v0/users/bob/dns", {"cert": pki.bob.pem})
    return out


class _NoRedirect(HTTPErrorProcessor):
    def http_response(self, request: Request, response: HTTPResponse) -> HTTPResponse:
        return response
    https_response = http_response


class Browser:
    """A TLS client with (or without) a client certificate, keeping the console's cookies."""

    def __init__(self, srv: TlsServer, pki: Pki, cert: Issued | None) -> None:
        ctx = ssl.create_default_context(cafile=str(pki.server.cert_path))
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if cert is not None:
            ctx.load_cert_chain(*cert.pair)
        self.opener = build_opener(HTTPSHandler(context=ctx), _NoRedirect())
        self.base = srv.url("admin") + "/console"
        self.cookies: dict[str, str] = {}

    def go(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, Any]:
        req = Request(self.base + path, data=urlencode(form).encode() if form is not None else None,
                      headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())})
        with self.opener.open(req, timeout=30) as resp:
            for c in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = c.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
            return resp.status, resp.read().decode(), resp.headers

    def sign_in(self, **form: str) -> tuple[int, Any]:
        status, page, _ = self.go("/login")
        assert status == 200
        status, _, headers = self.go("/login", {"csrf": _CSRF.search(page).group(1), **form})   # type: ignore[union-attr]
        return status, headers


def test_an_x509_only_user_signs_in_with_the_certificate_alone(srv: TlsServer, pki: Pki, users: Any) -> None:
    b = Browser(srv, pki, pki.alice)
    status, page, _ = b.go("/login")
    assert status == 200 and "Sign in as alice" in page
    status, headers = b.sign_in(kind="certificate")
    assert status == 303 and headers["Location"].endswith("/console/instances")
    status, page, _ = b.go("/instances")
    assert status == 200 and "alice" in page


@pytest.mark.parametrize("who", ["bob", "carol", None])
def test_a_certificate_alone_signs_in_nobody_else(srv: TlsServer, pki: Pki, users: Any, who: str | None) -> None:
    """bob's certificate (his DN, not x509-only), carol's (a DN nobody holds), or none at all."""
    b = Browser(srv, pki, getattr(pki, who) if who else None)
    status, page, _ = b.go("/login")
    assert status == 200 and "Sign in as" not in page
    status, _ = b.sign_in(kind="certificate")
    assert status == 401
    status, _, headers = b.go("/instances")
    assert status in (302, 303) and "/console/login" in headers["Location"]


def test_keys_of_a_user_holding_dns_need_one_of_the_certificates(srv: TlsServer, pki: Pki, users: Any) -> None:
    keys = {"kind": "user", "access_key_id": users["bob"]["AccessKeyId"],
            "secret_access_key": users["bob"]["SecretAccessKey"]}
    assert Browser(srv, pki, None).sign_in(**keys)[0] == 401
    assert Browser(srv, pki, pki.carol).sign_in(**keys)[0] == 401       # a certificate, not one of his
    status, headers = Browser(srv, pki, pki.bob).sign_in(**keys)
    assert status == 303 and headers["Location"].endswith("/console/instances")
