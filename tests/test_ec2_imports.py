"""ImportImage: boto3 and the AWS CLI against a served controller that fetches disk images from
an HTTP server this test runs on loopback (real qcow2/raw files made with qemu-img)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import Server, Servers

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")


class Files:
    """What the HTTP server serves, and the knobs the tests turn."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.release = threading.Event()     # /slow.qcow2 holds its body back until set
        self.slow_hits = 0


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            name = self.path.lstrip("/")
            if name == "short.qcow2":        # declares more than it sends, then hangs up
                body = (files.root / "disk.qcow2").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + 4096))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            if name == "slow.qcow2":
                files.slow_hits += 1
                body = (files.root / "disk.qcow2").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:1024])
                self.wfile.flush()
                if files.slow_hits == 1:
                    files.release.wait(60)
                try:
                    self.wfile.write(body[1024:])
                except OSError:
                    pass
                return
            path = files.root / name
            if not name or "/" in name or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return Handler


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Files, str]]:
    root = tmp_path_factory.mktemp("served")
    qcow = root / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 64k", str(qcow)], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root / "big.qcow2"), "20G"], check=True)
    (root / "disk.raw").write_bytes(b"\0" * 512 * 64)
    # A qcow2 whose backing file is a host file: qemu would hand the guest its bytes.
    (root / "secret.raw").write_bytes(b"host secret".ljust(512, b"\0"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(root / "secret.raw"),
                    str(root / "backed.qcow2")], check=True)
    (root / "notes.txt").write_text("these are not the bytes of a disk\n")
    f = Files(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(f))
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f, f"http://127.0.0.1:{httpd.server_address[1]}"
    f.release.set()
    httpd.shutdown()


@pytest.fixture(scope="module")
def importer(server_with: Servers) -> Server:
    # The HTTP server is on loopback, which users' URLs may only reach when allowed.
    return server_with(user_image_urls=True, user_image_urls_local=True)


@pytest.fixture(scope="module")
def iec2(importer: Server) -> Any:
    return importer.client(importer.create_user("ivan"))


def fails(code: str, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    return str(e.value.response["Error"]["Message"])


def task(ec2: Any, tid: str) -> dict[str, Any]:
    return ec2.describe_import_image_tasks(ImportTaskIds=[tid])["ImportImageTasks"][0]


def wait_done(ec2: Any, tid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (t := task(ec2, tid))["Status"] in ("active", "deleting"):
        assert time.monotonic() < deadline, t
        time.sleep(0.1)
    return t


def my_images(ec2: Any) -> set[str]:
    return {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}


def image_files(srv: Server) -> set[str]:
    return {p.name for p in Path(srv.cfg["image_store"]).iterdir()}


def test_import_a_qcow2_and_launch_it(importer: Server, iec2: Any, files: tuple[Files, str]) -> None:
    f, base = files
    out = iec2.import_image(Description="imported", ClientToken="imp-1",
                            DiskContainers=[{"Url": f"{base}/disk.qcow2", "Format": "qcow2"}],
                            TagSpecifications=[{"ResourceType": "import-image-task",
                                                "Tags": [{"Key": "k", "Value": "v"}]}])
    tid = out["ImportTaskId"]
    assert tid.startswith("import-ami-") and out["Status"] == "active" and out["Description"] == "imported"
    again = iec2.import_image(Description="imported", ClientToken="imp-1",
                              DiskContainers=[{"Url": f"{base}/disk.qcow2", "Format": "qcow2"}])
    assert again["ImportTaskId"] == tid                       # idempotent by ClientToken
    done = wait_done(iec2, tid)
    assert done["Status"] == "completed" and done["ImageId"].startswith("ami-"), done
    assert "Progress" not in done and done["Tags"] == [{"Key": "k", "Value": "v"}]
    body = (f.root / "disk.qcow2").read_bytes()
    snap = done["SnapshotDetails"][0]
    assert (snap["Format"], snap["DiskImageSize"], snap["Status"]) == ("QCOW2", float(len(body)), "completed")
    image = iec2.describe_images(ImageIds=[done["ImageId"]])["Images"][0]
    assert image["State"] == "available" and image["Name"] == tid and image["Public"] is False
    assert image["RootDeviceType"] == "ebs"
    stored = Path(importer.cfg["image_store"]) / next(
        n for n in image_files(importer) if hashlib.sha256((Path(importer.cfg["image_store"]) / n).read_bytes())
        .hexdigest() == hashlib.sha256(body).hexdigest())
    assert stored.read_bytes() == body                        # the bytes served, whole
    iid = iec2.run_instances(ImageId=done["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    iec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 0.2})
    iec2.terminate_instances(InstanceIds=[iid])

    completed = iec2.describe_import_image_tasks(Filters=[{"Name": "task-state", "Values": ["completed"]}])
    assert tid in [t["ImportTaskId"] for t in completed["ImportImageTasks"]]
    assert tid not in [t["ImportTaskId"] for t in iec2.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": ["active", "deleted"]}])["ImportImageTasks"]]
    assert [t["ImportTaskId"] for t in iec2.describe_import_image_tasks(
        Filters=[{"Name": "tag:k", "Values": ["v"]}])["ImportImageTasks"]] == [tid]


@pytest.mark.parametrize("name,fmt,why", [
    ("missing.qcow2", None, "HTTP 404"),
    ("short.qcow2", None, "declared"),
    ("notes.txt", None, "not a disk image"),
    ("disk.qcow2", "RAW", "declared format RAW but the file is QCOW2"),
    ("backed.qcow2", None, "refers to another file"),
])
def test_a_failed_download_registers_nothing(importer: Server, iec2: Any, files: tuple[Files, str],
                                             name: str, fmt: str | None, why: str) -> None:
    _, base = files
    before, before_files = my_images(iec2), image_files(importer)
    disk: dict[str, str] = {"Url": f"{base}/{name}"}
    if fmt:
        disk["Format"] = fmt
    tid = iec2.import_image(DiskContainers=[disk])["ImportTaskId"]
    done = wait_done(iec2, tid)
    assert done["Status"] == "deleted" and "ImageId" not in done, done
    assert done["StatusMessage"].startswith("ClientError: ") and why in done["StatusMessage"], done
    assert my_images(iec2) == before
    assert image_files(importer) == before_files              # nothing left behind, not even a .part


def test_root_volumes_are_at_least_the_image(iec2: Any, files: tuple[Files, str]) -> None:
    _, base = files
    tid = iec2.import_image(DiskContainers=[{"Url": f"{base}/big.qcow2"}])["ImportTaskId"]
    image_id = wait_done(iec2, tid)["ImageId"]
    image = iec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 20      # its virtual size
    before = {v["VolumeId"] for v in iec2.describe_volumes()["Volumes"]}
    assert "expect size >= 20GB" in fails("InvalidParameterValue", iec2.run_instances, ImageId=image_id, MinCount=1,
                                          MaxCount=1, BlockDeviceMappings=[{"DeviceName": "/dev/vda",
                                                                            "Ebs": {"VolumeSize": 19}}])
    assert {v["VolumeId"] for v in iec2.describe_volumes()["Volumes"]} == before
    inst = iec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.small")["Instances"][0]
    root = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert iec2.describe_volumes(VolumeIds=[root])["Volumes"][0]["Size"] == 20   # not t3.small's 16
    iec2.terminate_instances(InstanceIds=[inst["InstanceId"]])


def test_raw_images_import_too(iec2: Any, files: tuple[Files, str]) -> None:
    _, base = files
    tid = iec2.import_image(DiskContainers=[{"Url": f"{base}/disk.raw", "Format": "RAW"}])["ImportTaskId"]
    done = wait_done(iec2, tid)
    assert done["Status"] == "completed" and done["SnapshotDetails"][0]["Format"] == "RAW"


@pytest.mark.parametrize("kw,code", [
    ({}, "MissingParameter"),
    ({"DiskContainers": [{"Url": "file:///etc/passwd"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "ftp://example.org/x.raw"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"UserBucket": {"S3Bucket": "b", "S3Key": "k"}}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a"}, {"Url": "http://127.0.0.1:9/b"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a", "Format": "OVA"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a", "Format": "VMDK"}]}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a"}], "Architecture": "arm64"}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a"}], "Platform": "Windows"}, "InvalidParameterValue"),
    ({"DiskContainers": [{"Url": "http://127.0.0.1:9/a"}], "Encrypted": True}, "InvalidParameterValue"),
])
def test_bad_requests_make_no_task(iec2: Any, kw: dict[str, Any], code: str) -> None:
    before = iec2.describe_import_image_tasks()["ImportImageTasks"]
    fails(code, iec2.import_image, **kw)
    assert iec2.describe_import_image_tasks()["ImportImageTasks"] == before


def test_lookups_and_dry_run(iec2: Any) -> None:
    fails("InvalidConversionTaskId.Malformed", iec2.describe_import_image_tasks, ImportTaskIds=["ami-12345678"])
    fails("InvalidConversionTaskId", iec2.describe_import_image_tasks, ImportTaskIds=["import-ami-0123456789abcdef0"])
    fails("InvalidConversionTaskId", iec2.cancel_import_task, ImportTaskId="import-ami-0123456789abcdef0")
    fails("InvalidParameterValue", iec2.describe_import_image_tasks, Filters=[{"Name": "nope", "Values": ["x"]}])
    before = iec2.describe_import_image_tasks()["ImportImageTasks"]
    fails("DryRunOperation", iec2.import_image, DryRun=True, DiskContainers=[{"Url": "http://127.0.0.1:9/a"}])
    assert iec2.describe_import_image_tasks()["ImportImageTasks"] == before


def test_users_may_not_make_the_controller_fetch_urls_unless_allowed(ec2: Any, new_server: Any) -> None:
    assert "admins" in fails("InvalidParameterValue", ec2.import_image,
                             DiskContainers=[{"Url": "http://127.0.0.1:9/disk.qcow2"}])
    srv = new_server(user_image_urls=True)                  # URLs allowed, but not the local ones
    mine = srv.client(srv.create_user("sam"))
    for url in ("http://127.0.0.1:9/disk.qcow2", "http://localhost:9/disk.qcow2", "http://[::1]:9/x",
                "http://169.254.169.254/latest/meta-data/"):
        assert "loopback or link-local" in fails("InvalidParameterValue", mine.import_image,
                                                 DiskContainers=[{"Url": url}])
    assert mine.describe_import_image_tasks()["ImportImageTasks"] == []


def test_other_accounts_see_no_tasks(importer: Server, iec2: Any, files: tuple[Files, str]) -> None:
    _, base = files
    tid = iec2.import_image(DiskContainers=[{"Url": f"{base}/disk.raw"}])["ImportTaskId"]
    other = importer.client(importer.create_user("olga"))
    assert other.describe_import_image_tasks()["ImportImageTasks"] == []
    fails("InvalidConversionTaskId", other.describe_import_image_tasks, ImportTaskIds=[tid])
    fails("InvalidConversionTaskId", other.cancel_import_task, ImportTaskId=tid)
    wait_done(iec2, tid)


def test_cancel_an_import(importer: Server, iec2: Any, files: tuple[Files, str]) -> None:
    f, base = files
    f.slow_hits = 0
    f.release.clear()
    before, before_files = my_images(iec2), image_files(importer)
    tid = iec2.import_image(DiskContainers=[{"Url": f"{base}/slow.qcow2"}])["ImportTaskId"]
    deadline = time.monotonic() + 30
    while task(iec2, tid).get("StatusMessage") != "downloading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert task(iec2, tid)["Status"] == "active" and task(iec2, tid)["Progress"] == "0"   # 1 KiB of the body
    out = iec2.cancel_import_task(ImportTaskId=tid, CancelReason="changed my mind")
    assert (out["ImportTaskId"], out["PreviousState"], out["State"]) == (tid, "active", "deleting")
    done = wait_done(iec2, tid)
    f.release.set()
    assert done["Status"] == "deleted" and "changed my mind" in done["StatusMessage"]
    assert my_images(iec2) == before and image_files(importer) == before_files
    fails("IncorrectState", iec2.cancel_import_task, ImportTaskId=tid)


def test_an_interrupted_import_starts_again_after_a_crash(new_server: Any, files: tuple[Files, str]) -> None:
    f, base = files
    f.slow_hits = 0
    f.release.clear()
    srv = new_server(user_image_urls=True, user_image_urls_local=True)
    ec2 = srv.client(srv.create_user("carl"))
    tid = ec2.import_image(DiskContainers=[{"Url": f"{base}/slow.qcow2"}])["ImportTaskId"]
    deadline = time.monotonic() + 30
    while f.slow_hits == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    srv.kill()                                                # mid-download
    f.release.set()
    srv.start()
    done = wait_done(ec2, tid)
    assert done["Status"] == "completed" and f.slow_hits == 2, done
    assert ec2.describe_images(ImageIds=[done["ImageId"]])["Images"][0]["State"] == "available"
    assert not [n for n in image_files(srv) if n.endswith(".part")]


def test_aws_cli_import_image(importer: Server, files: tuple[Files, str]) -> None:
    _, base = files
    user = importer.create_user("cli-user")
    env = {"AWS_ACCESS_KEY_ID": user["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": user["SecretAccessKey"],
           "AWS_DEFAULT_REGION": "cloudctl-1", "PATH": "/usr/bin:/bin"}
    aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", importer.endpoint, "--output", "json", "ec2"]
    out = subprocess.run([*aws, "import-image", "--description", "from the cli", "--disk-containers",
                          f"Format=qcow2,Url={base}/disk.qcow2"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    tid = json.loads(out.stdout)["ImportTaskId"]
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run([*aws, "describe-import-image-tasks", "--import-task-ids", tid],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        t = json.loads(out.stdout)["ImportImageTasks"][0]
        if t["Status"] != "active":
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert t["Status"] == "completed" and t["Description"] == "from the cli" and t["ImageId"].startswith("ami-")
