"""Secrets stay secret: state files and the admin token are 0600 in a 0711 directory, the admin
API is on loopback and wants its token (EC2 keys do not open it), no secret reaches the log, and
switch and BMC passwords are sealed in the journal and checkpoints (a real switch CLI from
fake-switches and a real BMC from virtualbmc still work with them after a restart)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloudctl.store.records import BmNode
from cloudctl.store.store import Store

from hil_client import Hil


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


# -- switch and BMC passwords sealed at rest ---------------------------------------------------------

SWITCH_PW = "sw-pw-" + secrets.token_hex(6)
ENABLE_PW = "en-pw-" + secrets.token_hex(6)
BMC_PW = "bmc-pw-" + secrets.token_hex(6)
BM = {"audit_on_start": "off", "attempts": 2, "backoff_s": 30, "command_timeout_s": 20}


@pytest.fixture(scope="module")
def fake_switch() -> Iterator[Any]:
    pytest.importorskip("fake_switches")
    from hil_lab import FakeSwitch
    fs = FakeSwitch("cisco_generic", password=SWITCH_PW)
    try:
        yield fs.start()
    finally:
        fs.stop()


@pytest.fixture(scope="module")
def bmc() -> Iterator[int]:
    """virtualbmc (a BMC speaking IPMI over UDP on loopback) for the test driver's `test` domain;
    the port it answers on, user admin, password BMC_PW."""
    bindir = Path(sys.executable).parent
    if shutil.which("ipmitool") is None or not (bindir / "vbmcd").exists():
        pytest.skip("needs ipmitool and virtualbmc")
    from hil_lab import free_port
    d = Path(tempfile.mkdtemp(prefix="vbmc"))
    (d / "vbmc").mkdir()
    cfg = d / "vbmc.conf"
    cfg.write_text(f"[default]\nconfig_dir = {d}/vbmc\npid_file = {d}/vbmcd.pid\nserver_port = {free_port()}\n"
                   f"[log]\nlogfile = {d}/vbmc.log\n")
    env = {**os.environ, "VIRTUALBMC_CONFIG": str(cfg)}
    vbmcd = subprocess.Popen([str(bindir / "vbmcd"), "--foreground"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    port = free_port()
    try:
        deadline = time.time() + 30
        while True:
            r = subprocess.run([str(bindir / "vbmc"), "add", "test", "--libvirt-uri", "test:///default", "--port",
                                str(port), "--username", "admin", "--password", BMC_PW, "--address", "127.0.0.1"],
                               env=env, capture_output=True, text=True, timeout=60)
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)                      # vbmcd still starting
        assert r.returncode == 0, r.stderr
        subprocess.run([str(bindir / "vbmc"), "start", "test"], env=env, check=True, timeout=60)
        yield port
    finally:
        vbmcd.terminate()
        vbmcd.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def state_bytes(srv: Any) -> bytes:
    files = [p for p in srv.state_dir.iterdir() if p.name.startswith(("journal.", "checkpoint."))]
    assert any(p.name.startswith("checkpoint.") for p in files) and any(p.name.startswith("journal.") for p in files)
    return b"".join(p.read_bytes() for p in files)


def key_file(srv: Any) -> Path:
    return srv.state_dir.with_name(srv.state_dir.name + ".secrets.key")


def start_fails(srv: Any) -> str:
    """Start the server, expect it to refuse; return what it printed this time."""
    before = srv.log_path.read_bytes() if srv.log_path.exists() else b""
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start()
    assert srv.proc.returncode != 0
    return srv.log_path.read_bytes()[len(before):].decode()


@pytest.mark.slow
def test_switch_and_bmc_passwords_are_sealed_at_rest(new_server: Any, fake_switch: Any, bmc: int) -> None:
    srv = new_server(baremetal=BM)
    h = Hil(srv.admin_url, token=srv.token)
    opts = {"hostname": "127.0.0.1", "ssh_port": fake_switch.port, "username": "admin", "password": SWITCH_PW,
            "host_key": fake_switch.host_key}
    h.ok("PUT", "/switch/cat", {"type": "cisco", **opts})
    h.ok("PUT", "/switch/spare", {"type": "cisco", **opts, "ssh_port": 1, "enable_password": ENABLE_PW})
    h.ok("PUT", "/switch/cat/port/FastEthernet0%2F1")
    h.ok("PUT", "/node/bm1", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": bmc, "user": "admin",
                                      "password": BMC_PW}})
    h.ok("PUT", "/node/bm1/nic/eth0", {"macaddr": "52:54:00:00:04:01"})
    h.ok("POST", "/switch/cat/port/FastEthernet0%2F1/connect_nic", {"node": "bm1", "nic": "eth0"})
    h.ok("PUT", "/project/P")
    h.ok("POST", "/project/P/connect_node", {"node": "bm1"})
    h.ok("PUT", "/network/red", {"owner": "P", "access": ["P"]})
    assert h.connect("bm1", "eth0", "red")["status"] == "done"
    assert h.ok("GET", "/node/bm1/power_status") == {"power_status": "on"}
    shown = json.dumps([h.ok("GET", "/switch/cat"), h.ok("GET", "/switch/spare"), h.ok("GET", "/node/bm1")])
    for pw in (SWITCH_PW, ENABLE_PW, BMC_PW):
        assert pw not in shown                   # (the spare's enable password was shown before)

    srv.admin("POST", "/v0/checkpoint")
    raw = state_bytes(srv)
    assert raw.count(b'"sealed"') >= 3           # the rows are there, their passwords sealed
    for pw in (SWITCH_PW, ENABLE_PW, BMC_PW):
        assert pw.encode() not in raw, pw
        assert pw not in srv.log_path.read_text()
    key = key_file(srv)
    assert key.parent != srv.state_dir and stat.S_IMODE(key.stat().st_mode) == 0o600

    # After a restart the passwords open where a driver needs them: the switch and the BMC work.
    srv.stop()
    srv.start()
    assert h.detach("bm1", "eth0", "red")["status"] == "done"
    assert h.ok("GET", "/node/bm1/power_status") == {"power_status": "on"}
    h.ok("POST", "/node/bm1/power_on")

    # A wrong key, a lost one, or one others can read: the controller refuses to start, in one line.
    srv.stop()
    good = key.read_bytes()
    key.write_bytes(base64.urlsafe_b64encode(os.urandom(32)) + b"\n")
    for damage, expect in ((lambda: None, "does not open the passwords sealed in the state"),
                           (key.unlink, "is missing, but the state holds passwords sealed with it"),
                           (lambda: (key.write_bytes(good), key.chmod(0o644)), "is accessible by others"),
                           (lambda: (key.chmod(0o600), key.write_text("not a key\n")), "is not a cloudctl key")):
        damage()
        out = start_fails(srv)
        assert "Traceback" not in out, out
        last = out.strip().splitlines()[-1]
        assert last.startswith(f"cloudctl: secrets key file {key}") and expect in last, last
    key.write_bytes(good)
    srv.start()
    assert h.connect("bm1", "eth0", "red")["status"] == "done"


def test_clear_passwords_of_an_older_cloudctl_are_sealed_at_start(new_server: Any, bmc: int) -> None:
    """A journal written before sealing holds clear passwords: it loads, the passwords still work,
    and after the start no state file holds them any more."""
    srv = new_server(baremetal=BM)
    srv.stop()
    key_file(srv).unlink()                      # as before sealing existed: no key yet

    async def plant() -> None:                  # what an older cloudctl wrote for `PUT /node/old`
        store = Store(srv.state_dir)
        await store.open()
        with store.txn() as tx:
            tx.put(BmNode(name="old", obm={"type": "ipmi", "host": "127.0.0.1", "port": bmc, "user": "admin",
                                            "password": BMC_PW}))
        await store.sync()
        await store.close()
    asyncio.run(plant())
    assert BMC_PW.encode() in state_bytes(srv)
    srv.start()
    h = Hil(srv.admin_url, token=srv.token)
    assert h.ok("GET", "/node/old/power_status") == {"power_status": "on"}
    assert BMC_PW.encode() not in state_bytes(srv)
    assert "sealed the clear passwords of 1" in srv.log_path.read_text()
    srv.stop()
    srv.start()                                 # and it starts again from the sealed state
    assert h.ok("GET", "/node/old/power_status") == {"power_status": "on"}
