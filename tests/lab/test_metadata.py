"""The instance metadata service, called from the instance's own address.

An in-process Cloud on libvirt's test driver launches instances; a network namespace joined to
the host by a veth pair holds their private addresses, and a client run inside it
(`ip netns exec`) fetches from the service bound on the host end, so `request.remote` is the
real source address, as for a guest. Each run uses its own /24 and interface names, so
parallel runs do not collide.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cloudctl.api.metadata import metadata_app
from cloudctl.config import load_config
from cloudctl.core import sshkeys
from cloudctl.core.addresses import Association
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.launch import LaunchSpec
from cloudctl.core.metadata import InstanceMetadata, token_ttl

from support import write_config

ZONE = "cloudctl-1a"
USER_DATA = b"#!/bin/sh\necho hi\n" + bytes(range(256)) + b"\x00\xff"

CLIENT = r"""
import base64, http.client, json, sys
src, host, port, method, path, headers = json.loads(sys.argv[1])
c = http.client.HTTPConnection(host, port, source_address=(src, 0), timeout=10)
c.request(method, path, headers=headers)
r = c.getresponse()
body = r.read()
print(json.dumps({"status": r.status, "headers": dict(r.getheaders()), "body": base64.b64encode(body).decode()}))
"""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 no route on this host covers, derived from the pid (parallel runs differ)."""
    routes = [ipaddress.ip_network(r["dst"]) for r in json.loads(_sh("ip", "-4", "-j", "route").stdout)
              if r.get("dst") not in (None, "default")]
    pid = os.getpid()
    for n in range(256):
        k = pid + n * 7919
        net = ipaddress.IPv4Network(f"10.{200 + k % 50}.{(k // 50) % 256}.0/24")
        if not any(net.overlaps(r) for r in routes):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0/13")


@dataclass
class Netns:
    name: str
    host_if: str
    ns_if: str
    subnet: ipaddress.IPv4Network
    gateway: str

    def add(self, ip: str) -> None:
        _sh("ip", "-n", self.name, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", self.ns_if)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    tag = f"ccmd{os.getpid()}"
    subnet = _free_subnet()
    gw = str(subnet.network_address + 1)
    ns = Netns(tag, f"{tag}h", f"{tag}n", subnet, gw)
    try:
        _sh("ip", "netns", "add", ns.name)
        _sh("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _sh("ip", "link", "set", ns.ns_if, "netns", ns.name)
        _sh("ip", "addr", "add", f"{gw}/{subnet.prefixlen}", "dev", ns.host_if)
        _sh("ip", "link", "set", ns.host_if, "up")
        _sh("ip", "-n", ns.name, "link", "set", ns.ns_if, "up")
        _sh("ip", "-n", ns.name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        _teardown(ns)
        pytest.skip(f"cannot create a network namespace here: {e.stderr.strip()}")
    try:
        yield ns
    finally:
        _teardown(ns)


def _teardown(ns: Netns) -> None:
    _sh("ip", "link", "del", ns.host_if, check=False)       # removes its peer too
    _sh("ip", "netns", "del", ns.name, check=False)


@dataclass
class Env:
    cloud: Cloud
    caller: Caller
    ns: Netns
    port: int
    keyed: Any          # instance with a key pair and user data
    plain: Any          # instance with neither
    key_line: str

    async def call(self, src: str, method: str, path: str, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request made inside the namespace from source address `src`."""
        arg = json.dumps([src, self.ns.gateway, self.port, method, path, headers or {}])
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.ns.name, sys.executable, "-c", CLIENT, arg,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        r = json.loads(out)
        return r["status"], r["headers"], base64.b64decode(r["body"])

    async def get(self, src: str, path: str, **headers: str) -> tuple[int, str]:
        status, _, body = await self.call(src, "GET", path, headers)
        return status, body.decode("utf-8", "replace")

    async def launch(self, **extra: Any) -> Any:
        image = next(iter(self.cloud.images.table.values()))
        _, insts = await self.cloud.compute.run(self.caller, LaunchSpec(
            image.id, instance_type="t3.nano", zone=ZONE, **extra))
        await self.cloud.compute.idle()
        inst = self.cloud.compute.table.get(insts[0].id)
        assert inst.state == "running" and ipaddress.ip_address(inst.private_ip) in self.ns.subnet
        self.ns.add(inst.private_ip)
        return inst


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, netns: Netns) -> AsyncIterator[Env]:
    d = tmp_path_factory.mktemp("metadata")
    cfg = load_config(write_config(d, model_cache, subnets={ZONE: str(netns.subnet)}, networks=[]))
    cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
    runner: web.AppRunner | None = None
    try:
        caller = Caller(await cloud.users.create("imds"))
        km = sshkeys.generate("ed25519")
        await cloud.keypairs.import_(caller, "mykey", km.public_openssh.encode())
        e = Env(cloud, caller, netns, 0, None, None, f"{km.public_openssh} mykey")
        e.keyed = await e.launch(key_name="mykey", user_data=base64.b64encode(USER_DATA).decode())
        e.plain = await e.launch()
        runner = web.AppRunner(metadata_app(cloud), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, netns.gateway, 0)
        await site.start()
        e.port = runner.addresses[0][1]
        yield e
    finally:
        if runner is not None:
            await runner.cleanup()
        await cloud.stop()


async def test_imdsv1_instance_facts(env: Env) -> None:
    i = env.keyed
    ip = i.private_ip
    assert await env.get(ip, "/latest/meta-data/instance-id") == (200, i.id)
    assert await env.get(ip, "/latest/meta-data/ami-id") == (200, i.image_id)
    assert await env.get(ip, "/latest/meta-data/ami-launch-index") == (200, "0")
    assert await env.get(ip, "/latest/meta-data/instance-type") == (200, "t3.nano")
    assert await env.get(ip, "/latest/meta-data/local-ipv4") == (200, ip)
    host = f"ip-{ip.replace('.', '-')}.cloudctl-1.compute.internal"
    assert await env.get(ip, "/latest/meta-data/local-hostname") == (200, host)
    assert await env.get(ip, "/latest/meta-data/hostname") == (200, host)
    assert await env.get(ip, "/latest/meta-data/mac") == (200, i.mac)
    assert await env.get(ip, "/latest/meta-data/placement/availability-zone") == (200, ZONE)
    assert await env.get(ip, "/latest/meta-data/placement/region") == (200, "cloudctl-1")
    assert await env.get(ip, "/latest/meta-data/reservation-id") == (200, i.reservation_id)
    assert await env.get(ip, "/latest/meta-data/security-groups") == (200, "")
    assert await env.get(ip, "/latest/meta-data/services/domain") == (200, "amazonaws.com")
    assert (await env.get(ip, "/latest/meta-data/public-ipv4"))[0] == 404
    status, listing = await env.get(ip, "/latest/meta-data/")
    assert status == 200
    lines = listing.split("\n")
    assert {"ami-id", "instance-id", "local-ipv4", "mac", "placement/", "public-keys/", "services/",
            "network/"} <= set(lines)
    assert "public-ipv4" not in lines
    assert await env.get(ip, "/latest/meta-data/placement/") == (200, "availability-zone\nregion")
    nic = f"/latest/meta-data/network/interfaces/macs/{i.mac}/"
    assert await env.get(ip, nic + "local-ipv4s") == (200, ip)
    assert await env.get(ip, nic + "subnet-ipv4-cidr-block") == (200, str(env.ns.subnet))
    # The other instance is told about itself, not the first one.
    assert await env.get(env.plain.private_ip, "/latest/meta-data/instance-id") == (200, env.plain.id)


async def test_user_data_round_trips_exactly(env: Env) -> None:
    status, headers, body = await env.call(env.keyed.private_ip, "GET", "/latest/user-data", {})
    assert status == 200 and body == USER_DATA
    assert headers["Content-Type"] == "application/octet-stream"
    assert (await env.get(env.keyed.private_ip, "/latest/"))[1].split("\n") == ["dynamic/", "meta-data/", "user-data"]
    assert (await env.get(env.plain.private_ip, "/latest/user-data"))[0] == 404
    assert (await env.get(env.plain.private_ip, "/latest/"))[1].split("\n") == ["dynamic/", "meta-data/"]


async def test_identity_document(env: Env) -> None:
    i = env.keyed
    status, text = await env.get(i.private_ip, "/latest/dynamic/instance-identity/document")
    assert status == 200
    doc = json.loads(text)
    assert doc["instanceId"] == i.id and doc["imageId"] == i.image_id
    assert doc["accountId"] == env.caller.account and doc["instanceType"] == "t3.nano"
    assert doc["availabilityZone"] == ZONE and doc["region"] == "cloudctl-1"
    assert doc["privateIp"] == i.private_ip and doc["architecture"] == "x86_64"
    assert doc["version"] == "2017-09-30"
    assert doc["pendingTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(i.launch_time))
    assert await env.get(i.private_ip, "/latest/dynamic/") == (200, "instance-identity/")
    assert await env.get(i.private_ip, "/latest/dynamic/instance-identity/") == (200, "document")


async def test_public_keys(env: Env) -> None:
    ip = env.keyed.private_ip
    assert await env.get(ip, "/latest/meta-data/public-keys/") == (200, "0=mykey")
    assert await env.get(ip, "/latest/meta-data/public-keys/0/") == (200, "openssh-key")
    assert await env.get(ip, "/latest/meta-data/public-keys/0") == (200, "openssh-key")
    assert await env.get(ip, "/latest/meta-data/public-keys/0/openssh-key") == (200, env.key_line)
    assert (await env.get(env.plain.private_ip, "/latest/meta-data/public-keys/"))[0] == 404
    assert "public-keys/" not in (await env.get(env.plain.private_ip, "/latest/meta-data/"))[1].split("\n")


async def test_versions(env: Env) -> None:
    ip = env.keyed.private_ip
    status, listing = await env.get(ip, "/")
    assert status == 200 and {"latest", "2009-04-04", "2021-03-23"} <= set(listing.split("\n"))
    for version in ("2009-04-04", "2018-09-24", "2021-03-23", "2030-01-01", "1.0"):
        assert await env.get(ip, f"/{version}/meta-data/instance-id") == (200, env.keyed.id), version
    status, _, body = await env.call(ip, "GET", "/2009-04-04/user-data", {})
    assert (status, body) == (200, USER_DATA)
    assert (await env.get(ip, "/latest"))[1].split("\n") == ["dynamic/", "meta-data/", "user-data"]
    assert (await env.get(ip, "/latest/meta-data"))[0] == 200      # a subtree without the slash
    assert (await env.get(ip, "/v1/meta-data/instance-id"))[0] == 404
    assert (await env.get(ip, "/latest/meta-data/nothing-here"))[0] == 404
    assert (await env.get(ip, "/latest/meta-data/instance-id/deeper"))[0] == 404


async def test_imdsv2_token_flow(env: Env) -> None:
    ip, other = env.keyed.private_ip, env.plain.private_ip
    status, headers, body = await env.call(ip, "PUT", "/latest/api/token",
                                           {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 200 and headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    token = body.decode()
    assert await env.get(ip, "/latest/meta-data/instance-id",
                         **{"X-aws-ec2-metadata-token": token}) == (200, env.keyed.id)
    status, _, data = await env.call(ip, "GET", "/latest/user-data", {"X-aws-ec2-metadata-token": token})
    assert (status, data) == (200, USER_DATA)
    # Bad, empty, or another instance's token.
    for bad in ("nonsense", "", token[:-2] + ("AA" if token[-2:] != "AA" else "BB")):
        assert (await env.get(ip, "/latest/meta-data/instance-id", **{"X-aws-ec2-metadata-token": bad}))[0] == 401
    assert (await env.get(other, "/latest/meta-data/instance-id", **{"X-aws-ec2-metadata-token": token}))[0] == 401
    # TTL outside 1..21600, not a number, or missing.
    for ttl in ("0", "21601", "-5", "abc", "1.5"):
        status, _, _ = await env.call(ip, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
        assert status == 400, ttl
    assert (await env.call(ip, "PUT", "/latest/api/token", {}))[0] == 400
    for ttl in ("1", "21600"):
        assert (await env.call(ip, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl}))[0] == 200
    # A forwarded PUT is refused; the token path takes only PUT; other paths take no PUT.
    status, _, _ = await env.call(ip, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60",
                                                                  "X-Forwarded-For": "10.9.9.9"})
    assert status == 403
    assert (await env.call(ip, "GET", "/latest/api/token", {}))[0] == 405
    assert (await env.call(ip, "PUT", "/latest/meta-data/instance-id", {}))[0] == 405


async def test_unknown_address_gets_404(env: Env) -> None:
    stranger = str(env.ns.subnet.network_address + 250)
    assert env.cloud.network.table.get(stranger) is None
    env.ns.add(stranger)
    for method, path, headers in [("GET", "/", {}), ("GET", "/latest/meta-data/instance-id", {}),
                                  ("GET", "/latest/user-data", {}),
                                  ("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})]:
        assert (await env.call(stranger, method, path, headers))[0] == 404, path


async def test_terminated_instance_is_not_served(env: Env) -> None:
    inst = await env.launch(user_data=base64.b64encode(b"bye").decode())
    assert await env.get(inst.private_ip, "/latest/user-data") == (200, "bye")
    await env.cloud.compute.terminate(env.caller, [inst.id])
    await env.cloud.compute.idle()
    assert env.cloud.compute.table.get(inst.id).state == "terminated"
    assert (await env.get(inst.private_ip, "/latest/meta-data/instance-id"))[0] == 404


async def test_required_tokens(env: Env) -> None:
    """HttpTokens=required: a request without a token is refused."""
    svc = InstanceMetadata.for_cloud(env.cloud)
    runner = web.AppRunner(metadata_app(env.cloud, service=svc, require_token=True), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, env.ns.gateway, 0).start()
        port, env.port = env.port, runner.addresses[0][1]
        try:
            ip = env.keyed.private_ip
            assert (await env.get(ip, "/latest/meta-data/instance-id"))[0] == 401
            token = svc.mint_token(env.keyed, 60)
            assert await env.get(ip, "/latest/meta-data/instance-id",
                                 **{"X-aws-ec2-metadata-token": token}) == (200, env.keyed.id)
        finally:
            env.port = port
    finally:
        await runner.cleanup()


# -- the core alone ----------------------------------------------------------------------------

async def test_tokens_expire_and_bind_to_the_instance(env: Env) -> None:
    svc = InstanceMetadata.for_cloud(env.cloud)
    t0 = 1_000_000.0
    token = svc.mint_token(env.keyed, 10, now=t0)
    assert svc.token_valid(token, env.keyed, now=t0 + 9.9)
    assert not svc.token_valid(token, env.keyed, now=t0 + 10)
    assert not svc.token_valid(token, env.plain, now=t0)
    assert not InstanceMetadata.for_cloud(env.cloud).token_valid(token, env.keyed, now=t0)  # other secret
    assert [token_ttl(v) for v in ("1", "21600", " 60 ", "0", "21601", "x", None)] == [1, 21600, 60, None, None,
                                                                                       None, None]


async def test_by_private_ip(env: Env) -> None:
    svc = InstanceMetadata.for_cloud(env.cloud)
    assert svc.by_private_ip(env.keyed.private_ip).id == env.keyed.id
    assert svc.by_private_ip("::ffff:" + env.keyed.private_ip).id == env.keyed.id
    assert svc.by_private_ip("192.0.2.200") is None
    assert svc.by_private_ip("") is None


async def test_public_ipv4_while_an_elastic_ip_is_associated(env: Env) -> None:
    i = env.plain
    ip = i.private_ip
    addrs = env.cloud.addresses
    eip = await addrs.allocate(env.caller)
    try:
        assoc = await addrs.associate(env.caller, Association(allocation_id=eip.allocation_id, instance_id=i.id))
        assert await env.get(ip, "/latest/meta-data/public-ipv4") == (200, eip.public_ip)
        host = f"ec2-{eip.public_ip.replace('.', '-')}.cloudctl-1.compute.external"
        assert await env.get(ip, "/latest/meta-data/public-hostname") == (200, host)
        assert "public-ipv4" in (await env.get(ip, "/latest/meta-data/"))[1].split("\n")
        nic = f"/latest/meta-data/network/interfaces/macs/{i.mac}/"
        assert await env.get(ip, nic + "public-ipv4s") == (200, eip.public_ip)
        assert await env.get(ip, nic + f"ipv4-associations/{eip.public_ip}") == (200, ip)
        # Only the instance holding it is told.
        assert (await env.get(env.keyed.private_ip, "/latest/meta-data/public-ipv4"))[0] == 404
        await addrs.disassociate(env.caller, assoc.association_id, None)
        assert (await env.get(ip, "/latest/meta-data/public-ipv4"))[0] == 404
    finally:
        await addrs.release(env.caller, eip.allocation_id, None)
