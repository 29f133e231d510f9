"""The scale bench's EC2 client: requests signed ahead of time, sent from one asyncio process.

Signing (botocore's SigV4Auth, ~0.2 ms) and boto3's XML parsing would cost the 2 shared cores
more than the server's own work, so every request is signed before its phase starts and the
answers are only searched for the ids they carry. A mutating request carries a unique
ClientToken (or a unique tag), so two requests never share a signature (the server refuses a
repeated signature of a mutating request as a replay); read-only ones may be sent many times.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EC2_VERSION = "2016-11-15"
ID = {k: re.compile(rf"<{k}>([^<]+)</{k}>".encode()) for k in
      ("instanceId", "volumeId", "groupId", "allocationId", "associationId", "nextToken")}


@dataclass(frozen=True)
class Signed:
    headers: dict[str, str]
    body: bytes


@dataclass
class Account:
    """One user of the cloud with its keys and what the bench made for it."""

    name: str
    access_key: str
    secret_key: str
    groups: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)


class Client:
    """Signs and sends Query-API requests to one endpoint."""

    def __init__(self, url: str, region: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.region = region
        self._session: aiohttp.ClientSession | None = None

    def sign(self, acct: Account, params: dict[str, Any]) -> Signed:
        body = urlencode({"Version": EC2_VERSION, **params})
        req = AWSRequest(method="POST", url=self.url, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(acct.access_key, acct.secret_key), "ec2", self.region).add_auth(req)
        prep = req.prepare()
        headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in prep.headers.items()}
        return Signed(headers, body.encode())

    async def __aenter__(self) -> "Client":
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                              timeout=aiohttp.ClientTimeout(total=900))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, req: Signed) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending to the last byte)."""
        assert self._session is not None
        t0 = time.perf_counter()
        async with self._session.post(self.url, data=req.body, headers=req.headers) as r:
            data = await r.read()
        return r.status, data, time.perf_counter() - t0

    async def ok(self, req: Signed, what: str) -> bytes:
        status, data, _ = await self.send(req)
        if status != 200:
            raise RuntimeError(f"{what}: HTTP {status}: {data[:400]!r}")
        return data

    async def sequential(self, reqs: list[Signed], what: str) -> list[float]:
        """One at a time over one keep-alive connection; client-side seconds per request."""
        walls = []
        for r in reqs:
            status, data, wall = await self.send(r)
            if status != 200:
                raise RuntimeError(f"{what}: HTTP {status}: {data[:400]!r}")
            walls.append(wall)
        return walls

    async def concurrent(self, reqs: list[Signed], clients: int, what: str) -> float:
        """`clients` workers draining `reqs`; returns the wall-clock seconds for all of them."""
        queue = list(reversed(reqs))
        errors: list[str] = []

        async def worker() -> None:
            while queue:
                status, data, _ = await self.send(queue.pop())
                if status != 200 and len(errors) < 3:
                    errors.append(f"HTTP {status}: {data[:300]!r}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"{what}: {errors[0]}")
        return wall


def ids(kind: str, data: bytes) -> list[str]:
    return [m.decode() for m in ID[kind].findall(data)]


def run_params(image: str, n: int, zone: str, group: str, tags: dict[str, str], itype: str = "t3.nano"
               ) -> dict[str, Any]:
    p: dict[str, Any] = {"Action": "RunInstances", "ImageId": image, "InstanceType": itype, "MinCount": n,
                         "MaxCount": n, "ClientToken": uuid.uuid4().hex, "Placement.AvailabilityZone": zone,
                         "SecurityGroupId.1": group, "TagSpecification.1.ResourceType": "instance"}
    for i, (k, v) in enumerate(tags.items(), 1):
        p[f"TagSpecification.1.Tag.{i}.Key"] = k
        p[f"TagSpecification.1.Tag.{i}.Value"] = v
    return p
