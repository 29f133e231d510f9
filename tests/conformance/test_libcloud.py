"""Apache libcloud's EC2 driver, through its public API only, as a libcloud user points it at a
cloud of their own: a region entry for `cloudctl-1` in the driver's region tables (the way
libcloud knows every region), then host/port/secure. The workflow is the one in libcloud's
compute docs: key pair, images/sizes/locations, create a node and `wait_until_running()` with
its defaults, volumes, an Elastic IP, destroy."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from libcloud.compute.constants.ec2_region_details_complete import REGION_DETAILS as COMPLETE
from libcloud.compute.constants.ec2_region_details_partial import REGION_DETAILS as PARTIAL
from libcloud.compute.providers import Provider, get_driver
from libcloud.compute.types import NodeState, StorageVolumeState

from toolrun import Cloud

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

TYPES = ["t3.nano", "t3.micro", "t3.small", "m5.large", "m5.xlarge"]   # the default config's instance types


@pytest.fixture(scope="module")
def driver(cloud: Cloud) -> Iterator[Any]:
    entry = {"api_name": "ec2_cloudctl", "country": "Private cloud", "endpoint": urlsplit(cloud.endpoint).hostname,
             "id": cloud.region, "signature_version": "4"}
    PARTIAL[cloud.region] = entry
    COMPLETE[cloud.region] = {**entry, "instance_types": TYPES}
    url = urlsplit(cloud.endpoint)
    yield get_driver(Provider.EC2)(cloud.access_key, cloud.secret_key, region=cloud.region, host=url.hostname,
                                   port=url.port, secure=False)
    PARTIAL.pop(cloud.region, None)
    COMPLETE.pop(cloud.region, None)


def test_the_libcloud_ec2_workflow(driver: Any, cloud: Cloud) -> None:
    # Key pairs: made, listed, found by name (DescribeKeyPairs with an un-indexed KeyName).
    kp = driver.create_key_pair("lc-key")
    assert kp.name == "lc-key" and kp.private_key.startswith("-----BEGIN")
    assert "lc-key" in [k.name for k in driver.list_key_pairs()]
    assert driver.get_key_pair("lc-key").fingerprint == kp.fingerprint

    locations = driver.list_locations()
    assert sorted(loc.availability_zone.name for loc in locations) == ["cloudctl-1a", "cloudctl-1b"]
    sizes = {s.id: s for s in driver.list_sizes()}
    assert sorted(sizes) == sorted(TYPES) and sizes["t3.nano"].ram == 512
    images = [i for i in driver.list_images(ex_owner="self") + driver.list_images() if i.name == "cloudctl-blank"]
    assert images, "the cloud's public image is listed"
    image = images[0]
    loc = next(loc for loc in locations if loc.availability_zone.name == "cloudctl-1a")

    node = driver.create_node(name="lc-node", size=sizes["t3.nano"], image=image, location=loc, ex_keyname="lc-key",
                              ex_userdata="#!/bin/sh\necho hi\n", ex_metadata={"role": "conformance"})
    assert node.extra["tags"] == {"Name": "lc-node", "role": "conformance"}
    started = time.monotonic()
    (ready, ips), = driver.wait_until_running([node])          # its defaults: public IPs, 5 s polls
    assert ready.id == node.id and ready.state == NodeState.RUNNING
    assert ips and ips == ready.public_ips, "the default subnets give a public address on launch"
    assert time.monotonic() - started < 30
    listed = {n.id: n for n in driver.list_nodes()}
    assert listed[node.id].name == "lc-node" and listed[node.id].extra["key_name"] == "lc-key"
    assert listed[node.id].private_ips and listed[node.id].public_ips == ips

    vol = driver.create_volume(1, "lc-vol", location=loc)
    assert vol.size == 1 and vol.name == "lc-vol"
    _wait_volume(driver, vol.id, StorageVolumeState.AVAILABLE)
    assert driver.attach_volume(node, vol, "/dev/sdf") is True
    _wait_volume(driver, vol.id, StorageVolumeState.INUSE)
    assert vol.id in [v.id for v in driver.list_volumes(node=node)]
    assert driver.detach_volume(vol) is True
    _wait_volume(driver, vol.id, StorageVolumeState.AVAILABLE)
    assert driver.destroy_volume(vol) is True
    _wait_volume(driver, vol.id, None)                     # deleting, then gone

    eip = driver.ex_allocate_address(domain="vpc")
    assert driver.ex_associate_address_with_node(node, eip, domain="vpc")
    assert eip.ip in driver.list_nodes(ex_node_ids=[node.id])[0].public_ips
    held = [a for a in driver.ex_describe_all_addresses() if a.ip == eip.ip]   # now with its association id
    assert [a.instance_id for a in held] == [node.id] and held[0].extra["association_id"]
    assert driver.ex_disassociate_address(held[0], domain="vpc") is True
    assert driver.ex_release_address(eip, domain="vpc") is True

    assert driver.destroy_node(node) is True              # reads TerminateInstances' currentState
    deadline = time.monotonic() + 30
    while driver.list_nodes(ex_node_ids=[node.id])[0].state != NodeState.TERMINATED:
        assert time.monotonic() < deadline, "the node did not terminate"
        time.sleep(0.5)
    assert driver.delete_key_pair(kp) is True
    assert "lc-key" not in [k.name for k in driver.list_key_pairs()]


def _wait_volume(driver: Any, volume_id: str, state: str | None, timeout: float = 20) -> None:
    """Until the volume is in `state` (None: no longer listed)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [v.state for v in driver.list_volumes() if v.id == volume_id]
        if got == ([state] if state else []):
            return
        assert time.monotonic() < deadline, f"volume {volume_id}: {got}, expected {state}"
        time.sleep(0.2)
