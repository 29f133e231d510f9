"""Small HTTP servers that answer their own name, random loopback addresses, and wrk as a load
generator: what the load-balancer tests and bench put behind (and in front of) a real HAProxy.

Each server is a child process (not a thread of the test, whose GIL would slow the load down),
started in its own process group and stopped by the PID recorded at start.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Answers every GET with its name (/headers: the request's headers); sets an application cookie
# for app-cookie stickiness tests.
_HELLO = r"""
import http.server, sys
name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (str(self.headers) if self.path == "/headers" else name).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "app=" + name)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512
    def handle_error(self, request, client_address):
        pass    # health checks reset their connections
S((addr, port), H).serve_forever()
"""


def random_loopback() -> str:
    """An address of 127/8 outside 127.0.0.0/16, so parallel runs do not meet."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class HelloServer:
    name: str
    address: str
    port: int
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> "HelloServer":
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", _HELLO, self.name, self.address, str(self.port)],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if self.netns is None:
            deadline = time.monotonic() + 15
            while not listening(self.address, self.port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hello server {self.name} did not listen on {self.address}:{self.port}")
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def get(url: str, cookie: str | None = None, timeout: float = 5) -> tuple[str, list[tuple[str, str]]]:
    """One GET with a fresh connection: (body, headers in order, repeated ones kept)."""
    import urllib.request
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode(), list(r.headers.items())


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d\\n", summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class WrkResult:
    requests: int
    connect: int
    read: int
    write: int
    status: int          # answers other than 2xx/3xx
    timeout: int

    @property
    def lost(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout


class Wrk:
    """wrk hammering a URL in the background for `seconds`; `result()` waits and parses its summary."""

    def __init__(self, url: str, seconds: int, connections: int = 8, threads: int = 2) -> None:
        fd, self.script = tempfile.mkstemp(suffix=".lua")
        os.write(fd, _WRK_DONE.encode())
        os.close(fd)
        self.proc = subprocess.Popen(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
             "-s", self.script, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def result(self) -> WrkResult:
        out, _ = self.proc.communicate(timeout=120)
        Path(self.script).unlink(missing_ok=True)
        text = out.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("WRK "):
                return WrkResult(*(int(x) for x in line.split()[1:]))
        raise RuntimeError(f"wrk printed no summary: {text[-500:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        Path(self.script).unlink(missing_ok=True)
