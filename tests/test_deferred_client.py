"""aiohttp's client sessions imported at their first use in `cloudctl serve` (cloudctl/deferred_client.py,
issue 14: base RSS): a served controller holds none of them after start and answers; its first fetch
loads them and works; every aiohttp name cloudctl uses resolves to what a whole import gives; a version
not tested, or a stand-in that breaks a start-up import, imports the package whole as before."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Servers
from support.file_server import serving

REPO = Path(__file__).resolve().parent.parent
# Modules only the real `__init__` imports (the client's sessions and what only they use).
CLIENT_ONLY = ("aiohttp.client", "aiohttp.client_middleware_digest_auth", "aiohttp.client_middlewares",
               "aiohttp.client_ws", "aiohttp.cookiejar", "aiohttp.payload_streamer", "aiohttp.tracing")

# On PYTHONPATH for a served controller: at its exit, the modules it had loaded (by PID: the model
# cache's child and other Python children write their own).
SITECUSTOMIZE = textwrap.dedent(
    """
    import atexit, os, sys

    def _modules():
        with open(os.path.join(os.environ["MODULES_SEEN"], f"{os.getpid()}.txt"), "w") as f:
            f.write("\\n".join(sorted(sys.modules)))

    atexit.register(_modules)
    """
)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[str]:
    """An HTTP server of one image file; its URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(os.urandom(65536))
    with serving(root) as url:
        yield f"{url}/disk.img"


def _seen(seen: Path, pid: int) -> set[str]:
    return set((seen / f"{pid}.txt").read_text().split())


def test_a_served_controller_loads_the_client_at_its_first_fetch(
        tmp_path: Path, model_cache: Path, files: str, monkeypatch: pytest.MonkeyPatch) -> None:
    site, seen = tmp_path / "site", tmp_path / "seen"
    site.mkdir()
    seen.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MODULES_SEEN", str(seen))
    (tmp_path / "srv").mkdir()
    servers = Servers(lambda: tmp_path / "srv", model_cache)
    try:
        s = servers(user_image_urls=True, user_image_urls_local=True)
        user = s.create_user("u")
        ec2 = s.client(user)
        assert ec2.describe_instances()["Reservations"] == []
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.run_instances(ImageId=image, InstanceType="t3.nano", MinCount=1, MaxCount=1)
        assert s.admin("GET", "/v0/health")
        assert s.proc is not None
        pid = s.proc.pid
        s.stop()
        started = _seen(seen, pid)
        assert "aiohttp.web" in started and "aiohttp.connector" in started   # (the connector: at start, as before)
        assert [m for m in CLIENT_ONLY if m in started] == []
        assert "pickle" not in started   # (the config's YAML comes back through `_pickle`: yaml_child.py)

        s.start()   # the same state; its first fetch from a URL loads the client
        ec2 = s.client(user)
        image_id = ec2.register_image(Name="fetched", ImageLocation=files)["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 0.2})
        [img] = ec2.describe_images(ImageIds=[image_id])["Images"]
        assert img["State"] == "available" and img["Name"] == "fetched"
        assert s.proc is not None
        pid = s.proc.pid
        s.stop()
        assert [m for m in CLIENT_ONLY if m not in _seen(seen, pid)] == []
    finally:
        servers.stop()


def _run(code: str, *args: str, cwd: Path = REPO, path: str = str(REPO)) -> Any:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _aiohttp_names() -> list[str]:
    """Every `aiohttp.X[.Y]` and `from aiohttp[.m] import X` that cloudctl and the bench probes use,
    as dotted names to resolve."""
    names: set[str] = set()
    for path in [*(REPO / "cloudctl").rglob("*.py"), REPO / "bench" / "served_probes.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiohttp":
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.split(".")[0] == "aiohttp")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "aiohttp":
                names.add(f"aiohttp.{node.attr}")
    return sorted(names)


# Resolves each dotted name (a module, or a name in one) after `cloudctl serve`'s steps, with or
# without the stand-in; prints each one's module and qualified name, and when the client came.
RESOLVE = textwrap.dedent(
    """
    import importlib, json, sys
    from cloudctl import deferred_client
    from cloudctl.trust_anchors import from_directory
    with from_directory():
        if sys.argv[1] == "defer":
            deferred_client.defer()
        import cloudctl.server
    out = {"client_at_start": "aiohttp.client" in sys.modules, "eager_reason": deferred_client.eager_reason,
           "names": {}}
    for name in sys.argv[2:]:
        try:
            value = importlib.import_module(name)
        except ImportError:
            mod, _, attr = name.rpartition(".")
            value = getattr(importlib.import_module(mod), attr)
        out["names"][name] = [getattr(value, "__module__", None) or value.__name__, getattr(value, "__qualname__", "")]
    import aiohttp
    out["deferred_at_end"] = deferred_client.is_deferred(aiohttp)
    out["all"] = {n: repr(type(getattr(aiohttp, n))) for n in aiohttp.__all__}
    out["lazy_names"] = [aiohttp.GunicornWebWorker is None or aiohttp.GunicornWebWorker.__name__]
    print(json.dumps(out))
    """
)


def test_every_aiohttp_name_cloudctl_uses_resolves_as_with_a_whole_import() -> None:
    names = _aiohttp_names()
    assert "aiohttp.ClientSession" in names and "aiohttp.web" in names and "aiohttp.hdrs.ACCEPT" not in names
    deferred = _run(RESOLVE, "defer", *names)
    whole = _run(RESOLVE, "whole", *names)
    assert deferred["client_at_start"] is False and deferred["eager_reason"] is None
    assert whole["client_at_start"] is True
    assert deferred["names"] == whole["names"]
    assert deferred["all"] == whole["all"] and deferred["lazy_names"] == whole["lazy_names"]
    assert deferred["deferred_at_end"] is False   # (a client name ran the real __init__)


# The stand-in's first steps alone: which client modules a start-up import leaves out, and then
# a package attribute only the real `__init__` binds.
STEPS = textwrap.dedent(
    """
    import json, sys
    from cloudctl import deferred_client
    tested = tuple(sys.argv[1].split(",")) if sys.argv[1] else deferred_client.TESTED
    deferred = deferred_client.defer(tested=tested)
    import aiohttp
    out = {"deferred": deferred, "reason": deferred_client.eager_reason,
           "client": "aiohttp.client" in sys.modules, "stand_in": deferred_client.is_deferred(aiohttp)}
    out["session"] = aiohttp.ClientSession.__module__
    out["client_after"] = "aiohttp.client" in sys.modules
    out["stand_in_after"] = deferred_client.is_deferred(aiohttp)
    print(json.dumps(out))
    """
)


def test_the_tested_version_defers_and_the_first_client_name_loads_it() -> None:
    got = _run(STEPS, "")
    assert got == {"deferred": True, "reason": None, "client": False, "stand_in": True,
                   "session": "aiohttp.client", "client_after": True, "stand_in_after": False}


def test_a_version_not_tested_imports_the_package_whole() -> None:
    got = _run(STEPS, "0.0.0")
    assert got["deferred"] is False and got["client"] is True and got["stand_in"] is False
    assert got["reason"].startswith("version 3.14.5 is not one tested (0.0.0)")
    assert got["session"] == "aiohttp.client"


# A package whose start-up module reads a name its `__init__` binds other than a submodule or
# `__version__` (what a later aiohttp might do): under the stand-in that import fails, so the
# stand-in must step aside and the package be imported whole.
PKG_INIT = '__version__ = "1.0"\n__build__ = 7\nfrom .client import Session\n'
PKG_WEB = "from . import __build__\nBUILD = __build__\n"
PKG_CLIENT = "class Session:\n    pass\n"
BROKEN = textwrap.dedent(
    """
    import json, sys
    from cloudctl import deferred_client
    deferred = deferred_client.defer("fakepkg", tested=("1.0",), at_start=("fakepkg.web",), client="fakepkg.client")
    import fakepkg, fakepkg.web
    print(json.dumps({"deferred": deferred, "reason": deferred_client.eager_reason, "build": fakepkg.web.BUILD,
                      "session": fakepkg.Session.__module__, "stand_in": deferred_client.is_deferred(fakepkg)}))
    """
)


def test_a_stand_in_that_breaks_a_start_up_import_gives_way_to_the_whole_package(tmp_path: Path) -> None:
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PKG_INIT)
    (pkg / "web.py").write_text(PKG_WEB)
    (pkg / "client.py").write_text(PKG_CLIENT)
    got = _run(BROKEN, path=os.pathsep.join([str(tmp_path), str(REPO)]))
    assert got["deferred"] is False and got["stand_in"] is False
    assert got["reason"].startswith("ImportError") and "__build__" in got["reason"]
    assert got["build"] == 7 and got["session"] == "fakepkg.client"


def test_plain_import_cloudctl_leaves_aiohttp_as_it_is() -> None:
    """Only `cloudctl serve` (cli.main) installs the stand-in: importing cloudctl's modules does not."""
    got = _run("import json, sys, cloudctl.server, cloudctl.cli, aiohttp\n"
               "print(json.dumps(['aiohttp.client' in sys.modules, type(aiohttp.__dict__.get('__getattr__')).__name__,"
               " aiohttp.__getattr__.__module__]))")
    assert got == [True, "function", "aiohttp"]
