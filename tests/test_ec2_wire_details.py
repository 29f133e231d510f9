"""Wire details clients that do not use botocore depend on, through raw signed queries sent as
libcloud sends them (GET, fields in the query string): state changes written currentState first
(libcloud reads the first `<name>`), instances and their interfaces in EC2's member order, and an
un-indexed list parameter (`KeyName=x`) read as the list's first element."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from rawquery import SignedQuery, error_code
from support import REGION, Server, wait_state

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGYjHYxa1HQ2Y4vkrGhbY5a0jwHrTMkX1h4Z7K9o+Vxw wire@test")


@pytest.fixture(scope="module")
def user(server: Server) -> dict[str, str]:
    return server.create_user(f"wire-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def ec2(server: Server, user: dict[str, str]) -> Any:
    return server.client(user)


@pytest.fixture(scope="module")
def raw(server: Server, user: dict[str, str]) -> Iterator[SignedQuery]:
    q = SignedQuery(server.endpoint, user, REGION)
    yield q
    q.close()


@pytest.fixture(scope="module")
def image_id(ec2: Any) -> str:
    return str(ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"])


def ok(raw: SignedQuery, action: str, *pairs: tuple[str, str]) -> ET.Element:
    status, body = raw.send(action, list(pairs), method="GET")
    assert status == 200, body[:400]
    return ET.fromstring(body)


def tags(e: ET.Element) -> list[str]:
    return [c.tag.removeprefix(NS) for c in e]


def first_name(doc: ET.Element) -> str | None:
    """What libcloud's EC2 driver takes for the new state: the first `name` anywhere."""
    return doc.findtext(f".//{NS}name")


def test_state_changes_put_the_current_state_first(ec2: Any, raw: SignedQuery, image_id: str) -> None:
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2,
                                                       InstanceType="t3.nano")["Instances"]]
    assert len(wait_state(ec2, ids, "running")) == 2
    stop = ok(raw, "StopInstances", ("InstanceId.1", ids[0]))
    [item] = stop.iterfind(f"{NS}instancesSet/{NS}item")
    assert tags(item) == ["instanceId", "currentState", "previousState"]
    assert tags(item.find(f"{NS}currentState")) == ["code", "name"]
    assert first_name(stop) == "stopping"
    assert item.findtext(f"{NS}previousState/{NS}name") == "running"
    wait_state(ec2, ids[:1], "stopped")
    start = ok(raw, "StartInstances", ("InstanceId", ids[0]))          # un-indexed, as well
    assert first_name(start) == "pending"
    term = ok(raw, "TerminateInstances", ("InstanceId.1", ids[0]), ("InstanceId.2", ids[1]))
    items = list(term.iterfind(f"{NS}instancesSet/{NS}item"))
    assert [tags(i) for i in items] == [["instanceId", "currentState", "previousState"]] * 2
    assert first_name(term) == "shutting-down"
    assert {i.findtext(f"{NS}currentState/{NS}name") for i in items} == {"shutting-down"}


def test_instances_and_interfaces_in_ec2_order(ec2: Any, raw: SignedQuery, image_id: str) -> None:
    iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.nano")["Instances"][0][
        "InstanceId"]
    wait_state(ec2, [iid], "running")
    doc = ok(raw, "DescribeInstances", ("InstanceId.1", iid))
    res = doc.find(f"{NS}reservationSet/{NS}item")
    assert res is not None and tags(res)[:2] == ["reservationId", "ownerId"]
    inst = res.find(f"{NS}instancesSet/{NS}item")
    assert inst is not None
    order = tags(inst)
    assert order[:4] == ["instanceId", "imageId", "instanceState", "privateDnsName"]
    assert order.index("placement") < order.index("monitoring") < order.index("subnetId") < order.index("groupSet")
    assert order.index("groupSet") < order.index("blockDeviceMapping") < order.index("networkInterfaceSet")
    nic = inst.find(f"{NS}networkInterfaceSet/{NS}item")
    assert nic is not None and tags(nic)[:3] == ["networkInterfaceId", "subnetId", "vpcId"]
    eni = ok(raw, "DescribeNetworkInterfaces", ("NetworkInterfaceId", nic.findtext(f"{NS}networkInterfaceId") or ""))
    item = eni.find(f"{NS}networkInterfaceSet/{NS}item")
    assert item is not None and tags(item)[:4] == ["networkInterfaceId", "subnetId", "vpcId", "availabilityZone"]
    assert item.findtext(f"{NS}attachment/{NS}instanceId") == iid
    ec2.terminate_instances(InstanceIds=[iid])


def test_an_unindexed_list_parameter_is_its_first_element(ec2: Any, raw: SignedQuery) -> None:
    ec2.import_key_pair(KeyName="lc-key", PublicKeyMaterial=PUBLIC_KEY.encode())
    ec2.import_key_pair(KeyName="other-key", PublicKeyMaterial=PUBLIC_KEY.encode())
    # libcloud's get_key_pair
    doc = ok(raw, "DescribeKeyPairs", ("KeyName", "lc-key"))
    assert [k.findtext(f"{NS}keyName") for k in doc.iter(f"{NS}item")] == ["lc-key"]
    both = ok(raw, "DescribeKeyPairs", ("KeyName", "lc-key"), ("KeyName.2", "other-key"))
    assert sorted(k.findtext(f"{NS}keyName") or "" for k in both.iter(f"{NS}item")) == ["lc-key", "other-key"]
    status, body = raw.send("DescribeKeyPairs", [("KeyName", "no-such-key")], method="GET")
    assert (status, error_code(status, body)) == (400, "InvalidKeyPair.NotFound")
    # a filter's values too; and POST reads the same
    doc = ok(raw, "DescribeKeyPairs", ("Filter.1.Name", "key-name"), ("Filter.1.Value", "other-*"))
    assert [k.findtext(f"{NS}keyName") for k in doc.iter(f"{NS}item")] == ["other-key"]
    status, body = raw.send("DescribeKeyPairs", [("KeyName", "lc-key")])
    assert status == 200 and b"<keyName>lc-key</keyName>" in body
    # a list of structures still needs its index
    status, body = raw.send("DescribeKeyPairs", [("Filter.Name", "key-name")], method="GET")
    assert (status, error_code(status, body)) == (400, "UnknownParameter")
    ec2.delete_key_pair(KeyName="lc-key")
    ec2.delete_key_pair(KeyName="other-key")
