"""Secrets stay secret: state files and the admin token are 0600 in a 0711 directory, the admin
API is on loopback and wants its token (EC2 keys do not open it), and no secret reaches the log."""
from __future__ import annotations

import base64
import stat
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def test_state_files_private_and_no_secret_in_logs(new_server: Any) -> None:
    srv = new_server()
    user = srv.create_user("secretive")
    ec2 = srv.client(user)
    kp = ec2.create_key_pair(KeyName="k")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    secret_data = "#!/bin/sh\necho s3cr3t-user-data\n"
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, UserData=secret_data)
    srv.admin("POST", "/v0/checkpoint")
    srv.stop()
    assert stat.S_IMODE(srv.state_dir.stat().st_mode) == 0o711
    files = [p for p in srv.state_dir.iterdir() if p.is_file()]
    assert {p.name.split(".")[0] for p in files} >= {"journal", "checkpoint", "admin"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    log = srv.log_path.read_text()
    token = (srv.state_dir / "admin.token").read_text().strip()
    for secret in (user["SecretAccessKey"], token, kp["KeyMaterial"].splitlines()[1],
                   "s3cr3t-user-data", base64.b64encode(secret_data.encode()).decode()):
        assert secret not in log


def test_admin_api_wants_its_token(server: Any, alice: dict[str, str]) -> None:
    from cloudctl.config import load_config
    assert load_config().admin.listen == "127.0.0.1"     # the shipped default: loopback only
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        req = urllib.request.Request(server.admin_url + "/v0/users", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
    # a user's EC2 keys, SigV4-signed as for EC2, do not open the admin API either
    aws = AWSRequest(method="GET", url=server.admin_url + "/v0/users")
    SigV4Auth(Credentials(alice["AccessKeyId"], alice["SecretAccessKey"]), "ec2", "cloudctl-1").add_auth(aws)
    req = urllib.request.Request(server.admin_url + "/v0/users", headers=dict(aws.prepare().headers))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
