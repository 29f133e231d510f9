"""Property-based fuzzing of every implemented EC2 action, driven by botocore's model.

For each action in `ACTIONS` (actions added later are fuzzed without touching this file),
hypothesis draws requests from the action's input shape (`fuzz_model.py`) and sends them,
signed, to a real server. Properties: never a 5xx, the server keeps answering, every error is
a well-formed EC2 error document with a code, and a rejected request leaves the state exactly
as it was (the admin digest of every row and the count of committed changes are unchanged).

`CLOUDCTL_FUZZ_EXAMPLES` sets the examples per action (else the Hypothesis profile: `dev` 5, `ci` 12;
`make fuzz` runs 2000).
Malformed HTTP (content types, huge and stalled bodies, many idle connections) is tested below.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2.actions import ACTIONS
from cloudctl.api.ec2.model import OPERATIONS

from fuzz_model import Pools, RequestStrategies
from rawquery import SignedQuery, StateProbe, error_code, form_body
from support import REGION, Server, write_config
from tenants import make_resources, summary

# Examples per action: CLOUDCTL_FUZZ_EXAMPLES when set (`make fuzz`), else the Hypothesis profile's
# (conftest.py: `dev` a few, derandomized; `ci` 12, drawn afresh).
_FUZZ_EXAMPLES = os.environ.get("CLOUDCTL_FUZZ_EXAMPLES")
EXAMPLES: dict[str, Any] = {"max_examples": int(_FUZZ_EXAMPLES), "derandomize": False} if _FUZZ_EXAMPLES else {}
CLIENT_TIMEOUT_S = 2.0
FUZZED = sorted(a for a in ACTIONS if a in OPERATIONS)
_NEW_IDS = re.compile(rb"<(instanceId|volumeId|snapshotId|imageId|keyPairId|keyName|groupId|allocationId"
                      rb"|launchTemplateId|launchTemplateName)>"
                      rb"([^<]{1,80})</")
_KIND = {b"instanceId": "instance", b"volumeId": "volume", b"snapshotId": "snapshot", b"imageId": "image",
         b"keyPairId": "keypair", b"keyName": "keyname", b"groupId": "group", b"allocationId": "address",
         b"launchTemplateId": "launchtemplate", b"launchTemplateName": "launchtemplatename"}


class FuzzEnv:
    def __init__(self, server: Server, fuzz_user: dict[str, str], pools: Pools) -> None:
        self.server = server
        self.client = SignedQuery(server.endpoint, fuzz_user, REGION)
        self.probe = StateProbe(server.admin_url, server.token)
        self.pools = pools
        self.strategies = RequestStrategies(pools)
        self.sent: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.per_action: dict[str, Counter[str]] = {}
        self.state = self.probe.settle()

    def check(self, action: str, pairs: list[tuple[str, Any]], get: bool = False) -> None:
        before = self.state
        # Small requests go as GET now and then (the fields in the signed query string); long
        # URLs are refused by the HTTP layer itself (aiohttp: 8190 bytes per request line).
        method = "GET" if get and len(form_body(action, pairs)) < 4000 else "POST"
        status, body = self.client.send(action, pairs, method)
        self.sent[action] += 1
        shown = f"{method} {action} {pairs!r:.600}"
        assert self.server.proc is not None and self.server.proc.poll() is None, f"server died on {shown}"
        assert status < 500, f"HTTP {status} for {shown}: {body[:500]!r}"
        if status == 200:
            self.outcomes["ok"] += 1
            self.per_action.setdefault(action, Counter())["ok"] += 1
            assert re.match(rb"<\?xml[^>]*>\s*<" + action.encode() + rb"Response", body), body[:300]
            for kind, value in _NEW_IDS.findall(body):
                ids = self.pools.own.setdefault(_KIND[kind], [])
                if value.decode() not in ids and len(ids) < 50:
                    ids.append(value.decode())
            self.state = self.probe.settle()
            return
        code = error_code(status, body)
        self.outcomes[f"{status} {code}"] += 1
        self.per_action.setdefault(action, Counter())[f"{code}"] += 1
        after = self.probe.state()
        assert after == before, f"rejected request ({status} {code}) changed the state: {shown}"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("fuzz-server")
    cfg = write_config(d, model_cache)
    data = yaml.safe_load(cfg.read_text())
    data["ec2"]["client_timeout_s"] = CLIENT_TIMEOUT_S
    cfg.write_text(yaml.safe_dump(data))
    s = Server(cfg).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fuzz_env(fuzz_server: Server, request: pytest.FixtureRequest) -> Iterator[FuzzEnv]:
    fuzz, victim = fuzz_server.create_user("fuzz"), fuzz_server.create_user("victim")
    own = make_resources(fuzz_server, fuzz, "fuzz")
    own["image"] += own["public_image"]
    pools = Pools(own=own, foreign=make_resources(fuzz_server, victim, "victim"))
    env = FuzzEnv(fuzz_server, fuzz, pools)
    t0 = time.monotonic()
    yield env
    line = (f"fuzzed {len(env.sent)} actions, {sum(env.sent.values())} requests in "
            f"{time.monotonic() - t0:.1f} s ({settings(**EXAMPLES).max_examples} examples per action); outcomes: "
            + ", ".join(f"{k} x{n}" for k, n in env.outcomes.most_common(12)))
    summary(request.config, "fuzz summary", line)
    if os.environ.get("CLOUDCTL_FUZZ_REPORT"):
        with open(os.environ["CLOUDCTL_FUZZ_REPORT"], "w") as f:
            json.dump({"examples_per_action": settings(**EXAMPLES).max_examples, "requests": dict(env.sent),
                       "outcomes": dict(env.outcomes),
                       "per_action": {a: dict(c) for a, c in env.per_action.items()}}, f, indent=1)
    env.client.close()


def test_every_implemented_action_is_fuzzed() -> None:
    assert len(FUZZED) == len(ACTIONS) >= 30
    assert {"RunInstances", "CreateTags", "AttachVolume", "ImportKeyPair"} <= set(FUZZED)


def test_state_digest_sees_changes(fuzz_env: FuzzEnv) -> None:
    """The probe the properties rest on: an accepted change moves the digest and the commit count,
    a refused request moves neither."""
    before = fuzz_env.probe.settle()
    status, body = fuzz_env.client.send("CreateKeyPair", [("KeyName", "digest-probe")])
    assert status == 200, body[:300]
    after = fuzz_env.probe.settle()
    assert after[0] != before[0] and after[1] > before[1]
    status, body = fuzz_env.client.send("CreateKeyPair", [("KeyName", "digest-probe")])
    assert error_code(status, body) == "InvalidKeyPair.Duplicate"
    assert fuzz_env.probe.state() == after
    status, _ = fuzz_env.client.send("DeleteKeyPair", [("KeyName", "digest-probe")])
    assert status == 200
    fuzz_env.state = fuzz_env.probe.settle()


@pytest.mark.slow
def test_client_survives_the_servers_idle_close(fuzz_env: FuzzEnv) -> None:
    """The server closes a keep-alive connection idle for its client timeout; the next request,
    GET or POST, goes out on a new connection (a GET on the stale one was a RemoteDisconnected
    flake in the fuzz run) and is served once."""
    for method in ("GET", "POST"):
        assert fuzz_env.client.send("DescribeRegions", [])[0] == 200
        time.sleep(CLIENT_TIMEOUT_S * 1.5)
        status, body = fuzz_env.client.send("DescribeRegions", [], method)
        assert status == 200, body[:300]
    assert fuzz_env.probe.state() == fuzz_env.state


@pytest.mark.parametrize("action", FUZZED)
def test_fuzz_action(action: str, fuzz_env: FuzzEnv) -> None:
    @settings(**EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(pairs=fuzz_env.strategies.request(action), dry_run=st.sampled_from([False] * 5 + [True]),
           get=st.sampled_from([False] * 5 + [True]))
    def run(pairs: list[tuple[str, Any]], dry_run: bool, get: bool) -> None:
        fuzz_env.check(action, pairs + ([("DryRun", "true")] if dry_run else []), get)
    fuzz_env.state = fuzz_env.probe.settle()   # whatever ran before this test
    run()


# -- malformed HTTP -------------------------------------------------------------------------------

def test_boundary_requests(fuzz_env: FuzzEnv) -> None:
    """Named cases the random search may miss: each is rejected with its EC2 code, state intact."""
    own = fuzz_env.pools.own
    image = own["public_image"][0]
    big = "#!/bin/sh\n" + "x" * (16 * 1024)
    cases: list[tuple[str, list[tuple[str, Any]], str]] = [
        # Integers are AWS's: 32 bits for `integer`, 64 for `long` (2**63 was accepted as a MaxCount).
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", str(2**63))], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", str(2**31))], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", str(2**31 - 1))],
         "InstanceLimitExceeded"),
        ("CreateVolume", [("AvailabilityZone", "cloudctl-1a"), ("Size", "9" * 5000)], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "0"), ("MaxCount", "0")], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "5"), ("MaxCount", "1")], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", "-1")], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", "1001")], "InstanceLimitExceeded"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", "1"),
                          ("UserData", base64.b64encode(big.encode()).decode())], "InvalidParameterValue"),
        ("RunInstances", [("ImageId", image), ("MinCount", "1"), ("MaxCount", "1"), ("UserData", "!!notbase64")],
         "InvalidParameterValue"),
        ("ImportKeyPair", [("KeyName", "k1"), ("PublicKeyMaterial", "%%%")], "InvalidParameterValue"),
        ("DescribeInstances", [("Bogus", "1")], "UnknownParameter"),
        # Found by fuzzing: a NUL or an over-long file name in ImageLocation was a 500 (ValueError,
        # ENAMETOOLONG from the path check); AMI names took any character.
        ("RegisterImage", [("Name", "nul-location"), ("ImageLocation", "cloudctl-blank.img\x00")],
         "InvalidParameterValue"),
        ("RegisterImage", [("Name", "long-location"), ("ImageLocation", "x" * 5000)], "InvalidParameterValue"),
        ("RegisterImage", [("Name", "nul\x00name"), ("ImageLocation", "cloudctl-blank.img")], "InvalidParameterValue"),
        ("RegisterImage", [("Name", "<b>$(id)</b>"), ("ImageLocation", "cloudctl-blank.img")],
         "InvalidParameterValue"),
        ("TerminateInstances", [], "MissingParameter"),
        ("TerminateInstances", [("InstanceId.1", fuzz_env.pools.foreign["instance"][0])],
         "InvalidInstanceID.NotFound"),
        ("CreateTags", [("ResourceId.1", own["instance"][0]), ("Tag.1.Key", b"\xff\xfe")],
         "InvalidParameterValue"),
    ]
    for action, pairs, code in cases:
        before = fuzz_env.probe.state()
        status, body = fuzz_env.client.send(action, pairs)
        got = error_code(status, body)
        assert 400 <= status < 500, (action, pairs, status, body[:300])
        if code is not None:
            assert got == code, (action, pairs, got)
        assert fuzz_env.probe.state() == before, (action, pairs)


def _raw(server: Server, data: bytes, timeout: float = 30) -> bytes:
    host, port = "127.0.0.1", int(server.endpoint.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"</Response>" in out:
                break
        return out


def test_wrong_content_types(fuzz_env: FuzzEnv) -> None:
    client = fuzz_env.client
    body = form_body("DescribeInstances", [])
    for ctype in ("application/json", "text/xml", "multipart/form-data; boundary=x", "application/octet-stream"):
        before = fuzz_env.probe.state()
        status, resp = client.post(body, client.signed(body, ctype))
        assert 400 <= status < 500, (ctype, status)
        assert error_code(status, resp) == "MissingAction"
        assert fuzz_env.probe.state() == before
    # Non-UTF-8 bytes straight in a form body (not percent-encoded).
    raw = b"Action=CreateKeyPair&Version=2016-11-15&KeyName=\xff\xfe"
    status, resp = client.post(raw, client.signed(raw))
    assert status == 400 and error_code(status, resp) == "InvalidParameterValue"


def test_huge_body_refused_before_it_is_read(fuzz_env: FuzzEnv) -> None:
    """A declared 1 GiB body is refused at once with 413 (the client sends only the headers)."""
    server = fuzz_env.server
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1073741824\r\n\r\nAction=DescribeInstances")
    out = _raw(server, head, timeout=CLIENT_TIMEOUT_S * 10)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b"<Code>" in out
    # Chunked, no length: refused once past the limit, with the same 413 (not a 500).
    client = fuzz_env.client

    def chunks() -> Iterator[bytes]:
        yield b"Action=DescribeInstances&X="
        for _ in range(80):
            yield b"A" * 65536
    conn = http.client.HTTPConnection("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request("POST", "/", body=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"},
                     encode_chunked=True)
        resp = conn.getresponse()
        data = resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server dropped the connection instead of answering 413")
    finally:
        conn.close()
    assert resp.status == 413, (resp.status, data[:300])
    assert error_code(resp.status, data) == "RequestEntityTooLarge"
    status, _ = client.send("DescribeRegions", [])
    assert status == 200


@pytest.mark.slow
def test_stalled_clients_are_timed_out(fuzz_env: FuzzEnv) -> None:
    """Headers then silence, or half a request line: the server closes the connection."""
    port = int(fuzz_env.server.endpoint.rsplit(":", 1)[1])
    stalls = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\nAction=Desc",              # body promised, never sent
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le",              # headers never finished
        b"",                                                      # connects and says nothing
    ]
    for data in stalls:
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S * 15) as s:
            s.sendall(data)
            got = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    pytest.fail(f"connection still open after {CLIENT_TIMEOUT_S * 15} s: {data!r}")
                if not chunk:
                    break   # closed by the server
                got += chunk
        if got:
            assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert fuzz_env.client.send("DescribeRegions", [])[0] == 200


def test_many_idle_connections(fuzz_env: FuzzEnv) -> None:
    """500 idle sockets do not keep a real client out."""
    server = fuzz_env.server
    port = int(server.endpoint.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        ec2 = server.client(server.create_user("crowd"))
        assert ec2.describe_regions()["Regions"][0]["RegionName"] == REGION
    finally:
        for s in socks:
            s.close()
