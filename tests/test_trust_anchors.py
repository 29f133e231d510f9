"""The CA bundle left to OpenSSL's hashed directory (cloudctl/trust_anchors.py): what verifies is
unchanged, through the controller's own HTTPS fetch (the image fetcher on aiohttp's default context),
against real TLS servers; an operator's CA file that the directory lacks is read as before."""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from child_imports import loaded_after

from cloudctl.trust_anchors import keep_reason

from tls_pki import Issued, Pki

REPO = Path(__file__).resolve().parent.parent
BODY = b"an image's bytes\n"
openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command names the hashed files")


class _Image(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https() -> Iterator[Callable[[Issued], str]]:
    """Starts an HTTPS server with a certificate, returning its URL; stops them all after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(issued: Issued) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*issued.pair)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Image)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://localhost:{srv.server_address[1]}/image"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _hashed_dir(directory: Path, *cas: Issued) -> Path:
    """A CA directory as `openssl rehash` lays it out: each CA under its subject hash."""
    directory.mkdir()
    for ca in cas:
        h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca.cert_path)],
                           capture_output=True, text=True, check=True).stdout.strip()
        (directory / f"{h}.0").write_text(ca.pem)
    return directory


# In a fresh interpreter (aiohttp builds its context once, at import): as `cloudctl serve` starts,
# then the image fetcher against each URL given; prints what the context held, and each outcome.
CHILD = """
import asyncio, json, os, sys
from pathlib import Path
from cloudctl.trust_anchors import from_directory
with from_directory() as lazy:
    from cloudctl.drivers import fetcher
import aiohttp.connector
ctx = aiohttp.connector._SSL_CONTEXT_VERIFIED
out = {"lazy": lazy, "at_import": ctx.cert_store_stats()["x509_ca"], "env": os.environ.get("SSL_CERT_FILE"),
       "fetched": []}
for i, url in enumerate(sys.argv[1:]):
    dest = Path(os.environ["DEST"]) / f"image{i}"
    try:
        asyncio.run(fetcher.fetch(url, dest, lambda done, total: None))
        out["fetched"].append(dest.read_text())
    except fetcher.FetchError as e:
        out["fetched"].append("refused: " + str(e))
out["after"] = ctx.cert_store_stats()["x509_ca"]
print(json.dumps(out))
"""


def _serve_and_fetch(tmp_path: Path, urls: list[str], cert_file: Path, cert_dir: Path) -> dict[str, object]:
    env = dict(os.environ, SSL_CERT_FILE=str(cert_file), SSL_CERT_DIR=str(cert_dir), DEST=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHILD, *urls], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _trusted_verified_unknown_refused(got: dict[str, object]) -> None:
    """The fetch from the server whose CA is trusted got the image; the one from the stranger was refused."""
    fetched = got["fetched"]
    assert isinstance(fetched, list)
    assert fetched[0] == BODY.decode()                        # the CA in the trust store: verified
    assert fetched[1].startswith("refused") and "certificate verify failed" in fetched[1].lower()


@openssl
def test_a_bundle_the_directory_holds_is_not_parsed_and_verifies_the_same(
        tmp_path: Path, https: Callable[[Issued], str]) -> None:
    pki = Pki(tmp_path / "pki")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pki.ca.pem)
    hashed = _hashed_dir(tmp_path / "certs", pki.ca)
    trusted, unknown = https(pki.server), https(pki.stranger_server)
    got = _serve_and_fetch(tmp_path, [trusted, unknown], bundle, hashed)
    assert got["lazy"] is True and got["at_import"] == 0     # nothing parsed at import
    assert got["env"] == str(bundle)                          # the operator's variable put back
    _trusted_verified_unknown_refused(got)
    assert got["after"] == 1                                  # the anchor read when a chain needed it


@openssl
def test_an_operators_ca_file_the_directory_lacks_is_read_as_before(
        tmp_path: Path, https: Callable[[Issued], str]) -> None:
    pki = Pki(tmp_path / "pki")
    own = tmp_path / "own-ca.pem"
    own.write_text(pki.ca.pem)
    other = Pki(tmp_path / "other")
    hashed = _hashed_dir(tmp_path / "certs", other.ca)         # the system's directory: not the operator's CA
    trusted, unknown = https(pki.server), https(pki.stranger_server)
    got = _serve_and_fetch(tmp_path, [trusted, unknown], own, hashed)
    assert got["lazy"] is False and got["at_import"] == 1
    _trusted_verified_unknown_refused(got)


def test_what_keeps_the_bundle(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    other = Pki(tmp_path / "other")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "0badc0de.0").write_text(pki.ca.pem)             # (the check reads contents; names are OpenSSL's)
    (certs / "0badc0de.r0").write_text(other.ca.pem)          # a CRL's name: not an anchor
    (certs / "readme.pem").write_text(other.ca.pem)           # not a hashed name: OpenSSL never looks it up
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pki.ca.pem)
    assert keep_reason(str(bundle), str(certs)) is None
    bundle.write_text(pki.ca.pem + other.ca.pem)
    assert "1 of the bundle's 2 anchors" in (keep_reason(str(bundle), str(certs)) or "")
    trusted = pki.ca.pem.replace("BEGIN CERTIFICATE", "BEGIN TRUSTED CERTIFICATE").replace(
        "END CERTIFICATE", "END TRUSTED CERTIFICATE")
    bundle.write_text(trusted)
    assert "more than plain certificates" in (keep_reason(str(bundle), str(certs)) or "")
    bundle.write_text(pki.ca.pem + "-----BEGIN CERTIFICATE-----\nnot ended\n")
    assert "more than plain certificates" in (keep_reason(str(bundle), str(certs)) or "")
    bundle.write_text(pki.ca.pem)
    assert keep_reason(str(bundle), f"{certs}:{certs}") == "no CA directory"   # several: left to OpenSSL
    assert keep_reason(None, str(certs)) == "no CA bundle"


def test_aiohttp_is_not_loaded_before_serve_enters_the_block() -> None:
    """`cloudctl serve` imports the server (and aiohttp with it) inside `from_directory`: the CLI's
    imports and the config's validation before it must leave aiohttp unloaded, or its context would be
    built with the bundle already."""
    assert loaded_after("import cloudctl.cli", ("aiohttp",)) == [False]
