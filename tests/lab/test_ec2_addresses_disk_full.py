"""Elastic IPs on a full disk (the lab half of test_ec2_addresses.py: it mounts a tmpfs, as root):
a commit the journal cannot write is undone on the host."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_ec2_addresses import Scripts, addresses, client, eip_config, launch, public_ip_of

from .test_disk_full import fill
from support import Server, write_config


def test_a_commit_the_journal_cannot_write_is_undone_on_the_host(tmp_path: Path, model_cache: Path) -> None:
    """The scripts ran, then the disk was full: the call fails with ServiceUnavailable, the rows
    are what the journal holds (the old association), and the host is put back to match them."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0711", "tmpfs", str(mnt)], check=True)
    scripts = Scripts(tmp_path / "scripts")
    srv = None
    try:
        cfg = write_config(tmp_path, model_cache, state_dir=str(mnt), image_store=str(tmp_path / "images"),
                           volume_store=str(tmp_path / "volumes"), instance_dir=str(tmp_path / "instances"),
                           **eip_config(scripts, script_timeout_s=60))
        srv = Server(cfg).start()
        c = client(srv, srv.create_user("full"))
        img = c.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
        x, y = launch(c, img, 2)
        a = c.allocate_address()
        c.associate_address(AllocationId=a["AllocationId"], InstanceId=x["InstanceId"])
        before = addresses(c)
        scripts.take()
        # The move's first script hangs; meanwhile the disk fills up (past the journal's last page).
        scripts.set("hang")
        result: dict[str, Any] = {}

        def move() -> None:
            try:
                result["ok"] = c.associate_address(AllocationId=a["AllocationId"], InstanceId=y["InstanceId"],
                                                   AllowReassociation=True)
            except ClientError as e:
                result["error"] = e.response
        t = threading.Thread(target=move)
        t.start()
        scripts.wait_calls(1)
        filler = fill(mnt)
        for n in range(1000):
            try:
                c.create_tags(Resources=[x["InstanceId"]], Tags=[{"Key": f"t{n}", "Value": "x" * 200}])
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ServiceUnavailable"
                break
        scripts.set("hang", False)
        os.kill(int((scripts.dir / "sleep.pid").read_text()), 9)   # the hanging script goes on
        t.join(60)
        assert "ok" not in result and result["error"]["Error"]["Code"] == "ServiceUnavailable", result
        assert addresses(c) == before
        # The host was moved to y by the scripts; the rollback puts it back on x.
        calls = scripts.wait_calls(4)
        assert [k[:3] for k in calls[:2]] == [["disassociate", a["PublicIp"]],
                                              ["associate", a["PublicIp"], y["PrivateIpAddress"]]]
        assert [k[:3] for k in calls[2:4]] == [["disassociate", a["PublicIp"]],
                                               ["associate", a["PublicIp"], x["PrivateIpAddress"]]]
        filler.unlink()
        # Space is back: the next round records the address as settled, and then no more runs.
        deadline = time.time() + 30
        while time.time() < deadline and not _settled(srv):
            time.sleep(0.2)
        assert _settled(srv)
        assert addresses(c) == before and public_ip_of(c, x["InstanceId"]) == a["PublicIp"]
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _settled(srv: Server) -> bool:
    return not any(r["NatUnsure"] for r in srv.admin("GET", "/v0/addresses")["addresses"])
