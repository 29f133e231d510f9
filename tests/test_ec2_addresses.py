"""Elastic IPs through boto3 and the AWS CLI against a real server whose associate/disassociate
scripts are real files written here: they record their argv, and fail or hang on demand."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from cloudctl.config import AddressPool, ConfigError, load_config, pool_entry

from support import Server, Servers, networks_without_public_ips, wait_state, write_config

ZONE_A = "cloudctl-1a"
POOL = ["198.51.100.16/28"]          # 14 addresses: .17 - .30


class Scripts:
    """Two recording scripts in `dir`: every call appends one line `associate ARGS…` or
    `disassociate ARGS…` to `calls`. They fail when `fail-all`, `fail-disassociate` or
    `fail-associate-<PRIVATE_IP>` exists, and hang (a `sleep` child, its pid in `sleep.pid`)
    when `hang` exists."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.calls_file = d / "calls"
        self.associate = d / "associate.sh"
        self.disassociate = d / "disassociate.sh"
        for path, verb, fail in ((self.associate, "associate", f'"{d}/fail-associate-$2"'),
                                 (self.disassociate, "disassociate", f'"{d}/fail-disassociate"')):
            path.write_text(f"""#!/bin/sh
printf '%s' {verb} >> "{d}/calls"
for a in "$@"; do printf ' %s' "$a" >> "{d}/calls"; done
echo >> "{d}/calls"
if [ -e "{d}/hang" ]; then sleep 120 & echo $! > "{d}/sleep.pid"; wait; fi
if [ -e "{d}/fail-all" ] || [ -e {fail} ]; then echo "no route to the NAT box" >&2; exit 1; fi
exit 0
""")
            path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [line.split(" ") for line in self.calls_file.read_text().splitlines() if line]

    def take(self) -> list[list[str]]:
        out = self.calls()
        self.calls_file.unlink(missing_ok=True)
        return out

    def set(self, flag: str, on: bool = True) -> None:
        p = self.dir / flag
        if on:
            p.touch()
        else:
            p.unlink(missing_ok=True)

    def wait_calls(self, n: int, timeout: float = 30) -> list[list[str]]:
        deadline = time.time() + timeout
        while len(self.calls()) < n and time.time() < deadline:
            time.sleep(0.05)
        return self.calls()


def eip_config(scripts: Scripts, **more: Any) -> dict[str, Any]:
    """Elastic IPs alone: no launch takes a public address (tests/test_public_ips.py covers those)."""
    return {"elastic_ips": {"pool": POOL, "associate_script": str(scripts.associate),
                            "disassociate_script": str(scripts.disassociate), "script_timeout_s": 2,
                            **more}, "networks": networks_without_public_ips()}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Scripts:
    return Scripts(tmp_path_factory.mktemp("eip-scripts"))


@pytest.fixture(scope="module")
def srv(server_with: Servers, scripts: Scripts) -> Server:
    return server_with(**eip_config(scripts))


@pytest.fixture(scope="module")
def carol(srv: Server) -> dict[str, str]:
    return srv.create_user("carol")


@pytest.fixture(scope="module")
def dave(srv: Server) -> dict[str, str]:
    return srv.create_user("dave")


def client(srv: Server, user: dict[str, str]) -> Any:
    """One attempt per call: botocore retries 5xx answers (a failing script's InternalError)."""
    return boto3.client("ec2", endpoint_url=srv.endpoint, region_name="cloudctl-1",
                        aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def ec2(srv: Server, carol: dict[str, str]) -> Any:
    return client(srv, carol)


@pytest.fixture(scope="module")
def image(ec2: Any) -> str:
    return str(ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"])


@pytest.fixture(autouse=True)
def clean(scripts: Scripts) -> Iterator[None]:
    for f in scripts.dir.glob("fail-*"):
        f.unlink()
    scripts.set("hang", False)
    scripts.take()
    yield


def fails(code: str, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


def launch(ec2: Any, image: str, n: int = 1) -> list[dict[str, Any]]:
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=n, MaxCount=n,
                                                      Placement={"AvailabilityZone": ZONE_A})["Instances"]]
    insts = wait_state(ec2, ids, "running")
    assert all(i["State"]["Name"] == "running" for i in insts)
    return sorted(insts, key=lambda i: ids.index(i["InstanceId"]))


def addresses(ec2: Any, **kw: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items()} for a in ec2.describe_addresses(**kw)["Addresses"]]


def release_all(ec2: Any) -> None:
    for a in addresses(ec2):
        if a.get("AssociationId"):
            ec2.disassociate_address(AssociationId=a["AssociationId"])
        ec2.release_address(AllocationId=a["AllocationId"])


def public_ip_of(ec2: Any, iid: str) -> str | None:
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return inst.get("PublicIpAddress")


def template(arg: str) -> dict[str, Any]:
    doc = json.loads(base64.b64decode(arg, validate=True))
    assert isinstance(doc, dict)
    return doc


# -- allocate, describe, release ---------------------------------------------------------------


def test_allocate_describe_tag_release(ec2: Any, srv: Server, dave: dict[str, str]) -> None:
    a = ec2.allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": [{"Key": "role", "Value": "web"}]}])
    b = ec2.allocate_address()               # Domain defaults to vpc
    c = ec2.allocate_address(Domain="standard", Address="198.51.100.30")
    try:
        ips = {a["PublicIp"], b["PublicIp"], c["PublicIp"]}
        assert len(ips) == 3 and all(ip.startswith("198.51.100.") and 17 <= int(ip.rsplit(".", 1)[1]) <= 30
                                     for ip in ips)
        assert c["PublicIp"] == "198.51.100.30" and c["Domain"] == "standard"
        assert a["Domain"] == b["Domain"] == "vpc" and re.fullmatch(r"eipalloc-[0-9a-f]{17}", a["AllocationId"])
        listed = addresses(ec2)
        assert sorted(x["AllocationId"] for x in listed) == sorted(x["AllocationId"] for x in (a, b, c))
        one = addresses(ec2, AllocationIds=[a["AllocationId"]])
        assert [x["PublicIp"] for x in one] == [a["PublicIp"]] and one[0]["Tags"] == [{"Key": "role", "Value": "web"}]
        assert "AssociationId" not in one[0] and "InstanceId" not in one[0]
        assert [x["AllocationId"] for x in addresses(ec2, PublicIps=[b["PublicIp"]])] == [b["AllocationId"]]
        def by(name: str, *v: str) -> list[Any]:
            return [x["AllocationId"] for x in addresses(ec2, Filters=[{"Name": name, "Values": list(v)}])]
        assert by("tag:role", "web") == [a["AllocationId"]]
        assert by("domain", "standard") == [c["AllocationId"]]
        assert by("public-ip", b["PublicIp"]) == [b["AllocationId"]]
        assert by("allocation-id", c["AllocationId"]) == [c["AllocationId"]]
        assert by("public-ip", "198.51.100.3?") == [c["AllocationId"]]
        ec2.create_tags(Resources=[b["AllocationId"]], Tags=[{"Key": "role", "Value": "db"}])
        assert by("tag:role", "db") == [b["AllocationId"]]
        tags = ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["elastic-ip"]}])["Tags"]
        assert sorted((t["ResourceId"], t["Value"]) for t in tags) == sorted(
            [(a["AllocationId"], "web"), (b["AllocationId"], "db")])
        fails("InvalidParameterValue", ec2.describe_addresses, Filters=[{"Name": "colour", "Values": ["x"]}])
        fails("InvalidAllocationID.NotFound", ec2.describe_addresses, AllocationIds=["eipalloc-0123456789abcdef0"])
        fails("InvalidAllocationID.Malformed", ec2.describe_addresses, AllocationIds=["eipalloc-zz"])
        fails("InvalidAddress.NotFound", ec2.describe_addresses, PublicIps=["198.51.100.29"]
              if "198.51.100.29" not in ips else ["198.51.100.28"])
        # Another account sees none of them and can touch none of them.
        other = client(srv, dave)
        assert addresses(other) == []
        fails("InvalidAllocationID.NotFound", other.release_address, AllocationId=a["AllocationId"])
        fails("InvalidAddress.NotFound", other.release_address, PublicIp=a["PublicIp"])
        fails("InvalidIPAddress.InUse", other.allocate_address, Address=c["PublicIp"])
        fails("InvalidAllocationID.NotFound", other.create_tags, Resources=[a["AllocationId"]],
              Tags=[{"Key": "k", "Value": "v"}])
        ec2.release_address(AllocationId=a["AllocationId"])
        ec2.release_address(PublicIp=b["PublicIp"])
        fails("InvalidAllocationID.NotFound", ec2.release_address, AllocationId=a["AllocationId"])
        assert [x["AllocationId"] for x in addresses(ec2)] == [c["AllocationId"]]
        assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [a["AllocationId"]]}])["Tags"] == []
    finally:
        release_all(ec2)
    assert addresses(ec2) == []


def test_allocate_rejects_bad_input_and_changes_nothing(ec2: Any) -> None:
    held = ec2.allocate_address()
    try:
        before = addresses(ec2)
        fails("InvalidParameterValue", ec2.allocate_address, Domain="classic")
        fails("InvalidAddress.Malformed", ec2.allocate_address, Address="198.51.100.300")
        fails("InvalidAddress.NotFound", ec2.allocate_address, Address="192.0.2.1")
        fails("InvalidAddress.NotFound", ec2.allocate_address, Address="198.51.100.16")   # network address
        fails("InvalidIPAddress.InUse", ec2.allocate_address, Address=held["PublicIp"])
        fails("InvalidParameterValue", ec2.allocate_address, PublicIpv4Pool="ipv4pool-ec2-0123")
        fails("InvalidParameterValue", ec2.allocate_address, NetworkBorderGroup="us-east-1")
        fails("InvalidParameterValue", ec2.allocate_address,
              TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v"}]}])
        fails("DryRunOperation", ec2.allocate_address, DryRun=True)
        fails("DryRunOperation", ec2.release_address, AllocationId=held["AllocationId"], DryRun=True)
        fails("MissingParameter", ec2.release_address)
        fails("InvalidParameterCombination", ec2.release_address, AllocationId=held["AllocationId"],
              PublicIp=held["PublicIp"])
        assert addresses(ec2) == before
    finally:
        release_all(ec2)


def test_per_user_limit(ec2: Any, srv: Server, dave: dict[str, str]) -> None:
    made = [ec2.allocate_address() for _ in range(5)]
    try:
        fails("AddressLimitExceeded", ec2.allocate_address)
        assert len(addresses(ec2)) == 5
        # The limit is per user: another one still gets an address.
        other = client(srv, dave)
        mine = other.allocate_address()
        other.release_address(AllocationId=mine["AllocationId"])
        ec2.release_address(AllocationId=made[0]["AllocationId"])
        ec2.allocate_address()
    finally:
        release_all(ec2)


@pytest.mark.slow
def test_empty_pool_and_restart_never_hands_an_address_twice(new_server: Any, tmp_path: Path) -> None:
    scripts = Scripts(tmp_path / "scripts")
    s = new_server(elastic_ips={"pool": ["192.0.2.10-192.0.2.12"], "max_addresses_per_user": 2,
                                "associate_script": str(scripts.associate),
                                "disassociate_script": str(scripts.disassociate)})
    users = [s.create_user(n) for n in ("u1", "u2")]
    c1, c2 = (client(s, u) for u in users)
    held = [c1.allocate_address()["PublicIp"], c1.allocate_address()["PublicIp"]]
    s.kill()                                  # kill -9: acknowledged allocations survive
    s.start()
    assert sorted(a["PublicIp"] for a in addresses(c1)) == sorted(held)
    third = c2.allocate_address()["PublicIp"]
    assert sorted(held + [third]) == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    fails("InsufficientAddressCapacity", c2.allocate_address)
    fails("AddressLimitExceeded", c1.allocate_address)
    assert scripts.calls() == []             # nothing associated: no script ran


# -- associate, disassociate -----------------------------------------------------------------------


def test_associate_runs_the_script_with_the_network_template(ec2: Any, image: str, scripts: Scripts) -> None:
    inst = launch(ec2, image)[0]
    iid, priv = inst["InstanceId"], inst["PrivateIpAddress"]
    a = ec2.allocate_address()
    try:
        assoc = ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=iid)["AssociationId"]
        assert re.fullmatch(r"eipassoc-[0-9a-f]{17}", assoc)
        calls = scripts.take()
        assert [c[:3] for c in calls] == [["associate", a["PublicIp"], priv]] and len(calls[0]) == 4
        net = template(calls[0][3])
        eni = "eni-" + iid.partition("-")[2]
        assert net["version"] == 1 and net["elastic_ip"] == a["PublicIp"] and net["private_ip"] == priv
        assert net["instance_id"] == iid and net["allocation_id"] == a["AllocationId"]
        assert net["association_id"] == assoc and net["network_interface_id"] == eni
        assert net["subnet"] == "10.128.0.0/16" and net["prefixlen"] == 16 and net["gateway"] == "10.128.0.1"
        assert net["zone"] == ZONE_A and net["host"] == "host-a"
        [row] = addresses(ec2, AllocationIds=[a["AllocationId"]])
        assert (row["AssociationId"], row["InstanceId"], row["PrivateIpAddress"], row["NetworkInterfaceId"],
                row["NetworkInterfaceOwnerId"]) == (assoc, iid, priv, eni, ec2.describe_instances(
                    InstanceIds=[iid])["Reservations"][0]["OwnerId"])
        def by(name: str, v: str) -> list[Any]:
            return [x["AllocationId"] for x in addresses(ec2, Filters=[{"Name": name, "Values": [v]}])]
        for name, v in (("instance-id", iid), ("association-id", assoc), ("private-ip-address", priv),
                        ("network-interface-id", eni)):
            assert by(name, v) == [a["AllocationId"]], name
        d = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert d["PublicIpAddress"] == a["PublicIp"]
        dns = f"ec2-{a['PublicIp'].replace('.', '-')}.cloudctl-1.compute.external"
        owner = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["OwnerId"]
        nic = d["NetworkInterfaces"][0]
        assert nic["NetworkInterfaceId"] == eni and net["subnet_id"] == d["SubnetId"] == nic["SubnetId"]
        assert net["mac"] == nic["MacAddress"] and net["bridge"] is None
        assert nic["Association"] == {"PublicIp": a["PublicIp"], "IpOwnerId": owner, "PublicDnsName": dns}
        assert nic["PrivateIpAddresses"][0]["Association"] == nic["Association"]
        found = ec2.describe_instances(Filters=[{"Name": "ip-address", "Values": [a["PublicIp"]]}])["Reservations"]
        assert [i["InstanceId"] for r in found for i in r["Instances"]] == [iid]
        assert d["PublicDnsName"] == f"ec2-{a['PublicIp'].replace('.', '-')}.cloudctl-1.compute.external"
        # Associating again where it already is: nothing to do, no script.
        assert ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=iid)["AssociationId"] == assoc
        assert scripts.take() == []
        ec2.disassociate_address(AssociationId=assoc)
        assert scripts.take() == [["disassociate", a["PublicIp"]]]
        [row] = addresses(ec2, AllocationIds=[a["AllocationId"]])
        assert "AssociationId" not in row and "InstanceId" not in row and "PrivateIpAddress" not in row
        assert public_ip_of(ec2, iid) is None
        nic = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]
        assert "Association" not in nic and "Association" not in nic["PrivateIpAddresses"][0]
        fails("InvalidAssociationID.NotFound", ec2.disassociate_address, AssociationId=assoc)
        ec2.disassociate_address(PublicIp=a["PublicIp"])      # not associated: nothing to do
        assert scripts.take() == []
        # The other ways of naming both ends: PublicIp + PrivateIpAddress, NetworkInterfaceId.
        assoc2 = ec2.associate_address(PublicIp=a["PublicIp"], PrivateIpAddress=priv)["AssociationId"]
        assert public_ip_of(ec2, iid) == a["PublicIp"] and assoc2 != assoc
        ec2.disassociate_address(PublicIp=a["PublicIp"])
        ec2.associate_address(AllocationId=a["AllocationId"], NetworkInterfaceId=eni, PrivateIpAddress=priv)
        assert public_ip_of(ec2, iid) == a["PublicIp"]
        assert [c[:3] for c in scripts.take()] == [["associate", a["PublicIp"], priv], ["disassociate", a["PublicIp"]],
                                                   ["associate", a["PublicIp"], priv]]
    finally:
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[iid])


def test_associate_errors_leave_everything_as_it_was(ec2: Any, srv: Server, dave: dict[str, str], image: str,
                                                     scripts: Scripts) -> None:
    x, y = launch(ec2, image, 2)
    other = client(srv, dave)
    theirs = launch(other, image)[0]
    a, b = ec2.allocate_address(), ec2.allocate_address()
    their_eip = other.allocate_address()
    try:
        alloc = a["AllocationId"]
        ec2.associate_address(AllocationId=alloc, InstanceId=x["InstanceId"])
        scripts.take()
        before = addresses(ec2)
        cases = [
            ("MissingParameter", dict(InstanceId=y["InstanceId"])),
            ("MissingParameter", dict(AllocationId=b["AllocationId"])),
            ("InvalidParameterCombination", dict(AllocationId=alloc, PublicIp=a["PublicIp"],
                                                 InstanceId=y["InstanceId"])),
            ("InvalidParameterCombination", dict(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"],
                                                 NetworkInterfaceId="eni-" + y["InstanceId"][2:])),
            ("InvalidAllocationID.NotFound", dict(AllocationId="eipalloc-0123456789abcdef0",
                                                  InstanceId=y["InstanceId"])),
            ("InvalidAllocationID.NotFound", dict(AllocationId=their_eip["AllocationId"], InstanceId=y["InstanceId"])),
            ("InvalidAddress.NotFound", dict(PublicIp=their_eip["PublicIp"], InstanceId=y["InstanceId"])),
            ("InvalidInstanceID.NotFound", dict(AllocationId=b["AllocationId"], InstanceId="i-0123456789abcdef0")),
            ("InvalidInstanceID.NotFound", dict(AllocationId=b["AllocationId"], InstanceId=theirs["InstanceId"])),
            ("InvalidInstanceID.Malformed", dict(AllocationId=b["AllocationId"], InstanceId="vm-1")),
            ("InvalidNetworkInterfaceID.NotFound", dict(AllocationId=b["AllocationId"],
                                                        NetworkInterfaceId="eni-" + theirs["InstanceId"][2:])),
            ("InvalidParameterValue", dict(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"],
                                           PrivateIpAddress="10.200.0.9")),
            ("InvalidParameterValue", dict(AllocationId=b["AllocationId"],
                                           PrivateIpAddress=theirs["PrivateIpAddress"])),
            ("Resource.AlreadyAssociated", dict(AllocationId=alloc, InstanceId=y["InstanceId"])),
            ("DryRunOperation", dict(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"], DryRun=True)),
        ]
        for code, kw in cases:
            fails(code, ec2.associate_address, **kw)
        fails("InvalidIPAddress.InUse", ec2.release_address, AllocationId=alloc)
        fails("InvalidAssociationID.NotFound", ec2.disassociate_address, AssociationId="eipassoc-0123456789abcdef0")
        fails("InvalidAssociationID.NotFound", other.disassociate_address,
              AssociationId=before[0].get("AssociationId") or before[1].get("AssociationId"))
        fails("DryRunOperation", ec2.disassociate_address, PublicIp=a["PublicIp"], DryRun=True)
        assert addresses(ec2) == before and scripts.take() == []
        # A stopped instance keeps (and takes) addresses; a terminated or stopping one does not.
        ec2.stop_instances(InstanceIds=[y["InstanceId"]])
        assert wait_state(ec2, [y["InstanceId"]], "stopped")[0]["State"]["Name"] == "stopped"
        ec2.associate_address(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"])
        assert public_ip_of(ec2, y["InstanceId"]) == b["PublicIp"]
        ec2.disassociate_address(PublicIp=b["PublicIp"])
        ec2.terminate_instances(InstanceIds=[y["InstanceId"]])
        wait_state(ec2, [y["InstanceId"]], "terminated")
        fails("IncorrectInstanceState", ec2.associate_address, AllocationId=b["AllocationId"],
              InstanceId=y["InstanceId"])
    finally:
        release_all(ec2)
        release_all(other)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"], y["InstanceId"]])
        other.terminate_instances(InstanceIds=[theirs["InstanceId"]])


def test_reassociation_moves_and_one_address_per_instance(ec2: Any, image: str, scripts: Scripts) -> None:
    x, y = launch(ec2, image, 2)
    a, b = ec2.allocate_address(), ec2.allocate_address()
    try:
        ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        scripts.take()
        # AllowReassociation moves it: disassociated from x, associated with y.
        new = ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=y["InstanceId"],
                                    AllowReassociation=True)["AssociationId"]
        assert [c[:3] for c in scripts.take()] == [["disassociate", a["PublicIp"]],
                                                   ["associate", a["PublicIp"], y["PrivateIpAddress"]]]
        assert public_ip_of(ec2, x["InstanceId"]) is None and public_ip_of(ec2, y["InstanceId"]) == a["PublicIp"]
        [row] = addresses(ec2, AllocationIds=[a["AllocationId"]])
        assert row["AssociationId"] == new and row["InstanceId"] == y["InstanceId"]
        # A second address onto y: the one y held lets go (and stays allocated).
        ec2.associate_address(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"])
        assert [c[:3] for c in scripts.take()] == [["disassociate", a["PublicIp"]],
                                                   ["associate", b["PublicIp"], y["PrivateIpAddress"]]]
        rows = {r["AllocationId"]: r for r in addresses(ec2)}
        assert "InstanceId" not in rows[a["AllocationId"]] and rows[b["AllocationId"]]["InstanceId"] == y["InstanceId"]
        assert public_ip_of(ec2, y["InstanceId"]) == b["PublicIp"]
    finally:
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"], y["InstanceId"]])


# -- failing scripts ---------------------------------------------------------------------------------


def test_a_failing_script_fails_the_call_and_changes_nothing(ec2: Any, image: str, scripts: Scripts) -> None:
    x, y = launch(ec2, image, 2)
    a = ec2.allocate_address()
    ip = a["PublicIp"]
    try:
        # A first association fails: InternalError (500), the address stays unassociated, and
        # what the script may have half-done is undone by the disassociate script.
        scripts.set(f"fail-associate-{x['PrivateIpAddress']}")
        before = addresses(ec2)
        with pytest.raises(ClientError) as e:
            ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        err = e.value.response
        assert err["Error"]["Code"] == "InternalError" and err["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert "associate script failed (exit status 1)" in err["Error"]["Message"]
        assert "Nothing was changed" in err["Error"]["Message"]
        assert "NAT box" not in err["Error"]["Message"]        # script output is for the log, not users
        assert addresses(ec2) == before and public_ip_of(ec2, x["InstanceId"]) is None
        assert [c[:3] for c in scripts.take()] == [["associate", ip, x["PrivateIpAddress"]], ["disassociate", ip]]
        scripts.set(f"fail-associate-{x['PrivateIpAddress']}", False)
        ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        scripts.take()
        # A move that fails half-way is undone: the address is associated with x again.
        scripts.set(f"fail-associate-{y['PrivateIpAddress']}")
        before = addresses(ec2)
        fails("InternalError", ec2.associate_address, AllocationId=a["AllocationId"], InstanceId=y["InstanceId"],
              AllowReassociation=True)
        assert addresses(ec2) == before and public_ip_of(ec2, x["InstanceId"]) == ip
        assert [c[:3] for c in scripts.take()] == [["disassociate", ip], ["associate", ip, y["PrivateIpAddress"]],
                                                   ["associate", ip, x["PrivateIpAddress"]]]
        # A failing disassociate: still associated, the association applied again.
        scripts.set("fail-disassociate")
        msg = fails("InternalError", ec2.disassociate_address, PublicIp=ip)
        assert "disassociate script failed" in msg
        assert addresses(ec2) == before
        assert [c[:3] for c in scripts.take()] == [["disassociate", ip], ["associate", ip, x["PrivateIpAddress"]]]
        # Terminating still lets the address go (the instance is gone whatever the script says).
        ec2.terminate_instances(InstanceIds=[x["InstanceId"]])
        wait_state(ec2, [x["InstanceId"]], "terminated")
        [row] = addresses(ec2)
        assert "AssociationId" not in row and "InstanceId" not in row
        assert scripts.take() == [["disassociate", ip]]
    finally:
        scripts.set("fail-disassociate", False)
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"], y["InstanceId"]])


@pytest.mark.slow
def test_a_hanging_script_is_killed_at_the_timeout(ec2: Any, image: str, scripts: Scripts) -> None:
    x = launch(ec2, image)[0]
    a = ec2.allocate_address()
    try:
        scripts.set("hang")
        before = addresses(ec2)
        msg = fails("InternalError", ec2.associate_address, AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        assert "timed out after 2 s" in msg
        # The script's whole process group went: its `sleep` child too.
        pid = int((scripts.dir / "sleep.pid").read_text())
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
        scripts.set("hang", False)
        assert addresses(ec2) == before
    finally:
        scripts.set("hang", False)
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"]])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (reaped later by whoever its parent is).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_terminating_disassociates(ec2: Any, image: str, scripts: Scripts) -> None:
    x = launch(ec2, image)[0]
    a = ec2.allocate_address()
    try:
        ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        scripts.take()
        ec2.terminate_instances(InstanceIds=[x["InstanceId"]])
        wait_state(ec2, [x["InstanceId"]], "terminated")
        assert scripts.take() == [["disassociate", a["PublicIp"]]]
        [row] = addresses(ec2)
        assert row["AllocationId"] == a["AllocationId"] and "AssociationId" not in row
        assert public_ip_of(ec2, x["InstanceId"]) is None
    finally:
        release_all(ec2)


# -- restarts ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_restart_reapplies_associations_and_undoes_unfinished_changes(new_server: Any, tmp_path: Path) -> None:
    scripts = Scripts(tmp_path / "scripts")
    s = new_server(**eip_config(scripts, script_timeout_s=60))
    user = s.create_user("r")
    c = client(s, user)
    img = c.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    x, y = launch(c, img, 2)
    a, b, spare = c.allocate_address(), c.allocate_address(), c.allocate_address()
    c.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
    scripts.take()
    before = addresses(c)
    # A clean restart: every association is applied again, nothing else.
    s.stop()
    s.start()
    assert [x_[:3] for x_ in scripts.wait_calls(1)] == [["associate", a["PublicIp"], x["PrivateIpAddress"]]]
    assert template(scripts.take()[0][3])["association_id"] == before[[r["AllocationId"] for r in before].index(
        a["AllocationId"])]["AssociationId"]
    assert addresses(c) == before
    # A crash while a script runs (the call was never answered): at the next start the address
    # the unfinished call touched is disassociated, and the recorded associations applied again.
    scripts.set("hang")
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["ok"] = c.associate_address(AllocationId=b["AllocationId"], InstanceId=y["InstanceId"])
        except Exception as e:   # the server dies under it
            result["error"] = e
    t = threading.Thread(target=call)
    t.start()
    scripts.wait_calls(1)
    s.kill()
    t.join(30)
    assert "ok" not in result
    pid = int((scripts.dir / "sleep.pid").read_text())
    os.kill(pid, 9)                          # the orphaned script's sleep, not ours to leave behind
    scripts.set("hang", False)
    scripts.take()
    s.start()
    calls = sorted(x_[:3] for x_ in scripts.wait_calls(2))
    assert calls == sorted([["disassociate", b["PublicIp"]], ["associate", a["PublicIp"], x["PrivateIpAddress"]]])
    assert addresses(c) == before
    assert public_ip_of(c, y["InstanceId"]) is None and public_ip_of(c, x["InstanceId"]) == a["PublicIp"]
    # The uncertain mark is gone once handled: the next start only re-associates.
    scripts.take()
    s.stop()
    s.start()
    assert [x_[:3] for x_ in scripts.wait_calls(1)] == [["associate", a["PublicIp"], x["PrivateIpAddress"]]]
    assert spare["PublicIp"] in [r["PublicIp"] for r in addresses(c)]


# -- the AWS CLI, config --------------------------------------------------------------------------


@pytest.mark.slow
def test_aws_cli(srv: Server, carol: dict[str, str], ec2: Any, image: str, scripts: Scripts) -> None:
    from test_ec2_wire import aws
    x = launch(ec2, image)[0]
    try:
        out = aws(srv, carol, "allocate-address", "--domain", "vpc")
        assert out["Domain"] == "vpc" and out["PublicIp"].startswith("198.51.100.")
        assoc = aws(srv, carol, "associate-address", "--allocation-id", out["AllocationId"], "--instance-id",
                    x["InstanceId"])["AssociationId"]
        assert [c[:3] for c in scripts.take()] == [["associate", out["PublicIp"], x["PrivateIpAddress"]]]
        listed = aws(srv, carol, "describe-addresses", "--filters", f"Name=instance-id,Values={x['InstanceId']}")
        assert [(a["PublicIp"], a["AssociationId"]) for a in listed["Addresses"]] == [(out["PublicIp"], assoc)]
        aws(srv, carol, "disassociate-address", "--association-id", assoc)
        aws(srv, carol, "release-address", "--allocation-id", out["AllocationId"])
        assert addresses(ec2) == []
    finally:
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"]])


def test_admin_cli_lists_addresses(srv: Server, ec2: Any, image: str) -> None:
    from test_cli import cli
    x = launch(ec2, image)[0]
    a, b = ec2.allocate_address(), ec2.allocate_address()
    try:
        ec2.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        res = json.loads(cli(srv, "address", "list", "--json"))
        rows = {r["PublicIp"]: r for r in res["addresses"]}
        assert res["pool_size"] == 14 and res["held"] == len(rows) >= 2
        assert (rows[a["PublicIp"]]["UserName"], rows[a["PublicIp"]]["InstanceId"]) == ("carol", x["InstanceId"])
        assert rows[b["PublicIp"]]["InstanceId"] == "" and not rows[a["PublicIp"]]["NatUnsure"]
        text = cli(srv, "address", "list")
        line = next(ln for ln in text.splitlines() if ln.startswith(a["PublicIp"] + " "))
        assert x["InstanceId"] in line and "carol" in line and "of 14 pool addresses held" in text
    finally:
        release_all(ec2)
        ec2.terminate_instances(InstanceIds=[x["InstanceId"]])


@pytest.mark.parametrize("section, message", [
    ({"pool": ["198.51.100.0/33"]}, "elastic_ips.pool: pool entry '198.51.100.0/33'"),
    ({"pool": ["198.51.100.9-198.51.100.1"]}, "ends before it starts"),
    ({"pool": ["198.51.100.0/30", "198.51.100.2"]}, "repeats 198.51.100.2"),
    ({"pool": ["10.128.5.0/24"]}, "elastic_ips.pool entry '10.128.5.0/24' overlaps network '"),
    ({"max_addresses_per_user": -1}, "elastic_ips.max_addresses_per_user"),
    ({"script_timeout_s": 0}, "elastic_ips.script_timeout_s"),
    ({"associate_script": "/nonexistent/eip.sh"}, "elastic_ips.associate_script: /nonexistent/eip.sh is not an "
                                                  "executable file"),
    ({"pool": [], "colour": "red"}, "elastic_ips.colour"),
])
def test_config_errors_are_one_line(tmp_path: Path, model_cache: Path, section: dict[str, Any], message: str) -> None:
    path = write_config(tmp_path, model_cache, elastic_ips=section)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_default_config_is_a_no_op(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache))
    e = cfg.elastic_ips
    assert e.associate_script is None and e.disassociate_script is None and e.max_addresses_per_user == 5
    assert len(e.addresses()) == 4094   # `make run` launches thousands with public addresses
    raw = yaml.safe_load((tmp_path / "cloudctl.yaml").read_text())
    assert "elastic_ips" in raw


def test_address_pool_reads_as_its_addresses_in_order() -> None:
    # Entries out of order, a /30 (network and broadcast left out), a range, a single address.
    pool = AddressPool(pool_entry(e) for e in ["192.0.2.7", "10.0.0.8-10.0.0.9", "10.0.0.0/30"])
    listed = ["10.0.0.1", "10.0.0.2", "10.0.0.8", "10.0.0.9", "192.0.2.7"]
    assert list(pool) == listed and len(pool) == 5
    assert pool[-1] == "192.0.2.7" and pool[1:3] == ["10.0.0.2", "10.0.0.8"]
    with pytest.raises(IndexError):
        pool[5]
    assert all(ip in pool for ip in listed)
    # Only the canonical dotted form is a member: the rows hold that form, so another spelling of a
    # member must not count it as held.
    for other in ["10.0.0.0", "10.0.0.3", "10.0.0.10", "192.0.2.8", "10.0.0.01", "10.1", "0x0a.0.0.1", "", None]:
        assert other not in pool, other


def test_shipped_script_is_valid_sh() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "eip-nft.sh"
    assert os.access(script, os.X_OK)
    out = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    usage = subprocess.run([str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    bad = subprocess.run([str(script), "1.2.3.256", "10.0.0.1", "e30="], capture_output=True, text=True)
    assert bad.returncode == 2 and "bad address" in bad.stderr
