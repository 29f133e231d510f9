"""`make stress`, load part: 50 concurrent boto3 clients of mixed operations for 60 s against
one cloudctl; prints p50/p99 per action, errors other than the expected ones, the server's RSS
before and after, and the event loop's longest stall.

Usage:  .venv/bin/python bench/stress.py [--clients 50] [--seconds 60]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402

EXPECTED = {"InvalidKeyPair.Duplicate"}   # clients race for a few shared key names on purpose


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Client(threading.Thread):
    def __init__(self, n: int, cc: procs.Cloudctl, user: dict[str, str], image: str, until: float,
                 lat: dict[str, list[float]], errors: dict[str, int], lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.n, self.image, self.until, self.lat, self.errors, self.lock = n, image, until, lat, errors, lock
        self.rng = random.Random(n)
        self.ec2 = boto3.client("ec2", endpoint_url=cc.ec2_url, region_name="cloudctl-1",
                                aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                                config=BotoConfig(retries={"max_attempts": 0}, max_pool_connections=2))
        self.mine: list[str] = []

    def ops(self) -> list[tuple[str, Callable[[], Any]]]:
        e, n = self.ec2, self.n
        return [
            ("RunInstances", lambda: self.mine.extend(
                i["InstanceId"] for i in e.run_instances(ImageId=self.image, MinCount=1, MaxCount=1,
                                                         InstanceType="t3.nano")["Instances"])),
            ("DescribeInstances", lambda: e.describe_instances(MaxResults=50)),
            ("DescribeInstances(id)", lambda: self.mine and e.describe_instances(InstanceIds=self.mine[-3:])),
            ("CreateTags", lambda: self.mine and e.create_tags(
                Resources=[self.rng.choice(self.mine)], Tags=[{"Key": f"k{self.rng.randrange(9)}", "Value": "v"}])),
            ("DescribeTags", lambda: e.describe_tags(MaxResults=50)),
            ("TerminateInstances", lambda: len(self.mine) > 5 and e.terminate_instances(
                InstanceIds=[self.mine.pop(0)])),
            ("CreateKeyPair", lambda: e.create_key_pair(KeyName=f"shared-{self.rng.randrange(20)}-{n % 5}")),
            ("DescribeKeyPairs", lambda: e.describe_key_pairs()),
            ("DescribeImages", lambda: e.describe_images()),
            ("DescribeVpcs", lambda: e.describe_vpcs()),
        ]

    def run(self) -> None:
        ops = self.ops()
        while time.monotonic() < self.until:
            name, fn = self.rng.choice(ops)
            t0 = time.perf_counter()
            try:
                fn()
                ok = True
            except ClientError as ex:
                code = ex.response["Error"]["Code"]
                ok = code in EXPECTED
                with self.lock:
                    self.errors[f"{name}:{code}"] += 1
            except Exception as ex:   # connection errors: never expected
                ok = False
                with self.lock:
                    self.errors[f"{name}:{type(ex).__name__}"] += 1
            if ok:
                with self.lock:
                    self.lat[name].append(time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cloudctl-stress-") as tmp:
        cc = procs.start_cloudctl(Path(tmp))
        try:
            users = [cc.admin("POST", "/v0/users", {"name": f"stress{i}"}) for i in range(5)]
            probe = boto3.client("ec2", endpoint_url=cc.ec2_url, region_name="cloudctl-1",
                                 aws_access_key_id=users[0]["AccessKeyId"],
                                 aws_secret_access_key=users[0]["SecretAccessKey"])
            image = probe.describe_images()["Images"][0]["ImageId"]
            rss0 = rss_kib(cc.proc.popen.pid)
            cc.reset_lag()
            lat: dict[str, list[float]] = defaultdict(list)
            errors: dict[str, int] = defaultdict(int)
            lock = threading.Lock()
            until = time.monotonic() + args.seconds
            clients = [Client(n, cc, users[n % len(users)], image, until, lat, errors, lock)
                       for n in range(args.clients)]
            t0 = time.monotonic()
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            elapsed = time.monotonic() - t0
            stall = cc.reset_lag()
            rss1 = rss_kib(cc.proc.popen.pid)
            instances = sum(1 for r in probe.describe_instances()["Reservations"] for _ in r["Instances"])
        finally:
            cc.proc.stop()
    total = sum(len(v) for v in lat.values())
    print(f"{args.clients} clients, {elapsed:.1f} s, {total} successful calls ({total / elapsed:.0f}/s)")
    print(f"{'action':<24}{'calls':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for name in sorted(lat):
        v = sorted(lat[name])
        p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
        print(f"{name:<24}{len(v):>8}{statistics.median(v) * 1e3:>10.1f}{p99 * 1e3:>10.1f}")
    unexpected = {k: n for k, n in errors.items() if k.split(":", 1)[1] not in EXPECTED}
    print(f"expected errors: {sum(n for k, n in errors.items() if k not in unexpected)} "
          f"({', '.join(sorted(EXPECTED))}); unexpected: {unexpected or 'none'}")
    print(f"server RSS {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB with {instances} more instances for "
          f"one of the users; longest event-loop stall {stall:.1f} ms")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
