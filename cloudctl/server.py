"""`cloudctl serve`: one uvloop event loop hosting the cloud and its endpoints."""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop
from aiohttp import web

from .api import listener
from .api.admin import AdminApi, ensure_token
from .api.ec2.actions import ACTIONS
from .api.ec2.actions.registry import check_actions
from .api.ec2.app import Ec2Api, make_verifier
from .api.ec2.model import load_model
from .api.ec2.protocol import Protocol
from .api.marketplace import public_app
from .api.metadata import metadata_app
from .api.metrics import LoginCollector, Metrics
from .api.query.service import QueryService
from .api.query.services import load_all as load_query_services
from .api.refusals import MalformedHttp, RefusalLog
from .api.xmlrpc.app import CLOUD_APP_KEY as XMLRPC_KEY
from .api.xmlrpc.app import METHODS as ONE_METHODS
from .api.xmlrpc.app import REFUSALS_APP_KEY, xmlrpc_app
from .api.xmlrpc.app import refuse_body as xmlrpc_refuse
from .config import Config, Listen
from .core.cloud import Cloud

log = logging.getLogger("cloudctl")


class LoopMonitor:
    """Measures event-loop stalls: how late a 10 ms ticker wakes up.

    `max_lag` is the wall-clock lateness. On a shared machine that also counts the time the loop
    thread was ready to run but had no CPU; `max_own_lag` leaves that out (the thread's run-queue
    wait from /proc/thread-self/schedstat, Linux), which is what code holding the loop shows up as.
    """

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.observe: Callable[[float], None] | None = None
        self.max_lag = 0.0
        self.last_lag = 0.0
        self.max_own_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            fd = None

        def waited() -> float:   # seconds this thread has spent runnable, waiting for a CPU
            return int(os.pread(fd, 128, 0).split()[1]) / 1e9 if fd is not None else 0.0

        try:
            while True:
                t0, w0, q0 = loop.time(), time.perf_counter(), waited()
                await asyncio.sleep(self.period)
                self.last_lag = max(0.0, loop.time() - t0 - self.period)
                self.max_lag = max(self.max_lag, self.last_lag)
                own = time.perf_counter() - w0 - self.period - (waited() - q0)
                self.max_own_lag = max(self.max_own_lag, own)
                if self.observe is not None:
                    self.observe(self.last_lag)
        finally:
            if fd is not None:
                os.close(fd)

    def reset(self) -> tuple[float, float]:
        """(wall, own) maximum lateness since the last reset."""
        lag, self.max_lag = self.max_lag, 0.0
        own, self.max_own_lag = self.max_own_lag, 0.0
        return lag, own

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StartError(Exception):
    """The server cannot start (a port in use...): one line for the operator, no traceback."""


async def _listen(name: str, app: web.Application, cfg: Listen, refuse: listener.Refuse = listener.plain_refusal
                  ) -> listener.Listener:
    try:
        return await listener.start(app, cfg, refuse)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise StartError(f"{name}: cannot listen on {cfg.listen}:{cfg.port}: {why}") from None


async def run(config: Config) -> None:
    t0 = time.perf_counter()
    cache_dir = config.cache_dir or config.state_dir / "cache"
    model = load_model(ACTIONS, cache_dir)
    check_actions(model)
    protocol = Protocol(model)
    services = load_query_services(cache_dir)   # STS, IAM: on the EC2 listener, by signature scope
    endpoint = f"http://{config.ec2.listen}:{config.ec2.port}"
    cloud = await Cloud.open(config, endpoint)
    monitor = LoopMonitor()
    http_refusals = RefusalLog("http")   # requests aiohttp's HTTP parser refused, on any listener
    listeners: dict[str, listener.Listener] = {}
    try:
        await _serve(config, cloud, protocol, services, monitor, http_refusals, listeners, t0)
    finally:   # also when the start failed half-way (a port in use): the journal and hosts are closed
        monitor.stop()
        for ln in listeners.values():
            await ln.stop()
        http_refusals.flush()
        await cloud.stop()


async def _serve(config: Config, cloud: Cloud, protocol: Protocol, services: dict[str, QueryService],
                 monitor: LoopMonitor, http_refusals: RefusalLog, listeners: dict[str, listener.Listener],
                 t0: float) -> None:
    """Start the endpoints over `cloud` (each one started is added to `listeners`) and serve until
    SIGINT or SIGTERM."""
    metrics = Metrics(cloud, [*ACTIONS, *ONE_METHODS, *(a for s in services.values() for a in s.actions)])
    metrics.attach()
    http_refusals.observe = metrics.refusal
    logging.getLogger("aiohttp.server").addFilter(MalformedHttp(http_refusals))
    monitor.observe = metrics.loop_lag.observe
    monitor.start()
    ec2 = Ec2Api(cloud, protocol, make_verifier(cloud, tuple(services)), config.ec2.answer_slice_items,
                 config.ec2.replay_grace_s, config.ec2.client_timeout_s, services)
    ec2.observe = metrics.request
    token = ensure_token(config.state_dir)
    logins = {"hil": cloud.baremetal.users.throttle, "ec2": ec2.logins}
    metrics.registry.register(LoginCollector(logins, cloud.baremetal.users.hashing))

    def stats() -> dict[str, Any]:
        j = cloud.store.journal
        return {
            "rss_mib": round(_rss_mib(), 1),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "loop_lag_max_ms": round(monitor.max_lag * 1000, 2),
            "instances": len(cloud.compute.table),
            "journal_fsyncs": j.fsyncs if j else 0,
            "journal_records_in_generation": j.records_in_gen if j else 0,
            "last_fsync_ms": round((j.last_fsync_s if j else 0) * 1000, 3),
            "checkpoint_generation": cloud.store.gen,
            "last_checkpoint_ms": round(cloud.store.last_checkpoint_s * 1000, 1),
            "requests": {f"{a} {o}": n for (a, o), n in ec2.requests.items()},
            "uptime_s": round(time.time() - cloud.started_at, 1),
            "connections": {name: {"open": ln.site.open, "refused": ln.site.refused}
                            for name, ln in listeners.items()},
        }

    admin = AdminApi(cloud, token, stats, config.admin)
    admin_app = admin.app()
    admin_app.router.add_post("/v0/stats/reset-lag", _reset_handler(monitor))
    admin_app.router.add_get("/metrics", metrics.handle)
    admin.public_paths.add("/metrics")
    listener.make_room([c.max_connections for c in (config.ec2, config.admin, config.metadata, config.xmlrpc,
                                                    config.marketplace) if c is not None])
    listeners["ec2"] = await _listen("EC2 API", ec2.app(), config.ec2, ec2.refuse)
    listeners["admin"] = await _listen("admin API", admin_app, config.admin, admin.refuse)
    md_line = ""
    if config.metadata is not None:
        md_app = metadata_app(cloud, service=cloud.metadata, require_token=config.metadata.require_token)
        listeners["metadata"] = await _listen("metadata", md_app, config.metadata)
        md_port = listeners["metadata"].port
        md_line = f"  metadata       http://{config.metadata.listen}:{md_port}  (for instances, by source address)\n"
    if config.xmlrpc is not None:
        one_app = xmlrpc_app(cloud, token, config.xmlrpc.port)
        one_app[XMLRPC_KEY].observe = lambda method, code, s: metrics.request("xmlrpc", method, code, s)
        one_app[REFUSALS_APP_KEY].observe = metrics.refusal
        logins["xmlrpc"] = one_app[XMLRPC_KEY].logins
        listeners["xmlrpc"] = await _listen("XML-RPC", one_app, config.xmlrpc, xmlrpc_refuse)
        one_port = listeners["xmlrpc"].port
        one_app[XMLRPC_KEY].port = one_port
        md_line += f"  XML-RPC        http://{config.xmlrpc.listen}:{one_port}/RPC2  (OpenNebula API, pyone)\n"
    if config.marketplace is not None:
        listeners["marketplace"] = await _listen("marketplace", public_app(cloud), config.marketplace)
        mp_port = listeners["marketplace"].port
        if cloud.publisher is not None and config.marketplace.public_url is None:
            cloud.publisher.public_url = f"http://{config.marketplace.listen}:{mp_port}"
        md_line += f"  marketplace    http://{config.marketplace.listen}:{mp_port}  (public: signed image lists)\n"
    ec2_port, admin_port = listeners["ec2"].port, listeners["admin"].port
    cloud.endpoint = f"http://{config.ec2.listen}:{ec2_port}"
    cloud.catalog.endpoint = cloud.endpoint
    await asyncio.to_thread(listener.write_ports, config.state_dir, listeners)   # after all are up

    cfg_arg = os.environ.get("CLOUDCTL_CONFIG_ARG", "")
    print(f"cloudctl ready in {time.perf_counter() - t0:.1f}s (state in {config.state_dir})\n"
          f"  EC2 Query API  {cloud.endpoint}  region {config.region}, zones {', '.join(config.zones)}\n"
          f"  admin API      http://{config.admin.listen}:{admin_port}  (token in {config.state_dir}/admin.token)\n"
          f"{md_line}"
          f"Create the first user with:  cloudctl user create alice{cfg_arg}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")


def _reset_handler(monitor: LoopMonitor) -> Any:
    async def reset(request: web.Request) -> web.Response:
        lag, own = monitor.reset()
        return web.json_response({"loop_lag_max_ms": round(lag * 1000, 2), "loop_lag_own_max_ms": round(own * 1000, 2)})
    return reset


def serve(config: Config) -> None:
    logging.basicConfig(level=os.environ.get("CLOUDCTL_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(run(config))
