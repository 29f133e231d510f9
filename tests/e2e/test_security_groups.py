"""Security groups enforced on a real host: two TCG guests on a lab bridge and a namespace host,
the controller's rules applied by libvirt nwfilter, isolation proven with packets.

Each guest pings the other in a loop and prints every change on its console (`PEER-UP n`, and
`PEER-DOWN n` after three losses in a row: libvirt's rebuild of a filter can drop a packet), and
serves TCP ports 8080 and 8081; the namespace host pings and connects. Rules reach the host after
the call returns (libvirt takes ~2-5 s per filter here), so checks wait for the effect.
"""
from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import libvirt

import support
from .conftest import MEASUREMENTS, URI
from .netlab import ping, wait_ping
from .test_guest_network import console, wait_console

GUEST = """#!/bin/sh
(while true; do echo port-8080 | nc -l -p 8080; done) >/dev/null 2>&1 &
(while true; do echo port-8081 | nc -l -p 8081; done) >/dev/null 2>&1 &
up=0; n=0; lost=0
while true; do
    if ping -c 1 -W 1 {peer} >/dev/null 2>&1; then
        lost=0
        [ $up = 0 ] && {{ n=$((n + 1)); up=1; echo "PEER-UP $n"; }}
    else
        lost=$((lost + 1))
        [ $up = 1 ] && [ $lost -ge 3 ] && {{ up=0; echo "PEER-DOWN $n"; }}
    fi
    sleep 0.3
done
"""


def tcp(ns: str, address: str, port: int) -> str:
    """What the guest's port answers to a connection from namespace `ns` ("" if it cannot connect)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "timeout", "4", "bash", "-c",
                          f"exec 3<>/dev/tcp/{address}/{port} && cat <&3"], capture_output=True, text=True)
    return out.stdout.strip()


def no_ping(target: str, ns: str) -> bool:
    return not ping(target, ns, count=3, wait_s=1.0)


def wait_no_ping(target: str, ns: str, timeout: float = 120.0) -> float:
    """Seconds until `target` stopped answering (rules apply after the call returns)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if no_ping(target, ns):
            return time.monotonic() - t0
    raise AssertionError(f"{target} still answers ping from {ns} after {timeout:.0f} s")


def wait_until(check: Any, timeout: float = 120.0) -> None:
    support.wait_until(check, timeout, "the packet path to change", interval=0.5)


def peer_state(ec2: Any, iid: str) -> str:
    """PEER-UP or PEER-DOWN: the guest's latest report of its peer ("" before the first)."""
    found = re.findall(r"^(PEER-UP|PEER-DOWN) \d+\s*$", console(ec2, iid), re.M)
    return found[-1] if found else ""


def icmp_from(cidr: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
    p: dict[str, Any] = {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1}
    if cidr:
        p["IpRanges"] = [{"CidrIp": cidr}]
    if group:
        p["UserIdGroupPairs"] = [{"GroupId": group}]
    return [p]


def filter_times(cloud: Any) -> str:
    """How long libvirt took to (re)define each filter, from the controller's log."""
    times = sorted(float(m) for m in re.findall(r"filter of \S+ applied in ([0-9.]+) s",
                                                cloud.server.log_path.read_text()))
    return f"{len(times)} defines, median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s" if times else "none"


def test_groups_filter_real_guests(bridged_cloud: Any) -> None:
    cloud = bridged_cloud
    try:
        check_groups(cloud)
    finally:
        MEASUREMENTS["security groups: nwfilterDefineXML"] = filter_times(cloud)


def check_groups(cloud: Any) -> None:
    ec2 = cloud.ec2
    outside = cloud.lab.add_host("sgo", cloud.address(250))
    out_ip = cloud.address(250)
    a_ip, b_ip = cloud.address(21), cloud.address(22)
    mesh = ec2.create_security_group(GroupName="mesh", Description="pings among members")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=mesh, IpPermissions=icmp_from(group=mesh))
    ec2.authorize_security_group_ingress(GroupId=mesh, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": f"{out_ip}/32"}]}])
    t0 = time.monotonic()
    a = cloud.run(GUEST.format(peer=b_ip), ip=a_ip, SecurityGroupIds=[mesh])
    b = cloud.run(GUEST.format(peer=a_ip), ip=b_ip, SecurityGroupIds=[mesh])
    ia, ib = a["InstanceId"], b["InstanceId"]
    assert a["SecurityGroups"] == [{"GroupId": mesh, "GroupName": "mesh"}]

    # members of the group reach each other
    wait_console(ec2, ia, "PEER-UP 1", timeout=120)
    wait_console(ec2, ib, "PEER-UP 1", timeout=60)
    MEASUREMENTS["security groups: RunInstances → members ping each other"] = f"{time.monotonic() - t0:.1f} s"

    # the domain's NIC names the filter the controller defined for it
    conn = libvirt.open(URI)
    try:
        assert f"<filterref filter='cloudctl-{ia}'/>" in conn.lookupByName(ia).XMLDesc(0)
        assert conn.nwfilterLookupByName(f"cloudctl-{ia}") is not None
    finally:
        conn.close()

    # the namespace host is in no group: no ping; only the port its CIDR was allowed
    assert no_ping(a_ip, outside) and no_ping(b_ip, outside)
    assert tcp(outside, a_ip, 8080) == "port-8080"
    assert tcp(outside, a_ip, 8081) == ""

    # ICMP from its CIDR, then revoked: ping works, then stops
    ec2.authorize_security_group_ingress(GroupId=mesh, IpPermissions=icmp_from(cidr=f"{out_ip}/32"))
    wait_ping(a_ip, ns=outside, timeout=120)
    ec2.revoke_security_group_ingress(GroupId=mesh, IpPermissions=icmp_from(cidr=f"{out_ip}/32"))
    took = wait_no_ping(a_ip, outside)
    MEASUREMENTS["security groups: RevokeSecurityGroupIngress → ping stops"] = f"{took:.1f} s"

    # revoking the group's own rule cuts the members apart; authorizing it again joins them
    ec2.revoke_security_group_ingress(GroupId=mesh, IpPermissions=icmp_from(group=mesh))
    wait_console(ec2, ia, "PEER-DOWN 1", timeout=120)
    ec2.authorize_security_group_ingress(GroupId=mesh, IpPermissions=icmp_from(group=mesh))
    wait_console(ec2, ia, "PEER-UP 2", timeout=120)

    # stateful: with every egress rule gone, replies to allowed traffic still leave the guest,
    # but the guest can start nothing (its pings to the other member stop)
    ec2.revoke_security_group_egress(GroupId=mesh, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    wait_console(ec2, ia, "PEER-DOWN 2", timeout=120)
    assert tcp(outside, a_ip, 8080) == "port-8080"
    ec2.authorize_security_group_egress(GroupId=mesh, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    wait_console(ec2, ia, "PEER-UP 3", timeout=120)
    # B's counter is not A's: libvirt rebuilds one guest's filter after the other, so B may have
    # missed the short egress outage A saw. What counts is B's latest state.
    wait_until(lambda: peer_state(ec2, ib) == "PEER-UP")

    # B leaves the group (live): it is now a guest outside it, and the two no longer reach each other
    ec2.modify_instance_attribute(InstanceId=ib, Groups=[ec2.describe_security_groups(
        GroupNames=["default"])["SecurityGroups"][0]["GroupId"]])
    wait_console(ec2, ia, "PEER-DOWN 3", timeout=120)
    wait_until(lambda: peer_state(ec2, ib) == "PEER-DOWN")
    wait_until(lambda: tcp(outside, b_ip, 8080) == "")   # the CIDR rule was mesh's (B's filter may come last)

    # terminated: the filter goes with the domain
    ec2.terminate_instances(InstanceIds=[ia, ib])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[ia, ib], WaiterConfig={"Delay": 1})
    conn = libvirt.open(URI)
    try:
        names = set(conn.listNWFilters())
    finally:
        conn.close()
    assert f"cloudctl-{ia}" not in names and f"cloudctl-{ib}" not in names
