"""Native TLS on the EC2, admin, XML-RPC and marketplace listeners, driven by real TLS clients
(boto3 and the AWS CLI with the test CA as their bundle, pyone, the `cloudctl` CLI), and the
start-up refusals of a TLS config that cannot work."""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pyone
import pytest
import yaml
from botocore.config import Config as BotoConfig

from support import REGION, ROOT, aws_cli, write_config
from tls_pki import Pki, TlsServer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, pki: Pki) -> Iterator[TlsServer]:
    """Every listener but metadata on TLS, one certificate shared (the top-level `tls`)."""
    tls = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path)}
    s = TlsServer(write_config(tmp_path_factory.mktemp("tls-server"), model_cache, tls=tls,
                               xmlrpc={}, marketplace={"publish": {"cert": str(pki.carol.cert_path),
                                                                   "key": str(pki.carol.key_path)}}))
    s.start()
    yield s
    s.stop()


def _ec2(server: TlsServer, user: dict[str, str], verify: Any) -> Any:
    return boto3.client("ec2", endpoint_url=server.endpoint, region_name=REGION, verify=verify,
                        aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                        config=BotoConfig(retries={"max_attempts": 1}))


def test_boto3_over_https_trusting_the_ca(tls_server: TlsServer, pki: Pki) -> None:
    assert tls_server.endpoint.startswith("https://127.0.0.1:")
    user = tls_server.create_user("tls-boto")
    ec2 = _ec2(tls_server, user, str(pki.ca.cert_path))
    regions = ec2.describe_regions()["Regions"]
    # the endpoint the cloud writes is the one it serves: https
    assert [r["Endpoint"] for r in regions] == [tls_server.endpoint]
    ec2.create_key_pair(KeyName="over-tls")
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["over-tls"]


def test_a_client_that_does_not_trust_the_ca_is_refused_by_its_own_check(tls_server: TlsServer) -> None:
    user = tls_server.create_user("tls-untrusting")
    with pytest.raises(botocore.exceptions.SSLError):
        _ec2(tls_server, user, True).describe_regions()   # the system's CAs: not ours


def test_plain_http_on_a_tls_listener_gets_no_answer(tls_server: TlsServer) -> None:
    plain = tls_server.endpoint.replace("https://", "http://")
    with pytest.raises((OSError, urllib.error.URLError)):   # (the handshake fails: no HTTP answer)
        urllib.request.urlopen(plain + "/?Action=DescribeRegions", timeout=10).read()


def test_aws_cli_with_ca_bundle(tls_server: TlsServer, pki: Pki) -> None:
    user = tls_server.create_user("tls-cli")
    rc, out, err = aws_cli(tls_server, user, "--ca-bundle", str(pki.ca.cert_path), "ec2", "describe-regions",
                           retries=False)
    assert rc == 0, err
    assert out["Regions"][0]["Endpoint"] == tls_server.endpoint
    rc, out, err = aws_cli(tls_server, user, "ec2", "describe-regions", retries=False)   # without the bundle
    assert rc != 0 and "SSL" in err


def test_pyone_over_https_with_the_ca_bundle(tls_server: TlsServer, pki: Pki) -> None:
    user = tls_server.create_user("tls-one")
    url = tls_server.url("xmlrpc") + "/RPC2"
    assert url.startswith("https://")
    one = pyone.OneServer(url, session=f"tls-one:{user['SecretAccessKey']}", https_verify=str(pki.ca.cert_path))
    assert one.user.info(-1).NAME == "tls-one"
    assert one.system.version()


def test_ec2_only_user_gets_no_xmlrpc_session(tls_server: TlsServer, pki: Pki) -> None:
    user = tls_server.create_user("tls-ec2only")
    tls_server.admin("PATCH", "/v0/users/tls-ec2only", {"ec2_only": True})
    url = tls_server.url("xmlrpc") + "/RPC2"
    one = pyone.OneServer(url, session=f"tls-ec2only:{user['SecretAccessKey']}", https_verify=str(pki.ca.cert_path))
    with pytest.raises(pyone.OneAuthenticationException):
        one.user.info(-1)
    # The same answer through python's own XML-RPC client: OpenNebula's [false, message, 0x100].
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    proxy = xmlrpc.client.ServerProxy(url, context=ctx)
    ok, message, code = proxy.one.user.info(f"tls-ec2only:{user['SecretAccessKey']}", -1)[:3]
    assert (ok, code) == (False, 0x0100) and "couldn't be authenticated" in message
    # ...while EC2 still serves them
    assert _ec2(tls_server, user, str(pki.ca.cert_path)).describe_regions()["Regions"]
    # and the user document says why (OpenNebula's driver name for it)
    assert tls_server.admin("GET", "/v0/users/tls-ec2only")["Ec2Only"] is True
    tls_server.admin("PATCH", "/v0/users/tls-ec2only", {"ec2_only": False})
    assert one.user.info(-1).NAME == "tls-ec2only"


def test_marketplace_urls_are_https_and_served_so(tls_server: TlsServer, pki: Pki) -> None:
    published = tls_server.admin("POST", "/v0/marketplace/publish", {"images": []})
    market = tls_server.url("marketplace")
    assert published["Url"].startswith(market + "/imagelist/")   # what the signed list and the admin show
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    with urllib.request.urlopen(published["Url"], context=ctx, timeout=10) as resp:
        assert b"hv:imagelist" in resp.read()
    with pytest.raises(urllib.error.URLError):   # not trusting the CA: refused by the client's check
        urllib.request.urlopen(published["Url"], timeout=10)


def test_cli_reaches_an_admin_listener_on_tls(tls_server: TlsServer, pki: Pki) -> None:
    assert tls_server.admin_url.startswith("https://")
    tls_server.create_user("tls-cli-user")
    out = subprocess.run([sys.executable, "-m", "cloudctl", "user", "add-dn", "tls-cli-user", "--cert",
                          str(pki.bob.cert_path), "--config", str(tls_server.config_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "/C=ES/O=OpenNebula/CN=BobExample" in out.stdout


# -- configs that cannot work: one line at start, nothing served -----------------------------------

def _start_fails(tmp_path: Path, model_cache: Path, **overrides: Any) -> str:
    cfg = write_config(tmp_path, model_cache, **overrides)
    out = subprocess.run([sys.executable, "-m", "cloudctl", "serve", "--config", str(cfg)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert not (tmp_path / "state" / "ports.json").exists()
    return lines[0]


def test_missing_key_file_is_one_line(tmp_path: Path, model_cache: Path, pki: Pki) -> None:
    line = _start_fails(tmp_path, model_cache, tls={"cert": str(pki.server.cert_path),
                                                    "key": str(tmp_path / "nope.key")})
    assert "tls.key" in line and "nope.key" in line


def test_key_not_matching_certificate_is_one_line(tmp_path: Path, model_cache: Path, pki: Pki) -> None:
    line = _start_fails(tmp_path, model_cache, ec2={"tls": {"cert": str(pki.server.cert_path),
                                                            "key": str(pki.alice.key_path)}})
    assert "ec2.tls" in line and "does not match" in line


def test_client_cert_required_without_ca_is_one_line(tmp_path: Path, model_cache: Path, pki: Pki) -> None:
    line = _start_fails(tmp_path, model_cache, tls={"cert": str(pki.server.cert_path),
                                                    "key": str(pki.server.key_path), "client_cert": "required"})
    assert "client_ca" in line


def test_public_url_is_what_the_cloud_writes(server_with: Any, tmp_path: Path) -> None:
    """Behind a TLS proxy (econe's :ssl_server:): the listener is plain HTTP, the URLs it writes
    (DescribeRegions, CloudFormation's wait-condition signal URL) are the proxy's https ones."""
    public = "https://ec2.cloud.example.org:8443"
    s = server_with(ec2={"public_url": public})
    user = s.create_user("proxied")
    ec2 = s.client(user)
    assert [r["Endpoint"] for r in ec2.describe_regions()["Regions"]] == [public]
    cfn = boto3.client("cloudformation", endpoint_url=s.endpoint, region_name=REGION,
                       aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                       config=BotoConfig(retries={"max_attempts": 1}))
    body = {"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {"Url": {"Value": {"Ref": "Handle"}}}}
    cfn.create_stack(StackName="signal-url", TemplateBody=json.dumps(body))
    cfn.get_waiter("stack_create_complete").wait(StackName="signal-url", WaiterConfig={"Delay": 1})
    outputs = cfn.describe_stacks(StackName="signal-url")["Stacks"][0]["Outputs"]
    assert outputs[0]["OutputValue"].startswith(public + "/cfn-signal/")
    on_disk = yaml.safe_load(s.config_path.read_text())
    assert on_disk["ec2"]["public_url"] == public
