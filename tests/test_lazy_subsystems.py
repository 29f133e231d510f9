"""Optional subsystems are loaded when configured or first used, not at start (issue 14: base RSS):
cryptography (~7 MiB) with the first key pair or sealed password, XML-RPC's lxml (~5 MiB) and the
marketplace only when their listeners are configured. Seen from outside, in the served process's
memory map: a shared library is there once its module has been imported. AutoScaling and
CloudFormation (core/cloud.py's LAZY_ROWS) and the query services (api/query/services.py) are
built at their first request, or at start when the state holds their rows: seen in /v0/stats."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pyone
import pytest
from botocore.config import Config as BotoConfig

from support import REGION, Servers, boto_client, wait_until, write_config

CRYPTOGRAPHY = "cryptography/hazmat/bindings/_rust"
LXML = "lxml/etree"
MARKUPSAFE = "markupsafe/_speedups"   # jinja2's one compiled module


def mapped(server: Any) -> str:
    assert server.proc is not None
    return Path(f"/proc/{server.proc.pid}/maps").read_text()


def ec2(server: Any, user: dict[str, str]) -> Any:
    return boto3.client("ec2", endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id=user["AccessKeyId"], aws_secret_access_key=user["SecretAccessKey"],
                        config=BotoConfig(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def plain(server_with: Any) -> Any:
    return server_with()


def test_cryptography_is_loaded_with_the_first_key_pair(plain: Any) -> None:
    assert CRYPTOGRAPHY not in mapped(plain)
    assert LXML not in mapped(plain)
    client = ec2(plain, plain.create_user("kp-user"))
    made = client.create_key_pair(KeyName="first", KeyType="ed25519")
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert made["KeyFingerprint"]
    assert CRYPTOGRAPHY in mapped(plain)
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["first"]


def test_an_invalid_imported_key_is_refused_after_the_lazy_load(plain: Any) -> None:
    client = ec2(plain, plain.create_user("kp-user2"))
    with pytest.raises(client.exceptions.ClientError) as e:
        client.import_key_pair(KeyName="bad", PublicKeyMaterial=b"ssh-ed25519 AAAA")
    assert e.value.response["Error"]["Code"] == "InvalidKey.Format"


def test_xml_rpc_works_when_configured(server_with: Any) -> None:
    s = server_with(xmlrpc={})
    assert LXML in mapped(s)
    user = s.create_user("one-user")
    one = pyone.OneServer(s.url("xmlrpc") + "/RPC2", session=f"one-user:{user['SecretAccessKey']}")
    names = [i.NAME for i in one.imagepool.info(-2, -1, -1).IMAGE]
    assert "cloudctl-blank" in names


def test_the_console_templates_load_with_the_first_page(plain: Any) -> None:
    import urllib.request
    assert MARKUPSAFE not in mapped(plain)    # the console is on (config/cloudctl.yaml), not yet opened
    with urllib.request.urlopen(plain.url("admin") + "/console/login", timeout=30) as resp:
        assert resp.status == 200 and b"<form" in resp.read()
    assert MARKUPSAFE in mapped(plain)


def loaded(server: Any) -> dict[str, list[str]]:
    got: dict[str, list[str]] = server.admin("GET", "/v0/stats")["loaded"]
    return got


WAIT_ONLY = '{"Resources": {"H": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'


def test_autoscaling_and_cloudformation_load_at_first_request_and_at_start_once_they_hold_rows(
        new_server: Any) -> None:
    first = new_server()
    assert loaded(first)["core"] == []
    user = first.create_user("lazy-user")
    asg = boto_client(first, user, "autoscaling")
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert loaded(first)["core"] == ["autoscaling", "elb"]   # (AutoScaling keeps its groups' load balancers)
    image = first.client(user).describe_images()["Images"][0]["ImageId"]
    asg.create_launch_configuration(LaunchConfigurationName="lc", ImageId=image, InstanceType="t3.nano")
    cfn = boto_client(first, user, "cloudformation")
    cfn.create_stack(StackName="waits", TemplateBody=WAIT_ONLY)
    assert loaded(first)["core"] == ["autoscaling", "cloudformation", "elb"]
    wait_until(lambda: cfn.describe_stacks(StackName="waits")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE")
    assert set(loaded(first)["query"]) >= {"autoscaling", "cloudformation"}
    first.stop()

    first.start()   # the state holds their rows: built at start (their background tasks too)
    assert loaded(first) == {"core": ["autoscaling", "cloudformation", "elb"], "query": []}   # (the cache is warm)
    assert [c["LaunchConfigurationName"] for c in asg.describe_launch_configurations()["LaunchConfigurations"]] \
        == ["lc"]
    assert cfn.describe_stacks(StackName="waits")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert loaded(first)["query"] == ["autoscaling", "cloudformation"]


def hil(server: Any, method: str, path: str) -> Any:
    """A HIL call on the admin endpoint (`/hil/v0/...`) with the admin token; its JSON, or None."""
    req = urllib.request.Request(server.url("admin") + "/hil/v0" + path, method=method,
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def test_bare_metal_is_built_at_its_first_call_and_at_start_once_it_holds_rows(new_server: Any) -> None:
    s = new_server()
    scrape = urllib.request.urlopen(s.url("admin") + "/metrics", timeout=30).read().decode()
    assert 'cloudctl_login_failures_total{api="hil"} 0.0' in scrape   # (its throttle is counted unbuilt)
    assert "# TYPE cloudctl_switch_operations_pending gauge" in scrape
    assert loaded(s)["core"] == []
    assert hil(s, "GET", "/projects") == []
    assert loaded(s)["core"] == ["baremetal"]
    s.stop()
    s.start()   # no bare-metal row: not built at start
    assert loaded(s)["core"] == []
    hil(s, "PUT", "/project/lab")
    s.stop()
    s.start()   # a row: built at start (a crash's open switch operations resume there)
    assert loaded(s)["core"] == ["baremetal"]
    assert hil(s, "GET", "/projects") == ["lab"]


def test_a_query_service_loads_at_its_first_request_also_after_a_cold_start(tmp_path: Path) -> None:
    """A model cache without the query services' models: a child process builds them at start
    (this process does not import the services); the first request loads one from there."""
    cache = tmp_path / "cold-cache"
    servers = Servers(lambda: tmp_path / "srv", cache)
    (tmp_path / "srv").mkdir()
    try:
        check_lazy_query_services(servers(), cache)
    finally:
        servers.stop()


def check_lazy_query_services(s: Any, cache: Path) -> None:
    assert loaded(s) == {"core": [], "query": []}
    assert {p.name.split("-model-")[0] for p in cache.glob("*-model-*.json")} \
        == {"ec2", "sts", "iam", "autoscaling", "elb", "cloudformation"}
    scrape = urllib.request.urlopen(s.url("admin") + "/metrics", timeout=30).read().decode()
    assert "cloudctl_elb_proxy_restarts_total 0.0" in scrape   # (the metrics of load balancers build none)
    assert loaded(s)["core"] == []
    user = s.create_user("sts-user")
    sts = boto_client(s, user, "sts")
    assert sts.get_caller_identity()["Arn"].endswith("sts-user")
    elb = boto_client(s, user, "elb")
    assert elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert loaded(s) == {"core": ["elb"], "query": ["elasticloadbalancing", "sts"]}
    metrics = urllib.request.urlopen(s.url("admin") + "/metrics", timeout=30).read().decode()
    assert 'action="GetCallerIdentity"' in metrics   # (its actions joined the metrics' known ones)


def test_every_table_of_a_lazy_service_is_listed() -> None:
    """A restart whose state holds rows only in a table left out of LAZY_ROWS would not build the
    service at start (its background work, a crash's open operations, would wait for a request)."""
    from cloudctl.core.cloud import LAZY_ROWS
    from cloudctl.store.records import ROW_TYPES
    prefixes = {"autoscaling": "asg_", "cloudformation": "cfn_", "elb": "load_balancers", "baremetal": "bm_"}
    for service, rows in LAZY_ROWS.items():
        assert {t.table for t in rows} == {t.table for t in ROW_TYPES if t.table.startswith(prefixes[service])}


_ADMIN_IN_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer
    from cloudctl.api.admin import AdminApi
    from cloudctl.config import load_config
    from cloudctl.core.cloud import Cloud

    async def main():
        cloud = await Cloud.open(load_config(sys.argv[1]), "http://127.0.0.1:0")
        srv = TestServer(AdminApi(cloud, "tok", lambda: {}).app())
        await srv.start_server()
        seen = {"at_start": sorted(m for m in sys.modules if "marketplace" in m or "loadbalancer" in m)}
        auth = {"Authorization": "Bearer tok"}
        async with ClientSession() as s:
            for method, path in [("GET", "/v0/marketplace/published"), ("HEAD", "/v0/marketplace/status"),
                                 ("DELETE", "/v0/marketplace/status"), ("POST", "/v0/marketplace/subscriptions")]:
                async with s.request(method, srv.make_url(path), headers=auth, data=b"{}") as r:
                    seen[f"{method} {path}"] = [r.status, r.headers.get("Allow"), (await r.read()).decode()]
        seen["after"] = sorted(m for m in sys.modules if "marketplace" in m)
        await srv.close()
        await cloud.stop()
        print(json.dumps(seen))

    asyncio.run(main())
    """
)


def test_the_marketplace_admin_routes_load_their_handlers_at_the_first_call(tmp_path: Path, model_cache: Path
                                                                            ) -> None:
    """Without a `marketplace:` section the admin routes still answer, as before, and only the first
    request loads their handlers and the image list's models (a fresh process: nothing imported yet)."""
    cfg = write_config(tmp_path, model_cache, baremetal={"audit_on_start": "off"})
    proc = subprocess.run([sys.executable, "-c", _ADMIN_IN_PROCESS, str(cfg)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["at_start"] == ["cloudctl.api.marketplace_routes"]   # (and no load balancer driver)
    not_configured = '{"error": "InvalidRequest", "message": "%s"}'
    assert seen["GET /v0/marketplace/published"] == [
        400, None, not_configured % "publishing is not configured (marketplace.publish)"]
    assert seen["HEAD /v0/marketplace/status"] == [400, None, ""]
    assert seen["DELETE /v0/marketplace/status"][:2] == [405, "GET,HEAD"]
    assert seen["POST /v0/marketplace/subscriptions"][:2] == [400, None]   # (the body's check, then the section's)
    assert seen["after"] == ["cloudctl.api.marketplace", "cloudctl.api.marketplace_routes",
                             "cloudctl.core.marketplace", "cloudctl.core.marketplace.imagelist"]


_HIL_IN_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer
    import cloudctl.server   # (all that `cloudctl serve` imports)
    from cloudctl.api.admin import AdminApi
    from cloudctl.config import load_config
    from cloudctl.core.cloud import Cloud

    LAZY = ("cloudctl.api.hil.models", "cloudctl.api.hil.shapes", "cloudctl.api.hil.switch_types",
            "cloudctl.drivers.switch.base", "cloudctl.drivers.fence.ipmi", "cloudctl.drivers.fence.command",
            "cloudctl.drivers.obm", "xml.sax", "xml.etree.ElementTree", "pyexpat")

    async def main():
        cloud = await Cloud.open(load_config(sys.argv[1]), "http://127.0.0.1:0")
        srv = TestServer(AdminApi(cloud, "tok", lambda: {}).app())
        await srv.start_server()
        seen = {"at_start": [m for m in LAZY if m in sys.modules]}
        auth = {"Authorization": "Bearer tok"}
        async with ClientSession() as s:
            for method, path, body in [
                    ("PUT", "/hil/v0/project/lab", b""),
                    ("GET", "/hil/v0/projects", b""),
                    ("PUT", "/hil/v0/switch/sw1", b'{"type": "nosuch", "x": 1}'),
                    ("POST", "/hil/v0/project/lab/connect_node", b'{"node": 1}'),
                    ("POST", "/hil/v0/project/lab/connect_node", b'{"nodes": "n1"}'),
                    ("GET", "/hil/v0/node/n1", b""),
                    ("DELETE", "/hil/v0/projects", b"")]:
                async with s.request(method, srv.make_url(path), headers=auth, data=body) as r:
                    seen[f"{method} {path} {body.decode()}"] = [r.status, r.headers.get("Allow"), await r.text()]
        seen["after"] = [m for m in LAZY if m in sys.modules]
        await srv.close()
        await cloud.stop()
        print(json.dumps(seen))

    asyncio.run(main())
    """
)


def test_hil_models_and_xml_parsers_load_at_their_first_use(tmp_path: Path, model_cache: Path) -> None:
    """What only bare metal, fence agents or a rare hypervisor path uses is not imported by a
    started controller (issue 14: base RSS); HIL's calls answer as before, their bodies checked
    by the models loaded at the first call."""
    cfg = write_config(tmp_path, model_cache, baremetal={"audit_on_start": "off"})
    proc = subprocess.run([sys.executable, "-c", _HIL_IN_PROCESS, str(cfg)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen.pop("at_start") == []
    assert "cloudctl.api.hil.models" in seen.pop("after")   # (with the bare-metal service, built at the first call)
    got = {k: (v[0], v[1], json.loads(v[2]) if v[2] else None) for k, v in seen.items()}
    assert got["PUT /hil/v0/project/lab "] == (200, None, None)
    assert got["GET /hil/v0/projects "] == (200, None, ["lab"])
    assert got['PUT /hil/v0/switch/sw1 {"type": "nosuch", "x": 1}'][:2] == (400, None)
    assert got['POST /hil/v0/project/lab/connect_node {"node": 1}'][0] == 400
    assert got['POST /hil/v0/project/lab/connect_node {"node": 1}'][2]["type"] == "ValidationError"
    assert got['POST /hil/v0/project/lab/connect_node {"nodes": "n1"}'][2] == {
        "type": "ValidationError", "msg": "unknown argument 'nodes'; this call takes node"}
    assert got["GET /hil/v0/node/n1 "][0] == 404
    assert got["DELETE /hil/v0/projects "][:2] == (405, "GET")


_SERVED = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from aiohttp import ClientSession
    import cloudctl.server
    from cloudctl.config import load_config

    async def main():
        cfg = load_config(sys.argv[1])
        task = asyncio.ensure_future(cloudctl.server.run(cfg))
        ports = Path(cfg.state_dir) / "ports.json"
        while not ports.exists():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        admin = json.loads(ports.read_text())["admin"]
        async with ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{admin}/metrics") as r:
                body, ctype = await r.text(), r.headers["Content-Type"]
        print(json.dumps({"status": r.status, "type": ctype, "lines": body.count("\\n"),
                          "loaded": sorted({m.split(".")[0] for m in sys.modules} & {"prometheus_client", "yaml"})}))
        sys.stdout.flush()
        os._exit(0)

    asyncio.run(main())
    """
)


def test_a_served_controller_imports_neither_yaml_nor_prometheus_client(tmp_path: Path, model_cache: Path) -> None:
    """PyYAML reads the config in a child (cloudctl/yaml_child.py), `/metrics` is written by cloudctl's
    own writer (api/metrics_format.py): ~1.5 and ~2 MiB of RSS that a started controller never holds,
    scraped or not."""
    cfg = write_config(tmp_path, model_cache)
    done = subprocess.run([sys.executable, "-c", _SERVED, str(cfg)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == 200
    assert seen["type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert seen["lines"] > 50
    assert seen["loaded"] == []
