"""OpenNebula's XML-RPC API driven by pyone (OpenNebula's own Python client) and checked
against boto3 on the same controller: one state behind both APIs."""
from __future__ import annotations

import base64
from typing import Any

import pyone
import pytest

from support import wait_state


@pytest.fixture(scope="module")
def one_server(server_with: Any) -> Any:
    s = server_with(xmlrpc={}, monitor={"interval_s": 2})
    s.one_url = s.url("xmlrpc") + "/RPC2"
    s.one_port = s.ports["xmlrpc"]
    return s


@pytest.fixture(scope="module")
def carol(one_server: Any) -> dict[str, str]:
    return one_server.create_user("carol")


@pytest.fixture(scope="module")
def one(one_server: Any, carol: dict[str, str]) -> Any:
    return pyone.OneServer(one_server.one_url, session=f"carol:{carol['SecretAccessKey']}")


@pytest.fixture(scope="module")
def oneadmin(one_server: Any) -> Any:
    return pyone.OneServer(one_server.one_url, session=f"oneadmin:{one_server.token}")


def _blank_image(one: Any) -> Any:
    return next(i for i in one.imagepool.info(-2, -1, -1).IMAGE if i.NAME == "cloudctl-blank")


def test_version_and_config(one: Any, one_server: Any) -> None:
    assert one.system.version().split(".")[0].isdigit()
    cfg = one.system.config()
    assert (cfg.PORT, cfg.MONITORING_INTERVAL_HOST) == (one_server.one_port, 2)


def test_bad_session_is_an_authentication_error(one_server: Any, carol: dict[str, str]) -> None:
    bad = pyone.OneServer(one_server.one_url, session="carol:wrong")
    with pytest.raises(pyone.OneAuthenticationException):
        bad.vmpool.info(-2, -1, -1, -1)
    by_key = pyone.OneServer(one_server.one_url, session=f"{carol['AccessKeyId']}:{carol['SecretAccessKey']}")
    assert by_key.user.info(-1).NAME == "carol"


def test_allocate_from_template_seen_by_boto3_and_back(one: Any, one_server: Any, carol: dict[str, str]) -> None:
    image = _blank_image(one)
    assert image.STATE == 1 and image.TEMPLATE["EC2_IMAGE_ID"].startswith("ami-")
    assert one.image.info(image.ID).NAME == "cloudctl-blank"
    script = '#!/bin/sh\necho "hello from one"\n'
    vm_id = one.vm.allocate(
        '# a web server\nNAME = "web-1"\nCPU = 1\nMEMORY = 768\nDISK = [ IMAGE_ID = "%d" ]\n'
        'CONTEXT = [ NETWORK = "YES", START_SCRIPT = "%s" ]\n' % (image.ID, script.replace('"', '\\"')),
        False)
    assert isinstance(vm_id, int)
    vm = one.vm.info(vm_id)
    iid = vm.DEPLOY_ID
    assert vm.NAME == "web-1" and vm.UNAME == "carol"
    ec2 = one_server.client(carol)
    [inst] = wait_state(ec2, [iid], "running")
    assert inst["InstanceType"] == "t3.micro"           # the smallest type with 1 vCPU and >= 768 MiB
    assert inst["ImageId"] == image.TEMPLATE["EC2_IMAGE_ID"]
    assert {"Key": "Name", "Value": "web-1"} in inst["Tags"]
    ud = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud).decode() == script
    vm = one.vm.info(vm_id)
    assert (vm.STATE, vm.LCM_STATE) == (3, 3)                  # ACTIVE / RUNNING
    assert vm.ID in [v.ID for v in one.vmpool.info(-2, -1, -1, -1).VM]

    # The reverse: an instance from RunInstances is a VM in the pool.
    other = ec2.run_instances(ImageId=image.TEMPLATE["EC2_IMAGE_ID"], MinCount=1, MaxCount=1,
                              InstanceType="t3.nano")["Instances"][0]["InstanceId"]
    wait_state(ec2, [other], "running")
    assert other in {v.DEPLOY_ID for v in one.vmpool.info(-2, -1, -1, -1).VM}

    one.vm.action("poweroff", vm_id)
    wait_state(ec2, [iid], "stopped")
    assert one.vm.info(vm_id).STATE == 8                       # POWEROFF
    one.vm.action("resume", vm_id)
    wait_state(ec2, [iid], "running")
    one.vm.action("terminate", vm_id)
    ec2.terminate_instances(InstanceIds=[other])
    wait_state(ec2, [iid, other], "terminated")
    assert one.vm.info(vm_id).STATE == 6                       # DONE
    assert vm_id not in [v.ID for v in one.vmpool.info(-2, -1, -1, -1).VM]      # -1: all but DONE
    assert vm_id in [v.ID for v in one.vmpool.info(-2, -1, -1, -2).VM]          # -2: any state


def test_errors_follow_opennebula_codes(one: Any) -> None:
    before = len(one.vmpool.info(-2, -1, -1, -2).VM or [])
    with pytest.raises(pyone.OneNoExistsException):
        one.vm.info(999999)
    with pytest.raises(pyone.OneInternalException, match="needs DISK"):
        one.vm.allocate("CPU = 1\nMEMORY = 512\n", False)      # no DISK: cloudctl boots from an image
    with pytest.raises(pyone.OneInternalException, match="Parse error"):
        one.vm.allocate("CPU = [ oops", False)
    with pytest.raises(pyone.OneApiException):
        one.vm.allocate('CPU = 64\nMEMORY = 512\nDISK = [ IMAGE_ID = "%d" ]' % _blank_image(one).ID, False)
    with pytest.raises(pyone.OneAuthorizationException):
        one.hostpool.info()
    assert len(one.vmpool.info(-2, -1, -1, -2).VM or []) == before   # the failures created nothing


def test_host_pool_as_oneadmin(oneadmin: Any, one: Any, one_server: Any, carol: dict[str, str]) -> None:
    hosts = oneadmin.hostpool.info().HOST
    assert sorted(h.NAME for h in hosts) == ["host-a", "host-b"]
    assert all(h.STATE == 2 for h in hosts)                    # MONITORED ("on")
    vm_id = one.vm.allocate('CPU = 2\nMEMORY = 2048\nDISK = [ IMAGE_ID = "%d" ]' % _blank_image(one).ID, False)
    iid = one.vm.info(vm_id).DEPLOY_ID
    ec2 = one_server.client(carol)
    [inst] = wait_state(ec2, [iid], "running")
    host = next(h for h in oneadmin.hostpool.info().HOST if vm_id in (h.VMS.ID or []))
    assert host.HOST_SHARE.CPU_USAGE >= 200 and host.HOST_SHARE.RUNNING_VMS >= 1
    assert oneadmin.host.info(host.ID).NAME == host.NAME
    assert {u.NAME for u in oneadmin.userpool.info().USER} >= {"oneadmin", "carol"}
    one.vm.action("terminate-hard", vm_id)
    wait_state(ec2, [iid], "terminated")


def test_vnet_pool_matches_subnets_and_places_nics(one: Any, one_server: Any, carol: dict[str, str]) -> None:
    ec2 = one_server.client(carol)
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets()["Subnets"]}
    nets = one.vnpool.info(-2, -1, -1).VNET
    assert {n.TEMPLATE["EC2_SUBNET_ID"] for n in nets} == set(subnets)
    for n in nets:
        assert n.TEMPLATE["NETWORK_MASK"] == subnets[n.TEMPLATE["EC2_SUBNET_ID"]]["CidrBlock"]
    net = nets[-1]
    assert one.vn.info(net.ID).NAME == net.NAME
    used = one.vn.info(net.ID).USED_LEASES
    vm_id = one.vm.allocate('CPU = 1\nMEMORY = 512\nDISK = [ IMAGE_ID = "%d" ]\nNIC = [ NETWORK_ID = "%d" ]'
                            % (_blank_image(one).ID, net.ID), False)
    vm = one.vm.info(vm_id)
    [inst] = wait_state(ec2, [vm.DEPLOY_ID], "running")
    assert inst["SubnetId"] == net.TEMPLATE["EC2_SUBNET_ID"]
    assert vm.TEMPLATE["NIC"]["IP"] == inst["PrivateIpAddress"]
    assert int(vm.TEMPLATE["NIC"]["NETWORK_ID"]) == net.ID
    assert one.vn.info(net.ID).USED_LEASES == used + 1
    with pytest.raises(pyone.OneNoExistsException):
        one.vn.info(4242)
    one.vm.action("terminate", vm_id)
    wait_state(ec2, [vm.DEPLOY_ID], "terminated")
