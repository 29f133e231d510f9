"""A full or read-only state directory: mutating calls fail with a retryable error and change
nothing, reads keep working, and the service recovers by itself when space returns.

The state directory is a small tmpfs mounted by the test (root only), filled with a file.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hil_client import Hil
from support import Server, wait_state, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0711", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def code(e: pytest.ExceptionInfo[ClientError] | ClientError) -> tuple[str, int]:
    err = e.value if isinstance(e, pytest.ExceptionInfo) else e
    return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]


def serve_on(tmp_path: Path, model_cache: Path, state_dir: Path, **overrides: Any) -> Server:
    """A server whose state directory is the small file system; its other stores stay apart."""
    return Server(write_config(tmp_path, model_cache, state_dir=str(state_dir), image_store=str(tmp_path / "images"),
                               volume_store=str(tmp_path / "volumes"), instance_dir=str(tmp_path / "instances"),
                               **overrides)).start()


def ids(ec2: Any) -> set[str]:
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def test_disk_full(tmp_path: Path, model_cache: Path, small_state: Path) -> None:
    srv = serve_on(tmp_path, model_cache, small_state)
    try:
        user = srv.create_user("u")
        ec2 = srv.client(user)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        wait_state(ec2, [first], "running")

        filler = fill(small_state)
        # The journal's last page may still have room for a few small records: tag until the
        # first refusal. Those acknowledged before it must survive; nothing after it may appear.
        acked = []
        for n in range(1000):
            try:
                ec2.create_tags(Resources=[first], Tags=[{"Key": f"t{n}", "Value": "x"}])
                acked.append(f"t{n}")
            except ClientError as e:
                assert code(e) == ("ServiceUnavailable", 503)
                break
        else:
            raise AssertionError("the journal never ran out of space")
        for attempt in range(3):   # bigger records: every attempt fails; none leaves anything behind
            with pytest.raises(ClientError) as e:
                ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, ClientToken=f"t{attempt}")
            assert code(e) == ("ServiceUnavailable", 503)
        with pytest.raises(ClientError) as e:
            ec2.create_key_pair(KeyName="k")
        assert code(e) == ("ServiceUnavailable", 503)
        # reads keep working, and show nothing of the refused changes
        assert ids(ec2) == {first}
        assert ec2.describe_key_pairs()["KeyPairs"] == []
        assert sorted(t["Key"] for t in ec2.describe_tags()["Tags"]) == sorted(acked)

        filler.unlink()   # space returns: the service recovers without a restart
        second = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, ClientToken="t0")["Instances"][0]
        ec2.create_tags(Resources=[first], Tags=[{"Key": "after", "Value": "space"}])

        srv.kill()     # what was acknowledged is on disk; what was refused is not
        srv.start()
        ec2 = srv.client(user)
        assert ids(ec2) == {first, second["InstanceId"]}
        assert ec2.describe_key_pairs()["KeyPairs"] == []
        assert sorted(t["Key"] for t in ec2.describe_tags()["Tags"]) == sorted(acked + ["after"])
        # the ClientToken of a refused launch was not consumed by it
        assert ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, ClientToken="t0")["Instances"][0][
            "InstanceId"] == second["InstanceId"]
    finally:
        srv.stop()


def test_journal_failure_is_a_hil_error(tmp_path: Path, model_cache: Path, small_state: Path) -> None:
    """A full state directory: mutating calls get 503 ServiceUnavailableError in HIL's shape and
    change nothing; reads go on; the API recovers when space returns."""
    server = serve_on(tmp_path, model_cache, small_state, baremetal={"audit_on_start": "off"})
    try:
        hil = Hil(server.admin_url, token=server.token)
        hil.ok("PUT", "/project/before")
        filler = fill(small_state)
        made = ["before"]   # the journal's last page may still take a few small records
        for n in range(1000):
            status, err = hil.call("PUT", f"/project/full{n}")
            if status != 200:
                break
            made.append(f"full{n}")
        else:
            raise AssertionError("the journal never ran out of space")
        assert (status, set(err), err["type"]) == (503, {"type", "msg"}, "ServiceUnavailableError"), err
        assert "journal" in err["msg"]
        for method, path, body in [("PUT", "/auth/basic/user/full-user", {"password": "long-enough"}),
                                   ("PUT", "/network/full-net", {"owner": "admin", "access": [], "net_id": ""}),
                                   ("PUT", "/node/full-node", {"obm": {}})]:
            status, err = hil.call(method, path, body)
            assert (status, err["type"]) == (503, "ServiceUnavailableError"), (path, err)
        assert sorted(hil.ok("GET", "/projects")) == sorted(made)   # reads work and show no refused change
        assert "full-user" not in hil.ok("GET", "/auth/basic/users")
        assert "full-net" not in hil.ok("GET", "/networks")
        assert "full-node" not in hil.ok("GET", "/nodes/all")
        filler.unlink()
        hil.ok("PUT", "/project/after")
        assert "after" in hil.ok("GET", "/projects")
    finally:
        server.stop()


@pytest.fixture
def ext4_state(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An ext4 file system on a loop device, mounted with errors=remount-ro."""
    img, mnt = tmp_path / "fs.img", tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        subprocess.run(["mount", "-o", "errors=remount-ro", dev, str(mnt)], check=True)
        os.chmod(mnt, 0o711)
        yield mnt, dev
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


def test_state_dir_turning_read_only(tmp_path: Path, model_cache: Path, ext4_state: tuple[Path, str]) -> None:
    """The kernel remounts the state file system read-only after an error (as ext4 does with
    errors=remount-ro): mutations get the retryable error and change nothing, reads go on,
    and after the admin repairs it and restarts, every acknowledged change is there."""
    mnt, dev = ext4_state
    trigger = Path("/sys/fs/ext4") / Path(dev).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip("this kernel cannot simulate an ext4 error")
    srv = serve_on(tmp_path, model_cache, mnt)
    try:
        user = srv.create_user("u")
        ec2 = srv.client(user)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.create_key_pair(KeyName="before")
        trigger.write_text("1")
        for call in (lambda: ec2.create_key_pair(KeyName="after"),
                     lambda: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1),
                     lambda: ec2.terminate_instances(InstanceIds=[first])):
            with pytest.raises(ClientError) as e:
                call()
            assert code(e) == ("ServiceUnavailable", 503)
        assert ids(ec2) == {first}
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["before"]
        inst = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] in ("pending", "running")   # the refused terminate changed nothing
        srv.kill()
        # The admin restarts on a repaired copy (remounting in place is not always possible: qemu
        # processes of other tests may hold the mount in their own namespaces).
        copy = tmp_path / "repaired"
        shutil.copytree(mnt, copy, ignore=shutil.ignore_patterns("lost+found"))
        cfg = srv.config_path
        cfg.write_text(cfg.read_text().replace(str(mnt), str(copy)))
        srv = Server(cfg)
        srv.start()
        ec2 = srv.client(user)
        assert ids(ec2) == {first}
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["before"]
        ec2.create_key_pair(KeyName="after")
    finally:
        srv.stop()
