"""Clients that send slowly, too much or too often, against one served cloudctl (issue 21, items 3-4).

    .venv/bin/python bench/slow_clients.py [--clients 200] [--timeout 60] [--cap 300] [--json out.json]

1. Trickled bodies: `--clients` connections per listener (EC2, XML-RPC, a bare-metal route) send
   whole headers, then a body byte per second. Reported: how many the server cut off, the status
   they got (408) and when, against `client_timeout_s` (`--timeout`, on every listener).
2. Trickled headers (slowloris): the same, never finishing the headers.
3. An oversize body to a bare-metal route its user may not call: 256 MiB chunked, then 256 MiB
   declared. Reported: status, seconds to the answer and the server's RSS before and after.
4. Connection cap: XML-RPC with `max_connections: --cap`, `--cap` + 100 idle connections.
   Reported: how many were refused with 503, and whether the admin listener still answers.
Targets: every trickler cut off by `client_timeout_s` + 3 s; RSS growth under 16 MiB for the
oversize bodies; exactly 100 refused.
"""
from __future__ import annotations

import argparse
import base64
import json
import selectors
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def trickle(targets: dict[str, tuple[int, bytes]], n: int, body: bool, give_up_s: float) -> dict[str, Any]:
    """n connections per target; each sends its head (whole, or all but its end) and then a byte
    per second. Returns, per target, how many the server closed, when, and the first status line."""
    sel = selectors.DefaultSelector()
    conns: dict[socket.socket, dict[str, Any]] = {}
    for name, (port, head) in targets.items():
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head if body else head[:-2] + b"X-Slow: ")   # (headers: one never ends)
            s.setblocking(False)
            conns[s] = {"name": name, "got": b"", "closed": None}
            sel.register(s, selectors.EVENT_READ)
    t0 = time.monotonic()
    next_byte = t0 + 1
    while any(c["closed"] is None for c in conns.values()) and time.monotonic() - t0 < give_up_s:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            c = conns[s]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            c["got"] += data
            if not data:
                c["closed"] = time.monotonic() - t0
                sel.unregister(s)
        if time.monotonic() >= next_byte:
            next_byte += 1
            for s, c in conns.items():
                if c["closed"] is None:
                    try:
                        s.send(b"x" if body else b"a")
                    except OSError:
                        pass
    out: dict[str, Any] = {}
    for name in targets:
        mine = [c for c in conns.values() if c["name"] == name]
        closed = [c["closed"] for c in mine if c["closed"] is not None]
        statuses: dict[str, int] = {}
        for c in mine:
            line = c["got"].split(b"\r\n", 1)[0].decode(errors="replace") or "(closed, no answer)"
            statuses[line] = statuses.get(line, 0) + 1
        out[name] = {"cut": len(closed), "of": len(mine), "first_s": round(min(closed, default=0), 1),
                     "last_s": round(max(closed, default=0), 1), "answers": statuses}
    for s in conns:
        s.close()
    return out


def oversize(cc: procs.Cloudctl, admin_port: int, auth: str) -> dict[str, Any]:
    """256 MiB to PUT /hil/v0/project/..., chunked and then declared; RSS before and after."""
    out: dict[str, Any] = {"rss_before_mib": round(cc.proc.rss_mib(), 1)}
    head = (f"PUT /hil/v0/project/forbidden HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\n")
    for how in ("chunked", "declared"):
        with socket.create_connection(("127.0.0.1", admin_port), timeout=120) as s:
            t0 = time.monotonic()
            if how == "declared":
                s.sendall(f"{head}Content-Length: {256 * 2**20}\r\n\r\n".encode())
            else:
                s.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())

                def pump() -> None:
                    chunk = b"%x\r\n%s\r\n" % (2**20, b"{" * 2**20)
                    try:
                        for _ in range(256):
                            s.sendall(chunk)
                        s.sendall(b"0\r\n\r\n")
                    except OSError:
                        pass
                threading.Thread(target=pump, daemon=True).start()
            status = s.recv(4096).split(b"\r\n", 1)[0].decode()
            out[how] = {"answer": status, "seconds": round(time.monotonic() - t0, 3)}
        out[f"rss_after_{how}_mib"] = round(cc.proc.rss_mib(), 1)
    return out


def cap(cc: procs.Cloudctl, port: int, limit: int, extra: int) -> dict[str, Any]:
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit)]
    refused = 0
    try:
        for _ in range(extra):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                refused += s.recv(4096).startswith(b"HTTP/1.1 503")
        t0 = time.monotonic()
        cc.admin("GET", "/v0/health")
        admin_ms = (time.monotonic() - t0) * 1000
    finally:
        for s in held:
            s.close()
    return {"held": limit, "extra": extra, "refused_503": refused, "admin_health_ms": round(admin_ms, 1),
            "stats": cc.stats()["connections"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--cap", type=int, default=300)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    tmp = procs.make_tmp()
    one_port = procs.free_port()
    limits = {"client_timeout_s": args.timeout}
    cc = procs.start_cloudctl(tmp, overrides={
        "ec2": limits, "admin": limits, "metadata": {"listen": "127.0.0.1", "port": 0},
        "xmlrpc": {"listen": "127.0.0.1", "port": one_port, "max_connections": args.cap, **limits}})
    try:
        admin_port = _port(cc.admin_url)
        cc.admin("PUT", "/hil/v0/auth/basic/user/slowpoke", {"password": "slowpoke-pw", "is_admin": False})
        basic = "Basic " + base64.b64encode(b"slowpoke:slowpoke-pw").decode()
        bodies = {
            "ec2": (_port(cc.ec2_url), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                                       b"\r\nContent-Length: 10000\r\n\r\n"),
            "xmlrpc": (one_port, b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                                 b"Content-Length: 10000\r\n\r\n"),
            "hil": (admin_port, f"PUT /hil/v0/project/slow HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\n"
                                f"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n".encode()),
        }
        give_up = args.timeout + 30
        result: dict[str, Any] = {"client_timeout_s": args.timeout}
        result["trickled_bodies"] = trickle(bodies, args.clients, True, give_up)
        result["trickled_headers"] = trickle(bodies, args.clients, False, give_up)
        result["oversize"] = oversize(cc, admin_port, basic)
        result["cap"] = cap(cc, one_port, args.cap, 100)
    finally:
        cc.proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    limit_s = args.timeout + 3
    ok = all(r["cut"] == r["of"] and r["last_s"] <= limit_s
             for phase in ("trickled_bodies", "trickled_headers") for r in result[phase].values())
    big = result["oversize"]
    grew = max(v for k, v in big.items() if k.startswith("rss_after")) - big["rss_before_mib"]
    print(f"trickling clients all cut off within {limit_s:.0f} s: {'PASS' if ok else 'FAIL'}; "
          f"RSS growth for 2 x 256 MiB bodies: {grew:.1f} MiB ({'PASS' if grew < 16 else 'FAIL'}); "
          f"refused over the cap: {result['cap']['refused_503']}/100 "
          f"({'PASS' if result['cap']['refused_503'] == 100 else 'FAIL'})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
