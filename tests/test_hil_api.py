"""The bare-metal API without switch traffic: auth, the model's rules, and bad input that
changes nothing (bodies are checked at the edge as HIL checks them, and every failure is HIL's
`{"type", "msg"}`, which HIL's client reads from any error answer). Switch I/O and packets are
in test_hil_isolation.py."""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudctl.api.hil import HilApi
from cloudctl.core.baremetal.auth import Caller
from cloudctl.core.baremetal.service import Baremetal

from hil_client import Hil, q
from hil_lab import free_port
from support import Server, Servers, write_config

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbE3WpZ0b2pRkQ6V3HcOeX8v0b1y5o3JkVnU1b2c3d4"


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    # A small pool, and a switch nobody listens on, retried slowly: its operations stay pending.
    return server_with(baremetal={"vlans": "1000-1003", "attempts": 3, "backoff_s": 30, "audit_on_start": "off"})


@pytest.fixture(scope="module")
def admin(srv: Server) -> Hil:
    return Hil(srv.admin_url, token=srv.token)


@pytest.fixture(scope="module")
def site(admin: Hil) -> dict[str, Any]:
    """Projects p1, p2; user u1 in p1; nodes n1 (p1), n2 (p2), n3 (free), each with eth0 cabled."""
    for p in ("p1", "p2"):
        admin.ok("PUT", f"/project/{p}")
    admin.ok("PUT", "/auth/basic/user/u1", {"password": "secret-u1", "is_admin": False})
    admin.ok("POST", "/auth/basic/user/u1/add_project", {"project": "p1"})
    admin.ok("PUT", "/switch/sw", {"type": "ovs", "hostname": "127.0.0.1", "ssh_port": free_port(),
                                   "username": "root", "host_key": HOST_KEY, "bridge": "br0"})
    for i in (1, 2, 3):
        admin.ok("PUT", f"/node/n{i}", {"obm": {"type": "ipmi", "host": "127.0.0.1", "port": 6230 + i,
                                                "user": "admin", "password": "pw"}})
        admin.ok("PUT", f"/node/n{i}/nic/eth0", {"macaddr": f"52:54:00:00:00:0{i}"})
        admin.ok("PUT", f"/switch/sw/port/p{i}")
        admin.ok("POST", f"/switch/sw/port/p{i}/connect_nic", {"node": f"n{i}", "nic": "eth0"})
    admin.ok("POST", "/project/p1/connect_node", {"node": "n1"})
    admin.ok("POST", "/project/p2/connect_node", {"node": "n2"})
    return {"u1": Hil(admin.base, user="u1", password="secret-u1")}


def test_authentication_is_required(srv: Server, site: dict[str, Any]) -> None:
    assert Hil(srv.admin_url).call("GET", "/projects")[0] == 401
    status, err = Hil(srv.admin_url, user="u1", password="wrong-password").call("GET", "/project/p1/nodes")
    assert (status, err["type"]) == (401, "AuthorizationError")   # HIL's name for a failed login too
    assert Hil(srv.admin_url, token="not-the-token").call("GET", "/projects")[0] == 401


def test_project_member_touches_only_its_project(admin: Hil, site: dict[str, Any]) -> None:
    u1 = site["u1"]
    assert u1.ok("GET", "/project/p1/nodes") == ["n1"]
    for method, path, body in [("GET", "/project/p2/nodes", None), ("GET", "/node/n2", None),
                               ("PUT", "/project/p3", None), ("GET", "/projects", None),
                               ("POST", "/project/p2/connect_node", {"node": "n3"}),
                               ("POST", "/node/n2/nic/eth0/connect_network", {"network": "x"})]:
        status, err = u1.call(method, path, body)
        assert status == 401, (method, path, status, err)   # HIL's AuthorizationError
        assert err["type"] == "AuthorizationError"
    assert admin.ok("GET", "/projects") == ["p1", "p2"]
    assert admin.ok("GET", "/node/n2")["project"] == "p2"
    assert admin.ok("GET", "/nodes/free") == ["n3"]


def test_networks_from_the_pool_and_external_ids(admin: Hil, site: dict[str, Any]) -> None:
    u1 = site["u1"]
    assert u1.ok("PUT", "/network/p1-net", {"owner": "p1", "access": ["p1"], "net_id": ""}) is None
    a = int(u1.ok("GET", "/networks")["p1-net"]["network_id"])
    assert 1000 <= a <= 1003
    shown = u1.ok("GET", "/network/p1-net")
    assert shown["owner"] == "p1" and shown["access"] == ["p1"] and shown["channels"][1] == f"vlan/{a}"
    # A project may not claim a VLAN outside the pool; the admin may (an external network).
    status, err = u1.call("PUT", "/network/p1-ext", {"owner": "p1", "access": ["p1"], "net_id": "3000"})
    assert (status, err["type"]) == (401, "AuthorizationError")
    assert "p1-ext" not in admin.ok("GET", "/networks")
    admin.ok("PUT", "/network/ext", {"owner": "admin", "access": [], "net_id": "3000"})
    assert admin.ok("GET", "/networks")["ext"] == {"network_id": "3000", "projects": None}
    # Bad VLANs and duplicates.
    for body, code in [({"net_id": "5000"}, 400), ({"net_id": "abc"}, 400), ({"net_id": 3000}, 409)]:
        status, err = admin.call("PUT", "/network/bad", {"owner": "admin", "access": [], **body})
        assert status == code, (body, err)
    assert admin.call("PUT", "/network/p1-net", {"owner": "p1"})[0] == 409
    assert "bad" not in admin.ok("GET", "/networks")
    # u1 sees public networks and its own, not p2's.
    admin.ok("PUT", "/network/p2-net", {"owner": "p2", "access": ["p2"], "net_id": ""})
    assert set(u1.ok("GET", "/networks")) == {"p1-net", "ext"}
    assert u1.call("GET", "/network/p2-net")[0] == 401
    # The pool runs out: 4 VLANs, 2 used; two more, then a clear refusal.
    admin.ok("PUT", "/network/fill1", {"owner": "admin", "access": []})
    admin.ok("PUT", "/network/fill2", {"owner": "admin", "access": []})
    status, err = admin.call("PUT", "/network/fill3", {"owner": "admin", "access": []})
    assert (status, err["type"]) == (409, "BlockedError") and "exhausted" in err["msg"]
    admin.ok("DELETE", "/network/fill2")
    admin.ok("PUT", "/network/fill3", {"owner": "admin", "access": []})
    assert int(admin.ok("GET", "/networks")["fill3"]["network_id"]) in range(1000, 1004)


def test_port_names_with_slashes_are_encoded_and_checked(admin: Hil, site: dict[str, Any]) -> None:
    before = admin.ok("GET", "/switch/sw")["ports"]
    status, err = admin.call("PUT", f"/switch/sw/port/{q('gi1/0/5')}")
    assert (status, err["type"]) == (400, "BadArgumentError")
    assert "gi1/0/5" in err["msg"]           # the name arrived whole, slashes and all
    status, err = admin.call("GET", f"/switch/sw/port/{q('gi1/0/5')}")
    assert (status, err["type"]) == (404, "NotFoundError") and "gi1/0/5" in err["msg"]
    assert admin.ok("GET", "/switch/sw")["ports"] == before


def test_bad_input_changes_nothing(admin: Hil, site: dict[str, Any]) -> None:
    node_before = admin.ok("GET", "/node/n1")
    cases = [
        ("POST", "/switch/sw/port/nope/connect_nic", {"node": "n3", "nic": "eth0"}, 404),
        ("POST", "/switch/sw/port/p1/connect_nic", {"node": "n3", "nic": "eth0"}, 409),
        ("PUT", "/node/n1/nic/eth1", {"macaddr": "not-a-mac"}, 400),
        ("PUT", "/node/bad%20name", {}, 400),
        ("PUT", "/node/n9", {"obm": {"type": "telepathy"}}, 400),
        ("PUT", "/switch/sw2", {"type": "nosuch"}, 400),
        ("PUT", "/switch/sw2", {"type": "ovs", "hostname": "h; rm -rf /", "username": "root",
                                "host_key": HOST_KEY, "bridge": "br0"}, 400),
        ("POST", "/node/n1/nic/eth0/connect_network", {"network": "nope"}, 404),
        ("POST", "/node/n1/nic/eth0/connect_network", {"network": "p1-net", "channel": "vlan/7"}, 400),
        ("POST", "/node/n1/nic/eth9/connect_network", {"network": "p1-net"}, 404),
        ("POST", "/node/n3/nic/eth0/connect_network", {"network": "ext"}, 409),   # n3 is in no project
        ("POST", "/node/n1/nic/eth0/detach_network", {"network": "p1-net"}, 400),  # not attached
        ("POST", "/node/n1/nic/eth0/connect_network", "not an object", 400),
        ("DELETE", "/project/p1", None, 409),
        ("DELETE", "/switch/sw", None, 409),
    ]
    for method, path, body, code in cases:
        status, err = admin.call(method, path, body)
        assert status == code, (method, path, status, err)
        assert set(err) == {"type", "msg"} and err["msg"]
    assert admin.ok("GET", "/node/n1") == node_before
    assert "n9" not in admin.ok("GET", "/nodes/all")
    assert admin.ok("GET", "/switches") == ["sw"]
    # A network of another project without access: ProjectMismatchError; with a grant it is queued.
    status, err = admin.call("POST", "/node/n1/nic/eth0/connect_network", {"network": "p2-net"})
    assert (status, err["type"]) == (409, "ProjectMismatchError")


# -- bodies are checked at the edge, as HIL checks them (before the pending operation below: the
# state digest must stay still while these run) -----------------------------------------------

def state(srv: Server) -> tuple[str, int]:
    """The admin API's digest of every row and its count of committed changes."""
    d = srv.admin("GET", "/v0/state/digest")
    return d["digest"], d["commits"]


def refused(hil: Hil, srv: Server, method: str, path: str, body: Any) -> dict[str, Any]:
    """Send a call that must be refused with 400 ValidationError and leave the state as it was."""
    before = state(srv)
    status, err = hil.call(method, path, body)
    assert (status, err and err.get("type")) == (400, "ValidationError"), (method, path, body, status, err)
    assert set(err) == {"type", "msg"} and err["msg"]
    assert state(srv) == before, (method, path, body)
    return cast(dict[str, Any], err)


# Calls each valid without its extra key (most would change the state), one or more per family.
UNKNOWN_KEYS = [
    ("PUT", "/project/vp", {"description": "x"}, "description"),
    ("PUT", "/project/vp", {"project": "other"}, "project"),        # a path argument repeated in the body
    ("POST", "/project/p1/connect_node", {"node": "n3", "force": True}, "force"),
    ("DELETE", "/project/p2", {"cascade": True}, "cascade"),
    ("PUT", "/node/vn", {"obm": {}, "color": "red"}, "color"),
    ("PUT", "/node/n1/nic/eth9", {"macaddr": "52:54:00:00:00:19", "port": "p9"}, "port"),
    ("DELETE", "/node/n3/nic/eth0", {"now": True}, "now"),
    ("POST", "/node/n1/power_on", {"force": True}, "force"),      # HIL's power_on takes no argument
    ("POST", "/node/n1/nic/eth0/connect_network", {"network": "vnet", "vlan": 1001}, "vlan"),
    ("PUT", "/switch/sw/port/p9", {"speed": "10g"}, "speed"),
    ("POST", "/switch/sw/port/p9/connect_nic", {"node": "n3", "nic": "eth0", "tagged": True}, "tagged"),
    ("POST", "/switches/audit", {"repair": True, "dry_run": True}, "dry_run"),
    ("PUT", "/network/vx", {"owner": "admin", "access": [], "net_id": "", "vlan": 1002}, "vlan"),
    ("PUT", "/network/vnet/access/p2", {"read_only": True}, "read_only"),
    ("PUT", "/auth/basic/user/vu", {"password": "long-enough", "is_admin": False, "email": "a@b"}, "email"),
    ("POST", "/auth/basic/user/u1/add_project", {"project": "p2", "role": "owner"}, "role"),
    ("PATCH", "/auth/basic/user/u1", {"is_admin": True, "expires": 0}, "expires"),
    ("PUT", "/headnode/vh", {"project": "p1", "base_img": "cloudctl-blank", "ram_gb": 4}, "ram_gb"),
    ("PUT", "/headnode/vh/hnic/eth0", {"mac": "52:54:00:00:00:aa"}, "mac"),
]


@pytest.fixture(scope="module")
def vnet(admin: Hil, site: dict[str, Any]) -> str:
    admin.ok("PUT", "/network/vnet", {"owner": "admin", "access": [], "net_id": "3001"})
    return "vnet"


@pytest.mark.parametrize("method,path,body,extra", UNKNOWN_KEYS, ids=[f"{m} {p} {x}" for m, p, _, x in UNKNOWN_KEYS])
def test_unknown_keys_are_refused_and_change_nothing(srv: Server, admin: Hil, vnet: str,
                                                     method: str, path: str, body: dict[str, Any], extra: str) -> None:
    err = refused(admin, srv, method, path, body)
    assert f"unknown argument '{extra}'" in err["msg"], err


def test_a_project_member_gets_the_same_refusal(srv: Server, site: dict[str, Any]) -> None:
    """Checked before the call's permission (as HIL does): a member's bad body is 400 too, and a
    good one reaches the permission check."""
    u1 = site["u1"]
    refused(u1, srv, "POST", "/project/p2/connect_node", {"node": "n3", "extra": 1})
    status, err = u1.call("POST", "/project/p2/connect_node", {"node": "n3"})
    assert (status, err["type"]) == (401, "AuthorizationError")


def test_unknown_switch_options_are_refused_as_hil_does(srv: Server, admin: Hil, site: dict[str, Any]) -> None:
    """HIL's switch_register takes any keys and lets the switch type check them: a bad option of
    a known type is 400 BadArgumentError, and nothing is registered."""
    before = state(srv)
    status, err = admin.call("PUT", "/switch/vsw", {"type": "ovs", "hostname": "127.0.0.1", "username": "root",
                                                    "host_key": "ssh-ed25519 AAAA", "bridge": "br0", "vendor": "x"})
    assert (status, err["type"]) == (400, "BadArgumentError") and "vendor" in err["msg"]
    refused(admin, srv, "PUT", "/switch/vsw", {"hostname": "127.0.0.1"})            # no type
    refused(admin, srv, "PUT", "/switch/vsw", {"type": ["ovs"], "hostname": "x"})   # type not a string
    assert state(srv) == before
    assert "vsw" not in admin.ok("GET", "/switches")


WRONG_TYPES = [
    ("POST", "/project/p1/connect_node", {"node": 3}),
    ("POST", "/project/p1/connect_node", {}),                               # a required argument missing
    ("POST", "/project/p1/connect_node", ["n3"]),                           # not an object
    ("PUT", "/node/vn", {"obm": "ipmi://admin:pw@127.0.0.1"}),
    ("PUT", "/node/n1/nic/eth9", {"macaddr": 0x525400000019}),
    ("POST", "/node/n1/power_cycle", {"force": "yes"}),
    ("PUT", "/node/n1/boot_device", {"bootdev": ["pxe"]}),
    ("POST", "/node/n1/nic/eth0/connect_network", {"network": "vnet", "channel": 1001}),
    ("POST", "/switch/sw/port/p9/connect_nic", {"node": "n3", "nic": None}),
    ("POST", "/switches/audit", {"repair": 1}),
    ("PUT", "/network/vx", {"owner": "admin", "access": [1], "net_id": ""}),
    ("PUT", "/network/vx", {"owner": "admin", "access": [], "net_id": True}),
    ("PUT", "/network/vx", {"owner": "admin", "access": ["p1"] * 1025, "net_id": ""}),   # over the bound
    ("PUT", "/auth/basic/user/vu", {"password": "long-enough", "is_admin": "false"}),
    ("PATCH", "/auth/basic/user/u1", {"is_admin": 1}),
    ("POST", "/auth/basic/user/u1/add_project", {"project": {"name": "p2"}}),
    ("PUT", "/headnode/vh", {"project": ["p1"], "base_img": "cloudctl-blank"}),
    ("POST", "/headnode/vh/hnic/eth0/connect_network", {"network": 7}),
]


@pytest.mark.parametrize("method,path,body", WRONG_TYPES,
                         ids=[f"{m} {p} {json.dumps(b)[:30]}" for m, p, b in WRONG_TYPES])
def test_wrong_types_are_refused_and_change_nothing(srv: Server, admin: Hil, vnet: str,
                                                    method: str, path: str, body: Any) -> None:
    refused(admin, srv, method, path, body)


def _raw(srv: Server, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """A request with a body no JSON library would write (raw socket)."""
    port = int(srv.admin_url.rsplit(":", 1)[1])
    head = (f"{method} /hil/v0{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_part, _, payload = data.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(payload)


@pytest.mark.parametrize("body", [
    b"[" * 30000 + b"]" * 30000,                                    # nesting deeper than any parser's stack
    b'{"project": "p1", "base_img": "cloudctl-blank", "user_data": "\\ud800"}',   # a lone surrogate
    b'{"project": "p1", "base_img": "cloudctl-blank"',              # cut short
    b"\xff\xfe{}",                                                  # not UTF-8
    b"   ",                                                         # only blanks
], ids=["deep", "surrogate", "truncated", "not-utf8", "blank"])
def test_malformed_json_is_a_validation_error(srv: Server, site: dict[str, Any], body: bytes) -> None:
    before = state(srv)
    status, err = _raw(srv, "PUT", "/headnode/vh", body)
    assert (status, err["type"]) == (400, "ValidationError") and set(err) == {"type", "msg"}, err
    assert state(srv) == before


@pytest.mark.parametrize("path", ["/projects", "/node/n1", "/nodes/free", "/switch/sw", "/networks",
                                  "/auth/basic/users", "/headnode_images/", "/node/n1/console",
                                  "/node/n1/console_status", "/project/p1/nodes"])
def test_get_requests_take_no_body(srv: Server, admin: Hil, site: dict[str, Any], path: str) -> None:
    err = refused(admin, srv, "GET", path, {})
    assert "GET" in err["msg"]
    status = admin.text(path)[0] if path.endswith("/console") else admin.call("GET", path)[0]
    assert status == 200   # the same call without its body


@pytest.mark.parametrize("path", ["/projects?all=1", "/node/n1?verbose=yes", "/network/vnet/attachments?projekt=p1",
                                  "/network/vnet/attachments?project=", "/node/n1/console?tail=10"])
def test_get_query_parameters_are_checked(srv: Server, admin: Hil, vnet: str, path: str) -> None:
    """A GET's arguments are its query parameters: one it does not take, or an empty one, is
    refused as HIL refuses them."""
    err = refused(admin, srv, "GET", path, None)
    assert "query parameter" in err["msg"]
    assert admin.call("GET", "/network/vnet/attachments?project=p1")[0] == 200   # the one it takes


def test_bodies_are_optional_where_a_call_takes_none(srv: Server, admin: Hil, site: dict[str, Any]) -> None:
    """No body and `{}` are the same call (HIL's client sends either)."""
    admin.ok("PUT", "/project/empty-a")
    admin.ok("PUT", "/project/empty-b", {})
    assert {"empty-a", "empty-b"} <= set(admin.ok("GET", "/projects"))
    admin.ok("DELETE", "/project/empty-a", {})
    admin.ok("DELETE", "/project/empty-b")


def test_one_pending_operation_per_nic(admin: Hil, site: dict[str, Any]) -> None:
    """The switch is unreachable and retried slowly, so the first operation stays pending."""
    admin.ok("PUT", "/network/p2-net/access/p1")
    first = admin.call("POST", "/node/n1/nic/eth0/connect_network", {"network": "p2-net"})
    assert first[0] == 202
    op = first[1]["status_id"]
    status, err = admin.call("POST", "/node/n1/nic/eth0/connect_network", {"network": "p1-net",
                                                                           "channel": "vlan/1000"})
    assert (status, err["type"]) == (409, "BlockedError") and op in err["msg"]
    st = admin.ok("GET", f"/operation/{op}")
    assert st["status"] == "pending" and st["network"] == "p2-net"
    assert site["u1"].ok("GET", f"/operation/{op}")["status"] == "pending"   # n1 is p1's
    assert admin.ok("GET", "/node/n1")["nics"][0]["networks"] == {}
    # The queue shows in the metrics (no token: Prometheus scrapes it)
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(admin.base.rsplit("/v0", 1)[0] + "/metrics", timeout=10) as resp:
        fams = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    queued = {s.labels["switch"]: s.value for s in fams["cloudctl_switch_operations_pending"].samples}
    failed = {s.labels["switch"]: s.value for s in fams["cloudctl_switch_operation_failures"].samples
              if s.name.endswith("_total")}
    assert queued == {"sw": 1} and failed == {"sw": 0}
    # While an operation is pending, the network and the port cannot go away.
    assert admin.call("DELETE", "/network/p2-net")[0] == 409
    assert admin.call("POST", "/project/p1/detach_node", {"node": "n1"})[0] == 409


def test_null_auth_backend_makes_everyone_admin(new_server: Any) -> None:
    srv = new_server(baremetal={"auth": "null", "audit_on_start": "off"})
    anyone = Hil(srv.admin_url)
    anyone.ok("PUT", "/project/free-for-all")
    assert anyone.ok("GET", "/projects") == ["free-for-all"]


def test_config_refuses_a_vm_network_vlan_inside_the_bare_metal_pool(tmp_path: Path, model_cache: Path) -> None:
    from cloudctl.config import ConfigError, load_config
    net = {"name": "lan", "zone": "cloudctl-1a", "cidr": "10.128.0.0/24", "bridge": "br0",
           "bridge_type": "openvswitch", "vlan": 1005}
    path = write_config(tmp_path, model_cache, subnets={}, networks=[net, {**net, "name": "lan-b", "vlan": None,
                                                                           "zone": "cloudctl-1b",
                                                                           "cidr": "10.129.0.0/24"}])
    with pytest.raises(ConfigError, match="VLAN 1005, which is in baremetal.vlans"):
        load_config(path)


async def test_an_unexpected_exception_is_a_hil_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """A fault no test can provoke through the real core any more (the edge refuses what used to
    reach one): the wrapper every route goes through answers 500 ServerError with a generic
    message, and logs the traceback."""
    api = HilApi(lambda: cast(Baremetal, None), "the-token")   # the bearer token needs no user store

    async def broken(request: web.Request, caller: Caller, body: Any) -> Any:
        raise KeyError("secret-internal-detail")

    async def unserializable(request: web.Request, caller: Caller, body: Any) -> Any:
        return {"answer": {1, 2}}   # a set: JSON has none

    app = web.Application()
    app.router.add_post("/v0/broken", api._wrap(broken, "NodeRef"))
    app.router.add_get("/v0/unserializable", api._wrap(unserializable, None))
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="cloudctl"):
            resp = await client.post("/v0/broken", json={"node": "n1"}, headers={"Authorization": "Bearer the-token"})
            body = await resp.json()
        assert resp.status == 500 and set(body) == {"type", "msg"} and body["type"] == "ServerError"
        assert "secret-internal-detail" not in body["msg"]
        assert any(r.exc_info and "secret-internal-detail" in str(r.exc_info[1]) for r in caplog.records)
        resp = await client.get("/v0/unserializable", headers={"Authorization": "Bearer the-token"})
        assert (resp.status, await resp.json()) == (500, {"type": "ServerError", "msg": body["msg"]})
        # the edge still runs first: a bad body never reaches the handler
        resp = await client.post("/v0/broken", json={"node": 1}, headers={"Authorization": "Bearer the-token"})
        assert (resp.status, (await resp.json())["type"]) == (400, "ValidationError")
