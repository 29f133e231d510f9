"""Public addresses on launch: a subnet that maps them gives each instance one from the
elastic-IP pool (econe-style), held until it terminates; AssociatePublicIpAddress on the launch's
network interface overrides the subnet either way. Seen as users see it: boto3's answers and the
metadata service, asked from the instance's own (loopback) address."""
from __future__ import annotations

import http.client
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import Server, Servers, wait_until
from support import wait_state as _wait_state

POOL = "198.51.100.10-198.51.100.12"     # three addresses: exhaustion is one launch away
POOL_IPS = {"198.51.100.10", "198.51.100.11", "198.51.100.12"}
# Loopback subnets: the metadata service knows an instance by the source address of the request,
# and any 127/8 address can be the source of a connection to the listener on 127.0.0.1.
NETWORKS = [{"name": "pub", "zone": "cloudctl-1a", "cidr": "127.77.0.0/24", "map_public_ip_on_launch": True},
            {"name": "priv", "zone": "cloudctl-1b", "cidr": "127.78.0.0/24"}]


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    return server_with(vpc_cidr="127.64.0.0/10", networks=NETWORKS,
                       elastic_ips={"pool": [POOL], "max_addresses_per_user": 5})


@pytest.fixture(scope="module")
def ec2(srv: Server) -> Any:
    return srv.client(srv.create_user("pubips"))


@pytest.fixture(scope="module")
def image(ec2: Any) -> str:
    return ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]


@pytest.fixture(scope="module")
def subnets(ec2: Any) -> dict[str, dict[str, Any]]:
    return {s["Tags"][0]["Value"]: s for s in ec2.describe_subnets()["Subnets"]}


def launch(ec2: Any, image: str, subnet: str, public: bool | None = None, count: int = 1) -> list[dict[str, Any]]:
    nic: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": subnet}
    if public is not None:
        nic["AssociatePublicIpAddress"] = public
    return ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.nano",
                             NetworkInterfaces=[nic])["Instances"]


def wait_state(ec2: Any, iid: str, state: str) -> None:
    got = _wait_state(ec2, [iid], state)
    assert got[0]["State"]["Name"] == state, got


def described(ec2: Any, iid: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def terminate(ec2: Any, *ids: str) -> None:
    ec2.terminate_instances(InstanceIds=list(ids))
    for iid in ids:
        wait_state(ec2, iid, "terminated")


def metadata(srv: Server, private_ip: str, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.ports["metadata"], timeout=10,
                                      source_address=(private_ip, 0))
    try:
        conn.request("GET", "/latest/meta-data/" + path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def in_use(srv: Server, ec2: Any) -> set[str]:
    """The pool addresses held now: Elastic IPs the user sees plus the public ones on instances."""
    on_instances = {i["PublicIpAddress"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                    if i.get("PublicIpAddress")}
    return on_instances | {a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]}


def test_describe_subnets_tells_which_subnets_map_public_addresses(ec2: Any,
                                                                   subnets: dict[str, dict[str, Any]]) -> None:
    assert subnets["pub"]["MapPublicIpOnLaunch"] is True
    assert subnets["priv"]["MapPublicIpOnLaunch"] is False
    mapped = ec2.describe_subnets(Filters=[{"Name": "map-public-ip-on-launch", "Values": ["true"]}])["Subnets"]
    assert [s["SubnetId"] for s in mapped] == [subnets["pub"]["SubnetId"]]


def test_a_launch_on_a_mapping_subnet_holds_a_public_address_until_it_terminates(
        srv: Server, ec2: Any, image: str, subnets: dict[str, dict[str, Any]]) -> None:
    inst = launch(ec2, image, subnets["pub"]["SubnetId"])[0]
    iid, private = inst["InstanceId"], inst["PrivateIpAddress"]
    public = inst.get("PublicIpAddress")
    assert public in POOL_IPS                      # in RunInstances' own answer already
    wait_state(ec2, iid, "running")
    d = described(ec2, iid)
    assert d["PublicIpAddress"] == public
    assert d["PublicDnsName"].startswith("ec2-" + public.replace(".", "-") + ".")
    nic = d["NetworkInterfaces"][0]
    assert nic["Association"]["PublicIp"] == public and nic["Association"]["IpOwnerId"] == "amazon"
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[nic["NetworkInterfaceId"]])["NetworkInterfaces"][0]
    assert eni["Association"]["PublicIp"] == public and eni["Association"]["IpOwnerId"] == "amazon"
    assert "AllocationId" not in eni["Association"] and "AssociationId" not in eni["Association"]
    by_ip = ec2.describe_instances(Filters=[{"Name": "ip-address", "Values": [public]}])["Reservations"]
    assert [i["InstanceId"] for r in by_ip for i in r["Instances"]] == [iid]
    # Not an Elastic IP: the user has none, cannot release or move it, and the limit is untouched.
    assert ec2.describe_addresses()["Addresses"] == []
    with pytest.raises(ClientError) as e:
        ec2.release_address(PublicIp=public)
    assert e.value.response["Error"]["Code"] == "InvalidAddress.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.disassociate_address(PublicIp=public)
    assert e.value.response["Error"]["Code"] == "InvalidAddress.NotFound"
    # The instance sees it in its metadata, as on EC2.
    assert metadata(srv, private, "public-ipv4") == (200, public)
    assert metadata(srv, private, "local-ipv4") == (200, private)
    mac = d["NetworkInterfaces"][0]["MacAddress"]
    assert metadata(srv, private, f"network/interfaces/macs/{mac}/public-ipv4s") == (200, public)
    terminate(ec2, iid)
    assert described(ec2, iid).get("PublicIpAddress") is None
    assert public not in in_use(srv, ec2)
    # Back in the pool: an Elastic IP may now be that very address.
    got = ec2.allocate_address(Domain="vpc", Address=public)
    ec2.release_address(AllocationId=got["AllocationId"])


def test_associate_public_ip_address_on_the_interface_wins_over_the_subnet(
        srv: Server, ec2: Any, image: str, subnets: dict[str, dict[str, Any]]) -> None:
    declined = launch(ec2, image, subnets["pub"]["SubnetId"], public=False)[0]
    asked = launch(ec2, image, subnets["priv"]["SubnetId"], public=True)[0]
    plain = launch(ec2, image, subnets["priv"]["SubnetId"])[0]
    for i in (declined, asked, plain):
        wait_state(ec2, i["InstanceId"], "running")
    assert described(ec2, declined["InstanceId"]).get("PublicIpAddress") is None
    assert described(ec2, plain["InstanceId"]).get("PublicIpAddress") is None
    assert described(ec2, asked["InstanceId"])["PublicIpAddress"] in POOL_IPS
    assert metadata(srv, declined["PrivateIpAddress"], "public-ipv4")[0] == 404
    assert metadata(srv, asked["PrivateIpAddress"], "public-ipv4") == (200, asked["PublicIpAddress"])
    terminate(ec2, declined["InstanceId"], asked["InstanceId"], plain["InstanceId"])
    assert in_use(srv, ec2) == set()


def test_an_exhausted_pool_fails_the_launch_and_makes_nothing(
        srv: Server, ec2: Any, image: str, subnets: dict[str, dict[str, Any]]) -> None:
    eip = ec2.allocate_address(Domain="vpc")
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    volumes_before = ec2.describe_volumes()["Volumes"]
    with pytest.raises(ClientError) as e:     # two addresses left, three wanted at least
        launch(ec2, image, subnets["pub"]["SubnetId"], count=3)
    assert e.value.response["Error"]["Code"] == "InsufficientAddressCapacity"
    after = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert after == before and ec2.describe_volumes()["Volumes"] == volumes_before
    assert in_use(srv, ec2) == {eip["PublicIp"]}
    # MinCount within what is free, MaxCount beyond: as many as there are addresses for.
    got = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=3, InstanceType="t3.nano",
                            SubnetId=subnets["pub"]["SubnetId"])["Instances"]
    assert len(got) == 2 and {i["PublicIpAddress"] for i in got} == POOL_IPS - {eip["PublicIp"]}
    # None free: a launch declining a public address still goes, one taking one does not.
    with pytest.raises(ClientError) as e:
        launch(ec2, image, subnets["priv"]["SubnetId"], public=True)
    assert e.value.response["Error"]["Code"] == "InsufficientAddressCapacity"
    declined = launch(ec2, image, subnets["pub"]["SubnetId"], public=False)[0]
    terminate(ec2, declined["InstanceId"], *(i["InstanceId"] for i in got))
    ec2.release_address(AllocationId=eip["AllocationId"])
    assert in_use(srv, ec2) == set()


def test_an_elastic_ip_replaces_the_launch_address_which_goes_back_to_the_pool(
        srv: Server, ec2: Any, image: str, subnets: dict[str, dict[str, Any]]) -> None:
    inst = launch(ec2, image, subnets["pub"]["SubnetId"])[0]
    iid, launch_ip = inst["InstanceId"], inst["PublicIpAddress"]
    wait_state(ec2, iid, "running")
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=iid)
    assert described(ec2, iid)["PublicIpAddress"] == eip["PublicIp"]
    assert metadata(srv, inst["PrivateIpAddress"], "public-ipv4") == (200, eip["PublicIp"])
    assert in_use(srv, ec2) == {eip["PublicIp"]} and launch_ip != eip["PublicIp"]   # the launch's is free again
    ec2.disassociate_address(AssociationId=ec2.describe_addresses()["Addresses"][0]["AssociationId"])
    terminate(ec2, iid)
    ec2.release_address(AllocationId=eip["AllocationId"])
    assert in_use(srv, ec2) == set()


@pytest.mark.slow
def test_the_address_is_part_of_the_launch_across_a_crash(new_server: Servers) -> None:
    s = new_server(vpc_cidr="127.64.0.0/10", networks=NETWORKS, elastic_ips={"pool": [POOL]})
    ec2 = s.client(s.create_user("crash"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    pub = next(x["SubnetId"] for x in ec2.describe_subnets()["Subnets"] if x["Tags"][0]["Value"] == "pub")
    inst = launch(ec2, image, pub)[0]
    s.kill()                     # right after the answer: the launch and its address were journaled together
    s.start()
    wait_state(ec2, inst["InstanceId"], "running")
    assert described(ec2, inst["InstanceId"])["PublicIpAddress"] == inst["PublicIpAddress"]
    assert metadata(s, inst["PrivateIpAddress"], "public-ipv4") == (200, inst["PublicIpAddress"])
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    s.kill()
    s.start()
    wait_state(ec2, inst["InstanceId"], "terminated")
    wait_until(lambda: in_use(s, ec2) == set(), timeout=10)
    got = launch(ec2, image, pub, count=3)   # all three addresses are free again
    assert {i["PublicIpAddress"] for i in got} == POOL_IPS
