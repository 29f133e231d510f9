"""Users' image URLs cannot point the controller at itself or the link-local range (SSRF), not
even through a redirect; another account's private image file cannot be registered again."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.file_server import serving


def code_of(e: pytest.ExceptionInfo[ClientError]) -> str:
    return e.value.response["Error"]["Code"]


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(os.urandom(65536))
    with serving(root) as url:
        yield root, url


def images_named(ec2: Any, name: str) -> list[dict[str, Any]]:
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]


def test_local_targets_refused(new_server: Any, files: tuple[Path, str]) -> None:
    _, base = files
    srv = new_server(user_image_urls=True)
    ec2 = srv.client(srv.create_user("u"))
    port = base.rsplit(":", 1)[1]
    for n, url in enumerate([f"{base}/disk.img", f"http://localhost:{port}/disk.img",
                             "http://169.254.169.254/latest/meta-data/", f"http://[::1]:{port}/disk.img",
                             f"http://0.0.0.0:{port}/disk.img", "ftp://example.org/disk.img",
                             "file:///etc/passwd"]):
        with pytest.raises(ClientError) as e:
            ec2.register_image(Name=f"ssrf-{n}", ImageLocation=url)
        assert code_of(e) == "InvalidParameterValue", url
        assert images_named(ec2, f"ssrf-{n}") == []


def test_local_targets_allowed_when_configured(new_server: Any, files: tuple[Path, str]) -> None:
    _, base = files
    srv = new_server(user_image_urls=True, user_image_urls_local=True)
    ec2 = srv.client(srv.create_user("u"))
    image_id = ec2.register_image(Name="lab", ImageLocation=f"{base}/disk.img")["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 0.2})


def test_private_image_file_not_registrable_by_others(server: Any, ec2: Any, tmp_path: Path) -> None:
    store = Path(server.cfg["image_store"])
    (store / "alice-private.img").write_bytes(os.urandom(4096))   # a file in the store; `ec2` is alice
    mine = ec2.register_image(Name="alice-private", ImageLocation="alice-private.img")["ImageId"]
    mallory = server.client(server.create_user("mallory-img"))
    with pytest.raises(ClientError) as e:
        mallory.register_image(Name="stolen", ImageLocation="alice-private.img")
    assert code_of(e) == "InvalidParameterValue"
    assert images_named(mallory, "stolen") == []
    ec2.deregister_image(ImageId=mine)
