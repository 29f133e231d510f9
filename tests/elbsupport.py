"""Helpers for the ELB tests: a served cloudctl whose guests' addresses are loopback addresses,
so a test's own HTTP servers stand in for the instances behind real HAProxy proxies.

The config puts the default VPC's networks on 127.a.b.0/24 and 127.a.(b+1).0/24 (random, so
parallel servers never share an address) and the load balancers' loopback pool on 127.a.(b+2).0/24.
A `test:///` instance's private address is then one the test can bind: `Backend` serves
HTTP there on the instance port, answering the instance's id, as a guest's web server would.
"""
from __future__ import annotations

import http.client
import http.server
import random
import socket
import threading
from typing import Any

from support import aws_ok, boto_client, wait_until


def elb_config(**elb: Any) -> dict[str, Any]:
    a, b = random.randint(100, 250), random.randrange(0, 250, 4)
    nets = [{"name": "net-1a", "zone": "cloudctl-1a", "cidr": f"127.{a}.{b}.0/24"},
            {"name": "net-1b", "zone": "cloudctl-1b", "cidr": f"127.{a}.{b + 1}.0/24"}]
    return {"vpc_cidr": "127.0.0.0/8", "networks": nets,
            "elb": {"loopback_pool": f"127.{a}.{b + 2}.0/24", "remove_proxies_on_stop": True, "refresh_s": 0.5,
                    **elb}}


def elb_client(server: Any, user: dict[str, str], validate: bool = True) -> Any:
    return boto_client(server, user, "elb", parameter_validation=validate)


def aws(server: Any, user: dict[str, str], *args: str) -> Any:
    """The AWS CLI (JSON out); AssertionError with its stderr if it fails."""
    out = aws_ok(server, user, *args)
    return {} if out is None else out


def launch(ec2: Any, image: str, n: int, zone: str = "cloudctl-1a") -> list[dict[str, Any]]:
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=n, MaxCount=n, InstanceType="t3.nano",
                                                      Placement={"AvailabilityZone": zone})["Instances"]]
    wait_until(lambda: all(i["State"]["Name"] == "running" for r in ec2.describe_instances(InstanceIds=ids)
                           ["Reservations"] for i in r["Instances"]), 30, "instances running")
    found = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
             for i in r["Instances"]}
    return [found[i] for i in ids]


def public_image(ec2: Any) -> str:
    """The blank image the default config seeds."""
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"]
    return str(images[0]["ImageId"])


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:   # noqa: N802 (http.server's name)
        body = self.server.answer.encode()   # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass   # the proxy's TCP checks connect and reset


class Backend:
    """An HTTP server on an instance's private address, answering the instance's id."""

    def __init__(self, address: str, port: int, answer: str) -> None:
        self.httpd = _Server((address, port), _Answer)
        self.httpd.answer = answer   # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def get(address: str, port: int, path: str = "/", headers: dict[str, str] | None = None,
        timeout: float = 5) -> tuple[int, str, dict[str, str]]:
    """One HTTP GET through the load balancer: status, body, headers."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def answers(address: str, port: int, n: int) -> list[str]:
    """The bodies of `n` requests (errors as `ERR:…`)."""
    out = []
    for _ in range(n):
        try:
            status, body, _ = get(address, port)
            out.append(body if status == 200 else f"ERR:{status}")
        except OSError as e:
            out.append(f"ERR:{type(e).__name__}")
    return out


def refuses(address: str, port: int) -> bool:
    """Nothing listens there (connection refused)."""
    try:
        with socket.create_connection((address, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def health(elb: Any, name: str) -> dict[str, tuple[str, str, str]]:
    return {s["InstanceId"]: (s["State"], s["ReasonCode"], s["Description"])
            for s in elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]}


def wait_health(elb: Any, name: str, want: dict[str, str], timeout: float = 60) -> dict[str, tuple[str, str, str]]:
    got: dict[str, tuple[str, str, str]] = {}

    def ok() -> bool:
        got.clear()
        got.update(health(elb, name))
        return all(got.get(i, ("",))[0] == s for i, s in want.items())
    wait_until(ok, timeout, f"instance health {want} (last: {got})")
    return got

