"""The EC2 side of the bench: boto3 clients, RunInstances rates, population, DescribeInstances timings.

End-to-end numbers go through boto3 because that is what users feel; the "raw" numbers send
the same request signed once with botocore's SigV4Auth over http.client and only read the
bytes, so the server's share of an end-to-end call can be told apart from boto3's parsing.
"""
from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

EC2_VERSION = "2016-11-15"


@dataclass
class Target:
    """One EC2 endpoint under test and how to talk to it."""

    name: str
    url: str
    region: str
    access_key: str
    secret_key: str
    image_id: str = ""
    instance_type: str = "t3.nano"
    ids: list[str] = field(default_factory=list)   # every instance we created, in order
    count: int = 0                                 # instances we created (none are terminated)

    def client(self) -> Any:
        """A boto3 EC2 client with no retries: a retried call would hide errors and distort timings."""
        cfg = Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=900,
                     max_pool_connections=2)
        return boto3.session.Session().client(
            "ec2", endpoint_url=self.url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, config=cfg)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summarize(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "p95": _pct(xs, 0.95)}


# --------------------------------------------------------------------------- RunInstances


def run_one_per_call(t: Target, calls: int, warmup: int = 10) -> dict[str, Any]:
    """Sequential RunInstances(MaxCount=1) from one client: calls/s and latency after a warm-up."""
    ec2 = t.client()

    def one() -> str:
        r = ec2.run_instances(ImageId=t.image_id, InstanceType=t.instance_type, MinCount=1, MaxCount=1)
        return r["Instances"][0]["InstanceId"]

    for _ in range(warmup):
        t.ids.append(one())
    lat: list[float] = []
    cpu0, w0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        s = time.perf_counter()
        t.ids.append(one())
        lat.append(time.perf_counter() - s)
    wall, cpu = time.perf_counter() - w0, time.process_time() - cpu0
    t.count += warmup + calls
    return {"calls": calls, "warmup": warmup, "calls_per_s": calls / wall, "wall_s": wall,
            "latency_ms": {k: v * 1000 if k != "n" else v for k, v in summarize(lat).items()},
            "client_cpu_ms_per_call": cpu / calls * 1000}


def populate(t: Target, total: int, batch: int = 100, tag_x_last: bool = False,
             batch_counter: list[int] | None = None) -> dict[str, Any]:
    """Top the server up to `total` instances with RunInstances(MaxCount<=100) tagged Name=batch-K.

    With `tag_x_last` the final instance is launched alone and tagged Name=x, so exactly one
    instance matches the tag filter benchmark.
    """
    ec2 = t.client()
    counter = batch_counter if batch_counter is not None else [0]
    start_count, w0 = t.count, time.perf_counter()
    per_call: list[float] = []

    def launch(n: int, name: str) -> None:
        s = time.perf_counter()
        r = ec2.run_instances(
            ImageId=t.image_id, InstanceType=t.instance_type, MinCount=n, MaxCount=n,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}])
        per_call.append(time.perf_counter() - s)
        got = [i["InstanceId"] for i in r["Instances"]]
        if len(got) != n:
            raise RuntimeError(f"{t.name}: RunInstances MaxCount={n} returned {len(got)} instances")
        t.ids.extend(got)
        t.count += n

    goal = total - 1 if tag_x_last else total
    while t.count < goal:
        n = min(batch, goal - t.count)
        counter[0] += 1
        launch(n, f"batch-{counter[0]}")
    if tag_x_last:
        launch(1, "x")
    wall = time.perf_counter() - w0
    made = t.count - start_count
    return {"created": made, "wall_s": wall, "instances_per_s": made / wall if wall else 0.0,
            "call_s": summarize(per_call) if per_call else {}}


# --------------------------------------------------------------------------- DescribeInstances


def describe_boto3(t: Target, reps: int, expect: int) -> dict[str, Any]:
    """Unfiltered DescribeInstances end to end (one call, no MaxResults), as a user would call it."""
    ec2 = t.client()
    walls: list[float] = []
    cpus: list[float] = []
    returned = 0
    next_token = False
    for _ in range(reps):
        c0, w0 = time.process_time(), time.perf_counter()
        r = ec2.describe_instances()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        returned = sum(len(res["Instances"]) for res in r["Reservations"])
        next_token = bool(r.get("NextToken"))
        del r
    out: dict[str, Any] = {"reps": reps, "s": summarize(walls), "client_cpu_s": summarize(cpus),
                           "returned": returned, "expected": expect, "next_token": next_token}
    return out


def signed_raw_request(t: Target, body: str) -> tuple[str, dict[str, str], bytes]:
    """A Query-API POST signed once with botocore's SigV4Auth (valid for the 15-min skew window)."""
    req = AWSRequest(method="POST", url=t.url + "/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(t.access_key, t.secret_key), "ec2", t.region).add_auth(req)
    prep = req.prepare()
    headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in prep.headers.items()}
    data = prep.body if isinstance(prep.body, bytes) else str(prep.body or "").encode()
    return "/", headers, data


def send_raw(url: str, path: str, headers: dict[str, str], body: bytes,
             timeout: float = 900.0) -> tuple[int, bytes, float]:
    """POST over an already-open http.client connection; time = request sent → last byte read."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.connect()
        w0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - w0
    finally:
        conn.close()


def describe_raw(t: Target, reps: int) -> dict[str, Any]:
    """The unfiltered DescribeInstances without boto3: server time plus transport, no XML parsing."""
    path, headers, body = signed_raw_request(t, f"Action=DescribeInstances&Version={EC2_VERSION}")
    walls: list[float] = []
    size = n_items = status = 0
    for _ in range(reps):
        status, data, wall = send_raw(t.url, path, headers, body)
        if status != 200:
            raise RuntimeError(f"{t.name}: raw DescribeInstances answered {status}: {data[:300]!r}")
        walls.append(wall)
        size, n_items = len(data), data.count(b"<instanceId>")
        del data
    return {"reps": reps, "s": summarize(walls), "bytes": size, "instance_ids_in_body": n_items,
            "status": status}


def tag_x_raw(t: Target, reps: int) -> dict[str, Any]:
    """The tag filter without boto3, to separate the server's time from boto3's ~1.5 ms per call."""
    path, headers, body = signed_raw_request(
        t, f"Action=DescribeInstances&Version={EC2_VERSION}&Filter.1.Name=tag%3AName&Filter.1.Value.1=x")
    walls: list[float] = []
    for _ in range(reps):
        status, data, wall = send_raw(t.url, path, headers, body)
        if status != 200 or data.count(b"<instanceId>") != 1:
            raise RuntimeError(f"{t.name}: raw tag filter answered {status}: {data[:300]!r}")
        walls.append(wall)
    return {"reps": reps, "s": summarize(walls)}


def describe_tag_x(t: Target, reps: int) -> dict[str, Any]:
    """DescribeInstances with filter tag:Name=x (exactly one match): tests tag indexing."""
    ec2 = t.client()
    walls: list[float] = []
    matched = -1
    for _ in range(reps):
        w0 = time.perf_counter()
        r = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["x"]}])
        walls.append(time.perf_counter() - w0)
        matched = sum(len(res["Instances"]) for res in r["Reservations"])
    return {"reps": reps, "s": summarize(walls), "matched": matched}
