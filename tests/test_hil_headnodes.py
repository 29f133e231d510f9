"""Headnodes through the bare-metal API on the test driver: the model's rules, who may touch
what, bad input that changes nothing, and the headnode as an instance boto3 sees. Packets on
a real guest are in tests/e2e/test_headnode.py."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from hil_client import Hil
from support import Server, Servers


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    return server_with(baremetal={"vlans": "1100-1109", "audit_on_start": "off", "headnode_bridge": "br-trunk"})


@pytest.fixture(scope="module")
def site(srv: Server) -> dict[str, Any]:
    admin = Hil(srv.admin_url, token=srv.token)
    for p in ("p1", "p2"):
        admin.ok("PUT", f"/project/{p}")
    for u, p in (("u1", "p1"), ("u2", "p2")):
        admin.ok("PUT", f"/auth/basic/user/{u}", {"password": f"secret-{u}", "is_admin": False})
        admin.ok("POST", f"/auth/basic/user/{u}/add_project", {"project": p})
    u1 = Hil(srv.admin_url, user="u1", password="secret-u1")
    u2 = Hil(srv.admin_url, user="u2", password="secret-u2")
    u1.ok("PUT", "/network/net1", {"owner": "p1", "access": ["p1"], "net_id": ""})
    u2.ok("PUT", "/network/net2", {"owner": "p2", "access": ["p2"], "net_id": ""})
    # the admin makes the project's EC2 user first, so the test holds its keys
    keys = srv.create_user("hil-p1")
    return {"admin": admin, "u1": u1, "u2": u2, "ec2": srv.client(keys)}


def instance(ec2: Any, iid: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def wait_state(ec2: Any, iid: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while instance(ec2, iid)["State"]["Name"] != state:
        assert time.monotonic() < deadline, f"{iid} never became {state}"
        time.sleep(0.1)


def test_headnode_lifecycle(srv: Server, site: dict[str, Any]) -> None:
    u1, admin, ec2 = site["u1"], site["admin"], site["ec2"]
    images = u1.ok("GET", "/headnode_images/")
    assert "cloudctl-blank" in images
    u1.ok("PUT", "/headnode/hn1", {"project": "p1", "base_img": "cloudctl-blank", "user_data": "#!/bin/sh\necho hi\n"})
    for hnic in ("eth0", "eth1"):
        u1.ok("PUT", f"/headnode/hn1/hnic/{hnic}")
    u1.ok("POST", "/headnode/hn1/hnic/eth0/connect_network", {"network": "net1"})
    # another project's network: refused, nothing changes
    status, err = u1.call("POST", "/headnode/hn1/hnic/eth1/connect_network", {"network": "net2"})
    assert (status, err["type"]) == (409, "ProjectMismatchError")
    shown = u1.ok("GET", "/headnode/hn1")
    assert shown["hnics"]["eth0"]["network"] == "net1" and shown["hnics"]["eth1"]["network"] is None
    assert shown["state"] == "defined" and shown["instance_id"] is None
    assert u1.ok("GET", "/project/p1/headnodes") == ["hn1"]

    u1.ok("POST", "/headnode/hn1/start")
    shown = u1.ok("GET", "/headnode/hn1")
    iid = shown["instance_id"]
    assert iid and shown["owner"] == "hil-p1"
    wait_state(ec2, iid, "running")
    inst = instance(ec2, iid)
    blank = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]
    assert inst["ImageId"] == blank["ImageId"]
    # a second start of a running headnode launches nothing more
    u1.ok("POST", "/headnode/hn1/start")
    running = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] != "terminated"]
    assert [i["InstanceId"] for i in running] == [iid]

    # started: its networks are fixed, and the network and project cannot go from under it
    for method, path, body, code, kind in [
        ("POST", "/headnode/hn1/hnic/eth1/connect_network", {"network": "net1"}, 409, "IllegalStateError"),
        ("POST", "/headnode/hn1/hnic/eth0/detach_network", {"network": "net1"}, 409, "IllegalStateError"),
        ("DELETE", "/headnode/hn1/hnic/eth0", None, 409, "IllegalStateError"),
        ("PUT", "/headnode/hn1/hnic/eth2", None, 409, "IllegalStateError"),
        ("DELETE", "/network/net1", None, 409, "BlockedError"),
    ]:
        status, err = u1.call(method, path, body)
        assert (status, err["type"]) == (code, kind), (method, path, err)
    status, err = admin.call("DELETE", "/project/p1")
    assert (status, err["type"]) == (409, "BlockedError")
    assert u1.ok("GET", "/headnode/hn1")["hnics"]["eth0"]["network"] == "net1"

    # stop and start again: the same instance
    u1.ok("POST", "/headnode/hn1/stop")
    wait_state(ec2, iid, "stopped")
    u1.ok("POST", "/headnode/hn1/start")
    wait_state(ec2, iid, "running")
    assert u1.ok("GET", "/headnode/hn1")["instance_id"] == iid

    # delete: the instance goes, then the network can go too
    u1.ok("DELETE", "/headnode/hn1")
    assert u1.call("GET", "/headnode/hn1")[0] == 404
    wait_state(ec2, iid, "terminated")
    assert u1.ok("GET", "/project/p1/headnodes") == []


def test_other_projects_and_bad_input(site: dict[str, Any]) -> None:
    u1, u2 = site["u1"], site["u2"]
    u1.ok("PUT", "/headnode/hn2", {"project": "p1", "base_img": "cloudctl-blank"})
    u1.ok("PUT", "/headnode/hn2/hnic/eth0")
    before = u1.ok("GET", "/headnode/hn2")
    for method, path, body, code, kind in [
        ("GET", "/headnode/hn2", None, 401, "AuthorizationError"),
        ("POST", "/headnode/hn2/start", None, 401, "AuthorizationError"),
        ("DELETE", "/headnode/hn2", None, 401, "AuthorizationError"),
        ("PUT", "/headnode/hn3", {"project": "p1", "base_img": "cloudctl-blank"}, 401, "AuthorizationError"),
        ("GET", "/project/p1/headnodes", None, 401, "AuthorizationError"),
    ]:
        status, err = u2.call(method, path, body)
        assert (status, err["type"]) == (code, kind), (method, path, err)
    for method, path, body, code, kind in [
        ("PUT", "/headnode/hn2", {"project": "p1", "base_img": "cloudctl-blank"}, 409, "DuplicateError"),
        ("PUT", "/headnode/hn4", {"project": "p1", "base_img": "no-such-image"}, 404, "NotFoundError"),
        ("PUT", "/headnode/hn4", {"project": "nope", "base_img": "cloudctl-blank"}, 404, "NotFoundError"),
        ("PUT", "/headnode/hn4", {"project": "p1"}, 400, "ValidationError"),   # base_img missing
        ("PUT", "/headnode/hn4", {"project": "p1", "base_img": "cloudctl-blank", "instance_type": "huge"},
         400, "BadArgumentError"),
        ("PUT", "/headnode/-bad", {"project": "p1", "base_img": "cloudctl-blank"}, 400, "BadArgumentError"),
        ("PUT", "/headnode/hn2/hnic/eth0", None, 409, "DuplicateError"),
        ("POST", "/headnode/hn2/hnic/eth9/connect_network", {"network": "net1"}, 404, "NotFoundError"),
        ("POST", "/headnode/hn2/hnic/eth0/connect_network", {"network": "nope"}, 404, "NotFoundError"),
        ("POST", "/headnode/hn2/hnic/eth0/connect_network", {}, 400, "ValidationError"),
        ("POST", "/headnode/hn2/hnic/eth0/detach_network", {"network": "net1"}, 400, "BadArgumentError"),
        ("POST", "/headnode/hn2/stop", None, 409, "IllegalStateError"),
        ("GET", "/headnode/nope", None, 404, "NotFoundError"),
    ]:
        status, err = u1.call(method, path, body)
        assert (status, err["type"]) == (code, kind), (method, path, err)
    assert u1.ok("GET", "/headnode/hn2") == before
    assert u1.ok("GET", "/project/p1/headnodes") == ["hn2"]
    # a network a headnode (not yet started) is on cannot be deleted either
    u1.ok("POST", "/headnode/hn2/hnic/eth0/connect_network", {"network": "net1"})
    assert u1.call("DELETE", "/network/net1")[0] == 409
    u1.ok("POST", "/headnode/hn2/hnic/eth0/detach_network", {"network": "net1"})
    u1.ok("DELETE", "/headnode/hn2")


def test_cli_and_restart(srv: Server, site: dict[str, Any]) -> None:
    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("headnode", "create", "hn5", "p1", "cloudctl-blank")
    cli("headnode", "add-hnic", "hn5", "eth0")
    cli("headnode", "connect-network", "hn5", "eth0", "net1")
    cli("headnode", "start", "hn5")
    assert cli("headnode", "list", "p1").split() == ["hn5"]
    srv.kill()     # the headnode and its instance are durable
    srv.start()
    u1 = site["u1"]
    shown = u1.ok("GET", "/headnode/hn5")
    assert shown["hnics"]["eth0"]["network"] == "net1" and shown["instance_id"]
    wait_state(site["ec2"], shown["instance_id"], "running")
    cli("headnode", "delete", "hn5")
    assert u1.call("GET", "/headnode/hn5")[0] == 404
