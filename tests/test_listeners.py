"""What every listener enforces on what clients send (api/listener.py), attacked over raw sockets:
headers or bodies trickled in are cut off after `client_timeout_s`, connections past
`max_connections` are refused while the ones under it are served, and admin bodies are capped
per route before they are read."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from hil_client import Hil
from support import Server, Servers

TIMEOUT_S = 1.0     # client_timeout_s of the `tight` server
CAP = 3             # max_connections of the `capped` server
HANG_GUARD_S = 30   # how long a test waits for the server before calling it stuck
LISTENERS = ["ec2", "admin", "hil", "metadata", "xmlrpc", "marketplace"]


def _listeners(admin: dict[str, Any] | None = None, **limits: Any) -> dict[str, Any]:
    """Every listener on, each with `limits`."""
    listeners = {name: dict(limits) for name in ("ec2", "admin", "metadata", "xmlrpc", "marketplace")}
    listeners["admin"].update(admin or {})
    return listeners


@pytest.fixture(scope="module")
def tight(server_with: Servers) -> Server:
    return server_with(**_listeners(admin={"max_image_gib": 1 / 1024}, client_timeout_s=TIMEOUT_S))  # 1 MiB


@pytest.fixture(scope="module")
def capped(server_with: Servers) -> Server:
    return server_with(**_listeners(max_connections=CAP))


def _request(server: Server, name: str, body_len: int) -> bytes:
    """The headers of a request with a body of `body_len` bytes, as each API's clients send it."""
    auth = {"admin": f"Bearer {server.token}", "hil": f"Bearer {server.token}"}.get(name)
    line = {"ec2": "POST / HTTP/1.1", "admin": "POST /v0/users HTTP/1.1", "hil": "PUT /hil/v0/project/slow HTTP/1.1",
            "metadata": "PUT /latest/api/token HTTP/1.1", "xmlrpc": "POST /RPC2 HTTP/1.1",
            "marketplace": "GET /metadata HTTP/1.1"}[name]
    ctype = {"ec2": "application/x-www-form-urlencoded", "xmlrpc": "text/xml"}.get(name, "application/json")
    head = [line, "Host: 127.0.0.1", f"Content-Type: {ctype}", f"Content-Length: {body_len}"]
    if auth:
        head.append(f"Authorization: {auth}")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _connect(server: Server, name: str) -> socket.socket:
    port = server.ports["admin" if name == "hil" else name]   # the HIL routes are on the admin listener
    return socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S)


def _trickle(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` a byte every 0.1 s and keep reading; what the server sent until it closed
    the connection (the test fails if it is still open after HANG_GUARD_S)."""
    sock.settimeout(0.1)
    got = b""
    deadline = time.monotonic() + HANG_GUARD_S
    sent = 0
    while time.monotonic() < deadline:
        try:
            if sent < len(data):
                sock.send(data[sent:sent + 1])
                sent += 1
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return got
    pytest.fail(f"the server kept a trickling client for {HANG_GUARD_S} s ({sent} bytes sent)")


def _answer(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("name", LISTENERS)
def test_trickled_headers_are_cut_off(tight: Server, name: str) -> None:
    """A client that never finishes its headers (slowloris) is disconnected, with no answer."""
    with _connect(tight, name) as sock:
        # (as long as the headers are not complete, the request is never answered)
        got = _trickle(sock, _request(tight, name, 10).replace(b"\r\n\r\n", b"\r\nX-Slow: " + b"a" * 1000))
    assert got == b""


@pytest.mark.parametrize("name", LISTENERS)
def test_trickled_body_is_cut_off(tight: Server, name: str) -> None:
    """Whole headers, then a body a byte at a time: 408 in the API's own format, then closed."""
    with _connect(tight, name) as sock:
        sock.sendall(_request(tight, name, 1000))
        got = _trickle(sock, b"x" * 1000)
    status, body = _answer(got)
    assert status == 408, got[:300]
    if name == "ec2":
        assert b"<Code>RequestTimeout</Code>" in body
    elif name == "admin":
        assert json.loads(body)["error"] == "RequestTimeout"
    elif name == "hil":
        assert json.loads(body)["type"] == "RequestTimeout"
        assert "slow" not in Hil(tight.admin_url, token=tight.token).ok("GET", "/projects")
    # (metadata, marketplace and XML-RPC answer transport errors as plain HTTP)


@pytest.mark.slow
def test_slow_answers_are_not_cut_off(tight: Server) -> None:
    """The timeouts are on what the client sends: an event stream outlives them and still delivers."""
    alice = tight.create_user("stream-alice")
    ec2 = tight.client(alice)
    with _connect(tight, "admin") as sock:
        sock.sendall(f"GET /v0/events?follow=1&kind=instance HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {tight.token}\r\n\r\n".encode())
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        time.sleep(TIMEOUT_S * 3)   # well past the client timeout, with nothing sent either way
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]
        iid = ec2.run_instances(ImageId=image["ImageId"], MinCount=1, MaxCount=1,
                                InstanceType="t3.nano")["Instances"][0]["InstanceId"]
        sock.settimeout(HANG_GUARD_S)
        while json.loads(resp.readline())["subject"] != iid:   # (an NDJSON line per event)
            pass
        ec2.terminate_instances(InstanceIds=[iid])


def _http(sock: socket.socket, raw: bytes) -> tuple[int, bytes]:
    sock.sendall(raw)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


def _honest(server: Server, name: str) -> bytes:
    """A small complete request each listener answers (not with 503)."""
    path = {"ec2": "/?Action=DescribeRegions", "admin": "/v0/health", "hil": "/v0/health", "metadata": "/latest",
            "xmlrpc": "/RPC2", "marketplace": "/metadata"}[name]
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode()


def _stats(server: Server) -> dict[str, Any]:
    """Each listener's open and refused connections (waiting, if the admin listener was just full,
    for its slots to come back)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            return server.admin("GET", "/v0/stats")["connections"]  # type: ignore[no-any-return]
        except (urllib.error.HTTPError, ConnectionError) as e:
            if getattr(e, "code", 503) != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _fill(server: Server, name: str) -> list[socket.socket]:
    """CAP connections, each proven served (and kept alive) by an honest request; one refused
    because an earlier test's connection had not yet given its slot back is tried again."""
    held: list[socket.socket] = []
    deadline = time.monotonic() + HANG_GUARD_S
    while len(held) < CAP:
        sock = _connect(server, name)
        try:
            status, _ = _http(sock, _honest(server, name))
        except (http.client.HTTPException, ConnectionError):
            status = 0
        if status in (0, 503):
            sock.close()
            assert time.monotonic() < deadline, "the listener refused connections under its cap"
            time.sleep(0.05)
        else:
            held.append(sock)
    return held


@pytest.mark.parametrize("name", [n for n in LISTENERS if n != "hil"])
def test_connections_over_the_cap_are_refused(capped: Server, name: str) -> None:
    held = _fill(capped, name)   # (honest requests under the cap are served)
    try:
        with _connect(capped, name) as extra:
            status, body = _answer(_trickle(extra, b""))   # answered at once, its request never read
        assert (status, body) == (503, b"too many connections\n")
        for sock in held:   # the connections under the cap are still served
            status, _ = _http(sock, _honest(capped, name))
            assert status != 503
    finally:
        for sock in held:
            sock.close()
    for sock in _fill(capped, name):   # their slots come back once closed: CAP new ones are served again
        sock.close()
    assert _stats(capped)[name]["refused"] >= 1


# -- item 4: bodies capped per route on the admin listener, before they are read ------------------

MAX_JSON = 64 * 1024


def _admin(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.admin_url.rsplit(":", 1)[1])), timeout=HANG_GUARD_S)


def _send_headers(server: Server, raw: bytes) -> tuple[int, bytes]:
    """Send only headers (the body never follows) and read the answer."""
    with _admin(server) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


def _chunked(server: Server, head: str, total: int) -> tuple[int, bytes]:
    """A chunked body of `total` bytes, sent while the answer is read (the server may stop early)."""
    with _admin(server) as sock:
        sock.sendall(f"{head}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())

        def pump() -> None:
            chunk = b"%x\r\n%s\r\n" % (65536, b"{" * 65536)
            try:
                for _ in range(total // 65536):
                    sock.sendall(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass   # cut off: the point

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        out = resp.status, resp.read()
        t.join(HANG_GUARD_S)
        return out


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_oversize_bodies_are_refused_unread_on_hil_routes(server: Server) -> None:
    """256 MiB declared to a route the user may not call: 413 at once (the body is never sent),
    in HIL's format; a chunked one is cut at 64 KiB. The user's permission is never reached."""
    admin = Hil(server.admin_url, token=server.token)
    admin.ok("PUT", "/auth/basic/user/bigbody", {"password": "pw-bigbody", "is_admin": False})
    head = f"PUT /hil/v0/project/bigproj HTTP/1.1\r\nHost: x\r\nAuthorization: {_basic('bigbody', 'pw-bigbody')}\r\n" \
           f"Content-Type: application/json"
    status, body = _send_headers(server, f"{head}\r\nContent-Length: {256 * 2**20}\r\n\r\n".encode())
    assert status == 413 and json.loads(body)["type"] == "RequestEntityTooLarge"
    status, body = _chunked(server, head, 4 * 2**20)
    assert status == 413 and json.loads(body)["type"] == "RequestEntityTooLarge"
    # Under the cap the body is read and checked (the call takes no "pad"), then the permission.
    user = Hil(server.admin_url, user="bigbody", password="pw-bigbody")
    status, err = user.call("PUT", "/project/bigproj", {"pad": "x" * 1000})
    assert (status, err["type"]) == (400, "ValidationError")
    status, err = user.call("PUT", "/project/bigproj")
    assert (status, err["type"]) == (401, "AuthorizationError")
    assert "bigproj" not in admin.ok("GET", "/projects")


def test_oversize_json_bodies_are_refused_unread_on_admin_routes(server: Server) -> None:
    head = f"POST /v0/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n" \
           f"Content-Type: application/json"
    status, body = _send_headers(server, f"{head}\r\nContent-Length: {2**40}\r\n\r\n".encode())
    assert status == 413 and json.loads(body)["error"] == "RequestEntityTooLarge"
    status, body = _chunked(server, head, 2**20)
    assert status == 413 and json.loads(body)["error"] == "RequestEntityTooLarge"
    padded = {"name": "big-json-ok", "pad": " " * (MAX_JSON - 100)}   # just under the cap: accepted
    assert server.admin("POST", "/v0/users", padded)["UserName"] == "big-json-ok"


def _images(server: Server) -> list[str]:
    return sorted(i["Name"] for i in server.admin("GET", "/v0/images"))


def test_image_uploads_stream_up_to_their_own_limit(tight: Server) -> None:
    """PUT /v0/images (`cloudctl image import FILE`) takes more than JSON's 64 KiB, streamed, up
    to `admin.max_image_gib` (1 MiB here); past it 413, nothing registered, no partial file kept."""
    store = Path(tight.cfg["image_store"])
    before = _images(tight)
    head = f"PUT /v0/images?name=too-big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tight.token}"
    status, body = _send_headers(tight, f"{head}\r\nContent-Length: {2 * 2**20}\r\n\r\n".encode())
    assert status == 413 and json.loads(body)["error"] == "RequestEntityTooLarge"
    status, body = _chunked(tight, head, 2 * 2**20)
    assert status == 413 and json.loads(body)["error"] == "RequestEntityTooLarge"
    assert _images(tight) == before and not list(store.glob("*.part"))
    data = b"\0" * (512 * 1024)   # 8 × JSON's cap, under the image limit
    with _admin(tight) as sock:
        status, body = _http(sock, f"PUT /v0/images?name=half-mib HTTP/1.1\r\nHost: x\r\n"
                                   f"Authorization: Bearer {tight.token}\r\nContent-Length: {len(data)}\r\n\r\n"
                                   .encode() + data)
    assert status == 201 and json.loads(body)["Size"] == len(data)
    assert "half-mib" in _images(tight)


def _ec2_raw(server: Server, raw: bytes, read_interim: bool = False) -> tuple[int, dict[str, str], bytes, bytes]:
    """Send `raw` to the EC2 listener; the final answer's status, headers and body (and what
    came before it: a 100 Continue)."""
    with socket.create_connection(("127.0.0.1", server.ports["ec2"]), timeout=HANG_GUARD_S) as sock:
        sock.sendall(raw)
        got = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            if read_interim and got.endswith(b"\r\n\r\n") and got.startswith(b"HTTP/1.1 100"):
                return 100, {}, b"", got
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    interim = b""
    if got.startswith(b"HTTP/1.1 100"):
        interim, got = got.split(b"\r\n\r\n", 1)
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body, interim


def test_ec2_requests_keep_the_guard_past_the_router(server: Server) -> None:
    """EC2's POST and GET are served past aiohttp's router (listener.direct): a declared length
    over 4 MiB is still refused unread in EC2's format on a connection that closes, Expect still
    gets its 100 Continue first, and other methods are still answered by the router (405)."""
    head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    status, headers, body, _ = _ec2_raw(server, f"{head}Content-Length: {2**30}\r\n\r\n".encode())
    assert status == 413 and b"<Code>RequestEntityTooLarge</Code>" in body
    assert headers["connection"] == "close"
    status, _, _, interim = _ec2_raw(server, f"{head}Content-Length: 6\r\nExpect: 100-continue\r\n\r\n".encode(),
                                        read_interim=True)
    assert status == 100 and interim.startswith(b"HTTP/1.1 100 Continue")
    status, _, _, _ = _ec2_raw(server, b"DELETE / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == 405
    status, _, body, _ = _ec2_raw(server, f"{head}Content-Length: 19\r\n\r\nAction=DescribeVpcs".encode())
    assert status == 401 and b"<Code>MissingAuthenticationToken</Code>" in body   # (a signed one: test_ec2_*)
