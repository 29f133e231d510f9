"""The admin CLI against a running server: capacity, image import, users, hosts."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError


def cli(server: Any, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def nano_free(server: Any, zone: str) -> int:
    for line in cli(server, "capacity", "--by-zone").splitlines():
        cols = line.split()
        if cols[:2] == ["t3.nano", zone]:
            return int(cols[2].split("/")[0])
    raise AssertionError("t3.nano row missing")


@pytest.mark.slow
def test_capacity_by_zone_follows_launches(server: Any, ec2: Any, image_id: str) -> None:
    before = nano_free(server, "cloudctl-1b")
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image_id, MinCount=3, MaxCount=3, InstanceType="t3.nano",
        Placement={"AvailabilityZone": "cloudctl-1b"})["Instances"]]
    assert nano_free(server, "cloudctl-1b") == before - 3
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1})
    assert nano_free(server, "cloudctl-1b") == before


def test_image_import(server: Any, ec2: Any, tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)
    f = tmp_path / "disk.raw"
    f.write_bytes(data)
    out = cli(server, "image", "import", str(f), "--name", "imported-disk", "--description", "from the CLI")
    image_id = out.split()[0]
    assert hashlib.sha256(data).hexdigest() in out
    im = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert im["Name"] == "imported-disk" and im["Public"] is True
    stored = [p for p in Path(server.cfg["image_store"]).iterdir() if p.read_bytes() == data]
    assert len(stored) == 1
    inst = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])


def test_hosts_and_bad_token(server: Any) -> None:
    out = cli(server, "hosts")
    assert "host-a" in out and "cloudctl-1b" in out
    bad = subprocess.run([sys.executable, "-m", "cloudctl", "--config", "/nonexistent.yaml", "hosts"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "cannot read" in bad.stderr


def test_kernel_and_ramdisk_images(server: Any, ec2: Any, tmp_path: Path) -> None:
    ids = {}
    for kind in ("kernel", "ramdisk", "machine"):
        f = tmp_path / kind
        f.write_bytes(os.urandom(4096))
        extra = ["--kernel", ids["kernel"], "--ramdisk", ids["ramdisk"]] if kind == "machine" else []
        ids[kind] = cli(server, "image", "import", str(f), "--name", f"boot-{kind}", "--type", kind, *extra).split()[0]
    assert ids["kernel"].startswith("aki-") and ids["ramdisk"].startswith("ari-") and ids["machine"].startswith("ami-")
    im = ec2.describe_images(ImageIds=[ids["machine"]])["Images"][0]
    assert (im["KernelId"], im["RamdiskId"], im["ImageType"]) == (ids["kernel"], ids["ramdisk"], "machine")
    kernels = ec2.describe_images(Filters=[{"Name": "image-type", "Values": ["kernel"]}])["Images"]
    assert ids["kernel"] in [k["ImageId"] for k in kernels]
    inst = ec2.run_instances(ImageId=ids["machine"], MinCount=1, MaxCount=1)["Instances"][0]
    assert inst["KernelId"] == ids["kernel"]
    with pytest.raises(ClientError) as e:     # a kernel image is not something to launch
        ec2.run_instances(ImageId=ids["kernel"], MinCount=1, MaxCount=1)
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.Malformed"
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])


@pytest.fixture
def http_files(tmp_path: Path) -> Any:
    """A plain HTTP server on loopback serving tmp_path."""
    from support.file_server import serving
    with serving(tmp_path) as url:
        yield tmp_path, url


@pytest.mark.slow
def test_image_import_from_url(server: Any, ec2: Any, http_files: Any) -> None:
    root, base = http_files
    data = os.urandom(2 * 2**20 + 5)
    (root / "disk.img").write_bytes(data)
    out = cli(server, "image", "import", f"{base}/disk.img", "--name", "from-url",
              "--sha512", hashlib.sha512(data).hexdigest())
    image_id = out.split()[0]
    im = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert im["State"] == "available" and im["Name"] == "from-url"
    assert hashlib.sha256(data).hexdigest() in out
    bad = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(server.config_path), "image", "import",
                          f"{base}/disk.img", "--name", "bad-digest", "--sha256", "0" * 64],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr
    failed = ec2.describe_images(Filters=[{"Name": "name", "Values": ["bad-digest"]}])["Images"]
    assert failed[0]["State"] == "failed"
    assert not [p for p in Path(server.cfg["image_store"]).iterdir() if p.name.endswith(".part")]
    with pytest.raises(ClientError) as e:    # users may not make the controller fetch URLs here
        ec2.register_image(Name="user-url", ImageLocation=f"{base}/disk.img")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_events_record_instance_states(server: Any, ec2: Any, image_id: str) -> None:
    """Launch, stop and terminate show up in `cloudctl events`, in order; --follow streams new ones."""
    follow = subprocess.Popen([sys.executable, "-m", "cloudctl", "--config", str(server.config_path),
                               "events", "--follow", "--json", "--kind", "instance", "--limit", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        iid = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 1})
        lines = [ln.split(None, 4) for ln in cli(server, "events", "--subject", iid).splitlines()]
        assert [ln[4].split()[:3] for ln in lines] == [
            ["pending", "->", "running"], ["running", "->", "shutting-down"],
            ["shutting-down", "->", "terminated"]]
        import json as _json
        assert follow.stdout is not None
        seen = []
        while len(seen) < 3:
            e = _json.loads(follow.stdout.readline())
            if e["subject"] == iid:
                seen.append(e["data"]["state"])
        assert seen == ["running", "shutting-down", "terminated"]
    finally:
        follow.kill()
        follow.wait()


@pytest.mark.slow
def test_host_commands(new_server: Any) -> None:
    srv = new_server()
    rows = {line.split()[0]: line.split() for line in cli(srv, "host", "list").splitlines()[1:]}
    assert set(rows) == {"host-a", "host-b"} and rows["host-a"][2] == "on"
    assert cli(srv, "hosts").splitlines()[0] == cli(srv, "host", "list").splitlines()[0]   # the alias
    out = cli(srv, "host", "disable", "host-a")
    assert "state            disabled" in out
    ec2 = srv.client(srv.create_user("hostops"))
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "cloudctl-1a"})
    assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    show = dict(line.split(None, 1) for line in cli(srv, "host", "show", "host-a").splitlines())
    assert show["state"] == "disabled" and show["admin"] == "disabled" and show["last_seen"] != "never"
    assert "state            on" in cli(srv, "host", "enable", "host-a")
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small",
                            Placement={"AvailabilityZone": "cloudctl-1a"})["Instances"][0]["InstanceId"]
    row = cli(srv, "host", "list").splitlines()
    a = next(r.split() for r in row if r.startswith("host-a"))
    assert a[3] == "1" and a[4].startswith("2/")          # one instance, 2 vCPUs used
    ec2.terminate_instances(InstanceIds=[iid])
    bad = subprocess.run([sys.executable, "-m", "cloudctl", "--config", str(srv.config_path), "host", "show", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "NoSuchEntity" in bad.stderr


def test_banner_command_works(server: Any) -> None:
    """The start-up banner's `cloudctl user create alice --config F` (option after the subcommand)."""
    banner = [line for line in server.log_path.read_text().splitlines() if "Create the first user" in line][-1]
    command = banner.split("with:", 1)[1].split()
    assert command[:3] == ["cloudctl", "user", "create"] and "--config" in command[3:]
    command[3] = "banner-user"
    out = subprocess.run([sys.executable, "-m", "cloudctl", *command[1:], "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('{"AccessKeyId": "AK')
    listed = cli(server, "user", "list", "--json")
    assert "banner-user" in listed
