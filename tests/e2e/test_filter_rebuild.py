"""A guest's packet filter is rebuilt whenever its security groups change (libvirt redefines
its chains). While that happens, traffic the groups do not allow must still not get through:
the driver's fail-closed FORWARD rule catches what no chain has claimed. Without it, 2 of 39
probes got through here while the filter was redefined in a loop."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import libvirt

from .conftest import MEASUREMENTS, URI
from .test_vpc_acceptance import aws, http_get, wait_get


def test_disallowed_traffic_stays_out_while_the_filter_is_rebuilt(bridged_cloud: Any, tmp_path: Path) -> None:
    cloud = bridged_cloud
    inside = cloud.lab.add_host("in", cloud.address(200))
    outside = cloud.lab.add_host("out", cloud.address(201))
    gid = aws(cloud, "create-security-group", "--group-name", "web", "--description", "rebuild")["GroupId"]
    aws(cloud, "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp", "--port", "22",
        "--cidr", f"{cloud.address(200)}/32")
    user_data = tmp_path / "web.sh"
    user_data.write_text("#!/bin/sh\nmkdir -p /www\nhostname > /www/index.html\nhttpd -p 22 -h /www\n")
    inst = aws(cloud, "run-instances", "--image-id", cloud.image_id, "--instance-type", "t3.nano",
               "--subnet-id", cloud.subnet_id, "--security-group-ids", gid,
               "--user-data", f"file://{user_data}")["Instances"][0]
    ip = inst["PrivateIpAddress"]
    wait_get(inside, ip)
    assert http_get(outside, ip) is None

    stop = threading.Event()
    rebuilds = [0]

    def rebuild() -> None:
        conn = libvirt.open(URI)
        try:
            xml = conn.nwfilterLookupByName("cloudctl-" + inst["InstanceId"]).XMLDesc(0)
            while not stop.is_set():
                conn.nwfilterDefineXML(xml)       # as a group change does: the same filter, rebuilt
                rebuilds[0] += 1
        finally:
            conn.close()

    t = threading.Thread(target=rebuild)
    t.start()
    probes, leaked = 0, 0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probes += 1
            leaked += http_get(outside, ip, timeout=1.0) is not None
    finally:
        stop.set()
        t.join()
    MEASUREMENTS["filter rebuilt in a loop"] = f"{rebuilds[0]} rebuilds, {probes} probes from a disallowed address, " \
                                              f"{leaked} got through"
    assert rebuilds[0] > 100 and probes > 10
    assert leaked == 0
    assert wait_get(inside, ip)           # and what is allowed still gets through
