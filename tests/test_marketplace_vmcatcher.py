"""Marketplace as vmcatcher users meet it: certificates and lists made by the `openssl` CLI with
an accented endorser DN, every textual DN form OpenSSL prints, both S/MIME signing forms,
vmcatcher's version order, an incomplete image entry dropped alone, and the publisher's output
(the escaped `hv:dn` vmcatcher compares, no empty `sl:osversion`, StratusLab metadata as XML)."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509

from cloudctl.core import x509_dn_forms
from cloudctl.core.marketplace import imagelist, smime
from cloudctl.core.marketplace.imagelist import compare_versions
from cloudctl.core.marketplace.subscriber import stable_image_id
from cloudctl.core.marketplace.trust import same_dn, slash_dn

from mp_lists import ListServer, image_entry
from support import Server

ENDORSER_SUBJ = "/C=DE/O=Universität Example, e.V./OU=Grid/CN=Jörg Müller+UID=jmueller"   # a two-attribute RDN too
CA_SUBJ = "/C=DE/O=Grid Ümlaut/CN=Ümlaut Test CA"


def openssl(*args: str, cwd: Path, input: bytes | None = None) -> bytes:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=input)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def subject(cert: Path, nameopt: str) -> str:
    """`openssl x509 -subject` in one -nameopt, without its `subject=` label."""
    text = openssl("x509", "-in", str(cert), "-noout", "-subject", "-nameopt", nameopt, cwd=cert.parent)
    return text.decode("utf-8").strip().removeprefix("subject=").strip()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A CA and an endorser with non-ASCII DNs, made by the openssl CLI as a site admin would."""
    d = tmp_path_factory.mktemp("opensslpki")
    (d / "ext.cnf").write_text(
        "[ee]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
        "extendedKeyUsage=emailProtection\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-utf8", "-subj", CA_SUBJ,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)
    openssl("req", "-new", *ec, "-keyout", "endorser.key", "-out", "endorser.csr", "-utf8", "-subj",
            ENDORSER_SUBJ, cwd=d)
    openssl("x509", "-req", "-in", "endorser.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "20", "-extfile", "ext.cnf", "-extensions", "ee", "-out", "endorser.pem", cwd=d)
    trust = d / "trust"
    trust.mkdir()
    (trust / "ca.pem").write_bytes((d / "ca.pem").read_bytes())
    ns = SimpleNamespace(dir=d, trust=trust, cert=d / "endorser.pem", key=d / "endorser.key", ca=d / "ca.pem")
    ns.x509 = x509.load_pem_x509_certificate(ns.cert.read_bytes())
    # What vmcatcher compares hv:dn/hv:ca with: OpenSSL's X509_NAME_oneline (`-nameopt compat`).
    ns.dn, ns.ca_dn = subject(ns.cert, "compat"), subject(ns.ca, "compat")
    return ns


# ---- names, no servers -----------------------------------------------------------------------

def test_every_openssl_dn_form_is_the_same_name(pki: SimpleNamespace) -> None:
    assert pki.dn.startswith("/C=DE/O=Universit\\xC3\\xA4t Example, e.V./OU=Grid/")
    assert "+" in pki.dn and "CN=J\\xC3\\xB6rg M\\xC3\\xBCller" in pki.dn
    assert slash_dn(pki.x509.subject) == pki.dn            # the publisher writes what vmcatcher compares
    forms = {o: subject(pki.cert, o) for o in ("compat", "RFC2253", "oneline", "utf8", "RFC2253,-esc_msb")}
    forms["rfc4514 (cryptography)"] = pki.x509.subject.rfc4514_string()
    forms["raw utf-8 slash"] = ENDORSER_SUBJ
    for form, text in forms.items():
        assert same_dn(text, pki.x509.subject), (form, text)
        assert same_dn(text, pki.dn), (form, text)
    other = pki.dn.replace("J\\xC3\\xB6rg", "J\\xC3\\xB6rn")
    assert not same_dn(other, pki.x509.subject)
    assert not same_dn(pki.dn, slash_dn(x509.load_pem_x509_certificate(pki.ca.read_bytes()).subject))
    with pytest.raises(x509_dn_forms.DnSyntaxError):
        x509_dn_forms.parse("no equals sign here")


# vmcatcher's split_numeric_sort, as a table: each row is older -> newer.
VERSION_ORDER = [
    ("1-2", "1-10"), ("v2", "v10"), ("1.9", "1.10"), ("1.0", "1.0.1"), ("2.0-rc1", "2.0-rc2"),
    ("20240101", "20240102"), ("a", "1"), ("1.a", "1.1"), ("2.0", "2.0-rc1"), ("", "0"),
    ("1.2.3", "1.10.0"), ("image-9", "image-10"),
]
SAME = [("1", "01"), ("1.0", "1.0"), ("v2", "v02")]


@pytest.mark.parametrize(("older", "newer"), VERSION_ORDER)
def test_version_order_is_vmcatchers(older: str, newer: str) -> None:
    assert compare_versions(newer, older) == 1 and compare_versions(older, newer) == -1


@pytest.mark.parametrize(("a", "b"), SAME)
def test_versions_vmcatcher_takes_as_the_same(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0


def _list(pki: SimpleNamespace, ident: str, version: str, images: list[dict[str, Any]],
          dn: str | None = None) -> bytes:
    now = __import__("time").time()
    return imagelist.dump({
        "dc:identifier": ident, "dc:title": "accented list", "dc:description": "", "dc:source": "test",
        "dc:date:created": imagelist.fmt_time(now - 60), "dc:date:expires": imagelist.fmt_time(now + 86400),
        "hv:uri": "http://example.invalid/list", "hv:version": version,
        "hv:endorser": {"hv:x509": {"dc:creator": "Jörg", "hv:email": "joerg@example.org",
                                    "hv:dn": dn or pki.dn, "hv:ca": pki.ca_dn}},
        "hv:images": images})


def openssl_sign(pki: SimpleNamespace, body: bytes, nodetach: bool) -> bytes:
    """The list signed by `openssl smime -sign`, detached (multipart/signed) or opaque (-nodetach)."""
    src = pki.dir / f"body-{uuid.uuid4().hex}.json"
    src.write_bytes(body)
    return openssl("smime", "-sign", *(["-nodetach"] if nodetach else []), "-in", str(src),
                   "-signer", str(pki.cert), "-inkey", str(pki.key), cwd=pki.dir)


@pytest.mark.parametrize("nodetach", [False, True], ids=["detached", "opaque"])
def test_both_openssl_signing_forms_verify(pki: SimpleNamespace, nodetach: bool) -> None:
    body = _list(pki, "x", "1", [])
    signed = openssl_sign(pki, body, nodetach)
    got = smime.verify(signed)
    assert json.loads(got.content) == json.loads(body) and got.signer == pki.x509
    if nodetach:
        # The content is inside the PKCS#7: altering it there breaks the messageDigest.
        head, _, b64 = signed.partition(b"\n\n")
        der = base64.b64decode(b"".join(b64.split()))
        assert b'"accented list"' in der
        bad = head + b"\n\n" + base64.encodebytes(der.replace(b'"accented list"', b'"accentad list"'))
        with pytest.raises(smime.SignatureError):
            smime.verify(bad)


# ---- a subscriber served, lists from the openssl CLI ---------------------------------------------

@pytest.fixture(scope="module")
def subscriber(server_with: Any) -> Server:
    return server_with(marketplace={"poll_tick_s": 0.3})  # type: ignore[no-any-return]


@pytest.fixture
def lists() -> Any:
    ls = ListServer()
    yield ls
    ls.close()


def cli(server: Server, *args: str, ok: bool = True) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), *args],
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode == 0) == ok, out.stderr + out.stdout
    return out.stdout if ok else out.stderr + out.stdout


def poll(server: Server, sub_id: str) -> dict[str, Any]:
    return server.admin("POST", f"/v0/marketplace/subscriptions/{sub_id}/poll")  # type: ignore[no-any-return]


@pytest.mark.parametrize("nodetach", [False, True], ids=["detached", "opaque"])
def test_openssl_signed_list_with_an_accented_dn_is_accepted(subscriber: Server, lists: ListServer,
                                                             pki: SimpleNamespace, nodetach: bool) -> None:
    ident = str(uuid.uuid4())
    img = image_entry(lists, "accented", b"accented image " * 300)
    lists.list_body = openssl_sign(pki, _list(pki, ident, "1-2", [img]), nodetach)
    # --endorser in the escaped oneline form a vmcatcher user copies from `openssl x509 -nameopt compat`
    sub_id = cli(subscriber, "marketplace", "subscribe", f"{lists.url}/list", "--identifier", ident,
                 "--endorser", pki.dn, pki.ca_dn, "--trust", str(pki.trust)).split()[0]
    res = poll(subscriber, sub_id)
    assert (res["accepted"], res["version"]) == (True, "1-2"), res

    # vmcatcher's order: 1-10 is newer than 1-2, 1-9 older than 1-10
    lists.list_body = openssl_sign(pki, _list(pki, ident, "1-10", [img]), nodetach)
    assert poll(subscriber, sub_id)["version"] == "1-10"
    lists.list_body = openssl_sign(pki, _list(pki, ident, "1-9", [img]), nodetach)
    assert poll(subscriber, sub_id)["code"] == "version-older"

    # hv:dn naming someone else is refused even though the signature is good
    lists.list_body = openssl_sign(pki, _list(pki, ident, "1-11", [img],
                                              dn=pki.dn.replace("J\\xC3\\xB6rg", "J\\xC3\\xB6rn")), nodetach)
    assert poll(subscriber, sub_id)["code"] == "signer-mismatch"


def test_endorser_given_in_rfc4514_matches_a_list_in_oneline_form(subscriber: Server, lists: ListServer,
                                                                  pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    lists.list_body = openssl_sign(pki, _list(pki, ident, "v2", []), False)
    sub_id = subscriber.admin("POST", "/v0/marketplace/subscriptions", {
        "url": f"{lists.url}/list", "identifier": ident, "trust": str(pki.trust), "interval_s": 3600,
        "endorsers": [[subject(pki.cert, "RFC2253"), pki.x509.issuer.rfc4514_string()]]})["Id"]
    assert poll(subscriber, sub_id)["accepted"]
    lists.list_body = openssl_sign(pki, _list(pki, ident, "v10", []), False)
    assert poll(subscriber, sub_id)["version"] == "v10"
    # An allow-list DN that is no name at all is refused when given, not silently never matched.
    out = cli(subscriber, "marketplace", "subscribe", f"{lists.url}/list", "--identifier", "other",
              "--endorser", "Jörg Müller", pki.ca_dn, "--trust", str(pki.trust), ok=False)
    assert "endorser DN" in out


def test_an_incomplete_image_entry_is_dropped_alone(subscriber: Server, lists: ListServer,
                                                   pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    good = image_entry(lists, "good", b"good image " * 300)
    no_uri = image_entry(lists, "no-uri", b"x" * 10)
    del no_uri["hv:image"]["hv:uri"]
    no_sum = image_entry(lists, "no-sum", b"y" * 10)
    del no_sum["hv:image"]["sl:checksum:sha512"]
    lists.list_body = openssl_sign(pki, _list(pki, ident, "3", [no_uri, good, no_sum]), False)
    sub_id = cli(subscriber, "marketplace", "subscribe", f"{lists.url}/list", "--identifier", ident,
                 "--endorser", pki.dn, pki.ca_dn, "--trust", str(pki.trust)).split()[0]
    res = poll(subscriber, sub_id)
    assert res["accepted"], res
    assert len(res["dropped"]) == res["dropped_count"] == 2
    assert "hv:images[0]" in res["dropped"][0] and "hv:uri: missing" in res["dropped"][0]
    assert "hv:images[2]" in res["dropped"][1] and "sl:checksum:sha512: missing" in res["dropped"][1]
    sub = next(s for s in subscriber.admin("GET", "/v0/marketplace/subscriptions") if s["Id"] == sub_id)
    assert "1 image(s)" in sub["LastMessage"] and "hv:uri: missing" in sub["LastMessage"]
    events = subscriber.admin("GET", f"/v0/events?kind=marketplace.list&subject={lists.url}/list")
    # (the background tick may have polled this new subscription too: each accepting poll says it again)
    dropped = {e["message"].split("image dropped: ")[1].split(" ")[0] for e in events if e["code"] == "image-fields"}
    assert dropped == {"hv:images[0]", "hv:images[2]"}
    rows = [r for r in subscriber.admin("GET", "/v0/marketplace/status") if r["Subscription"] == sub_id]
    assert [r["Title"] for r in rows] == ["good"]
    out = cli(subscriber, "marketplace", "poll", sub_id)
    assert out.startswith("accepted") and "dropped [image-fields] hv:images[0]" in out
    assert rows[0]["ImageId"] == stable_image_id(ident, good["hv:image"]["dc:identifier"],
                                                 good["hv:image"]["sl:checksum:sha512"])


# ---- the publisher, with the accented certificate ------------------------------------------------

def test_publisher_writes_what_vmcatcher_expects(server_with: Any, subscriber: Server, pki: SimpleNamespace) -> None:
    s = server_with(marketplace={"publish": {"cert": str(pki.cert), "key": str(pki.key),
                                             "email": "joerg@example.org"}})
    blank = next(i for i in s.admin("GET", "/v0/images") if i["Name"] == "cloudctl-blank")
    pub = s.admin("POST", "/v0/marketplace/publish", {"images": [blank["ImageId"]]})
    raw = urllib.request.urlopen(pub["Url"], timeout=10).read()
    f = pki.dir / "published.smime"
    f.write_bytes(raw)
    doc = json.loads(openssl("smime", "-verify", "-in", str(f), "-CAfile", str(pki.ca), cwd=pki.dir))
    x = doc["hv:imagelist"]["hv:endorser"]["hv:x509"]
    assert (x["hv:dn"], x["hv:ca"]) == (pki.dn, pki.ca_dn)     # byte for byte what vmcatcher compares
    entry = doc["hv:imagelist"]["hv:images"][0]["hv:image"]
    assert "sl:osversion" not in entry and entry["sl:os"] == "Linux"
    assert all(v != "" for k, v in entry.items() if k.startswith("sl:"))

    # a subscriber given the same escaped DN accepts it
    sub_id = cli(subscriber, "marketplace", "subscribe", pub["Url"], "--identifier", pub["ListId"],
                 "--endorser", pki.dn, pki.ca_dn, "--trust", str(pki.trust)).split()[0]
    assert poll(subscriber, sub_id)["accepted"]

    # StratusLab metadata: JSON by default, XML when asked, with the image's terms
    base = pub["Url"].split("/imagelist/")[0]
    as_json = json.loads(urllib.request.urlopen(base + "/metadata", timeout=10).read())
    assert len(as_json) == 1
    assert {k: as_json[0][k] for k in ("os", "kind", "hypervisor", "arch")} == {
        "os": "Linux", "kind": "machine", "hypervisor": "kvm", "arch": "x86_64"}
    assert as_json[0]["format"] in ("raw", "qcow2") and as_json[0]["format"] == entry["hv:format"]
    for how in ({"Accept": "application/xml"}, {"Accept": "text/html, application/xml;q=0.9, */*;q=0.8"}, None):
        url = base + "/metadata" + ("?media=xml" if how is None else "")
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=how or {}), timeout=10)
        assert resp.headers["Content-Type"].startswith("application/xml")
        root = ET.fromstring(resp.read())
        ns = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dcterms": "http://purl.org/dc/terms/",
              "slterms": "http://mp.stratuslab.eu/slterms#"}
        desc = root.find("rdf:RDF/rdf:Description", ns)
        assert desc is not None
        assert desc.findtext("slterms:os", None, ns) == "Linux"
        assert desc.findtext("dcterms:type", None, ns) == "machine"
        assert desc.findtext("slterms:hypervisor", None, ns) == "kvm"
        assert desc.findtext("dcterms:format", None, ns) == as_json[0]["format"]
        assert desc.find("slterms:os-version", ns) is None          # unknown: left out, never empty
    assert urllib.request.urlopen(urllib.request.Request(
        base + "/metadata", headers={"Accept": "application/json, application/xml;q=0.5"}),
        timeout=10).headers["Content-Type"].startswith("application/json")
