"""Guests on a configured network: bridged NICs, addresses leased by the controller and
delivered on the config drive, guests reaching each other, the gateway and a namespace host."""
from __future__ import annotations

import time
from typing import Any

import libvirt

from .conftest import MEASUREMENTS, URI
from .netlab import ping, wait_ping


def console(ec2: Any, iid: str) -> str:
    return ec2.get_console_output(InstanceId=iid).get("Output") or ""


def wait_console(ec2: Any, iid: str, needle: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(ec2, iid)
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"console of {iid} lacks {needle!r} after {timeout}s:\n{text[-3000:]}")


def test_two_guests_on_a_bridge_reach_each_other(bridged_cloud: Any) -> None:
    cloud = bridged_cloud
    outside = cloud.lab.add_host("out", cloud.address(250))
    # the default security group admits only its own members: let the lab (host, namespaces) ping
    cloud.ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=[
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": str(cloud.lab.net)}]}])
    b_ip = cloud.address(11)
    t0 = time.monotonic()
    a = cloud.run(f"#!/bin/sh\nuntil ping -c 1 -W 1 {b_ip} >/dev/null 2>&1; do sleep 0.5; done\necho REACHED-B\n")
    b = cloud.run(ip=b_ip)
    assert b["PrivateIpAddress"] == b_ip
    a_ip = a["PrivateIpAddress"]
    assert a_ip != b_ip and a["SubnetId"] == b["SubnetId"] == cloud.subnet_id
    # the address the controller leased is the one the guest configured from its config drive
    text = wait_console(cloud.ec2, a["InstanceId"], f"CLOUDCTL-NET eth0 {a_ip}/24 gw {cloud.lab.gateway}")
    mac = a["NetworkInterfaces"][0]["MacAddress"]
    assert mac and a["NetworkInterfaces"][0]["PrivateIpAddress"] == a_ip
    wait_console(cloud.ec2, a["InstanceId"], "REACHED-B", timeout=120)
    MEASUREMENTS["RunInstances → guest A pinged guest B over the bridge"] = f"{time.monotonic() - t0:.1f} s"
    assert "CLOUDCTL-NET" in text
    wait_ping(a_ip, timeout=30)                     # host (gateway) -> guest
    wait_ping(b_ip, ns=outside, timeout=30)         # namespace host on the bridge -> guest
    # the NIC is on the lab bridge, under the controller's fixed tap name, with the leased MAC
    conn = libvirt.open(URI)
    try:
        xml = conn.lookupByName(a["InstanceId"]).XMLDesc(0)
    finally:
        conn.close()
    assert f"<source bridge='{cloud.lab.bridge}'/>" in xml and f"<mac address='{mac}'/>" in xml
    # stop/start keeps the address; terminate frees it and the guest stops answering
    cloud.ec2.stop_instances(InstanceIds=[b["InstanceId"]], Force=True)
    cloud.ec2.get_waiter("instance_stopped").wait(InstanceIds=[b["InstanceId"]], WaiterConfig={"Delay": 1})
    assert not ping(b_ip, ns=outside)
    cloud.ec2.start_instances(InstanceIds=[b["InstanceId"]])
    wait_ping(b_ip, ns=outside, timeout=60)
    cloud.ec2.terminate_instances(InstanceIds=[b["InstanceId"]])
    cloud.ec2.get_waiter("instance_terminated").wait(InstanceIds=[b["InstanceId"]], WaiterConfig={"Delay": 1})
    assert not ping(b_ip, ns=outside, count=2)
