"""The default VPC and its subnets through boto3: what Terraform and Ansible look up, subnet
choice on RunInstances, leases that stay unique and survive a crash, `cloudctl network list`."""
from __future__ import annotations

import ipaddress
import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

NETWORKS = [
    {"name": "net-a", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24"},
    {"name": "tiny-a", "zone": "cloudctl-1a", "cidr": "10.130.1.0/28", "first": "10.130.1.4",
     "last": "10.130.1.6", "gateway": "10.130.1.5"},
    {"name": "net-b", "zone": "cloudctl-1b", "cidr": "10.131.0.0/24", "default": True},
    {"name": "other-b", "zone": "cloudctl-1b", "cidr": "10.131.1.0/24"},
]


@pytest.fixture(scope="module")
def cloud(server_with: Any) -> Any:
    return server_with(networks=NETWORKS, vpc_cidr="10.128.0.0/9")


@pytest.fixture(scope="module")
def ec2(cloud: Any) -> Any:
    return cloud.client(cloud.create_user("netuser"))


@pytest.fixture(scope="module")
def image(ec2: Any) -> str:
    return ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]


def subnets_by_name(ec2: Any) -> dict[str, dict[str, Any]]:
    return {next(t["Value"] for t in s["Tags"] if t["Key"] == "Name"): s
            for s in ec2.describe_subnets()["Subnets"]}


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_default_vpc_and_subnets(ec2: Any) -> None:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1 and vpcs[0]["IsDefault"] and vpcs[0]["CidrBlock"] == "10.128.0.0/9"
    vpc = vpcs[0]["VpcId"]
    attrs = ec2.describe_account_attributes(AttributeNames=["default-vpc"])["AccountAttributes"]
    assert attrs[0]["AttributeValues"][0]["AttributeValue"] == vpc
    subnets = subnets_by_name(ec2)
    assert set(subnets) == {"net-a", "tiny-a", "net-b", "other-b"}
    assert all(s["VpcId"] == vpc for s in subnets.values())
    # Ansible/Terraform: the default subnet of a zone
    default_b = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]},
                                              {"Name": "availability-zone", "Values": ["cloudctl-1b"]}])["Subnets"]
    assert [s["SubnetId"] for s in default_b] == [subnets["net-b"]["SubnetId"]]
    assert {s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]} == {s["SubnetId"] for s in subnets.values()}
    assert subnets["tiny-a"]["AvailableIpAddressCount"] == 2     # .4-.6 without the gateway .5
    assert ec2.describe_subnets(SubnetIds=[subnets["net-a"]["SubnetId"]])["Subnets"][0]["CidrBlock"] == "10.130.0.0/24"
    with pytest.raises(ClientError) as e:
        ec2.describe_subnets(SubnetIds=["subnet-0123456789abcdef0"])
    assert code(e) == "InvalidSubnetID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(VpcIds=["vpc-0123456789abcdef0"])
    assert code(e) == "InvalidVpcID.NotFound"


def test_instances_land_on_the_chosen_subnet(ec2: Any, image: str) -> None:
    subnets = subnets_by_name(ec2)
    other = subnets["other-b"]["SubnetId"]
    via_subnet = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, SubnetId=other)["Instances"]
    via_nic = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": subnets["net-a"]["SubnetId"], "PrivateIpAddress": "10.130.0.77"}])["Instances"]
    default = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"]
    for inst, net, zone in [(via_subnet[0], "other-b", "cloudctl-1b"), (via_subnet[1], "other-b", "cloudctl-1b"),
                            (via_nic[0], "net-a", "cloudctl-1a"), (default[0], "net-b", "cloudctl-1b")]:
        s = subnets[net]
        assert inst["SubnetId"] == s["SubnetId"] and inst["Placement"]["AvailabilityZone"] == zone
        assert ipaddress.IPv4Address(inst["PrivateIpAddress"]) in ipaddress.IPv4Network(s["CidrBlock"])
        nic = inst["NetworkInterfaces"][0]
        assert nic["MacAddress"] == inst["NetworkInterfaces"][0]["MacAddress"] and nic["SubnetId"] == s["SubnetId"]
        assert nic["PrivateIpAddress"] == inst["PrivateIpAddress"]
        assert inst["PrivateDnsName"].startswith("ip-" + inst["PrivateIpAddress"].replace(".", "-"))
    assert via_nic[0]["PrivateIpAddress"] == "10.130.0.77"
    found = ec2.describe_instances(Filters=[{"Name": "subnet-id", "Values": [other]}])["Reservations"]
    assert {i["InstanceId"] for r in found for i in r["Instances"]} == {i["InstanceId"] for i in via_subnet}
    found = ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": ["10.130.0.77"]}])
    assert [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]] == [via_nic[0]["InstanceId"]]
    assert (subnets_by_name(ec2)["other-b"]["AvailableIpAddressCount"]
            == subnets["other-b"]["AvailableIpAddressCount"] - 2)
    ids = [i["InstanceId"] for i in via_subnet + via_nic + default]
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
    assert subnets_by_name(ec2)["other-b"]["AvailableIpAddressCount"] == subnets["other-b"]["AvailableIpAddressCount"]


@pytest.mark.parametrize("kwargs, err", [
    ({"SubnetId": "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound"),
    ({"SubnetId": "@net-b", "Placement": {"AvailabilityZone": "cloudctl-1a"}}, "InvalidParameterValue"),
    ({"SubnetId": "@net-a", "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "@net-a"}]},
     "InvalidParameterCombination"),
    ({"PrivateIpAddress": "10.130.0.9", "MaxCount": 2}, "InvalidParameterCombination"),
    ({"SubnetId": "@net-a", "PrivateIpAddress": "10.131.0.9"}, "InvalidParameterValue"),
    ({"SubnetId": "@tiny-a", "PrivateIpAddress": "10.130.1.5"}, "InvalidIPAddress.InUse"),   # the gateway
    ({"PrivateIpAddress": "192.0.2.1"}, "InvalidParameterValue"),
    ({"NetworkInterfaces": [{"DeviceIndex": 1, "SubnetId": "@net-a"}]}, "InvalidParameterValue"),
    ({"SubnetId": "@tiny-a", "MinCount": 3, "MaxCount": 3}, "InsufficientFreeAddressesInSubnet"),
])
def test_bad_network_requests_change_nothing(ec2: Any, image: str, kwargs: dict[str, Any], err: str) -> None:
    names = subnets_by_name(ec2)

    def resolve(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("@"):
            return names[v[1:]]["SubnetId"]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v
    args = {"ImageId": image, "MinCount": 1, "MaxCount": 1, **resolve(kwargs)}
    before = ec2.describe_instances()["Reservations"]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(**args)
    assert code(e) == err
    assert ec2.describe_instances()["Reservations"] == before
    assert subnets_by_name(ec2) == names


def test_taken_address_is_refused(ec2: Any, image: str) -> None:
    subnet = subnets_by_name(ec2)["net-a"]["SubnetId"]
    first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
                              PrivateIpAddress="10.130.0.200")["Instances"][0]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress="10.130.0.200")
    assert code(e) == "InvalidIPAddress.InUse"
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[first["InstanceId"]], WaiterConfig={"Delay": 1})
    again = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
                              PrivateIpAddress="10.130.0.200")["Instances"][0]   # freed on terminate
    ec2.terminate_instances(InstanceIds=[again["InstanceId"]])


@pytest.mark.slow
def test_leases_unique_and_survive_kill(new_server: Any) -> None:
    srv = new_server(networks=NETWORKS)
    user = srv.create_user("u")
    ec2 = srv.client(user)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    subnet = subnets_by_name(ec2)["net-a"]["SubnetId"]
    launched = {}
    for _ in range(50):
        i = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]
        launched[i["InstanceId"]] = i["PrivateIpAddress"]
    assert len(set(launched.values())) == 50
    srv.kill()
    srv.start()
    ec2 = srv.client(user)
    after = {i["InstanceId"]: i["PrivateIpAddress"] for r in ec2.describe_instances()["Reservations"]
             for i in r["Instances"]}
    assert after == launched
    more = ec2.run_instances(ImageId=image, MinCount=5, MaxCount=5, SubnetId=subnet)["Instances"]
    assert not {i["PrivateIpAddress"] for i in more} & set(launched.values())
    # stop/start keeps the address
    iid = next(iter(launched))
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    ec2.start_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PrivateIpAddress"] \
        == launched[iid]
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), "network", "list"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("net-a "))
    assert row[-2:] == ["55", str(251 - 55)]     # leases .4-.254; the gateway .1 is outside the range


def test_bad_network_config_is_one_line(tmp_path: Any, model_cache: Any) -> None:
    from support import write_config
    for nets, expect in [
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24"},
          {"name": "y", "zone": "cloudctl-1a", "cidr": "10.130.0.128/25"},
          {"name": "z", "zone": "cloudctl-1b", "cidr": "10.131.0.0/24"}], "overlap"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24"}], "has hosts but no network"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "192.168.0.0/24"}], "outside vpc_cidr"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24", "gateway": "10.1.1.1"}], "outside"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24", "vlan": 5}], "openvswitch"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24", "ovs_db": "unix:/x"}], "openvswitch"),
        ([{"name": "x", "zone": "cloudctl-1a", "cidr": "10.130.0.0/24", "bridge_type": "openvswitch"}], "bridge"),
    ]:
        path = write_config(tmp_path, model_cache, networks=nets)
        out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(path), "network", "list"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "networks" in lines[0] and expect in lines[0], lines
