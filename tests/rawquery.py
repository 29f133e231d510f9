"""Raw Query requests (EC2's, or another service's: `service`) signed with botocore's own SigV4
signer, and the state digest.

boto3 validates parameters before sending, so it cannot send the malformed requests the fuzz
tests need; this sends any form fields (even bad UTF-8) with a real signature, so they pass
the auth layer and reach the parser and the handlers.
"""
from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit
from xml.etree import ElementTree as ET

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

API_VERSION = "2016-11-15"
Value = str | bytes


def _q(v: Value) -> str:
    return quote_from_bytes(v, safe="") if isinstance(v, bytes) else quote(v, safe="-_.~")


def form_body(action: str, pairs: list[tuple[str, Value]], version: str = API_VERSION) -> bytes:
    fields = [("Action", action), ("Version", version), *pairs]
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in fields).encode()


class SignedQuery:
    """One keep-alive connection to the EC2 endpoint, as one user."""

    def __init__(self, endpoint: str, user: dict[str, str], region: str, service: str = "ec2",
                 version: str = API_VERSION) -> None:
        self.service, self.version = service, version
        u = urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/") + "/"
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.creds = Credentials(user["AccessKeyId"], user["SecretAccessKey"])
        self.region = region
        self.conn: http.client.HTTPConnection | None = None

    def signed(self, body: bytes, content_type: str = "application/x-www-form-urlencoded; charset=utf-8"
               ) -> dict[str, str]:
        req = AWSRequest(method="POST", url=self.endpoint, data=body, headers={"Content-Type": content_type})
        SigV4Auth(self.creds, self.service, self.region).add_auth(req)
        return dict(req.headers.items())

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return self._exchange("POST", "/", body, headers)

    def _exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str]
                  ) -> tuple[int, bytes]:
        """One request over the kept-alive connection.

        The server closes a connection idle for its client timeout (2 s in the fuzz tests); a
        request sent on it meanwhile is never read and fails with RemoteDisconnected or a reset,
        so it is sent once more on a new connection (RFC 9112 §9.3.1). A new connection that
        fails is a real failure and is raised.
        """
        reused = self.conn is not None
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            self.conn.request(method, target, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            self.close()
            if not reused:
                raise
            return self._exchange(method, target, body, headers)
        if resp.will_close:
            self.close()
        return resp.status, data

    def send(self, action: str, pairs: list[tuple[str, Value]], method: str = "POST") -> tuple[int, bytes]:
        body = form_body(action, pairs, self.version)
        if method == "GET":   # the same fields in the query string, signed as botocore signs a URL
            return self.get(body.decode())
        return self.post(body, self.signed(body))

    def get(self, query: str) -> tuple[int, bytes]:
        req = AWSRequest(method="GET", url=f"{self.endpoint}?{query}")
        SigV4Auth(self.creds, self.service, self.region).add_auth(req)
        return self._exchange("GET", "/?" + query, None, dict(req.headers.items()))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def error_code(status: int, body: bytes) -> str | None:
    """The code of a well-formed EC2 error document; raises AssertionError on anything else."""
    doc = ET.fromstring(body)
    assert doc.tag == "Response", f"HTTP {status}: error root is {doc.tag!r}: {body[:300]!r}"
    code = doc.findtext("Errors/Error/Code")
    assert code, f"HTTP {status}: error without a code: {body[:300]!r}"
    assert doc.find("Errors/Error/Message") is not None, f"error without a message: {body[:300]!r}"
    assert doc.findtext("RequestID"), f"error without a RequestID: {body[:300]!r}"
    return code


class StateProbe:
    """The admin digest of the whole state, over one keep-alive connection."""

    def __init__(self, admin_url: str, token: str) -> None:
        u = urlsplit(admin_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.token = token
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> dict[str, Any]:
        reused = self.conn is not None
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            self.conn.request("GET", "/v0/state/digest", headers={"Authorization": f"Bearer {self.token}"})
            resp = self.conn.getresponse()
            data = json.loads(resp.read())
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            self.conn.close()   # closed by the server while idle (see SignedQuery._exchange)
            self.conn = None
            if not reused:
                raise
            return self.get()
        assert resp.status == 200, data
        return data

    def state(self) -> tuple[str, int]:
        d = self.get()
        return d["digest"], d["commits"]

    def settle(self, timeout: float = 120.0) -> tuple[str, int]:
        """Wait until background work (hypervisor, copies) is done and the state stops moving."""
        deadline = time.monotonic() + timeout
        last: tuple[str, int] | None = None
        while True:
            d = self.get()
            now = (d["digest"], d["commits"])
            if d["pending_work"] == 0 and now == last:
                return now
            last = now if d["pending_work"] == 0 else None
            if time.monotonic() > deadline:
                raise AssertionError(f"state did not settle in {timeout} s: {d}")
            time.sleep(0.01)
