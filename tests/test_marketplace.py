"""Marketplace: a cloudctl publishes a signed image list, another subscribes over HTTP, verifies
it in vmcatcher's order, downloads, registers, launches and expires. Certificates are made here."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudctl.core.marketplace import imagelist, smime
from cloudctl.core.marketplace.subscriber import stable_image_id
from cloudctl.core.marketplace.trust import TrustError, TrustStore, normalise_dn, same_dn, slash_dn

from mp_lists import ListServer, image_entry, list_doc, signed
from mp_pki import make_ca, make_crl, make_endorser
from support import Server, Servers, wait_state, wait_until, write_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("Test CA"), make_ca("Other CA")
    ns = SimpleNamespace(dir=d, ca=ca, endorser=make_endorser(ca, "Image Endorser"),
                         stranger=make_endorser(ca, "Stranger"), outsider=make_endorser(other_ca, "Outsider"),
                         revoked=make_endorser(ca, "Revoked Endorser"))
    ns.ca_pem, _ = ca.write(d, "ca")
    ns.endorser_pem, ns.endorser_key = ns.endorser.write(d, "endorser")
    ns.stranger_pem, ns.stranger_key = ns.stranger.write(d, "stranger")
    trust = d / "trust"
    trust.mkdir()
    ca.write(trust, "ca")
    (trust / "ca.key").unlink()
    (trust / "ca.r0").write_bytes(make_crl(ca, [ns.revoked.cert]))
    ns.trust = trust
    ns.allowed = [[slash_dn(ns.endorser.cert.subject), slash_dn(ca.cert.subject)]]
    return ns


def _server(d: Path, model_cache: Path, market: dict[str, Any]) -> Server:
    return Server(write_config(d, model_cache, marketplace={"listen": "127.0.0.1", "port": 0, **market}))


@pytest.fixture(scope="module")
def publisher(server_with: Servers, pki: SimpleNamespace) -> Server:
    return server_with(marketplace={"publish": {
        "cert": str(pki.endorser_pem), "key": str(pki.endorser_key), "email": "images@example.org"}})


@pytest.fixture(scope="module")
def subscriber(server_with: Servers) -> Server:
    return server_with(marketplace={"poll_tick_s": 0.3})


@pytest.fixture(scope="module")
def sub_ec2(subscriber: Server) -> Any:
    return subscriber.client(subscriber.create_user("marketuser"))


@pytest.fixture
def lists() -> Iterator[ListServer]:
    ls = ListServer()
    yield ls
    ls.close()


def admin_error(server: Server, method: str, path: str, body: Any = None) -> dict[str, Any]:
    with pytest.raises(urllib.error.HTTPError) as e:
        server.admin(method, path, body)
    return json.loads(e.value.read())


def subscribe(server: Server, url: str, identifier: str, endorsers: list[list[str]], trust: Path,
              policy: str = "accept") -> str:
    res = server.admin("POST", "/v0/marketplace/subscriptions", {
        "url": url, "identifier": identifier, "endorsers": endorsers, "trust": str(trust), "policy": policy,
        "interval_s": 3600})
    return str(res["Id"])


def poll(server: Server, sub_id: str) -> dict[str, Any]:
    return server.admin("POST", f"/v0/marketplace/subscriptions/{sub_id}/poll")  # type: ignore[no-any-return]


def market_rows(server: Server, sub_id: str) -> dict[str, dict[str, Any]]:
    return {r["ImageId"]: r for r in server.admin("GET", "/v0/marketplace/status") if r["Subscription"] == sub_id}


def wait_market(server: Server, image_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        row = next((r for r in server.admin("GET", "/v0/marketplace/status") if r["ImageId"] == image_id), None)
        if row is not None and row["State"] in states:
            return row
        if time.time() > deadline:
            raise AssertionError(f"{image_id} never reached {states}: {row}")
        time.sleep(0.1)


def sub_of(server: Server, sub_id: str) -> dict[str, Any]:
    return next(s for s in server.admin("GET", "/v0/marketplace/subscriptions") if s["Id"] == sub_id)


def cli(server: Server, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), *args],
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode == 0) == ok, out.stderr + out.stdout
    return out


# ---- signatures and names, no servers -------------------------------------------------------

def test_openssl_accepts_our_signature_and_we_accept_openssl(pki: SimpleNamespace, tmp_path: Path) -> None:
    body = imagelist.dump({"dc:identifier": "x", "note": "line\nbreaks"})
    ours = tmp_path / "ours.smime"
    ours.write_bytes(smime.sign(body, pki.endorser.cert, pki.endorser.key))
    out = subprocess.run(["openssl", "smime", "-verify", "-in", str(ours), "-CAfile", str(pki.ca_pem)],
                         capture_output=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(body)
    # openssl refuses it when the CA is not the one that issued the endorser
    other = tmp_path / "other.pem"
    other.write_bytes(make_ca("Unrelated CA").cert.public_bytes(__import__(
        "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM))
    assert subprocess.run(["openssl", "smime", "-verify", "-in", str(ours), "-CAfile", str(other)],
                          capture_output=True).returncode != 0

    src = tmp_path / "body.json"
    src.write_bytes(body)
    theirs = subprocess.run(["openssl", "smime", "-sign", "-in", str(src), "-signer", str(pki.endorser_pem),
                             "-inkey", str(pki.endorser_key)], capture_output=True, check=True).stdout
    got = smime.verify(theirs)
    assert json.loads(got.content) == json.loads(body)
    assert slash_dn(got.signer.subject) == "/DC=org/DC=example/OU=Cloud/CN=Image Endorser"
    TrustStore.load(pki.trust).check(got.signer, got.certificates, __import__("datetime").datetime.now(
        __import__("datetime").timezone.utc))

    with pytest.raises(smime.SignatureError, match="messageDigest"):
        smime.verify(theirs.replace(b'"x"', b'"y"'))
    with pytest.raises(smime.SignatureError):
        smime.verify(body)


def test_trust_store_keeps_anchors_and_revocations(pki: SimpleNamespace) -> None:
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    ts = TrustStore.load(pki.trust)
    assert ts.check(pki.endorser.cert, [], now)[0] == pki.endorser.cert
    with pytest.raises(TrustError) as e:
        ts.check(pki.revoked.cert, [], now)
    assert e.value.code == "revoked"
    with pytest.raises(TrustError) as e:
        ts.check(pki.outsider.cert, [], now)
    assert e.value.code == "untrusted"
    with pytest.raises(TrustError) as e:
        ts.check(pki.endorser.cert, [], now + dt.timedelta(days=400))
    assert e.value.code == "untrusted"


def test_dn_forms_compare_equal(pki: SimpleNamespace) -> None:
    subject = pki.endorser.cert.subject
    assert same_dn(slash_dn(subject), subject.rfc4514_string())
    assert same_dn("/DC=org/DC=example/OU=Cloud/CN=Image Endorser", "CN=Image Endorser, OU=Cloud,DC=example,DC=org")
    assert not same_dn(slash_dn(subject), slash_dn(pki.stranger.cert.subject))
    assert normalise_dn("/C=DE/emailAddress=a@b")[1] == (("1.2.840.113549.1.9.1", "a@b"),)
    assert normalise_dn("/C=DE/E=a@b") == normalise_dn("emailAddress=A@B,C=de")


# ---- publish on one cloudctl, subscribe from another ------------------------------------------

@pytest.mark.slow
def test_publish_subscribe_launch_deprecate(publisher: Server, subscriber: Server, sub_ec2: Any,
                                            pki: SimpleNamespace) -> None:
    blank = next(i for i in publisher.admin("GET", "/v0/images") if i["Name"] == "cloudctl-blank")
    first = json.loads(cli(publisher, "marketplace", "show", "--json").stdout)
    assert first["Version"] is None
    cli(publisher, "marketplace", "publish", blank["ImageId"])
    pub = publisher.admin("GET", "/v0/marketplace/published")
    assert [i["ImageId"] for i in pub["Images"]] == [blank["ImageId"]]

    raw = urllib.request.urlopen(pub["Url"], timeout=10).read()
    f = publisher.state_dir / "list.smime"
    f.write_bytes(raw)
    out = subprocess.run(["openssl", "smime", "-verify", "-in", str(f), "-CAfile", str(pki.ca_pem)],
                         capture_output=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["hv:imagelist"]
    file_bytes = (publisher.state_dir / "images" / "cloudctl-blank.img").read_bytes()
    entry = doc["hv:images"][0]["hv:image"]
    assert entry["sl:checksum:sha512"] == hashlib.sha512(file_bytes).hexdigest()
    assert entry["hv:size"] == blank["Size"]
    assert doc["hv:endorser"]["hv:x509"]["hv:dn"] == "/DC=org/DC=example/OU=Cloud/CN=Image Endorser"
    assert doc["hv:version"] == pub["Version"]

    sub_id = cli(subscriber, "marketplace", "subscribe", pub["Url"], "--identifier", pub["ListId"],
                 "--endorser", *pki.allowed[0], "--trust", str(pki.trust)).stdout.split()[0]
    assert "accepted" in cli(subscriber, "marketplace", "poll", sub_id).stdout
    ami = stable_image_id(pub["ListId"], entry["dc:identifier"], entry["sl:checksum:sha512"])
    row = wait_market(subscriber, ami, ("available", "failed"))
    assert row["State"] == "available", row
    assert row["Done"] == row["Total"] == blank["Size"]
    assert ami in cli(subscriber, "marketplace", "status").stdout

    img = sub_ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["Name"] == "cloudctl-blank" and img["State"] == "available" and img["Public"]
    tags = {t["Key"]: t["Value"] for t in img["Tags"]}
    assert tags["marketplace:sha512"] == entry["sl:checksum:sha512"]
    assert tags["marketplace:list"] == pub["ListId"] and tags["marketplace:version"] == pub["Version"]
    assert tags["marketplace:endorser"] == pki.allowed[0][0]
    assert img["DeprecationTime"].startswith(doc["dc:date:expires"][:10])
    assert ami in [i["ImageId"] for i in sub_ec2.describe_images()["Images"]]
    iid = sub_ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                InstanceType="t3.nano")["Instances"][0]["InstanceId"]
    assert wait_state(sub_ec2, [iid], "running")[0]["State"]["Name"] == "running"

    # polled again, the publisher answers 304 (ETag); nothing is re-verified or re-downloaded
    assert poll(subscriber, sub_id) == {"accepted": True, "code": "unchanged", "message": f"version {pub['Version']}",
                                        "version": pub["Version"]}
    codes = [e["code"] for e in subscriber.admin("GET", "/v0/events?kind=marketplace&limit=0")]
    for want in ("subscribed", "accepted", "SubscriptionImageNew", "AvailablePrefix", "AvailablePostfix"):
        assert want in codes

    # Deprecation: the publisher signs a newer version without the image; the subscriber expires it.
    cli(publisher, "marketplace", "deprecate", blank["ImageId"], "--reason", "superseded")
    pub2 = publisher.admin("GET", "/v0/marketplace/published")
    assert int(pub2["Version"]) > int(pub["Version"]) and pub2["Images"] == []
    assert pub2["Deprecated"] == [{"ImageId": blank["ImageId"], "Reason": "superseded"}]
    assert poll(subscriber, sub_id)["version"] == pub2["Version"]
    row = wait_market(subscriber, ami, ("expired",))
    assert row["Reason"] == "removed"
    assert ami not in [i["ImageId"] for i in sub_ec2.describe_images()["Images"]]
    shown = sub_ec2.describe_images(IncludeDeprecated=True)["Images"]
    dep = next(i for i in shown if i["ImageId"] == ami)
    assert (dep["State"] == "disabled"
            and dep["DeprecationTime"] <= time.strftime("%Y-%m-%dT%H:%M:%S.999Z", time.gmtime()))
    with pytest.raises(ClientError) as e:
        sub_ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.nano")
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.Unavailable"
    # in use: kept (file and all) until the instance is gone, then deregistered and deleted
    path = subscriber.state_dir / "images" / "marketplace" / f"{entry['sl:checksum:sha512']}.img"
    assert path.exists()
    sub_ec2.terminate_instances(InstanceIds=[iid])
    wait_market(subscriber, ami, ("deregistered",))
    # (the file goes on a worker thread once the deregistration is durable: a moment after)
    wait_until(lambda: not path.exists(), what="the deregistered image's file to be deleted")
    with pytest.raises(ClientError) as e:
        sub_ec2.describe_images(ImageIds=[ami], IncludeDeprecated=True)
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
    codes = [e["code"] for e in subscriber.admin("GET", f"/v0/events?kind=marketplace.image&subject={ami}")]
    assert codes[-2:] == ["ExpirePrefix", "ExpirePostfix"]

    # Re-signing (as before expiry) raises the version again; the publisher serves the image no more.
    cli(publisher, "marketplace", "publish")
    assert int(publisher.admin("GET", "/v0/marketplace/published")["Version"]) > int(pub2["Version"])
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(entry["hv:uri"], timeout=10)
    assert he.value.code == 404


# ---- refusals: each with its reason, nothing registered or replaced ---------------------------

@pytest.fixture
def accepted(subscriber: Server, lists: ListServer, pki: SimpleNamespace) -> SimpleNamespace:
    """A subscription whose version 100 (one image) is accepted and downloaded."""
    ident = str(uuid.uuid4())
    img = image_entry(lists, "base", b"base image " * 1000)
    lists.list_body = signed(list_doc(ident, "100", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    assert wait_market(subscriber, ami, ("available", "failed"))["State"] == "available"
    return SimpleNamespace(ident=ident, img=img, sub=sub_id, ami=ami, url=f"{lists.url}/list")


def _bad_lists(pki: SimpleNamespace, ident: str, images: list[dict[str, Any]]) -> dict[str, tuple[bytes, str]]:
    good = list_doc(ident, "101", pki.endorser, images)
    body = signed(good, pki.endorser)
    return {
        "tampered": (body.replace(b'"hv:version": "101"', b'"hv:version": "109"'), "signature"),
        "unsigned": (imagelist.dump(good), "signature"),
        "wrong-signer": (signed(good, pki.stranger), "signer-mismatch"),
        "not-allowed": (signed(list_doc(ident, "101", pki.stranger, images), pki.stranger), "endorser-not-allowed"),
        "untrusted-ca": (signed(list_doc(ident, "101", pki.outsider, images), pki.outsider), "untrusted"),
        "revoked": (signed(list_doc(ident, "101", pki.revoked, images), pki.revoked), "revoked"),
        "wrong-identifier": (signed(list_doc(str(uuid.uuid4()), "101", pki.endorser, images), pki.endorser),
                             "identifier"),
        "future": (signed(list_doc(ident, "101", pki.endorser, images, created=time.time() + 3600), pki.endorser),
                   "not-yet-valid"),
        "expired": (signed(list_doc(ident, "101", pki.endorser, images, created=time.time() - 7200,
                                    expires=time.time() - 60), pki.endorser), "expired"),
        "older": (signed(list_doc(ident, "99", pki.endorser, images), pki.endorser), "version-older"),
        "same-identifier": (signed(list_doc(ident, "101", pki.endorser, images + [
            {"hv:image": {**images[-1]["hv:image"], "dc:title": "twin"}}]), pki.endorser), "image-fields"),
    }


@pytest.mark.parametrize("case", ["tampered", "unsigned", "wrong-signer", "not-allowed", "untrusted-ca", "revoked",
                                  "wrong-identifier", "future", "expired", "older", "same-identifier"])
def test_bad_list_is_refused_and_changes_nothing(case: str, subscriber: Server, sub_ec2: Any, lists: ListServer,
                                                 pki: SimpleNamespace, accepted: SimpleNamespace) -> None:
    extra = image_entry(lists, "newcomer", b"new image " * 500)
    body, code = _bad_lists(pki, accepted.ident, [accepted.img, extra])[case]
    lists.list_body = body
    before = market_rows(subscriber, accepted.sub)
    res = poll(subscriber, accepted.sub)
    assert (res["accepted"], res["code"]) == (False, code), res
    sub = sub_of(subscriber, accepted.sub)
    assert sub["Version"] == "100" and sub["LastResult"] == code
    assert market_rows(subscriber, accepted.sub) == before
    assert accepted.ami in [i["ImageId"] for i in sub_ec2.describe_images()["Images"]]
    last = subscriber.admin("GET", f"/v0/events?kind=marketplace.list&subject={accepted.url}")[-1]
    assert last["code"] == code and last["message"].startswith("refused")
    # the CLI says refused and fails
    assert f"[{code}]" in cli(subscriber, "marketplace", "poll", accepted.sub, ok=False).stdout


@pytest.mark.parametrize("case", ["sha512", "size"])
def test_image_bytes_must_match_the_list(case: str, subscriber: Server, sub_ec2: Any, lists: ListServer,
                                         pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    data = b"genuine bytes " * 4000
    if case == "sha512":
        img = image_entry(lists, "swapped", data, sha512=hashlib.sha512(b"other").hexdigest())
    else:
        img = image_entry(lists, "swapped", data, size=len(data) - 10,
                          sha512=hashlib.sha512(data[:-10]).hexdigest())
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    row = wait_market(subscriber, ami, ("available", "failed"))
    assert row["State"] == "failed" and row["Reason"].startswith(f"{case}:"), row
    partial = (subscriber.state_dir / "images" / "marketplace" / "partial"
               / f"{img['hv:image']['sl:checksum:sha512']}.part")
    assert not partial.exists()
    with pytest.raises(ClientError) as e:
        sub_ec2.describe_images(ImageIds=[ami])
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
    ev = subscriber.admin("GET", f"/v0/events?kind=marketplace.image&subject={ami}")[-1]
    assert ev["code"] == case


def test_truncated_download_resumes_with_range(subscriber: Server, sub_ec2: Any, lists: ListServer,
                                               pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    data = bytes(range(256)) * 4096      # 1 MiB
    img = image_entry(lists, "big", data)
    lists.truncate_first["big"] = 1
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    row = wait_market(subscriber, ami, ("available", "failed"))
    assert row["State"] == "available", row
    assert lists.ranges == [f"bytes={len(data) // 2}-"]
    stored = subscriber.state_dir / "images" / "marketplace" / f"{img['hv:image']['sl:checksum:sha512']}.img"
    assert stored.read_bytes() == data
    assert sub_ec2.describe_images(ImageIds=[ami])["Images"][0]["State"] == "available"


# ---- policy and expiry --------------------------------------------------------------------------

def test_hold_policy_waits_for_approval(subscriber: Server, lists: ListServer, pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    img = image_entry(lists, "held", b"held image " * 100)
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust, policy="hold")
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    assert market_rows(subscriber, sub_id)[ami]["State"] == "held"
    assert "held" not in str(lists.ranges) and market_rows(subscriber, sub_id)[ami]["Done"] == 0
    assert cli(subscriber, "marketplace", "approve", ami).stdout.split()[0] == ami
    assert wait_market(subscriber, ami, ("available", "failed"))["State"] == "available"
    err = admin_error(subscriber, "POST", f"/v0/marketplace/images/{ami}/approve")
    assert err["error"] == "InvalidParameterValue"


def test_checksum_change_is_a_new_image_and_removal_expires(subscriber: Server, sub_ec2: Any, lists: ListServer,
                                                            pki: SimpleNamespace,
                                                            accepted: SimpleNamespace) -> None:
    changed = image_entry(lists, "base", b"base image v2 " * 1000, identifier=accepted.img["hv:image"]["dc:identifier"])
    lists.list_body = signed(list_doc(accepted.ident, "101", pki.endorser, [changed]), pki.endorser)
    assert poll(subscriber, accepted.sub)["accepted"]
    new_ami = stable_image_id(accepted.ident, changed["hv:image"]["dc:identifier"],
                              changed["hv:image"]["sl:checksum:sha512"])
    assert new_ami != accepted.ami
    assert wait_market(subscriber, accepted.ami, ("expired", "deregistered"))["Reason"] == "checksum-changed"
    assert wait_market(subscriber, new_ami, ("available", "failed"))["State"] == "available"
    listed = [i["ImageId"] for i in sub_ec2.describe_images()["Images"]]
    assert new_ami in listed and accepted.ami not in listed

    lists.list_body = signed(list_doc(accepted.ident, "102", pki.endorser, []), pki.endorser)
    assert poll(subscriber, accepted.sub)["accepted"]
    assert wait_market(subscriber, new_ami, ("deregistered",))["Reason"] == "removed"


def test_endorser_removed_from_allow_list_expires_images(subscriber: Server, sub_ec2: Any,
                                                         accepted: SimpleNamespace, pki: SimpleNamespace) -> None:
    stranger = [[slash_dn(pki.stranger.cert.subject), slash_dn(pki.ca.cert.subject)]]
    cli(subscriber, "marketplace", "endorsers", accepted.sub, "--endorser", *stranger[0])
    row = wait_market(subscriber, accepted.ami, ("deregistered",))
    assert row["Reason"] == "endorser-removed"
    assert accepted.ami not in [i["ImageId"] for i in sub_ec2.describe_images(IncludeDeprecated=True)["Images"]]
    # and the same list is now refused as not allowed
    assert poll(subscriber, accepted.sub)["code"] == "endorser-not-allowed"


@pytest.mark.slow
@pytest.mark.parametrize("what", ["list", "image"])
def test_expiry_of_list_or_image(what: str, subscriber: Server, sub_ec2: Any, lists: ListServer,
                                 pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    soon = time.time() + 4
    extra = {"dc:date:expires": imagelist.fmt_time(soon)} if what == "image" else {}
    img = image_entry(lists, "shortlived", b"short " * 100, **extra)
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img],
                                      expires=soon if what == "list" else None), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    assert wait_market(subscriber, ami, ("available", "failed"))["State"] == "available"
    row = wait_market(subscriber, ami, ("deregistered",), timeout=60)
    assert row["Reason"] == f"{what}-expired"
    assert ami not in [i["ImageId"] for i in sub_ec2.describe_images(IncludeDeprecated=True)["Images"]]
    if what == "list":   # the same, now expired, list is refused; nothing comes back
        assert poll(subscriber, sub_id)["code"] == "expired"
        assert market_rows(subscriber, sub_id)[ami]["State"] == "deregistered"


def test_subscribe_input_is_checked(subscriber: Server, pki: SimpleNamespace, tmp_path: Path) -> None:
    base = {"url": "http://127.0.0.1:1/list", "identifier": "x", "endorsers": pki.allowed, "trust": str(pki.trust)}
    before = subscriber.admin("GET", "/v0/marketplace/subscriptions")
    for bad in ({"url": "file:///etc/passwd"}, {"endorsers": []}, {"policy": "maybe"},
                {"trust": str(tmp_path / "missing.pem")}, {"endorsers": [["only one"]]}):
        err = admin_error(subscriber, "POST", "/v0/marketplace/subscriptions", {**base, **bad})
        assert err["error"] in ("InvalidParameterValue", "MissingParameter"), (bad, err)
    assert subscriber.admin("GET", "/v0/marketplace/subscriptions") == before
    assert admin_error(subscriber, "POST", "/v0/marketplace/subscriptions/sub-0000000000000000a/poll")["error"] \
        == "NoSuchEntity"
    assert admin_error(subscriber, "POST", "/v0/marketplace/publish", {"images": []})["error"] == "InvalidRequest"


def test_free_space_is_checked_before_downloading(subscriber: Server, lists: ListServer,
                                                  pki: SimpleNamespace) -> None:
    ident = str(uuid.uuid4())
    img = image_entry(lists, "huge", b"tiny really", size=10**18)
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(subscriber, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(subscriber, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    row = wait_market(subscriber, ami, ("available", "failed"))
    assert row["State"] == "failed" and row["Reason"].startswith("no-space:"), row
    assert lists.ranges == [] and row["Done"] == 0


@pytest.mark.slow
def test_publisher_resigns_before_expiry(tmp_path: Path, model_cache: Path, pki: SimpleNamespace) -> None:
    """A list valid for 12 s, re-signed when 8 s remain: versions and expiry move on by themselves."""
    s = _server(tmp_path, model_cache, {"publish": {"cert": str(pki.endorser_pem), "key": str(pki.endorser_key),
                                                    "validity_days": 12 / 86400,
                                                    "resign_before_days": 8 / 86400}}).start()
    try:
        blank = next(i for i in s.admin("GET", "/v0/images") if i["Name"] == "cloudctl-blank")
        first = s.admin("POST", "/v0/marketplace/publish", {"images": [blank["ImageId"]]})
        deadline = time.time() + 30
        cur = first
        while cur["Version"] == first["Version"] and time.time() < deadline:
            time.sleep(0.2)
            cur = s.admin("GET", "/v0/marketplace/published")
        assert int(cur["Version"]) > int(first["Version"])
        assert cur["Expires"] > first["Expires"] and cur["Images"] == first["Images"]
        raw = urllib.request.urlopen(cur["Url"], timeout=10).read()
        doc = imagelist.parse(smime.verify(raw).content)
        assert doc.version == cur["Version"]
        err = admin_error(s, "POST", "/v0/marketplace/publish", {"images": ["ami-00000000000000000"]})
        assert err["error"] == "NoSuchEntity"
    finally:
        s.stop()


# ---- StratusLab-style per-image metadata --------------------------------------------------------

def test_stratuslab_identifier_matches_the_reference_vectors() -> None:
    from cloudctl.core.marketplace.stratuslab import identifier_to_sha1, sha1_to_identifier
    assert sha1_to_identifier("1104f3e30c030f8b93f220b04131032dddf51f21") == "BEE8-MMAw-Lk_IgsEExAy3d9R8h"
    one_mib = hashlib.sha1(bytes(1 << 20)).hexdigest()
    assert sha1_to_identifier(one_mib) == "Dtx9D_zD0sVtc2F3Z6V68foTrWj"
    assert identifier_to_sha1("Dtx9D_zD0sVtc2F3Z6V68foTrWj") == one_mib


def test_stratuslab_metadata_latest_entry_wins(tmp_path: Path, model_cache: Path, pki: SimpleNamespace) -> None:
    from cloudctl.core.marketplace.stratuslab import sha1_to_identifier
    s = _server(tmp_path, model_cache, {"publish": {"cert": str(pki.endorser_pem), "key": str(pki.endorser_key),
                                                    "email": "images@example.org"}}).start()
    try:
        blank = next(i for i in s.admin("GET", "/v0/images") if i["Name"] == "cloudctl-blank")
        pub = s.admin("POST", "/v0/marketplace/publish", {"images": [blank["ImageId"]]})
        base = pub["Url"].split("/imagelist/")[0]
        ident = sha1_to_identifier(
            hashlib.sha1((s.state_dir / "images" / "cloudctl-blank.img").read_bytes()).hexdigest())

        def get(path: str) -> Any:
            return json.loads(urllib.request.urlopen(base + path, timeout=10).read())

        valid = get(f"/metadata/{ident}")
        assert [(e["identifier"], e["email"], e["status"]) for e in valid] == [(ident, "images@example.org", "valid")]
        raw = urllib.request.urlopen(valid[0]["url"], timeout=10).read()
        f = tmp_path / "entry.smime"
        f.write_bytes(raw)
        out = subprocess.run(["openssl", "smime", "-verify", "-in", str(f), "-CAfile", str(pki.ca_pem)],
                             capture_output=True)
        assert out.returncode == 0, out.stderr
        assert f"<dcterms:identifier>{ident}</dcterms:identifier>".encode() in out.stdout
        assert pub["Images"][0]["Sha512"].encode() in out.stdout

        s.admin("POST", "/v0/marketplace/deprecate", {"image": blank["ImageId"], "reason": "old kernel"})
        assert get(f"/metadata/{ident}") == []                       # the latest entry is deprecated
        dep = get(f"/metadata/{ident}/images@example.org?status=deprecated")
        assert len(dep) == 1 and dep[0]["deprecated"] == "old kernel" and dep[0]["created"] > valid[0]["created"]
        assert get("/metadata?status=expired") == []
        history = get(f"/metadata?identifier={ident}&status=all&created={valid[0]['created']}")
        assert [e["deprecated"] for e in history] == [None]          # the older entry, by its date
        assert get("/metadata?email=nobody@example.org&status=all") == []
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/metadata?status=bogus", timeout=10)
        assert e.value.code == 400
    finally:
        s.stop()


def test_download_survives_a_crash_and_resumes_from_the_partial_file(new_server: Any, lists: ListServer,
                                                                     pki: SimpleNamespace) -> None:
    s = new_server(marketplace={"listen": "127.0.0.1", "port": 0})   # bound by the server: no port race
    ident = str(uuid.uuid4())
    data = bytes(range(256)) * 4096
    img = image_entry(lists, "crashy", data)
    lists.truncate_first["crashy"] = 1000          # every transfer is cut short until the crash
    lists.list_body = signed(list_doc(ident, "1", pki.endorser, [img]), pki.endorser)
    sub_id = subscribe(s, f"{lists.url}/list", ident, pki.allowed, pki.trust)
    assert poll(s, sub_id)["accepted"]
    ami = stable_image_id(ident, img["hv:image"]["dc:identifier"], img["hv:image"]["sl:checksum:sha512"])
    part = s.state_dir / "images" / "marketplace" / "partial" / f"{img['hv:image']['sl:checksum:sha512']}.part"
    deadline = time.time() + 30
    while not (part.exists() and part.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.05)
    s.kill()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    seen = len(lists.ranges)
    lists.truncate_first["crashy"] = 0
    s.start()
    assert wait_market(s, ami, ("available", "failed"))["State"] == "available"
    assert f"bytes={kept}-" in lists.ranges[seen:]   # resumed where the crashed process stopped
    assert (s.state_dir / "images" / "marketplace"
            / f"{img['hv:image']['sl:checksum:sha512']}.img").read_bytes() == data
    assert sub_of(s, sub_id)["Version"] == "1"


def test_unsubscribing_expires_and_relisting_restores(subscriber: Server, sub_ec2: Any, lists: ListServer,
                                                      pki: SimpleNamespace, accepted: SimpleNamespace) -> None:
    # removed from the list while an instance runs it: expired, kept; listed again: launchable again
    iid = sub_ec2.run_instances(ImageId=accepted.ami, MinCount=1, MaxCount=1,
                                InstanceType="t3.nano")["Instances"][0]["InstanceId"]
    lists.list_body = signed(list_doc(accepted.ident, "101", pki.endorser, []), pki.endorser)
    assert poll(subscriber, accepted.sub)["accepted"]
    assert wait_market(subscriber, accepted.ami, ("expired",))["Reason"] == "removed"
    lists.list_body = signed(list_doc(accepted.ident, "102", pki.endorser, [accepted.img]), pki.endorser)
    assert poll(subscriber, accepted.sub)["accepted"]
    assert wait_market(subscriber, accepted.ami, ("available",))["Reason"] == ""
    again = sub_ec2.run_instances(ImageId=accepted.ami, MinCount=1, MaxCount=1,
                                  InstanceType="t3.nano")["Instances"][0]["InstanceId"]
    sub_ec2.terminate_instances(InstanceIds=[iid, again])
    wait_state(sub_ec2, [iid, again], "terminated")

    cli(subscriber, "marketplace", "remove", accepted.sub)
    assert accepted.sub not in [s["Id"] for s in subscriber.admin("GET", "/v0/marketplace/subscriptions")]
    row = wait_market(subscriber, accepted.ami, ("deregistered",))
    assert row["Reason"] == "unsubscribed"
    with pytest.raises(ClientError):
        sub_ec2.describe_images(ImageIds=[accepted.ami])
