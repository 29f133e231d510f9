"""The XML-RPC listener against clients without credentials: bodies and documents beyond the limits
are refused with a fault before they cost much, refusals log one short line each, rate-limited per
source and counted in /metrics, and real clients (pyone, xmlrpc.client) keep being served."""
from __future__ import annotations

import http.client
import logging
import socket
import xmlrpc.client
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyone
import pytest
from lxml import etree

from cloudctl.api.refusals import RefusalLog, clip
from cloudctl.api.xmlrpc import wire
from cloudctl.api.xmlrpc.app import INTERNAL, OneApi, call
from cloudctl.config import LoginThrottle

from test_metrics import _scrape, _value

XML = {"Content-Type": "text/xml"}


@pytest.fixture
def one(new_server: Any) -> Any:
    srv = new_server(xmlrpc={"listen": "127.0.0.1", "port": 0})
    srv.one_port = srv.ports["xmlrpc"]
    srv.one_url = srv.url("xmlrpc") + "/RPC2"
    user = srv.create_user("dora")
    srv.session = f"dora:{user['SecretAccessKey']}"
    srv.pyone = pyone.OneServer(srv.one_url, session=srv.session)
    return srv


def post(srv: Any, body: bytes, headers: dict[str, str] = XML, chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.one_port, timeout=30)
    try:
        if chunked:
            conn.request("POST", "/RPC2", iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                         headers, encode_chunked=True)
        else:
            conn.request("POST", "/RPC2", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def fault_of(answer: bytes) -> dict[str, Any]:
    """The fault struct of an answer (xmlrpc.client's own parser); fails if it is not a fault."""
    with pytest.raises(xmlrpc.client.Fault) as e:
        xmlrpc.client.loads(answer)
    return {"code": e.value.faultCode, "message": e.value.faultString}


def method_call(method: str, *params: bytes) -> bytes:
    ps = b"".join(b"<param><value>" + p + b"</value></param>" for p in params)
    return b"<?xml version='1.0'?><methodCall><methodName>" + method.encode() + \
        b"</methodName><params>" + ps + b"</params></methodCall>"


def vm_count(srv: Any) -> int:
    return len(srv.pyone.vmpool.info(-2, -1, -1, -2).VM or [])


def log_from(srv: Any, offset: int) -> str:
    return Path(srv.log_path).read_bytes()[offset:].decode(errors="replace")


def template(srv: Any) -> str:
    image = next(i for i in srv.pyone.imagepool.info(-2, -1, -1).IMAGE if i.NAME == "cloudctl-blank")
    return f'CPU = 1\nMEMORY = 512\nDISK = [ IMAGE_ID = "{image.ID}" ]\n'


def test_oversize_bodies_are_refused_with_a_fault(one: Any) -> None:
    before = vm_count(one)
    tpl = template(one)
    huge = tpl + "NAME = \"" + "x" * (wire.MAX_BODY_BYTES + 1000) + "\"\n"
    with pytest.raises(pyone.OneException, match="larger than 262144 bytes"):
        one.pyone.vm.allocate(huge, False)
    proxy = xmlrpc.client.ServerProxy(one.one_url)
    with pytest.raises(xmlrpc.client.Fault, match="larger than") as e:
        proxy.one.vm.allocate(one.session, huge, False)
    assert e.value.faultCode == wire.INVALID_REQUEST
    # Chunked (no Content-Length): cut off once the limit is passed.
    status, answer = post(one, method_call("one.vm.allocate", b"<string>" + one.session.encode() + b"</string>",
                                           b"<string>" + huge.encode() + b"</string>"), chunked=True)
    assert status == 200 and "larger than" in fault_of(answer)["message"]
    # A 1 MB array from a client without credentials, the attack of issue 21.
    flood = method_call("one.vmpool.info", b"<string>nobody:wrong</string>",
                        b"<array><data>" + b"<value><i4>1</i4></value>" * 40_000 + b"</data></array>")
    assert len(flood) > 1_000_000
    status, answer = post(one, flood)
    assert status == 200 and fault_of(answer)["code"] == wire.INVALID_REQUEST
    assert vm_count(one) == before
    # The largest real call: 16 KiB of user data (RunInstances' limit) that XML escaping makes 80 KiB.
    script = "&" * 16384
    big = tpl + f'CONTEXT = [ START_SCRIPT = "{script}" ]\n'
    assert len(xmlrpc.client.dumps((one.session, big, False), "one.vm.allocate")) > 80_000
    assert isinstance(one.pyone.vm.allocate(big, False), int)
    assert vm_count(one) == before + 1


def test_too_many_or_too_deep_elements_are_refused(one: Any) -> None:
    before = vm_count(one)
    session = b"<string>" + one.session.encode() + b"</string>"
    tpl = b"<string>" + template(one).encode() + b"</string>"
    many = b"<array><data>" + b"<value><i4>1</i4></value>" * (wire.MAX_ELEMENTS // 2 + 10) + b"</data></array>"
    assert len(many) < wire.MAX_BODY_BYTES
    status, answer = post(one, method_call("one.vm.allocate", session, tpl, many))
    assert status == 200
    assert fault_of(answer) == {"code": wire.INVALID_REQUEST,
                                "message": f"the request has more than {wire.MAX_ELEMENTS} XML elements"}
    deep = b"<array><data><value>" * 8 + b"<i4>1</i4>" + b"</value></data></array>" * 8
    status, answer = post(one, method_call("one.vm.allocate", session, tpl, deep))
    assert "nests XML elements more than" in fault_of(answer)["message"]
    status, answer = post(one, method_call("one.vm.allocate", session, tpl, b"<value>" * 5000 + b"</value>" * 5000))
    msg = fault_of(answer)["message"]   # (libxml2's own limit, 256, may stop it within a parse step)
    assert "nests XML elements more than" in msg or "Excessive depth" in msg
    # The same limits hold without a Content-Length.
    status, answer = post(one, method_call("one.vm.allocate", session, tpl, many), chunked=True)
    assert "XML elements" in fault_of(answer)["message"]
    assert vm_count(one) == before
    assert one.pyone.system.version()


def test_entities_and_doctypes_are_refused(one: Any) -> None:
    lol = b'<!ENTITY l0 "lol">' + b"".join(
        b'<!ENTITY l%d "%s">' % (i, (b"&l%d;" % (i - 1)) * 10) for i in range(1, 10))
    bombs = {
        "billion-laughs": b"<?xml version='1.0'?><!DOCTYPE m [" + lol + b"]><methodCall><methodName>"
                          b"one.system.version</methodName><params><param><value><string>&l9;</string>"
                          b"</value></param></params></methodCall>",
        "external-entity": b"<?xml version='1.0'?><!DOCTYPE m [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
                           b"<methodCall><methodName>one.system.version</methodName><params><param><value>"
                           b"<string>&x;</string></value></param></params></methodCall>",
        "doctype": b"<?xml version='1.0'?><!DOCTYPE methodCall><methodCall><methodName>one.system.version"
                   b"</methodName></methodCall>",
    }
    for name, body in bombs.items():
        status, answer = post(one, body)
        f = fault_of(answer)
        assert status == 200 and f["code"] in (wire.PARSE_ERROR, wire.INVALID_REQUEST), name
        assert b"lollol" not in answer and b"root:" not in answer, name
    assert one.pyone.system.version()


@pytest.mark.slow
def test_a_flood_of_refusals_logs_a_few_short_lines(one: Any) -> None:
    offset = Path(one.log_path).stat().st_size
    proxy = xmlrpc.client.ServerProxy(one.one_url)
    for _ in range(40):      # malformed, raw HTTP
        status, answer = post(one, b"<methodCall><methodName>one.vm.info</methodName><params>")
        assert fault_of(answer)["code"] == wire.PARSE_ERROR
    for _ in range(40):      # unknown methods, xmlrpc.client
        with pytest.raises(xmlrpc.client.Fault) as e:
            proxy.one.nothing.here("x:y")
        assert e.value.faultCode == wire.METHOD_NOT_FOUND
    long_name = "one." + "a" * 200_000   # under the body limit: an unknown method of 200 KB
    for _ in range(10):
        with pytest.raises(xmlrpc.client.Fault) as e:
            getattr(proxy, long_name)("x:y")
        assert len(e.value.faultString) < 200     # the answer does not echo it whole either
    for _ in range(10):      # a method name of 500 KB: over the body limit
        status, answer = post(one, method_call("one." + "b" * 500_000))
        assert "larger than" in fault_of(answer)["message"]
    forged = "one.x\n2026-01-01 00:00:00,000 ERROR cloudctl: forged"
    for _ in range(10):      # a line break in the method name: not an XML-RPC call
        post(one, method_call(forged))
    for _ in range(5):       # half a body, then the client goes away
        with socket.create_connection(("127.0.0.1", one.one_port), timeout=10) as c:
            c.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 9999\r\n\r\n"
                      b"<methodCall><methodName>one.vm.info</methodName>")
    bad = pyone.OneServer(one.one_url, session="dora:wrong")
    for _ in range(20):      # wrong credentials, pyone
        with pytest.raises(pyone.OneAuthenticationException):
            bad.vmpool.info(-2, -1, -1, -1)
    sent = 40 + 40 + 10 + 10 + 10 + 5 + 20
    assert one.pyone.system.version()   # the server still serves its users

    text = log_from(one, offset)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert "Traceback" not in text
    assert "forged" not in text and not any(ln.startswith("2026-01-01") for ln in lines)
    refusals = [ln for ln in lines if "xmlrpc: refused a request from 127.0.0.1" in ln]
    assert 1 <= len(refusals) <= 5 and len(lines) <= 6, text
    assert all(len(ln) < 400 for ln in lines), text
    assert len(text) < 3000

    metrics = _scrape(one)
    suppressed = _value(metrics["cloudctl_log_refusals_suppressed"], "cloudctl_log_refusals_suppressed_total",
                        api="xmlrpc")
    assert suppressed == sent - len(refusals)
    by_reason = metrics["cloudctl_api_refusals"]
    total = "cloudctl_api_refusals_total"
    assert _value(by_reason, total, api="xmlrpc", reason="malformed") == 40
    assert _value(by_reason, total, api="xmlrpc", reason="unknown_method") == 50
    assert _value(by_reason, total, api="xmlrpc", reason="oversize") == 10
    assert _value(by_reason, total, api="xmlrpc", reason="invalid") == 10
    assert _value(by_reason, total, api="xmlrpc", reason="bad_session") == 20
    assert _value(by_reason, total, api="xmlrpc", reason="disconnected") == 5
    one.stop()   # the source's window is still open: its summary line is written at shutdown
    assert f"xmlrpc: {int(suppressed)} more refusals from 127.0.0.1 in " in log_from(one, offset)


def test_malformed_http_on_any_listener_logs_a_few_lines(one: Any) -> None:
    """aiohttp refuses these in its HTTP parser (400); it used to log each with a traceback."""
    offset = Path(one.log_path).stat().st_size
    ports = [one.one_port, int(one.endpoint.rsplit(":", 1)[1]), int(one.admin_url.rsplit(":", 1)[1])]
    garbage = [b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
               b"POST / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
               b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"]
    for port in ports:
        for body in garbage * 10:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(body)
                assert c.recv(64).startswith(b"HTTP/1.0 400")
    assert one.pyone.system.version()
    metrics = _scrape(one)
    assert _value(metrics["cloudctl_api_refusals"], "cloudctl_api_refusals_total", api="http",
                  reason="bad_http") == 90
    text = log_from(one, offset)
    assert "Traceback" not in text and "aaaaaaaa" not in text
    lines = [ln for ln in text.splitlines() if "http: refused a request from 127.0.0.1: bad_http" in ln]
    assert len(lines) == 5 and len(text.splitlines()) == 5, text


def test_refusal_log_rate_limits_per_source_and_summarizes(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[tuple[str, str, bool]] = []
    refusals = RefusalLog("test", burst=3, window_s=0.0 + 3600)
    refusals.observe = lambda api, reason, logged: counted.append((api, reason, logged))
    with caplog.at_level(logging.INFO, logger="cloudctl.refusals"):
        for _ in range(100):
            refusals.refused("192.0.2.1", "malformed", f"method {clip('one.' + 'z' * 1000)}")
        for i in range(4):   # another host of the same IPv6 /64 shares a budget; another source has its own
            refusals.refused(f"2001:db8::{i}", "bad_session")
        refusals.refused("198.51.100.7", "unknown_method", f"method {clip(chr(27) + '[2J' + chr(10) + 'x')}")
        refusals.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert all("\n" not in ln and "\x1b" not in ln and len(ln) < 200 for ln in lines), lines
    assert sum("from 192.0.2.1:" in ln for ln in lines) == 3
    assert sum("from 2001:db8::/64:" in ln for ln in lines) == 3
    assert any("from 198.51.100.7: unknown_method (method '\\x1b[2J\\nx')" in ln for ln in lines), lines
    assert any("97 more refusals from 192.0.2.1" in ln for ln in lines), lines
    assert any("1 more refusals from 2001:db8::/64" in ln for ln in lines), lines
    assert len(lines) == 3 + 3 + 1 + 2
    assert len(counted) == 105 and sum(not logged for _, _, logged in counted) == 98


def test_refusal_log_holds_a_bounded_number_of_sources(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog("test", burst=1, window_s=3600, max_sources=10)
    with caplog.at_level(logging.INFO, logger="cloudctl.refusals"):
        for i in range(1000):
            refusals.refused(f"10.0.{i // 256}.{i % 256}", "malformed")
    assert len(refusals._windows) == 11        # ten sources and the rest together
    assert len(caplog.records) == 11


async def test_an_unexpected_error_still_logs_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A fault in our own code (here: a OneApi over a cloud without a monitor config) is not a refusal:
    its traceback is kept."""
    cloud = SimpleNamespace(config=SimpleNamespace(login_throttle=LoginThrottle()))
    api = OneApi(cloud, "token", 0)   # type: ignore[arg-type]
    session = etree.fromstring("<value><string>oneadmin:token</string></value>")
    refused: list[str] = []
    with caplog.at_level(logging.INFO):
        answer = await call(api, "one.system.config", [session], lambda reason, detail: refused.append(reason))
    assert answer == [False, "[one.system.config] internal error", INTERNAL]
    assert refused == []
    [rec] = [r for r in caplog.records if r.name == "cloudctl.xmlrpc"]
    assert rec.exc_info is not None and rec.exc_info[0] is AttributeError
