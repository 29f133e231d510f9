"""HIL's REST API as HIL documents it (docs/rest_api.md) and as its api.py answers: paths under
the base URL, bodies, status codes, error types and the keys of each answer. Written from HIL's
side: every call here is one HIL's client library or CLI makes (hil/client, hil/cli), with the
body it sends, and each check is what that client reads back. Switch traffic is out of scope
(the switch here answers nobody, so operations stay pending or fail); test_hil_api.py has the
model's rules and the edge's refusals."""
from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudctl.drivers.switch.base import driver_class

from hil_client import Hil, q
from hil_lab import free_port
from support import Server, Servers

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbE3WpZ0b2pRkQ6V3HcOeX8v0b1y5o3JkVnU1b2c3d4"
NEXUS = "http://schema.massopencloud.org/haas/v0/switches/nexus"
POWERCONNECT = "http://schema.massopencloud.org/haas/v0/switches/powerconnect55xx"
DELLNOS9 = "http://schema.massopencloud.org/haas/v0/switches/dellnos9"
BROCADE = "http://schema.massopencloud.org/haas/v0/switches/brocade"
OVS = "http://schema.massopencloud.org/haas/v0/switches/ovs"
MOCK_SWITCH = "http://schema.massopencloud.org/haas/v0/switches/mock"
IPMI = "http://schema.massopencloud.org/haas/v0/obm/ipmi"
MOCK_OBM = "http://schema.massopencloud.org/haas/v0/obm/mock"


class Obmd:
    """A stand-in for HIL's obmd admin API (`POST`/`DELETE <node uri>/token`, HTTP Basic
    admin:<admin token>): what HIL's enable/disable_obm call. Records what it was asked."""

    def __init__(self) -> None:
        calls: list[tuple[str, str, str]] = []
        self.calls = calls

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                auth = base64.b64decode(self.headers.get("Authorization", "Basic ")[6:]).decode()
                calls.append((self.command, self.path, auth))
                if auth != "admin:obmd-admin-secret":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": f"node-token-{len(calls)}"}).encode() if self.command == "POST" else b""
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = _answer

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    # A switch nobody listens on, tried once: its operations fail quickly (ERROR).
    # HIL's API also at the root of its own listener, where HIL's own client finds it.
    return server_with(hil={"listen": "127.0.0.1", "port": 0},
                       baremetal={"vlans": "1000-1009", "attempts": 1, "backoff_s": 0.05,
                                  "command_timeout_s": 5, "audit_on_start": "off"})


@pytest.fixture(scope="module")
def obmd() -> Iterator[Obmd]:
    o = Obmd()
    yield o
    o.close()


@pytest.fixture(scope="module")
def admin(srv: Server) -> Hil:
    return Hil(srv.admin_url, token=srv.token)


@pytest.fixture(scope="module")
def site(admin: Hil, obmd: Obmd) -> dict[str, Hil]:
    """HIL's objects as its docs' examples build them: projects, a user per project, nodes
    registered with each version's OBM, a switch of HIL's `nexus` type with cabled ports."""
    for p in ("proj", "other"):
        admin.ok("PUT", f"/project/{p}")
    for user, proj in (("alice", "proj"), ("bob", "other")):
        admin.ok("PUT", f"/auth/basic/user/{user}", {"password": f"{user}-password"})
        admin.ok("POST", f"/auth/basic/user/{user}/add_project", {"project": proj})
    admin.ok("PUT", "/node/node-ipmi", {"obm": {"type": IPMI, "host": "127.0.0.1", "user": "ADMIN",
                                                "password": "bmc-secret"}})
    admin.ok("PUT", "/node/node-mock", {"obm": {"type": MOCK_OBM, "host": "h", "user": "u", "password": "p"},
                                        "metadata": {"EK": "pk", "rack": {"row": 3}}})
    admin.ok("PUT", "/node/node-obmd", {"obmd": {"uri": obmd.url + "/node/node-obmd",
                                                 "admin_token": "obmd-admin-secret"}})
    admin.ok("PUT", "/switch/sw0", {"type": NEXUS, "hostname": "127.0.0.1", "username": "admin",
                                    "password": "sw-secret", "dummy_vlan": "2222",
                                    "ssh_port": free_port(), "host_key": HOST_KEY})
    for i, node in enumerate(("node-ipmi", "node-mock", "node-obmd")):
        admin.ok("PUT", f"/node/{node}/nic/eth0", {"macaddr": f"52:54:00:00:01:0{i}"})
        admin.ok("PUT", f"/switch/sw0/port/{q(f'Ethernet1/{i + 1}')}")
        admin.ok("POST", f"/switch/sw0/port/{q(f'Ethernet1/{i + 1}')}/connect_nic", {"node": node, "nic": "eth0"})
    admin.ok("PUT", f"/switch/sw0/port/{q('Ethernet1/9')}")        # uncabled
    admin.ok("POST", "/project/proj/connect_node", {"node": "node-ipmi"})
    return {"alice": Hil(admin.base, user="alice", password="alice-password"),
            "bob": Hil(admin.base, user="bob", password="bob-password")}


def raw(srv: Server, method: str, path: str, body: bytes | None = None,
        auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request as-is (no client library), following no redirect."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    req = urllib.request.Request(srv.admin_url + path, data=body, method=method,
                                 headers={"Authorization": auth or f"Bearer {srv.token}"})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def hil_error(status_body: tuple[int, Any], status: int, kind: str) -> str:
    got_status, body = status_body
    assert (got_status, body and body.get("type")) == (status, kind), status_body
    assert set(body) == {"type", "msg"} and isinstance(body["msg"], str)
    return str(body["msg"])


# -- the base URL and routing failures ---------------------------------------------------------

def test_every_failure_is_hils_error_shape(srv: Server, site: dict[str, Hil]) -> None:
    """HIL's client reads `type` and `msg` from any error answer (KeyError otherwise)."""
    for method, path, status, kind in [
        ("GET", "/hil/v0/no-such-call", 404, "NotFoundError"),
        ("GET", "/hil/v1/projects", 404, "NotFoundError"),
        ("GET", "/hil", 404, "NotFoundError"),
        ("DELETE", "/hil/v0/projects", 405, "MethodNotAllowedError"),
        ("PATCH", "/hil/v0/node/node-ipmi", 405, "MethodNotAllowedError"),
    ]:
        st, headers, body = raw(srv, method, path)
        err = json.loads(body)
        assert (st, err["type"]) == (status, kind) and set(err) == {"type", "msg"}, (method, path, st, body)
        assert headers["Content-Type"].startswith("application/json")
    st, headers, _ = raw(srv, "DELETE", "/hil/v0/projects")
    assert headers["Allow"] == "GET"
    # the admin endpoint's own `/v0/networks` (VM networks) is not HIL's
    assert raw(srv, "GET", "/hil/v0/networks")[0] == 200


def test_the_hil_listener_serves_the_same_api_at_its_root(srv: Server, site: dict[str, Hil]) -> None:
    """HIL's client joins `/v0/...` to its endpoint's host, dropping any base path: the `hil`
    listener serves HIL's paths at the root, same answers, same error shape."""
    root = srv.url("hil")
    req = urllib.request.Request(root + "/v0/projects", headers={"Authorization": f"Bearer {srv.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read()) == ["other", "proj"]
    for path, status, kind in [("/v0/nope", 404, "NotFoundError"), ("/hil/v0/projects", 404, "NotFoundError"),
                               ("/v0/projects", 401, "AuthorizationError")]:
        try:
            urllib.request.urlopen(root + path, timeout=30)
            raise AssertionError(path)
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())
            assert (e.code, err["type"], set(err)) == (status, kind, {"type", "msg"}), path


# -- projects ---------------------------------------------------------------------------------

def test_projects(admin: Hil, site: dict[str, Hil]) -> None:
    assert admin.ok("GET", "/projects") == ["other", "proj"]
    assert admin.call("PUT", "/project/proj") == (409, {"type": "DuplicateError", "msg": admin.call(
        "PUT", "/project/proj")[1]["msg"]})
    hil_error(admin.call("DELETE", "/project/nope"), 404, "NotFoundError")
    hil_error(admin.call("DELETE", "/project/proj"), 409, "BlockedError")     # has a node
    assert site["alice"].ok("GET", "/project/proj/nodes") == ["node-ipmi"]
    assert site["alice"].ok("GET", "/project/proj/networks") == []
    hil_error(site["alice"].call("GET", "/projects"), 401, "AuthorizationError")   # admin only


# -- nodes ------------------------------------------------------------------------------------

def test_node_show_is_hils_shape(admin: Hil, site: dict[str, Hil]) -> None:
    shown = admin.ok("GET", "/node/node-ipmi")
    assert set(shown) == {"name", "project", "nics", "metadata"}
    assert (shown["name"], shown["project"], shown["metadata"]) == ("node-ipmi", "proj", {})
    assert shown["nics"] == [{"label": "eth0", "macaddr": "52:54:00:00:01:00", "port": "Ethernet1/1",
                              "switch": "sw0", "networks": {}}]
    # a member sees its node without the cabling; a free node is shown to any logged-in user
    member = site["alice"].ok("GET", "/node/node-ipmi")
    assert member["nics"] == [{"label": "eth0", "macaddr": "52:54:00:00:01:00", "networks": {}}]
    assert site["bob"].ok("GET", "/node/node-mock")["project"] is None
    hil_error(site["bob"].call("GET", "/node/node-ipmi"), 401, "AuthorizationError")
    assert site["bob"].ok("GET", "/nodes/free") == ["node-mock", "node-obmd"]
    assert site["bob"].ok("GET", "/nodes/all") == ["node-ipmi", "node-mock", "node-obmd"]


def test_node_metadata(admin: Hil, site: dict[str, Hil]) -> None:
    """HIL keeps each value as its JSON text, and show_node returns that text."""
    assert admin.ok("GET", "/node/node-mock")["metadata"] == {"EK": '"pk"', "rack": '{"row": 3}'}
    assert admin.call("PUT", "/node/node-mock/metadata/EK", {"value": [1, 2]}) == (200, None)
    assert admin.call("PUT", "/node/node-mock/metadata/owner", {"value": "ops"}) == (200, None)
    assert admin.ok("GET", "/node/node-mock")["metadata"] == {"EK": "[1, 2]", "owner": '"ops"', "rack": '{"row": 3}'}
    assert admin.call("DELETE", "/node/node-mock/metadata/owner") == (200, None)
    hil_error(admin.call("DELETE", "/node/node-mock/metadata/owner"), 404, "NotFoundError")
    hil_error(admin.call("PUT", "/node/node-mock/metadata/x", {}), 400, "ValidationError")   # value missing
    hil_error(admin.call("PUT", "/node/nope/metadata/x", {"value": 1}), 404, "NotFoundError")
    hil_error(site["bob"].call("PUT", "/node/node-mock/metadata/x", {"value": 1}), 401, "AuthorizationError")
    assert admin.ok("GET", "/node/node-mock")["metadata"] == {"EK": "[1, 2]", "rack": '{"row": 3}'}


def test_node_registration_of_both_hil_versions_is_checked(admin: Hil, site: dict[str, Hil]) -> None:
    for body, status, kind in [
        ({"obmd": {"uri": "ftp://obmd.example/node/x", "admin_token": "t"}}, 400, "ValidationError"),
        ({"obmd": {"uri": "http://obmd.example/node/x"}}, 400, "ValidationError"),            # no token
        ({"obmd": {"uri": "http://o/n", "admin_token": "t", "extra": 1}}, 400, "ValidationError"),
        ({"obm": {"type": IPMI, "host": "h", "user": "u"}}, 400, "BadArgumentError"),       # no password
        ({"obm": {"type": IPMI, "host": "h", "user": "u", "password": "p", "vendor": "x"}}, 400,
         "BadArgumentError"),                                                                  # never dropped
        ({"obm": {"type": "http://schema.massopencloud.org/haas/v0/obm/telepathy"}}, 400, "BadArgumentError"),
        ({"obm": {"type": MOCK_OBM, "host": "h", "user": "u", "password": "p"},
          "obmd": {"uri": "http://o/n", "admin_token": "t"}}, 400, "ValidationError"),         # both
        ({"obm": {"type": MOCK_OBM, "host": "h", "user": "u", "password": "p"}, "metadata": ["x"]}, 400,
         "ValidationError"),
    ]:
        hil_error(admin.call("PUT", "/node/node-bad", body), status, kind)
    assert "node-bad" not in admin.ok("GET", "/nodes/all")
    assert admin.call("PUT", "/node/node-none", {"obm": {}}) == (200, None)      # no OBM, as before
    assert admin.call("DELETE", "/node/node-none") == (200, None)
    hil_error(admin.call("PUT", "/node/node-mock", {"obm": {"type": MOCK_OBM, "host": "h", "user": "u",
                                                            "password": "p"}}), 409, "DuplicateError")


def test_mock_obm_power_calls_succeed(srv: Server, admin: Hil, site: dict[str, Hil]) -> None:
    for path in ("/node/node-mock/power_on", "/node/node-mock/power_off", "/node/node-mock/power_cycle"):
        assert admin.call("POST", path, {}) == (200, None)
    assert admin.call("PUT", "/node/node-mock/boot_device", {"bootdev": "pxe"}) == (200, None)
    assert admin.ok("GET", "/node/node-mock/power_status") == {"power_status": "Mock Status"}
    # no serial console is captured for it (only IPMI nodes): refused, nothing recorded
    before = srv.admin("GET", "/v0/state/digest")
    hil_error(admin.call("PUT", "/node/node-mock/console"), 400, "BadArgumentError")
    assert srv.admin("GET", "/v0/state/digest") == before


def test_obmd_node_enable_redirect_disable(srv: Server, admin: Hil, obmd: Obmd, site: dict[str, Hil]) -> None:
    """HEAD's obmd: enabling gets a node token from obmd; power and console calls answer 307
    to obmd with that token (HIL's `_obmd_redirect`); disabled, they are BlockedError."""
    hil_error(admin.call("POST", "/node/node-obmd/power_on"), 409, "BlockedError")
    assert admin.call("PUT", "/node/node-obmd/obm", {"enabled": True}) == (200, None)
    assert obmd.calls[-1] == ("POST", "/node/node-obmd/token", "admin:obmd-admin-secret")
    token = f"node-token-{len(obmd.calls)}"
    for method, path, target in [("POST", "power_on", "power_on"), ("POST", "power_off", "power_off"),
                                 ("POST", "power_cycle", "power_cycle"), ("GET", "power_status", "power_status"),
                                 ("PUT", "boot_device", "boot_device"), ("GET", "console", "console")]:
        body = None if method == "GET" else json.dumps({"bootdev": "pxe"} if target == "boot_device" else {}).encode()
        st, headers, _ = raw(srv, method, f"/hil/v0/node/node-obmd/{path}", body)
        assert (st, headers["Location"]) == (307, f"{obmd.url}/node/node-obmd/{target}?token={token}"), path
    hil_error(admin.call("PUT", "/node/node-obmd/obm", {"enabled": "yes"}), 400, "ValidationError")
    assert admin.call("PUT", "/node/node-obmd/obm", {"enabled": False}) == (200, None)
    assert obmd.calls[-1][:2] == ("DELETE", "/node/node-obmd/token")
    hil_error(admin.call("POST", "/node/node-obmd/power_on"), 409, "BlockedError")


def test_detach_node_is_blocked_while_its_obm_is_enabled(admin: Hil, site: dict[str, Hil]) -> None:
    """HIL's `hil project node remove --force` disables the OBM first, for this reason."""
    admin.ok("POST", "/project/other/connect_node", {"node": "node-mock"})
    admin.ok("PUT", "/node/node-mock/obm", {"enabled": True})
    hil_error(admin.call("POST", "/project/other/detach_node", {"node": "node-mock"}), 409, "BlockedError")
    site["bob"].ok("PUT", "/node/node-mock/obm", {"enabled": False})      # the project may
    assert admin.call("POST", "/project/other/detach_node", {"node": "node-mock"}) == (200, None)


# -- networks -----------------------------------------------------------------------------------

def test_networks_and_their_shapes(admin: Hil, site: dict[str, Hil]) -> None:
    alice = site["alice"]
    # create answers an empty body; HIL's client sends one access project and net_id as strings
    assert alice.call("PUT", "/network/net-a", {"owner": "proj", "access": "proj", "net_id": ""}) == (200, None)
    assert admin.call("PUT", "/network/pub", {"owner": "admin", "access": "", "net_id": "3005"}) == (200, None)
    listed = admin.ok("GET", "/networks")
    assert listed["pub"] == {"network_id": "3005", "projects": None}
    assert listed["net-a"]["projects"] == ["proj"] and listed["net-a"]["network_id"].isdigit()
    shown = alice.ok("GET", "/network/net-a")
    assert set(shown) == {"name", "owner", "access", "channels", "connected-nodes"}
    vlan = listed["net-a"]["network_id"]
    assert shown == {"name": "net-a", "owner": "proj", "access": ["proj"],
                     "channels": ["vlan/native", f"vlan/{vlan}"], "connected-nodes": {}}
    assert admin.ok("GET", "/network/pub")["access"] is None
    hil_error(site["bob"].call("GET", "/network/net-a"), 401, "AuthorizationError")
    # access grants: a second one is a DuplicateError (409)
    assert alice.call("PUT", "/network/net-a/access/other") == (200, None)
    hil_error(alice.call("PUT", "/network/net-a/access/other"), 409, "DuplicateError")
    assert alice.call("DELETE", "/network/net-a/access/other") == (200, None)
    hil_error(alice.call("DELETE", "/network/net-a/access/other"), 404, "NotFoundError")
    assert alice.ok("GET", "/project/proj/networks") == ["net-a"]
    assert admin.ok("GET", "/network/net-a/attachments") == {}


def test_networking_actions_are_hils_vocabulary(admin: Hil, site: dict[str, Hil]) -> None:
    """connect/detach: 202 {"status_id"}; the action reads PENDING, then DONE or ERROR (the
    switch answers nobody here: ERROR), of type modify_port with new_network; revert: 200,
    revert_port."""
    alice = site["alice"]
    status, out = alice.call("POST", "/node/node-ipmi/nic/eth0/connect_network", {"network": "net-a"})
    assert status == 202 and set(out) == {"status_id"}
    action = alice.ok("GET", f"/networking_action/{out['status_id']}")
    assert set(action) == {"status", "node", "nic", "type", "channel", "new_network"}
    assert (action["node"], action["nic"], action["type"], action["channel"], action["new_network"]) == \
        ("node-ipmi", "eth0", "modify_port", "vlan/native", "net-a")
    assert action["status"] in ("PENDING", "ERROR")
    final = admin.wait_op(out["status_id"])
    assert final["status"] == "error" and final["error"]          # cloudctl's view: why
    assert alice.ok("GET", f"/networking_action/{out['status_id']}")["status"] == "ERROR"
    hil_error(site["bob"].call("GET", f"/networking_action/{out['status_id']}"), 401, "AuthorizationError")
    hil_error(admin.call("GET", "/networking_action/no-such-id"), 404, "NotFoundError")
    # revert of a cabled port: 200 (not 202) and HIL's revert_port
    status, out = admin.call("POST", f"/switch/sw0/port/{q('Ethernet1/1')}/revert")
    assert status == 200 and set(out) == {"status_id"}
    action = admin.ok("GET", f"/networking_action/{out['status_id']}")
    assert (action["type"], action["new_network"], action["channel"]) == ("revert_port", None, "")
    admin.wait_op(out["status_id"])
    hil_error(admin.call("POST", f"/switch/sw0/port/{q('Ethernet1/9')}/revert"), 404, "NotFoundError")


# -- switches and ports -------------------------------------------------------------------------

def test_switch_and_port_shapes(admin: Hil, site: dict[str, Hil]) -> None:
    shown = admin.ok("GET", "/switch/sw0")
    assert shown == {"name": "sw0", "capabilities": ["nativeless-trunk-mode"],
                     "ports": [{"label": f"Ethernet1/{i}"} for i in (1, 2, 3, 9)]}
    assert admin.ok("GET", "/switches") == ["sw0"]
    assert admin.ok("GET", f"/switch/sw0/port/{q('Ethernet1/9')}") == {}        # uncabled
    assert admin.ok("GET", f"/switch/sw0/port/{q('Ethernet1/2')}") == {"node": "node-mock", "nic": "eth0",
                                                                       "networks": {}}
    hil_error(site["alice"].call("GET", "/switch/sw0"), 401, "AuthorizationError")


def test_switch_registration_takes_hils_type_uris(admin: Hil, site: dict[str, Hil]) -> None:
    common = {"hostname": "127.0.0.1", "username": "admin", "password": "pw", "host_key": HOST_KEY}
    assert admin.call("PUT", "/switch/pc", {"type": POWERCONNECT, **common}) == (200, None)
    assert admin.call("PUT", "/switch/vs", {"type": OVS, "ovs_bridge": "br-hil", "hostname": "127.0.0.1",
                                            "username": "root", "host_key": HOST_KEY}) == (200, None)
    for name, body, why in [
        ("m", {"type": MOCK_SWITCH, **common}, "mock"),
        ("u", {"type": "http://schema.massopencloud.org/haas/v0/switches/nosuch", **common}, "not a valid"),
        ("n", {"type": NEXUS, **common}, "dummy_vlan"),                             # HIL requires it
        ("n", {"type": NEXUS, **common, "dummy_vlan": "x"}, "dummy_vlan"),
        ("n", {"type": NEXUS, **{k: v for k, v in common.items() if k != "host_key"}, "dummy_vlan": "5"},
         "host_key"),                                                               # never unchecked
        ("n", {"type": NEXUS, **common, "dummy_vlan": "5", "vendor": "x"}, "vendor"),
        ("o", {"type": OVS, "hostname": "127.0.0.1", "username": "root", "host_key": HOST_KEY}, "ovs_bridge"),
    ]:
        msg = hil_error(admin.call("PUT", f"/switch/{name}", body), 400, "BadArgumentError")
        assert why in msg, (body, msg)
    # HIL's dellnos9 and brocade (the dell10g and brocade families): HIL's interface_type is required
    # and must be a type the family's full port names carry; a bad one is a 400 naming the family.
    for uri, family, itype in ((DELLNOS9, "dell10g", "TenGigabitEthernet"), (BROCADE, "brocade", "ethernet")):
        assert driver_class(family) is not None
        hil_error(admin.call("PUT", f"/switch/{family}", {"type": uri, **common}), 400, "BadArgumentError")
        msg = hil_error(admin.call("PUT", f"/switch/{family}", {"type": uri, **common, "interface_type": "x"}),
                        400, "BadArgumentError")
        assert family in msg and "interface_type" in msg
        assert admin.call("PUT", f"/switch/{family}", {"type": uri, **common, "interface_type": itype}) == (200, None)
        admin.ok("DELETE", f"/switch/{family}")
    assert admin.ok("GET", "/switches") == ["pc", "sw0", "vs"]
    hil_error(admin.call("DELETE", "/switch/sw0"), 409, "BlockedError")        # has ports
    assert admin.call("DELETE", "/switch/pc") == (200, None)


# -- users and extensions -------------------------------------------------------------------------

def test_users_and_admin_flag(admin: Hil, site: dict[str, Hil]) -> None:
    users = admin.ok("GET", "/auth/basic/users")
    assert users["alice"] == {"is_admin": False, "projects": ["proj"]}
    hil_error(admin.call("POST", "/auth/basic/user/alice/add_project", {"project": "proj"}), 409, "DuplicateError")
    admin.ok("PUT", "/auth/basic/user/root2", {"password": "root2-password", "is_admin": True})
    root2 = Hil(admin.base, user="root2", password="root2-password")
    hil_error(root2.call("PATCH", "/auth/basic/user/root2", {"is_admin": False}), 409, "IllegalStateError")
    assert root2.ok("GET", "/projects")                                    # still an admin
    assert root2.call("PATCH", "/auth/basic/user/alice", {"is_admin": False}) == (200, None)
    hil_error(Hil(admin.base, user="alice", password="wrong").call("GET", "/project/proj/nodes"), 401,
              "AuthorizationError")
    hil_error(Hil(admin.base).call("GET", "/project/proj/nodes"), 401, "AuthorizationError")


def test_active_extensions(admin: Hil, site: dict[str, Hil]) -> None:
    exts = admin.ok("GET", "/active_extensions")
    assert exts == sorted(exts) and "hil.ext.auth.database" in exts
    hil_error(site["alice"].call("GET", "/active_extensions"), 401, "AuthorizationError")
