"""What Terraform and Ansible read about the default VPC before they manage anything, through boto3
against a real server: DescribeVpcAttribute, DescribeNetworkInterfaces (one per instance, the id
DescribeInstances shows), DescribeRouteTables, DescribeInternetGateways and DescribeDhcpOptions
(none: the truth here), DescribeAddressesAttribute, GetInstanceUefiData."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import wait_state

NETWORKS = [
    {"name": "net-a", "zone": "cloudctl-1a", "cidr": "10.140.0.0/24", "dns": ["10.140.0.2"]},
    {"name": "net-b", "zone": "cloudctl-1b", "cidr": "10.141.0.0/24", "dns": ["10.141.0.2"]},
]


@pytest.fixture(scope="module")
def cloud(server_with: Any) -> Any:
    return server_with(networks=NETWORKS, vpc_cidr="10.128.0.0/9", elastic_ips={"pool": ["192.0.2.16/29"]})


@pytest.fixture(scope="module")
def ec2(cloud: Any) -> Any:
    return cloud.client(cloud.create_user("vpcreader"))


@pytest.fixture(scope="module")
def other(cloud: Any) -> Any:
    return cloud.client(cloud.create_user("vpcother"))


@pytest.fixture(scope="module")
def vpc_id(ec2: Any) -> str:
    return str(ec2.describe_vpcs()["Vpcs"][0]["VpcId"])


@pytest.fixture(scope="module")
def image(ec2: Any) -> str:
    return str(ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"])


def fails(code: str, call: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(**kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


def test_vpc_attributes(ec2: Any, vpc_id: str) -> None:
    def attr(name: str, member: str) -> bool:
        out = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=name)
        assert out["VpcId"] == vpc_id
        return bool(out[member]["Value"])
    assert attr("enableDnsSupport", "EnableDnsSupport") is True          # every network names DNS servers
    assert attr("enableDnsHostnames", "EnableDnsHostnames") is False      # no DNS server answers for them
    assert attr("enableNetworkAddressUsageMetrics", "EnableNetworkAddressUsageMetrics") is False
    fails("InvalidVpcID.NotFound", ec2.describe_vpc_attribute, VpcId="vpc-0123456789abcdef0",
          Attribute="enableDnsSupport")
    fails("InvalidParameterValue", ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute="enableMagic")
    fails("DryRunOperation", ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute="enableDnsSupport", DryRun=True)


def test_dns_support_is_off_where_a_network_names_no_dns(server_with: Any) -> None:
    s = server_with(networks=[NETWORKS[0], {"name": "bare", "zone": "cloudctl-1b", "cidr": "10.141.0.0/24"}])
    c = s.client(s.create_user("nodns"))
    vpc = c.describe_vpcs()["Vpcs"][0]["VpcId"]
    assert c.describe_vpc_attribute(VpcId=vpc, Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"] is False


def test_main_route_table_with_its_local_route(ec2: Any, vpc_id: str) -> None:
    tables = ec2.describe_route_tables()["RouteTables"]
    assert len(tables) == 1
    t = tables[0]
    assert t["VpcId"] == vpc_id and t["RouteTableId"].startswith("rtb-")
    assert t["Routes"] == [{"DestinationCidrBlock": "10.128.0.0/9", "GatewayId": "local", "State": "active",
                            "Origin": "CreateRouteTable"}]
    [assoc] = t["Associations"]
    assert assoc["Main"] is True and assoc["RouteTableId"] == t["RouteTableId"]
    assert assoc["AssociationState"] == {"State": "associated"}
    # Terraform's aws_route_table / aws_vpc: the VPC's main table
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert [m["RouteTableId"] for m in main] == [t["RouteTableId"]]
    assert ec2.describe_route_tables(RouteTableIds=[t["RouteTableId"]])["RouteTables"] == tables
    assert ec2.describe_route_tables(Filters=[{"Name": "route.gateway-id", "Values": ["igw-*"]}])["RouteTables"] == []
    assert ec2.describe_route_tables(Filters=[{"Name": "association.main", "Values": ["false"]}])["RouteTables"] == []
    fails("InvalidRouteTableID.NotFound", ec2.describe_route_tables, RouteTableIds=["rtb-0123456789abcdef0"])
    fails("InvalidParameterValue", ec2.describe_route_tables, Filters=[{"Name": "route.bogus", "Values": ["x"]}])
    assert ec2.describe_route_tables(MaxResults=100)["RouteTables"] == tables
    fails("InvalidParameterValue", ec2.describe_route_tables, MaxResults=200)     # EC2's bound: 5-100
    fails("InvalidPaginationToken", ec2.describe_route_tables, NextToken="bm90LWEtdG9rZW4")


def test_no_internet_gateway_and_no_dhcp_options(ec2: Any, vpc_id: str) -> None:
    assert ec2.describe_internet_gateways()["InternetGateways"] == []
    assert ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"] == []
    fails("InvalidInternetGatewayID.NotFound", ec2.describe_internet_gateways,
          InternetGatewayIds=["igw-0123456789abcdef0"])
    fails("InvalidParameterValue", ec2.describe_internet_gateways, Filters=[{"Name": "nope", "Values": ["x"]}])
    assert ec2.describe_internet_gateways(MaxResults=1000)["InternetGateways"] == []
    # DescribeVpcs says "default" (EC2's word for no DHCP options set); there is none to describe
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["DhcpOptionsId"] == "default"
    assert ec2.describe_dhcp_options()["DhcpOptions"] == []
    fails("InvalidDhcpOptionID.NotFound", ec2.describe_dhcp_options, DhcpOptionsIds=["dopt-0123456789abcdef0"])


def test_network_interfaces_follow_the_instances(ec2: Any, other: Any, image: str, vpc_id: str) -> None:
    gid = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]}
    web = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                            SecurityGroupIds=[gid], SubnetId=subnets["cloudctl-1b"])["Instances"][0]
    plain = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano")["Instances"][0]
    insts = {i["InstanceId"]: i for i in wait_state(ec2, [web["InstanceId"], plain["InstanceId"]], "running")}
    eni = {iid: i["NetworkInterfaces"][0]["NetworkInterfaceId"] for iid, i in insts.items()}
    w = web["InstanceId"]

    def found(*filters: tuple[str, list[str]]) -> set[str]:
        out = ec2.describe_network_interfaces(Filters=[{"Name": n, "Values": v} for n, v in filters])
        return {n["NetworkInterfaceId"] for n in out["NetworkInterfaces"]}

    every = ec2.describe_network_interfaces()["NetworkInterfaces"]
    assert {n["NetworkInterfaceId"] for n in every} == set(eni.values())
    n = next(x for x in every if x["NetworkInterfaceId"] == eni[w])
    i = insts[w]
    assert n["Attachment"]["InstanceId"] == w and n["Attachment"]["DeviceIndex"] == 0
    assert n["Attachment"]["Status"] == "attached" and n["Attachment"]["DeleteOnTermination"] is True
    assert n["Status"] == "in-use" and n["InterfaceType"] == "interface"
    assert (n["SubnetId"], n["VpcId"], n["AvailabilityZone"]) == (subnets["cloudctl-1b"], vpc_id, "cloudctl-1b")
    assert n["PrivateIpAddress"] == i["PrivateIpAddress"] and n["MacAddress"] == i["NetworkInterfaces"][0]["MacAddress"]
    assert n["Groups"] == [{"GroupId": gid, "GroupName": "web"}]
    assert n["PrivateIpAddresses"] == [{"PrivateIpAddress": i["PrivateIpAddress"], "Primary": True,
                                        "PrivateDnsName": i["PrivateDnsName"]}]
    assert "Association" not in n
    # the filters Terraform (group-id, before deleting a group) and Ansible send
    assert found(("group-id", [gid])) == {eni[w]}
    assert found(("attachment.instance-id", [w])) == {eni[w]}
    assert found(("subnet-id", [subnets["cloudctl-1b"]])) >= {eni[w]}
    assert found(("vpc-id", [vpc_id])) == set(eni.values())
    assert found(("network-interface-id", [eni[w]])) == {eni[w]}
    assert found(("addresses.private-ip-address", [i["PrivateIpAddress"]])) == {eni[w]}
    assert found(("private-ip-address", [i["PrivateIpAddress"]])) == {eni[w]}
    assert found(("group-id", [gid]), ("subnet-id", [subnets["cloudctl-1a"]])) == set()
    assert found(("attachment.instance-id", ["i-0123456789abcdef0"])) == set()
    by_id = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni[w]])["NetworkInterfaces"]
    assert [x["NetworkInterfaceId"] for x in by_id] == [eni[w]]
    # an Elastic IP shows on the interface as it does on the instance
    alloc = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=alloc["AllocationId"], InstanceId=w)
    [n] = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni[w]])["NetworkInterfaces"]
    assert n["Association"]["PublicIp"] == alloc["PublicIp"]
    assert n["Association"]["AllocationId"] == alloc["AllocationId"]
    assert n["PrivateIpAddresses"][0]["Association"]["PublicIp"] == alloc["PublicIp"]
    assert found(("association.public-ip", [alloc["PublicIp"]])) == {eni[w]}
    assert found(("association.public-dns-name", [n["Association"]["PublicDnsName"]])) == {eni[w]}
    assert found(("requester-id", ["*"])) == set()
    # pages, and what is refused
    page = ec2.describe_network_interfaces(MaxResults=5)
    assert len(page["NetworkInterfaces"]) == 2 and "NextToken" not in page
    fails("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
          NetworkInterfaceIds=["eni-0123456789abcdef0"])
    fails("InvalidNetworkInterfaceID.Malformed", ec2.describe_network_interfaces, NetworkInterfaceIds=["nic-1"])
    fails("InvalidParameterValue", ec2.describe_network_interfaces, Filters=[{"Name": "bogus", "Values": ["x"]}])
    fails("InvalidParameterValue", ec2.describe_network_interfaces, MaxResults=2000)
    # another user sees none of them, and cannot name them
    assert other.describe_network_interfaces()["NetworkInterfaces"] == []
    fails("InvalidNetworkInterfaceID.NotFound", other.describe_network_interfaces, NetworkInterfaceIds=[eni[w]])
    # a terminated instance has no interface left
    ec2.disassociate_address(AssociationId=ec2.describe_addresses()["Addresses"][0]["AssociationId"])
    ec2.release_address(AllocationId=alloc["AllocationId"])
    ec2.terminate_instances(InstanceIds=[w])
    wait_state(ec2, [w], "terminated")
    assert found() == {eni[plain["InstanceId"]]}
    fails("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces, NetworkInterfaceIds=[eni[w]])
    ec2.terminate_instances(InstanceIds=[plain["InstanceId"]])


def test_network_interface_pages(cloud: Any, image: str) -> None:
    c = cloud.client(cloud.create_user("enipager"))
    ids = [i["InstanceId"] for i in c.run_instances(ImageId=image, MinCount=7, MaxCount=7,
                                                     InstanceType="t3.nano")["Instances"]]
    seen: list[str] = []
    kw: dict[str, Any] = {"MaxResults": 5}
    while True:
        page = c.describe_network_interfaces(**kw)
        seen += [n["NetworkInterfaceId"] for n in page["NetworkInterfaces"]]
        if "NextToken" not in page:
            break
        kw["NextToken"] = page["NextToken"]
    assert len(seen) == 7 and len(set(seen)) == 7 and seen == sorted(seen)
    assert {"i-" + e.removeprefix("eni-") for e in seen} == set(ids)
    fails("InvalidParameterCombination", c.describe_network_interfaces, NetworkInterfaceIds=[seen[0]], MaxResults=5)
    c.terminate_instances(InstanceIds=ids)


def test_addresses_attribute(ec2: Any, other: Any) -> None:
    a = ec2.allocate_address(Domain="vpc")
    try:
        out = ec2.describe_addresses_attribute(Attribute="domain-name")["Addresses"]
        assert {"PublicIp": a["PublicIp"], "AllocationId": a["AllocationId"]} in out
        assert all("PtrRecord" not in x for x in out)
        one = ec2.describe_addresses_attribute(AllocationIds=[a["AllocationId"]], Attribute="domain-name")
        assert one["Addresses"] == [{"PublicIp": a["PublicIp"], "AllocationId": a["AllocationId"]}]
        assert other.describe_addresses_attribute(Attribute="domain-name")["Addresses"] == []
        fails("InvalidAllocationID.NotFound", other.describe_addresses_attribute,
              AllocationIds=[a["AllocationId"]], Attribute="domain-name")
        fails("InvalidAllocationID.Malformed", ec2.describe_addresses_attribute, AllocationIds=["alloc-1"],
              Attribute="domain-name")
        fails("InvalidParameterValue", ec2.describe_addresses_attribute, Attribute="ptr")
    finally:
        ec2.release_address(AllocationId=a["AllocationId"])


def test_uefi_data_of_a_legacy_bios_instance(ec2: Any, other: Any, image: str) -> None:
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano")["Instances"][0]["InstanceId"]
    [inst] = wait_state(ec2, [iid], "running")
    assert inst["CurrentInstanceBootMode"] == "legacy-bios"
    out = ec2.get_instance_uefi_data(InstanceId=iid)
    assert out["InstanceId"] == iid and "UefiData" not in out
    fails("InvalidInstanceID.NotFound", other.get_instance_uefi_data, InstanceId=iid)
    fails("InvalidInstanceID.Malformed", ec2.get_instance_uefi_data, InstanceId="inst-1")
    # Terraform's aws_ami data source asks with the image's id, and ignores the refusal
    fails("InvalidInstanceID.Malformed", ec2.get_instance_uefi_data, InstanceId=image)
    fails("DryRunOperation", ec2.get_instance_uefi_data, InstanceId=iid, DryRun=True)
    ec2.terminate_instances(InstanceIds=[iid])
