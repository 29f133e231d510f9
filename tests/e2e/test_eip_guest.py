"""An elastic IP reaching a real guest: a controller on qemu:///system launches the test guest
on its network's Linux bridge (static address from the config drive), associates an elastic IP with
scripts/eip-nft.sh as its scripts, and the guest answers ping on the elastic address from an
"outside" namespace; after disassociate it no longer does (topology: tests/eipnet.py)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import libvirt
import pytest
from botocore.config import Config as BotoConfig

from .conftest import MEASUREMENTS, URI
from .test_real_guest import cli, wait_console
from eipnet import GATEWAY, OUTSIDE, POOL, SUBNET, Net
from support import DEFAULT_CONFIG, Server, wait_state, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                reason="needs root and nft (nftables)")


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.build(root_bridge=True)
        yield n
    finally:
        n.teardown()


def test_elastic_ip_reaches_a_real_guest(net: Net, libvirtd: str, work_dir: Path, model_cache: Path,
                                         guest_image: dict[str, Path]) -> None:
    d = work_dir / f"eip-{time.monotonic_ns()}"
    d.mkdir(mode=0o755)
    path = write_config(
        d, model_cache, hosts=[{"name": "qemu1", "uri": URI, "zone": "cloudctl-1a"}],
        networks=[{"name": "eip-lab", "zone": "cloudctl-1a", "cidr": SUBNET, "bridge": net.bridge}],
        domain_template=str(DEFAULT_CONFIG.parent / "templates" / "domain-qemu.xml"),
        stop_timeout_s=30, elastic_ips={"pool": [POOL], "associate_script": str(net.wrapper(d / "eip.sh")),
                                        "disassociate_script": str(d / "eip.sh")})
    srv = Server(path).start()
    iid = ""
    try:
        ids: dict[str, str] = {}
        for kind, key in (("kernel", "vmlinuz"), ("ramdisk", "initrd.img"), ("machine", "root.qcow2")):
            extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
            ids[kind] = cli(srv, "image", "import", str(guest_image[key]), "--name", f"eip-{kind}",
                            "--type", kind, *extra).split()[0]
        user = srv.create_user("eip")
        ec2: Any = boto3.client("ec2", endpoint_url=srv.endpoint, region_name="cloudctl-1",
                                aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                                config=BotoConfig(retries={"total_max_attempts": 1}))
        # the default security group admits only its members: let pings from anywhere in
        ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=[
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        iid = ec2.run_instances(ImageId=ids["machine"], InstanceType="t3.nano", MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
        text = wait_console(ec2, iid, "CLOUDCTL-NET", "CLOUDCTL-GUEST-READY")
        priv = wait_state(ec2, [iid], "running")[0]["PrivateIpAddress"]
        assert f"{priv}/24 gw {GATEWAY}" in text
        assert net.ping(net.host, priv, tries=20)               # the guest is on the bridge
        eip = ec2.allocate_address()["PublicIp"]
        assert not net.ping(net.outside, eip)

        t0 = time.monotonic()
        assoc = ec2.associate_address(PublicIp=eip, InstanceId=iid)["AssociationId"]
        MEASUREMENTS["AssociateAddress with eip-nft.sh (one call)"] = f"{time.monotonic() - t0:.2f} s"
        assert net.ping(net.outside, eip, tries=5)              # the guest answers on its elastic IP
        assert f"{eip} : {priv}" in net.nft_maps()
        args = (d / "eip.sh.log").read_text().split()
        sent = json.loads(base64.b64decode(args[2]))
        assert args[:2] == [eip, priv] and sent["bridge"] == net.bridge and sent["gateway"] == GATEWAY

        ec2.disassociate_address(AssociationId=assoc)
        assert not net.ping(net.outside, eip)
        assert net.ping(net.host, priv)                          # the guest is still there
        assert OUTSIDE and eip not in net.nft_maps()
        ec2.release_address(PublicIp=eip)
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    finally:
        srv.stop()
        if iid:
            _remove_domain(iid)


def _remove_domain(name: str) -> None:
    """Never leave a guest behind, whatever failed."""
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        conn.close()
        return
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()
