"""The HAProxy load-balancer driver: the config it writes, and a real HAProxy on a random loopback
address in front of two real HTTP servers (each answering its own name), driven only through the
driver contract and seen as a client sees it."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from cloudctl.drivers.loadbalancer.base import (
    Backend,
    BalancerSpec,
    HealthCheck,
    Listener,
    LoadBalancerError,
    Placement,
)
from cloudctl.drivers.loadbalancer.haproxy import HaproxyDriver
from cloudctl.drivers.loadbalancer.haproxy_config import render, server_state

from support.http_backends import HelloServer, Wrk, free_port, get, random_loopback

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package)")
T = TypeVar("T")

HC = HealthCheck("HTTP:8080/health", interval=1, timeout=1, healthy_threshold=2, unhealthy_threshold=2)


def spec(**kw: object) -> BalancerSpec:
    base = BalancerSpec(name="web", placement=Placement("127.10.0.1"),
                        listeners=(Listener(80, "HTTP", 8080, "HTTP"),),
                        backends=(Backend("i-1", "10.0.0.5"), Backend("i-2", "10.0.0.6")), health_check=HC)
    return replace(base, **kw)  # type: ignore[arg-type]


# -- the config --------------------------------------------------------------------------------

def test_http_listener_checks_once_and_every_listener_tracks_the_check() -> None:
    text = render(spec(idle_timeout=45))
    assert "master-worker" in text and "level admin" in text and "hard-stop-after 45s" in text
    assert "mworker-max-reloads 10" in text
    assert "timeout client 45s" in text and "timeout server 45s" in text
    assert "frontend http-80\n    mode http\n    bind 127.10.0.1:80\n" in text
    assert "backend http-80\n    mode http\n" in text
    assert "option httpchk GET /health" in text and "http-check expect status 200" in text
    assert "server i-1 10.0.0.5:8080 check port 8080 inter 1s rise 2 fall 2" in text
    assert "server i-1 10.0.0.5:8080 track health/i-1" in text
    assert "server i-2 10.0.0.6:8080 track health/i-2" in text
    assert "frontend stats" not in text


def test_tcp_listener_and_tcp_health_check() -> None:
    text = render(spec(listeners=(Listener(443, "TCP", 8443, "TCP"),),
                       health_check=replace(HC, target="TCP:22", interval=30, timeout=5,
                                            healthy_threshold=10, unhealthy_threshold=3)))
    assert "frontend tcp-443\n    mode tcp\n" in text and "backend tcp-443\n    mode tcp\n" in text
    assert "httpchk" not in text
    assert "server i-2 10.0.0.6:22 check port 22 inter 30s rise 10 fall 3" in text
    assert "timeout check 5s" in text
    assert "server i-2 10.0.0.6:8443 track health/i-2" in text


@pytest.mark.parametrize("target", ["HTTPS:443/index.html", "SSL:443"])
def test_https_and_ssl_targets_are_checked_as_tcp(target: str) -> None:
    text = render(spec(health_check=replace(HC, target=target)))
    assert "httpchk" not in text
    assert "server i-1 10.0.0.5:443 check port 443" in text


def test_lb_cookie_stickiness_with_and_without_expiry() -> None:
    text = render(spec(listeners=(Listener(80, "HTTP", 8080, "HTTP", cookie="AWSELB", cookie_ttl=300),)))
    assert "cookie AWSELB insert indirect nocache maxlife 300s attr Max-Age=300" in text
    assert "server i-1 10.0.0.5:8080 track health/i-1 cookie i-1" in text
    text = render(spec(listeners=(Listener(80, "HTTP", 8080, "HTTP", cookie="AWSELB"),)))
    assert "cookie AWSELB insert indirect nocache\n" in text


def test_app_cookie_stickiness_learns_the_applications_cookie() -> None:
    text = render(spec(listeners=(Listener(80, "HTTP", 8080, "HTTP", app_cookie="JSESSIONID"),)))
    assert "stick on req.cook(JSESSIONID)" in text and "stick store-response res.cook(JSESSIONID)" in text
    assert "insert indirect" not in text


def test_draining_bounds_old_workers_and_stats_page_on_a_unix_socket() -> None:
    text = render(spec(draining_timeout=120, stats=True))
    assert "hard-stop-after 120s" in text
    assert "frontend stats" in text and "bind unix@stats-page.sock" in text


def test_server_state_keeps_known_backends_and_starts_new_ones_down() -> None:
    running = ("1\n# be_id be_name ...\n"
               "2 health 1 i-1 10.0.0.5 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 8080 - - 0\n"
               "2 health 2 i-2 10.0.0.99 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 8080 - - 0\n"
               "2 health 3 i-9 10.0.0.9 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 8080 - - 0\n"
               "3 http-80 1 i-1 10.0.0.5 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n")
    lines = server_state(spec(), running).splitlines()
    assert lines[0] == "1" and lines[1].startswith("# be_id be_name srv_id srv_name srv_addr")
    body = lines[2:]
    assert "2 health 1 i-1 10.0.0.5 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 8080 - - 0" in body     # kept
    assert "3 http-80 1 i-1 10.0.0.5 2 0 1 1 30 15 3 4 6 0 0 0 - 8080 - 0 0 - - 0" in body
    assert not any(" i-9 " in ln for ln in body)                                              # deregistered
    assert "0 health 0 i-2 10.0.0.6 0 0 1 1 0 1 0 0 6 0 0 0 - 8080 - 0 8080 - - 0" in body     # moved: anew
    assert len(body) == 3
    fresh = server_state(spec(), None).splitlines()[2:]
    assert [ln.split()[3] for ln in fresh] == ["i-1", "i-2"] and all(ln.split()[5] == "0" for ln in fresh)


@pytest.mark.parametrize("bad", [
    dict(name="web\n  bind 0.0.0.0:1"),
    dict(backends=(Backend("i-1", "10.0.0.5 check"),)),
    dict(backends=(Backend("i 1", "10.0.0.5"),)),
    dict(backends=(Backend("i-1", "10.0.0.5"), Backend("i-1", "10.0.0.6"))),
    dict(listeners=(Listener(80, "HTTP", 8080, "HTTP", cookie="a b"),)),
    dict(listeners=(Listener(80, "TCP", 8080, "TCP", cookie="AWSELB"),)),
    dict(listeners=(Listener(0, "HTTP", 8080, "HTTP"),)),
    dict(listeners=(Listener(80, "HTTP", 8080, "HTTP"), Listener(80, "TCP", 81, "TCP"))),
    dict(health_check=replace(HC, target="HTTP:80/a b")),
    dict(health_check=replace(HC, target="ICMP:0")),
    dict(health_check=replace(HC, target="TCP:22/path")),
    dict(health_check=replace(HC, interval=0)),
    dict(placement=Placement("localhost")),
])
def test_bad_specs_are_refused_before_any_text_is_written(bad: dict[str, object]) -> None:
    with pytest.raises(LoadBalancerError):
        render(spec(**bad))


# -- a real HAProxy ----------------------------------------------------------------------------

async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Lab:
    driver: HaproxyDriver
    spec: BalancerSpec
    servers: dict[str, HelloServer]
    url: str

    async def answers(self, n: int, cookie: str | None = None) -> Counter[str]:
        got: Counter[str] = Counter()
        for _ in range(n):
            body, _ = await asyncio.to_thread(get, self.url, cookie)
            got[body] += 1
        return got


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (Debian package)")
    a, b, front = random_loopback(), random_loopback(), random_loopback()
    port = free_port(a)
    servers = {"i-a": HelloServer("i-a", a, port).start(), "i-b": HelloServer("i-b", b, port).start()}
    fport = free_port(front)
    sp = BalancerSpec(name=f"lb-{os.getpid()}", placement=Placement(front),
                      listeners=(Listener(fport, "HTTP", port, "HTTP"),),
                      backends=(Backend("i-a", a), Backend("i-b", b)),
                      health_check=HealthCheck(f"HTTP:{port}/", 1, 1, 2, 2), idle_timeout=10)
    driver = HaproxyDriver(tmp_path / "run")
    try:
        await driver.apply(sp)
        yield Lab(driver, sp, servers, f"http://{front}:{fport}/")
    finally:
        await driver.remove(sp.name)
        for s in servers.values():
            s.stop()


async def both_up(lab: Lab) -> bool:
    st = await lab.driver.stats(lab.spec.name)
    return st.healthy == 2 and all(b.up and b.checked for b in st.backends.values())


async def test_traffic_reaches_both_and_follows_their_health(lab: Lab) -> None:
    await until(lambda: both_up(lab), "both backends up")
    assert set(await lab.answers(20)) == {"i-a", "i-b"}
    st = await lab.driver.stats(lab.spec.name)
    assert st.requests >= 20 and all(b.checked and b.detail.startswith("L7OK") for b in st.backends.values())

    headers, _ = await asyncio.to_thread(get, lab.url + "headers")
    port = lab.url.rsplit(":", 1)[1].strip("/")
    headers = headers.lower()                 # HAProxy sends HTTP/1 header names in lower case
    assert "x-forwarded-for: 127." in headers and f"x-forwarded-port: {port}" in headers
    assert "x-forwarded-proto: http" in headers

    lab.servers["i-a"].stop()
    stopped = time.time()

    async def a_down() -> bool:
        return not (await lab.driver.stats(lab.spec.name)).backends["i-a"].up
    await until(a_down, "i-a marked down")
    st = await lab.driver.stats(lab.spec.name)
    assert (st.healthy, st.unhealthy) == (1, 1)
    assert st.backends["i-a"].detail.startswith("L4CON") and st.backends["i-a"].last_change >= stopped - 1
    assert await lab.answers(20) == Counter({"i-b": 20})

    lab.servers["i-a"].start()
    await until(lambda: both_up(lab), "i-a back up")
    assert set(await lab.answers(20)) == {"i-a", "i-b"}


async def test_a_new_backend_gets_no_traffic_until_it_passed_its_checks(lab: Lab) -> None:
    await until(lambda: both_up(lab), "both backends up")
    c = HelloServer("i-c", random_loopback(), lab.servers["i-a"].port).start()
    try:
        slow = replace(lab.spec.health_check, interval=2, healthy_threshold=3)   # >= 4 s to come up
        grown = replace(lab.spec, backends=(*lab.spec.backends, Backend("i-c", c.address)), health_check=slow)
        await lab.driver.apply(grown)
        st = await lab.driver.stats(lab.spec.name)
        assert not st.backends["i-c"].up and (st.healthy, st.unhealthy) == (2, 1)
        assert set(await lab.answers(10)) == {"i-a", "i-b"}          # known ones kept their state
        assert st.backends["i-a"].up and st.backends["i-a"].checked

        async def c_up() -> bool:
            return (await lab.driver.stats(lab.spec.name)).backends["i-c"].up
        await until(c_up, "i-c up")
        assert "i-c" in await lab.answers(10)
    finally:
        c.stop()


async def test_counters_go_on_over_reloads(lab: Lab) -> None:
    await until(lambda: both_up(lab), "both backends up")
    for _ in range(3):        # each worker counts from 0; the driver carries the totals over
        await lab.answers(10)
        await lab.driver.apply(lab.spec)
    st = await lab.driver.stats(lab.spec.name)
    assert (st.requests, st.backend_errors) == (30, 0)


async def test_lb_cookie_keeps_a_client_on_one_backend(lab: Lab) -> None:
    ls = replace(lab.spec.listeners[0], cookie="AWSELB", cookie_ttl=60)
    await lab.driver.apply(replace(lab.spec, listeners=(ls,)))
    await until(lambda: both_up(lab), "both backends up")
    _, headers = await asyncio.to_thread(get, lab.url)
    ours = [v for k, v in headers if k.lower() == "set-cookie" and v.startswith("AWSELB=")]
    assert len(ours) == 1 and "Max-Age=60" in ours[0]
    cookie = ours[0].split(";")[0]
    got = await lab.answers(10, cookie=cookie)
    assert len(got) == 1 and cookie.split("=")[1].split("|")[0] in got     # value|first-seen|last-seen
    for name in ("i-a", "i-b"):
        assert await lab.answers(10, cookie=f"AWSELB={name}") == Counter({name: 10})


async def test_app_cookie_keeps_a_client_on_the_backend_that_set_it(lab: Lab) -> None:
    ls = replace(lab.spec.listeners[0], app_cookie="app")
    await lab.driver.apply(replace(lab.spec, listeners=(ls,)))
    await until(lambda: both_up(lab), "both backends up")
    for name in ("i-a", "i-b"):
        assert await lab.answers(10, cookie=f"app={name}") == Counter({name: 10})


async def test_twenty_reloads_under_load_lose_nothing_and_leave_one_worker(lab: Lab) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("needs wrk")
    await until(lambda: both_up(lab), "both backends up")
    d, name = lab.driver, lab.spec.name
    first = await d.processes(name)
    seen: list[set[str]] = []
    done = asyncio.Event()

    async def supervise() -> None:            # as the controller's supervisor would, meanwhile
        while not done.is_set():
            seen.append(await d.running())
            await asyncio.sleep(0.01)
    watcher = asyncio.create_task(supervise())
    wrk = Wrk(lab.url, seconds=8, connections=8)
    try:
        one = replace(lab.spec, backends=lab.spec.backends[:1])
        for i in range(20):       # registration changes: deregister i-b, register it again
            await d.apply(one if i % 2 == 0 else lab.spec)
        res = await asyncio.to_thread(wrk.result)
    finally:
        wrk.stop()
        done.set()
        await watcher
    assert res.requests > 100 and res.lost == 0, res
    assert len(seen) >= 10 and all(s == {name} for s in seen)   # never missing while it reloads

    async def settled() -> bool:
        p = await d.processes(name)
        return not p.old and len(p.current) == 1
    await until(settled, "old workers to exit", timeout=60)
    p = await d.processes(name)
    assert p.master == first.master and p.reloads == first.reloads + 20 and p.failed == 0
    with open(f"/proc/{p.master}/task/{p.master}/children") as f:
        assert [int(x) for x in f.read().split()] == list(p.current)


async def test_an_old_worker_holding_a_connection_is_stopped_after_the_draining_time(lab: Lab) -> None:
    d, name = lab.driver, lab.spec.name
    tcp = replace(lab.spec, listeners=(replace(lab.spec.listeners[0], protocol="TCP", backend_protocol="TCP"),),
                  draining_timeout=1, idle_timeout=600)   # only the draining time can end it in time
    await d.apply(tcp)
    await until(lambda: both_up(lab), "both backends up")
    host, port = lab.url.split("//")[1].strip("/").split(":")
    conn = await asyncio.to_thread(socket.create_connection, (host, int(port)), 5)
    try:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")      # a keep-alive connection, then idle
        def answer() -> bytes:                    # headers and the 3-byte name
            data = b""
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 3:
                data += conn.recv(4096)
            return data
        assert (await asyncio.to_thread(answer)).startswith(b"HTTP/1.")
        holder = (await d.processes(name)).current
        await d.apply(tcp)                        # the old worker keeps the idle connection...
        p = await d.processes(name)
        assert set(p.old) == set(holder)

        async def drained() -> bool:
            return not (await d.processes(name)).old
        await until(drained, "the old worker to stop after the draining time")
        conn.settimeout(5)
        assert await asyncio.to_thread(conn.recv, 4096) == b""      # ...until hard-stop-after closed it
    finally:
        conn.close()


async def test_a_killed_master_is_forgotten_and_apply_brings_it_back(lab: Lab) -> None:
    d, name = lab.driver, lab.spec.name
    master = (await d.processes(name)).master
    os.kill(master, signal.SIGKILL)

    async def gone() -> bool:
        return name not in await d.running()
    await until(gone, "the killed proxy to leave running()")

    async def refused() -> bool:       # its workers notice the master's death and exit
        try:
            await asyncio.to_thread(get, lab.url, None, 2)
        except OSError:
            return True
        return False
    await until(refused, "the workers to exit")
    await d.apply(lab.spec)
    assert name in await d.running() and (await d.processes(name)).master != master
    await until(lambda: both_up(lab), "both backends up")
    assert set(await lab.answers(10)) == {"i-a", "i-b"}


async def test_a_bad_change_raises_and_the_old_proxy_still_serves(lab: Lab) -> None:
    d, name = lab.driver, lab.spec.name
    before = await d.processes(name)
    cfg = (d.run_dir / name / "haproxy.cfg").read_text()
    front = lab.spec.placement.address
    with socket.socket() as taken:            # a port someone else holds: only the bind can tell
        taken.bind((front, 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = replace(lab.spec, listeners=(*lab.spec.listeners, Listener(port, "TCP", 22, "TCP")))
        with pytest.raises(LoadBalancerError, match="Address already in use"):
            await d.apply(busy)
    with pytest.raises(LoadBalancerError, match="backend name"):
        await d.apply(replace(lab.spec, backends=(Backend("bad name", "127.0.0.1"),)))
    assert (d.run_dir / name / "haproxy.cfg").read_text() == cfg
    after = await d.processes(name)
    assert after.master == before.master and (after.current or after.old)
    assert set(await lab.answers(10)) == {"i-a", "i-b"}
    await d.apply(lab.spec)                  # and the next good change reloads normally
    assert (await d.processes(name)).current


async def test_a_new_driver_adopts_the_running_proxy_and_reloads_it(lab: Lab) -> None:
    d2 = HaproxyDriver(lab.driver.run_dir)
    assert lab.spec.name in await d2.running()
    before = await d2.processes(lab.spec.name)
    await d2.apply(lab.spec)
    after = await d2.processes(lab.spec.name)
    assert after.master == before.master and after.reloads == before.reloads + 1
    await until(lambda: both_up(lab), "both backends up")
    assert set(await lab.answers(10)) == {"i-a", "i-b"}


async def test_stats_page_is_served_on_its_unix_socket(lab: Lab) -> None:
    await lab.driver.apply(replace(lab.spec, stats=True))
    sock = lab.driver.stats_page_socket(lab.spec.name)

    def fetch() -> bytes:
        fd = os.open(sock.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(f"/proc/self/fd/{fd}/{sock.name}")
                s.sendall(b"GET /;csv HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data
        finally:
            os.close(fd)
    page = await asyncio.to_thread(fetch)
    assert page.startswith(b"HTTP/1.1 200") and b"health,i-a" in page


async def test_remove_stops_every_process_and_deletes_the_folder(lab: Lab) -> None:
    d, name = lab.driver, lab.spec.name
    p = await d.processes(name)
    await d.remove(name)
    assert name not in await d.running()
    assert not (d.run_dir / name).exists()
    for pid in (p.master, *p.current):
        assert not Path(f"/proc/{pid}/cmdline").exists() or b"haproxy" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    # The master was this process's child: reaped, not left a zombie until the controller exits.
    assert not Path(f"/proc/{p.master}").exists()
    with pytest.raises(LoadBalancerError):
        await d.stats(name)
    await d.remove(name)                      # a second time: nothing to do
    with pytest.raises(OSError):
        await asyncio.to_thread(get, lab.url, None, 2)


async def test_a_new_address_starts_a_new_proxy_there(lab: Lab) -> None:
    d, name = lab.driver, lab.spec.name
    before = await d.processes(name)
    front = random_loopback()
    port = lab.spec.listeners[0].port
    await d.apply(replace(lab.spec, placement=Placement(front)))
    assert (await d.processes(name)).master != before.master
    lab.url = f"http://{front}:{port}/"
    await until(lambda: both_up(lab), "both backends up")
    assert set(await lab.answers(10)) == {"i-a", "i-b"}


async def test_a_balancer_without_listeners_or_backends_runs(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (Debian package)")
    d = HaproxyDriver(tmp_path / "run")
    sp = BalancerSpec(name="empty", placement=Placement(random_loopback()), listeners=(), backends=(),
                      health_check=HealthCheck("TCP:22", 5, 2, 2, 2))
    try:
        await d.apply(sp)
        await d.apply(sp)
        assert await d.running() == {"empty"}
        st = await d.stats("empty")
        assert (st.requests, st.healthy, st.unhealthy, st.backends) == (0, 0, 0, {})
    finally:
        await d.remove("empty")
    assert await d.running() == set()


def test_the_driver_works_on_uvloop_as_the_served_controller_runs_it(tmp_path: Path) -> None:
    """`cloudctl serve` runs on uvloop, where a master started behind a shell pipe never
    answered: start, reload, stats and removal on a uvloop loop, bounded in time."""
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (Debian package)")
    import uvloop

    d = HaproxyDriver(tmp_path / "run")
    front = random_loopback()
    sp = BalancerSpec(name="uv", placement=Placement(front),
                      listeners=(Listener(free_port(front), "HTTP", 8080, "HTTP"),), backends=(),
                      health_check=HealthCheck("TCP:22", 5, 2, 2, 2))

    async def scenario() -> tuple[set[str], set[str], set[str]]:
        try:
            await asyncio.wait_for(d.apply(sp), 30)
            up = await d.running()
            await asyncio.wait_for(d.apply(replace(sp, idle_timeout=30)), 30)
            again = await d.running()
            await d.stats("uv")
        finally:
            await d.remove("uv")
        return up, again, await d.running()

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == ({"uv"}, {"uv"}, set())
    finally:
        loop.close()


async def test_a_proxy_that_cannot_start_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (Debian package)")
    d = HaproxyDriver(tmp_path / "run")
    front = random_loopback()
    with socket.socket() as taken:
        taken.bind((front, 0))
        taken.listen()
        sp = BalancerSpec(name="busy", placement=Placement(front),
                          listeners=(Listener(taken.getsockname()[1], "TCP", 22, "TCP"),), backends=(),
                          health_check=HealthCheck("TCP:22", 5, 2, 2, 2))
        with pytest.raises(LoadBalancerError, match="Address already in use"):
            await d.apply(sp)
    assert await d.running() == set()
    await d.apply(sp)                          # the port is free now
    try:
        assert await d.running() == {"busy"}
    finally:
        await d.remove("busy")


# A controller that starts a proxy, says so, and waits to be killed.
CONTROLLER = """
import asyncio, sys
from pathlib import Path
from cloudctl.drivers.loadbalancer.base import *
from cloudctl.drivers.loadbalancer.haproxy import HaproxyDriver
run_dir, name, front, port, addr, bport = sys.argv[1:7]
async def main():
    d = HaproxyDriver(Path(run_dir))
    await d.apply(BalancerSpec(name, Placement(front), (Listener(int(port), "HTTP", int(bport), "HTTP"),),
                               (Backend("i-a", addr),), HealthCheck(f"HTTP:{bport}/", 1, 1, 2, 2)))
    print("applied", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_proxies_outlive_a_killed_controller_and_are_adopted(lab: Lab, tmp_path: Path) -> None:
    import subprocess
    import sys
    front, a = random_loopback(), lab.servers["i-a"]
    port = free_port(front)
    run_dir = tmp_path / "crashed"
    ctl = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(run_dir), "survivor", front, str(port),
                            a.address, str(a.port)], stdout=subprocess.PIPE, env={**os.environ})
    try:
        assert ctl.stdout is not None
        assert (await asyncio.to_thread(ctl.stdout.readline)).strip() == b"applied"
    finally:
        ctl.kill()                                # SIGKILL: no cleanup of any kind
        ctl.wait()
    d = HaproxyDriver(run_dir)
    try:
        assert await d.running() == {"survivor"}

        async def up() -> bool:
            return (await d.stats("survivor")).healthy == 1
        await until(up, "the backend up")
        body, _ = await asyncio.to_thread(get, f"http://{front}:{port}/")
        assert body == "i-a"
        before = await d.processes("survivor")
        await d.apply(BalancerSpec("survivor", Placement(front), (Listener(port, "HTTP", a.port, "HTTP"),),
                                   (Backend("i-a", a.address),), HealthCheck(f"HTTP:{a.port}/", 1, 1, 2, 2)))
        after = await d.processes("survivor")
        assert after.master == before.master and after.reloads == before.reloads + 1
    finally:
        await d.remove("survivor")
    assert await d.running() == set()
