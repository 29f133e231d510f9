"""`CloudError.kind`: every code the cloud raises has one kind wherever it is raised, and the front
ends that do not speak EC2 (XML-RPC, HIL, admin) answer by kind — a quota the XML-RPC API used to
call a malformed call is now OpenNebula's ACTION error, whichever quota it is."""
from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyone
import pytest

from cloudctl.api.xmlrpc.app import _error_code
from cloudctl.core.baremetal.headnodes import _bm
from cloudctl.core.errors import CloudError, ErrorKind

from hil_client import Hil
from support import Server, Servers

ROOT = Path(__file__).resolve().parent.parent / "cloudctl"


def _raised_codes() -> dict[str, set[ErrorKind]]:
    """code (or its constant tail, for f-string codes) -> the kinds it is constructed with."""
    kinds: dict[str, set[ErrorKind]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if not isinstance(n, ast.Call) or not n.args:
                continue
            f = n.func
            if isinstance(f, ast.Name) and f.id == "CloudError":
                kw = next((k.value for k in n.keywords if k.arg == "kind"), n.args[2] if len(n.args) > 2 else None)
                kind = ErrorKind[kw.attr] if isinstance(kw, ast.Attribute) else ErrorKind.INVALID
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "CloudError":
                kind = ErrorKind(f.attr)
            else:
                continue
            code = n.args[0]
            if isinstance(code, ast.JoinedStr) and isinstance(code.values[-1], ast.Constant):
                kinds["*" + code.values[-1].value].add(kind)
            elif isinstance(code, ast.Constant):
                kinds[code.value].add(kind)
    return kinds


def _expected(code: str) -> ErrorKind | None:
    """The kind EC2's naming implies, where it implies one."""
    if code.endswith(".NotFound") or code == "NoSuchEntity":
        return ErrorKind.NOT_FOUND
    if code.endswith((".Duplicate", "InUse", "AlreadyExists", "AlreadyAssociated", "DependencyViolation")):
        return ErrorKind.CONFLICT
    if code.startswith("Incorrect") and code.endswith("State"):
        return ErrorKind.WRONG_STATE
    if code.startswith("Insufficient"):
        return ErrorKind.CAPACITY
    if code.endswith("LimitExceeded"):
        return ErrorKind.LIMIT
    if code.endswith((".Malformed", "ParameterValue", "MissingParameter", "ParameterCombination")):
        return ErrorKind.INVALID
    return None


def test_each_code_has_one_kind_and_the_kind_its_name_implies() -> None:
    kinds = _raised_codes()
    assert len(kinds) > 50                                  # the scan sees the tree's raise sites
    assert {c: k for c, k in kinds.items() if len(k) != 1} == {}
    wrong = {c: (k, _expected(c)) for c, (k,) in kinds.items() if _expected(c) not in (None, k)}
    assert wrong == {}
    assert {k for (k,) in kinds.values()} >= set(ErrorKind) - {ErrorKind.AUTH}


@pytest.mark.parametrize("kind, one_code, hil_type", [
    (ErrorKind.INVALID, 0x1000, "BadArgumentError"),
    (ErrorKind.NOT_FOUND, 0x0400, "NotFoundError"),
    (ErrorKind.CONFLICT, 0x1000, "BlockedError"),
    (ErrorKind.WRONG_STATE, 0x0800, "IllegalStateError"),
    (ErrorKind.CAPACITY, 0x0800, "IllegalStateError"),
    (ErrorKind.LIMIT, 0x0800, "IllegalStateError"),
    (ErrorKind.AUTH, 0x0200, "AuthorizationError"),
    (ErrorKind.UNAVAILABLE, 0x2000, "BusyError"),
])
def test_front_ends_map_every_kind(kind: ErrorKind, one_code: int, hil_type: str) -> None:
    e = CloudError("AnyCode.NotFound" if kind is not ErrorKind.NOT_FOUND else "Anything", "m", kind)
    assert _error_code(e) == one_code                       # the code string plays no part
    assert type(_bm(e)).__name__ == hil_type


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    s = server_with(limits={"vcpus": 1}, xmlrpc={},
                    baremetal={"vlans": "1100-1109", "audit_on_start": "off", "headnode_bridge": "br-trunk"})
    s.one_url = s.url("xmlrpc") + "/RPC2"   # type: ignore[attr-defined]
    return s


def test_xmlrpc_answers_a_vcpu_quota_as_action(srv: Any) -> None:
    keys = srv.create_user("dave")
    one = pyone.OneServer(srv.one_url, session=f"dave:{keys['SecretAccessKey']}")
    image = next(i for i in one.imagepool.info(-2, -1, -1).IMAGE if i.NAME == "cloudctl-blank")
    with pytest.raises(pyone.OneActionException) as e:      # VcpuLimitExceeded: 2 vCPUs, quota 1
        one.vm.allocate('CPU = 2\nMEMORY = 2048\nDISK = [ IMAGE_ID = "%d" ]' % image.ID, False)
    assert "vCPU limit of 1" in str(e.value)
    assert not one.vmpool.info(-2, -1, -1, -2).VM           # nothing was launched


def test_hil_headnode_start_over_quota_is_illegal_state(srv: Server) -> None:
    admin = Hil(srv.admin_url, token=srv.token)
    admin.ok("PUT", "/project/q1")
    admin.ok("PUT", "/headnode/big", {"project": "q1", "base_img": "cloudctl-blank", "instance_type": "t3.small"})
    status, err = admin.call("POST", "/headnode/big/start")
    assert (status, err["type"]) == (409, "IllegalStateError") and "vCPU limit" in err["msg"], err
    assert admin.ok("GET", "/headnode/big")["state"] == "defined"


def _admin(srv: Server, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    try:
        return 200, srv.admin(method, path, body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_admin_status_follows_the_kind(srv: Server) -> None:
    srv.create_user("erin")
    assert _admin(srv, "POST", "/v0/users", {"name": "erin"})[0] == 409           # EntityAlreadyExists
    status, err = _admin(srv, "DELETE", "/v0/users/nobody")
    assert (status, err["error"]) == (404, "NoSuchEntity")
    status, err = _admin(srv, "POST", "/v0/hosts/host-a/fence")
    assert (status, err["error"]) == (409, "IncorrectState"), err                  # a host not in error
    assert _admin(srv, "GET", "/v0/users")[0] == 200
