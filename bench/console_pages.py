"""The web console's instances page with many instances: paginated, rendered on the server.

    .venv/bin/python bench/console_pages.py [--instances 5000] [--rounds 50] [--page-size 50]

In-process: a `Cloud` on libvirt's test driver (test:///) with `--instances` instances of one user
(launched 500 at a time, each with a Name tag), the console app served by aiohttp's test server on
loopback, a signed-in session. Timed, per request, from the client (so HTTP on loopback counts):
the first page of /console/instances, a page in the middle (its NextToken), the table fragment the
live page fetches again, and one instance's page. Issue 20's target: the instances page < 100 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cloudctl.config import load_config  # noqa: E402
from cloudctl.console.app import console_app  # noqa: E402
from cloudctl.core.cloud import Cloud  # noqa: E402
from cloudctl.core.context import Caller  # noqa: E402
from cloudctl.core.launch import LaunchSpec  # noqa: E402
from cloudctl.core.throttle import Throttle  # noqa: E402

from support.server import networks_without_public_ips, write_config  # noqa: E402

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _timed(client: TestClient, path: str, rounds: int) -> tuple[list[float], int, str]:
    times, size, body = [], 0, ""
    for _ in range(rounds):
        t0 = time.perf_counter()
        async with client.get(path) as r:
            body = await r.text()
            assert r.status == 200, (path, r.status)
        times.append((time.perf_counter() - t0) * 1000)
        size = len(body.encode())
    return times, size, body


def _summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"p50_ms": round(statistics.median(s), 2), "p95_ms": round(s[int(len(s) * 0.95) - 1], 2),
            "max_ms": round(s[-1], 2)}


async def main(n: int, rounds: int, page_size: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="console-bench-") as d:
        work = Path(d)
        cfg = load_config(write_config(work, work / "cache", console={"enabled": True, "page_size": page_size},
                                        networks=networks_without_public_ips()))
        cloud = await Cloud.open(cfg, "http://127.0.0.1:0")
        try:
            user = await cloud.users.create("bench")
            image = next(i for i in cloud.images.table.values() if i.image_type == "machine")
            t0 = time.perf_counter()
            for k in range(0, n, 500):
                m = min(500, n - k)
                await cloud.compute.run(Caller(user), LaunchSpec(image.id, m, m, instance_type="t3.nano",
                                                                 instance_tags=(("Name", f"web-{k}"),)))
                await cloud.compute.idle()
            fill_s = time.perf_counter() - t0
            app = console_app(cloud, "bench-token", Throttle(cfg.login_throttle), {})
            outer = aiohttp.web.Application()
            outer.add_subapp("/console", app)
            async with TestClient(TestServer(outer)) as client:
                async with client.get("/console/login") as r:
                    csrf = _CSRF.search(await r.text()).group(1)  # type: ignore[union-attr]
                form = {"csrf": csrf, "kind": "user", "access_key_id": user.access_key,
                        "secret_access_key": user.secret_key}
                async with client.post("/console/login", data=form) as r:
                    assert r.status == 200 and r.url.path == "/console/instances"
                first, size, body = await _timed(client, "/console/instances", rounds)
                rows = body.count("<tr data-instance=")
                token = re.search(r'id="next-page" href="/console/instances\?page=([^&"]+)', body)
                assert token, "no next page"
                # walk to the middle, page by page (a token names where the next page starts)
                path = f"/console/instances?page={token.group(1)}"
                pages = 2
                while pages < n // page_size // 2:
                    async with client.get(path) as r:
                        t = re.search(r'id="next-page" href="(/console/instances\?page=[^&"]+)', await r.text())
                    assert t
                    path, pages = t.group(1), pages + 1
                middle, _, _ = await _timed(client, path, rounds)
                table, _, _ = await _timed(client, "/console/instances/table", rounds)
                iid = next(iter(cloud.compute.table.values())).id
                one, _, _ = await _timed(client, f"/console/instances/{iid}", rounds)
        finally:
            await cloud.stop()
    return {"instances": n, "page_size": page_size, "rows_on_page": rows, "page_bytes": size,
            "fill_s": round(fill_s, 1), "middle_page": pages,
            "instances_page_first": _summary(first), "instances_page_middle": _summary(middle),
            "table_fragment": _summary(table), "instance_page": _summary(one), "target_ms": 100}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--page-size", type=int, default=50)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.instances, a.rounds, a.page_size)), indent=2))
