"""econe's x509 login against a served cloudctl: client certificates verified by the EC2 listener's
own TLS (CA directory, CRL) or by a TLS proxy that passes them in a header, and the DNs users hold
(`cloudctl user add-dn`), with real clients: boto3 with a client certificate, signed or not."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import botocore.exceptions
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from cloudctl.api.client_certs import header_cert_dn
from cloudctl.core import x509names

from support import REGION, ROOT, write_config
from tls_pki import Issued, Pki, TlsServer

REFUSED = (botocore.exceptions.SSLError, botocore.exceptions.ConnectionClosedError,
           botocore.exceptions.EndpointConnectionError)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, pki: Pki) -> Iterator[TlsServer]:
    """The EC2 listener on TLS, asking for client certificates of the CA (an IGTF-style directory)
    and checking its CRL; the admin listener plain."""
    tls = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path), "client_ca": str(pki.ca_dir),
           "crl": str(pki.crl_path)}
    s = TlsServer(write_config(tmp_path_factory.mktemp("x509"), model_cache, ec2={"tls": tls}))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def users(srv: TlsServer, pki: Pki) -> dict[str, dict[str, str]]:
    """alice: x509-only, by her certificate; bob: holds his DN (signature still required); carol: no DN;
    mallory: x509-only by the revoked certificate's DN (the CRL alone keeps her out)."""
    out = {n: srv.create_user(n) for n in ("alice", "bob", "carol", "mallory")}
    srv.admin("POST", "/v0/users/alice/dns", {"cert": pki.alice.pem})
    srv.admin("PATCH", "/v0/users/alice", {"x509_only": True})
    srv.admin("POST", "/v0/users/bob/dns", {"dn": pki.bob.cert.subject.rfc4514_string()})
    srv.admin("POST", "/v0/users/mallory/dns", {"cert": pki.revoked.pem})
    srv.admin("PATCH", "/v0/users/mallory", {"x509_only": True})
    return out


def ec2(srv: TlsServer, pki: Pki, user: dict[str, str] | None = None, cert: Issued | None = None) -> Any:
    """boto3 over https trusting the test CA; signed as `user` or unsigned; presenting `cert` or none."""
    cfg: dict[str, Any] = {"retries": {"max_attempts": 1}}
    if cert is not None:
        cfg["client_cert"] = cert.pair
    creds: dict[str, str] = {}
    if user is None:
        cfg["signature_version"] = UNSIGNED
    else:
        creds = {"aws_access_key_id": user["AccessKeyId"], "aws_secret_access_key": user["SecretAccessKey"]}
    return boto3.client("ec2", endpoint_url=srv.endpoint, region_name=REGION, verify=str(pki.ca.cert_path),
                        config=BotoConfig(**cfg), **creds)


def _code(e: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_certificate_alone_logs_in_an_x509_only_user(srv: TlsServer, pki: Pki, users: Any) -> None:
    as_cert = ec2(srv, pki, cert=pki.alice)
    as_cert.create_key_pair(KeyName="by-certificate")
    # the key pair is alice's: her signed client sees it, carol's does not
    signed = ec2(srv, pki, users["alice"], cert=pki.alice)
    assert [k["KeyName"] for k in signed.describe_key_pairs()["KeyPairs"]] == ["by-certificate"]
    with pytest.raises(botocore.exceptions.ClientError) as e:   # her DN is required, signed or not
        ec2(srv, pki, users["alice"]).describe_key_pairs()
    assert _code(e) == "AuthFailure"
    assert ec2(srv, pki, users["carol"]).describe_key_pairs()["KeyPairs"] == []
    assert [k["KeyName"] for k in as_cert.describe_key_pairs()["KeyPairs"]] == ["by-certificate"]


def test_unsigned_without_certificate_is_refused(srv: TlsServer, pki: Pki, users: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2(srv, pki).describe_key_pairs()
    assert _code(e) == "MissingAuthenticationToken"


def test_certificate_of_a_user_not_x509_only_needs_the_signature(srv: TlsServer, pki: Pki, users: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2(srv, pki, cert=pki.bob).describe_key_pairs()   # unsigned: bob is not x509-only
    assert _code(e) == "AuthFailure"
    assert ec2(srv, pki, users["bob"], cert=pki.bob).describe_key_pairs()["KeyPairs"] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:   # bob holds a DN: he must present it
        ec2(srv, pki, users["bob"]).describe_key_pairs()
    assert _code(e) == "AuthFailure"


def test_signing_with_another_users_certificate_is_refused(srv: TlsServer, pki: Pki, users: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2(srv, pki, users["carol"], cert=pki.bob).describe_key_pairs()
    assert _code(e) == "AuthFailure"
    # carol holds no DN: signing alone, or with a certificate of nobody's, is as before
    assert ec2(srv, pki, users["carol"]).describe_key_pairs()["KeyPairs"] == []
    assert ec2(srv, pki, users["carol"], cert=pki.carol).describe_key_pairs()["KeyPairs"] == []


def _raw_answer(srv: TlsServer, pki: Pki, cert: Issued) -> bytes | str:
    """Present `cert` to the EC2 listener and send a request: the answer's first bytes, or the TLS
    error that ended the connection (b"": closed without an answer)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    ctx.load_cert_chain(*cert.pair)
    with socket.create_connection(("127.0.0.1", srv.ports["ec2"]), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /?Action=DescribeRegions HTTP/1.1\r\nHost: x\r\n\r\n")
                return tls.recv(100)   # (TLS 1.3: the server's verdict on the certificate comes after the handshake)
        except (ssl.SSLError, ConnectionResetError) as e:
            return str(e)


def test_a_good_certificate_gets_an_http_answer(srv: TlsServer, pki: Pki) -> None:
    assert _raw_answer(srv, pki, pki.carol).startswith(b"HTTP/1.1 ")   # (the control for the two below)


def test_certificate_from_another_ca_is_refused(srv: TlsServer, pki: Pki, users: Any) -> None:
    # the stranger's certificate names alice's DN: only the handshake's chain check keeps it out
    assert x509names.same(pki.stranger.cert.subject, pki.alice.cert.subject)
    with pytest.raises(REFUSED):
        ec2(srv, pki, cert=pki.stranger).describe_key_pairs()
    answer = _raw_answer(srv, pki, pki.stranger)
    assert answer == b"" or isinstance(answer, str), answer   # the handshake ended it: no HTTP answer


def test_revoked_certificate_is_refused(srv: TlsServer, pki: Pki, users: Any) -> None:
    # mallory is x509-only by the revoked certificate's DN: only the CRL keeps her out
    with pytest.raises(REFUSED):
        ec2(srv, pki, cert=pki.revoked).describe_key_pairs()
    answer = _raw_answer(srv, pki, pki.revoked)
    assert answer == b"" or isinstance(answer, str), answer   # the handshake ended it: no HTTP answer


def test_dns_are_stored_in_econe_form_and_survive_a_crash(srv: TlsServer, pki: Pki, users: Any) -> None:
    alice = srv.admin("GET", "/v0/users/alice")
    assert alice["DNs"] == ["/C=ES/O=OpenNebula/CN=AliceJ\\xC3\\xB6rgExample"] and alice["X509Only"] is True
    assert srv.admin("GET", "/v0/users/bob")["DNs"] == ["/C=ES/O=OpenNebula/CN=BobExample"]
    srv.kill()   # kill -9: the DNs and flags were acknowledged, so journaled
    srv.start()
    assert srv.admin("GET", "/v0/users/alice") == alice
    ec2(srv, pki, cert=pki.alice).describe_key_pairs()


def test_a_dn_is_one_users(srv: TlsServer, pki: Pki, users: Any) -> None:
    # the same name in another spelling (RFC 4514, spaces): still alice's
    with pytest.raises(Exception, match="409"):
        srv.admin("POST", "/v0/users/carol/dns", {"dn": pki.alice.cert.subject.rfc4514_string()})
    assert srv.admin("GET", "/v0/users/carol")["DNs"] == []


def _cli(srv: TlsServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudctl", "user", *args, "--config", str(srv.config_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_add_list_remove_dn(srv: TlsServer, pki: Pki, users: Any) -> None:
    srv.create_user("dave")
    out = _cli(srv, "add-dn", "dave", "/C=ES/O=Open Nebula/CN=Dave Example")
    assert out.returncode == 0, out.stderr
    out = _cli(srv, "add-dn", "dave", "--cert", str(pki.carol.cert_path))
    assert out.returncode == 0, out.stderr
    out = _cli(srv, "set", "dave", "--x509-only", "--ec2-only")
    assert out.returncode == 0, out.stderr
    out = _cli(srv, "list-dn", "dave")
    assert out.stdout.split("\n")[:3] == ["user dave (x509-only, ec2-only)", "  /C=ES/O=OpenNebula/CN=DaveExample",
                                          "  /C=ES/O=OpenNebula/CN=CarolExample"]
    out = _cli(srv, "remove-dn", "dave", "CN=Dave Example,O=Open Nebula,C=ES")   # any spelling of it
    assert out.returncode == 0, out.stderr
    assert srv.admin("GET", "/v0/users/dave")["DNs"] == ["/C=ES/O=OpenNebula/CN=CarolExample"]
    out = _cli(srv, "add-dn", "dave", "not a dn")
    assert out.returncode != 0 and "not a distinguished name" in out.stderr
    out = _cli(srv, "remove-dn", "dave", "/CN=nobody")
    assert out.returncode != 0 and "NoSuchEntity" in out.stderr
    assert srv.admin("GET", "/v0/users/dave")["DNs"] == ["/C=ES/O=OpenNebula/CN=CarolExample"]


# -- behind a TLS proxy: the DN or certificate in a header, believed from the proxy only ----------

@pytest.fixture(scope="module")
def proxied(server_with: Any, pki: Pki) -> tuple[Any, dict[str, str]]:
    s = server_with(x509={"trusted_proxies": ["127.0.0.2"]})
    user = s.create_user("pat")
    s.admin("POST", "/v0/users/pat/dns", {"cert": pki.alice.pem})
    s.admin("PATCH", "/v0/users/pat", {"x509_only": True})
    return s, user


def _post(server: Any, source: str, headers: dict[str, str], **params: str) -> tuple[int, str]:
    """An unsigned EC2 request, as the proxy at `source` forwards it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["ec2"], timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/", body=urlencode({"Version": "2016-11-15", **params}),
                     headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _key_names(server: Any, pki: Pki) -> str:
    """pat's key pairs (the proxied user's), as the proxy asks for them."""
    status, body = _post(server, "127.0.0.2", {"X-SSL-Client-Cert": quote(pki.alice.pem, safe="")},
                         Action="DescribeKeyPairs")
    assert status == 200, body
    return body


def test_dn_header_from_the_proxy_logs_in(proxied: Any, pki: Pki) -> None:
    server, user = proxied
    # as nginx's $ssl_client_s_dn writes it (RFC 2253, non-ASCII bytes escaped)
    dn = "CN=Alice J\\C3\\B6rg Example,O=Open Nebula,C=ES"
    status, body = _post(server, "127.0.0.2", {"SSL_CLIENT_S_DN": dn}, Action="CreateKeyPair", KeyName="via-proxy-dn")
    assert status == 200, body
    assert "via-proxy-dn" in _key_names(server, pki)
    # raw UTF-8 in the header (a proxy that does not escape) is the same name
    status, body = _post(server, "127.0.0.2", {"SSL_CLIENT_S_DN": pki.alice.cert.subject.rfc4514_string()
                                               .encode().decode("latin-1")}, Action="DescribeKeyPairs")
    assert status == 200 and "via-proxy-dn" in body


def test_escaped_certificate_header_from_the_proxy_logs_in(proxied: Any, pki: Pki) -> None:
    server, user = proxied
    escaped = quote(pki.alice.pem, safe="")   # as nginx's $ssl_client_escaped_cert
    status, body = _post(server, "127.0.0.2", {"X-SSL-Client-Cert": escaped},
                         Action="CreateKeyPair", KeyName="via-proxy-cert")
    assert status == 200, body
    assert "via-proxy-cert" in _key_names(server, pki)


def test_headers_from_elsewhere_are_ignored_and_logged(proxied: Any, pki: Pki) -> None:
    server, user = proxied
    for headers in ({"SSL_CLIENT_S_DN": pki.alice.cert.subject.rfc4514_string()},
                    {"X-SSL-Client-Cert": quote(pki.alice.pem, safe="")}):
        status, body = _post(server, "127.0.0.1", headers, Action="CreateKeyPair", KeyName="forged")
        assert status == 401 and "MissingAuthenticationToken" in body
    assert "forged" not in _key_names(server, pki)
    assert "from 127.0.0.1 ignored: not a trusted proxy" in server.log_path.read_text()


# -- DN spellings -------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [
    "/C=ES/O=OpenNebula/CN=AliceJ\\xC3\\xB6rgExample",      # econe (OpenSSL one-line, spaces removed)
    "/C=ES/O=Open Nebula/CN=Alice Jörg Example",           # one-line, raw UTF-8
    "CN=Alice Jörg Example,O=Open Nebula,C=ES",            # RFC 4514 (nginx's $ssl_client_s_dn)
    "CN=Alice J\\C3\\B6rg Example, O=Open Nebula, C=ES",   # RFC 4514 with hex escapes
    "commonName=alice jörg example,organizationName=open nebula,countryName=es",
])
def test_every_spelling_of_a_dn_is_one_name(spelling: str, pki: Pki) -> None:
    assert x509names.same(spelling, pki.alice.cert.subject)
    assert x509names.canonical(spelling).casefold() == x509names.oneline(pki.alice.cert.subject).casefold()
    assert not x509names.same(spelling, pki.bob.cert.subject)


def test_required_client_certificate_and_a_listener_kept_plain(server_with: Any, pki: Pki) -> None:
    """`client_cert: required` on the shared TLS: a client without a certificate gets no answer;
    `admin: {tls: false}` keeps that listener plain HTTP (the CLI presents no certificate)."""
    tls = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path), "client_ca": str(pki.ca.cert_path),
           "client_cert": "required"}
    s = TlsServer(write_config(server_with.base(), server_with.model_cache, tls=tls, admin={"tls": False}))
    server_with.made.append(s)
    s.start()
    assert s.admin_url.startswith("http://") and s.endpoint.startswith("https://")
    user = s.create_user("needs-cert")
    with pytest.raises(REFUSED):
        ec2(s, pki, user).describe_regions()
    assert ec2(s, pki, user, cert=pki.carol).describe_regions()["Regions"]


def test_certificate_header_forms_proxies_send(pki: Pki) -> None:
    pem = pki.alice.pem
    want = x509names.oneline(pki.alice.cert.subject)
    forms = {
        "nginx $ssl_client_escaped_cert": quote(pem, safe=""),
        "nginx $ssl_client_cert (tab-indented lines)": pem.strip().replace("\n", "\n\t"),
        "Apache, newlines as spaces": pem.strip().replace("\n", " "),
    }
    for what, value in forms.items():
        assert header_cert_dn(value) == want, what
    assert header_cert_dn("(null)") is None and header_cert_dn("") is None
    with pytest.raises(ValueError):
        header_cert_dn("-----BEGIN CERTIFICATE-----bm90IGEgY2VydA==-----END CERTIFICATE-----")
