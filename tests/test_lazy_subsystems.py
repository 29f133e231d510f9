"""Optional subsystems are loaded when configured or first used, not at start (issue 14: base RSS):
cryptography (~7 MiB) with the first key pair or sealed password, XML-RPC's lxml (~5 MiB) and the
marketplace only when their listeners are configured. Seen from outside, in the served process's
memory map: a shared library is there once its module has been imported."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pyone
import pytest
from botocore.config import Config as BotoConfig

from support import REGION

CRYPTOGRAPHY = "cryptography/hazmat/bindings/_rust"
LXML = "lxml/etree"
MARKUPSAFE = "markupsafe/_speedups"   # jinja2's one compiled module


def mapped(server: Any) -> str:
    assert server.proc is not None
    return Path(f"/proc/{server.proc.pid}/maps").read_text()


def ec2(server: Any, user: dict[str, str]) -> Any:
    return boto3.client("ec2", endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                        config=BotoConfig(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def plain(server_with: Any) -> Any:
    return server_with()


def test_cryptography_is_loaded_with_the_first_key_pair(plain: Any) -> None:
    assert CRYPTOGRAPHY not in mapped(plain)
    assert LXML not in mapped(plain)
    client = ec2(plain, plain.create_user("kp-user"))
    made = client.create_key_pair(KeyName="first", KeyType="ed25519")
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert made["KeyFingerprint"]
    assert CRYPTOGRAPHY in mapped(plain)
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["first"]


def test_an_invalid_imported_key_is_refused_after_the_lazy_load(plain: Any) -> None:
    client = ec2(plain, plain.create_user("kp-user2"))
    with pytest.raises(client.exceptions.ClientError) as e:
        client.import_key_pair(KeyName="bad", PublicKeyMaterial=b"ssh-ed25519 AAAA")
    assert e.value.response["Error"]["Code"] == "InvalidKey.Format"


def test_xml_rpc_works_when_configured(server_with: Any) -> None:
    s = server_with(xmlrpc={})
    assert LXML in mapped(s)
    user = s.create_user("one-user")
    one = pyone.OneServer(s.url("xmlrpc") + "/RPC2", session=f"one-user:{user['SecretAccessKey']}")
    names = [i.NAME for i in one.imagepool.info(-2, -1, -1).IMAGE]
    assert "cloudctl-blank" in names


def test_the_console_templates_load_with_the_first_page(plain: Any) -> None:
    import urllib.request
    assert MARKUPSAFE not in mapped(plain)    # the console is on (config/cloudctl.yaml), not yet opened
    with urllib.request.urlopen(plain.url("admin") + "/console/login", timeout=30) as resp:
        assert resp.status == 200 and b"<form" in resp.read()
    assert MARKUPSAFE in mapped(plain)
