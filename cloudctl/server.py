"""`cloudctl serve`: one uvloop event loop hosting the cloud and its endpoints."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop
from aiohttp import web

from . import malloc
from .api import listener
from .api.admin import AdminApi, ensure_token
from .api.ec2.actions import ACTIONS
from .api.ec2.actions.registry import check_actions
from .api.ec2.app import Ec2Api, make_verifier
from .api.ec2.model import load_model
from .api.ec2.protocol import Protocol
from .api.hil import hil_refusal
from .api.metadata import metadata_app
from .api.metrics import LoginCollector, Metrics
from .api.query.services import LazyService
from .api.query.services import load_all as load_query_services
from .api.refusals import MalformedHttp, RefusalLog
from .config import Config, Listen
from .core.cloud import LAZY_ROWS, Cloud

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


# Each listener's config field and the name the operator reads in messages, in start order.
LISTENERS = {"ec2": "EC2 API", "admin": "admin API", "hil": "HIL API", "metadata": "metadata", "xmlrpc": "XML-RPC",
             "marketplace": "marketplace"}


def _cannot_listen(name: str, cfg: Listen, e: OSError) -> StartError:
    why = os.strerror(e.errno) if e.errno else str(e)
    return StartError(f"{LISTENERS[name]}: cannot listen on {cfg.listen}:{cfg.port}: {why}")


def _tls_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """Each TLS listener's context, made before anything binds: a missing or mismatched
    certificate or key fails the start with one line."""
    out: dict[str, ssl.SSLContext] = {}
    for name in LISTENERS:
        tls = config.tls_of(name) if name != "metadata" else None
        if tls is None:
            continue
        from .api.tls import TlsConfigError, server_context  # (cryptography: loaded only for TLS, issue 14)
        where = f"{name}.tls" if getattr(getattr(config, name), "tls", None) else "tls"
        try:
            out[name] = server_context(tls, where)
        except TlsConfigError as e:
            raise StartError(f"{LISTENERS[name]}: {e}") from None
    return out


async def _bind(config: Config) -> dict[str, listener.Bound]:
    """Bind every configured listener's address, before anything else opens: a port in use fails
    the start here, with nothing to undo but the addresses bound so far."""
    contexts = _tls_contexts(config)
    bound: dict[str, listener.Bound] = {}
    try:
        for name in LISTENERS:
            cfg: Listen | None = getattr(config, name)
            if cfg is None:
                continue
            b = listener.Bound(cfg, contexts.get(name))
            try:
                await b.bind()
            except OSError as e:
                raise _cannot_listen(name, cfg, e) from None
            bound[name] = b
    except BaseException:
        for b in bound.values():
            b.close()
        raise
    return bound


def _as_bound(config: Config, bound: dict[str, listener.Bound]) -> Config:
    """The config with each listener's real port: what the cloud is built from, so the endpoints it
    hands out (the EC2 endpoint in the catalog, the marketplace's public URL, XML-RPC's port) are
    the ones it serves on also when the config says `port: 0`."""
    ports = {name: getattr(config, name).model_copy(update={"port": b.port}) for name, b in bound.items()}
    return config.model_copy(update=ports)


async def _listen(name: str, app: web.Application, bound: listener.Bound,
                  refuse: listener.Refuse = listener.plain_refusal) -> listener.Listener:
    try:
        return await listener.start(app, bound, refuse)
    except OSError as e:
        raise _cannot_listen(name, bound.cfg, e) from None


async def run(config: Config) -> None:
    t0 = time.perf_counter()
    cache_dir = config.cache_dir or config.state_dir / "cache"
    model = load_model(ACTIONS, cache_dir)
    check_actions(model)
    protocol = Protocol(model)
    services = load_query_services(cache_dir)   # STS, IAM, …: on the EC2 listener, by signature scope
    bound = await _bind(config)
    try:
        config = _as_bound(config, bound)
        cloud = await Cloud.open(config, config.public_url("ec2"))
        monitor = LoopMonitor()
        http_refusals = RefusalLog("http")   # requests aiohttp's HTTP parser refused, on any listener
        listeners: dict[str, listener.Listener] = {}
        try:
            await _serve(config, cloud, protocol, services, monitor, http_refusals, bound, listeners, t0)
        finally:   # also when the start failed half-way: the listeners, journal and hosts are closed
            monitor.stop()
            for ln in listeners.values():
                await ln.stop()
            http_refusals.flush()
            await cloud.stop()
    finally:   # the addresses never served (a failed start)
        for b in bound.values():
            b.close()


async def _serve(config: Config, cloud: Cloud, protocol: Protocol, services: dict[str, LazyService],
                 monitor: LoopMonitor, http_refusals: RefusalLog, bound: dict[str, listener.Bound],
                 listeners: dict[str, listener.Listener], t0: float) -> None:
    """Serve the endpoints over `cloud` on their bound addresses (each one started is added to
    `listeners`) until SIGINT or SIGTERM."""
    # XML-RPC (lxml, ~5 MiB) and the marketplace's public listener are loaded only when configured.
    one_methods: tuple[str, ...] = ()
    if config.xmlrpc is not None:
        from .api.xmlrpc.app import METHODS
        one_methods = tuple(METHODS)
    loaded = (s.get() for s in services.values() if s.loaded)   # (the others: added at their first use)
    metrics = Metrics(cloud, [*ACTIONS, *one_methods, *(a for s in loaded for a in s.actions)])
    for svc in services.values():
        svc.on_load = lambda s: metrics.known.update(s.actions)
    metrics.attach()
    http_refusals.observe = metrics.refusal
    logging.getLogger("aiohttp.server").addFilter(MalformedHttp(http_refusals))
    monitor.observe = metrics.observe_loop_lag
    monitor.start()
    ec2 = Ec2Api(cloud, protocol, make_verifier(cloud, tuple(services)), config.ec2.answer_slice_items,
                 config.ec2.replay_grace_s, config.ec2.client_timeout_s, services)
    ec2.observe = metrics.request
    token = ensure_token(config.state_dir)
    logins = {"hil": cloud.hil_logins, "ec2": ec2.logins}
    metrics.registry.register(LoginCollector(logins, cloud.hil_hashing))

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
            # What is loaded at its first use (issue 14: base RSS): core services, query services.
            "loaded": {"core": sorted(name for name in LAZY_ROWS if cloud.built(name)),
                       "query": sorted(name for name, s in services.items() if s.loaded)},
        }

    admin = AdminApi(cloud, token, stats, config.admin)
    admin_app = admin.app()
    admin_app.router.add_post("/v0/stats/reset-lag", _reset_handler(monitor))
    admin_app.router.add_get("/metrics", metrics.handle)
    admin.public_paths.add("/metrics")
    console_path = ""
    if config.console.enabled:   # (its templates and jinja2: at the first page)
        from .console.app import PREFIX, mount_console
        logins["console_operator"] = mount_console(admin_app, cloud, token, ec2.logins, metrics, monitor)
        admin.public_paths.add(PREFIX)
        admin.public_prefixes = (PREFIX + "/",)
        console_path = PREFIX + "/"
    listener.make_room([c.max_connections for c in (config.ec2, config.admin, config.hil, config.metadata,
                                                    config.xmlrpc, config.marketplace) if c is not None])
    listeners["ec2"] = await _listen("ec2", ec2.app(), bound["ec2"], ec2.refuse)
    listeners["admin"] = await _listen("admin", admin_app, bound["admin"], admin.refuse)
    md_line = ""
    if config.hil is not None:   # the same API as the admin endpoint's baremetal.hil_base, at the root
        listeners["hil"] = await _listen("hil", admin.hil.app(), bound["hil"], lambda r, e: hil_refusal(e))
        md_line += f"  HIL API        http://{config.hil.listen}:{config.hil.port}  (HIL's /v0/... at the root)\n"
    if config.metadata is not None:
        md_app = metadata_app(cloud, service=cloud.metadata, require_token=config.metadata.require_token)
        listeners["metadata"] = await _listen("metadata", md_app, bound["metadata"])
        md_line = (f"  metadata       http://{config.metadata.listen}:{config.metadata.port}  "
                   f"(for instances, by source address)\n")
    if config.xmlrpc is not None:
        from .api.xmlrpc.app import CLOUD_APP_KEY as XMLRPC_KEY
        from .api.xmlrpc.app import REFUSALS_APP_KEY, xmlrpc_app
        from .api.xmlrpc.app import refuse_body as xmlrpc_refuse
        one_app = xmlrpc_app(cloud, token, config.xmlrpc.port)
        one_app[XMLRPC_KEY].observe = lambda method, code, s: metrics.request("xmlrpc", method, code, s)
        one_app[REFUSALS_APP_KEY].observe = metrics.refusal
        logins["xmlrpc"] = one_app[XMLRPC_KEY].logins
        listeners["xmlrpc"] = await _listen("xmlrpc", one_app, bound["xmlrpc"], xmlrpc_refuse)
        md_line += (f"  XML-RPC        {listeners['xmlrpc'].site.name}/RPC2  "
                    f"(OpenNebula API, pyone)\n")
    if config.marketplace is not None:
        from .api.marketplace import public_app
        listeners["marketplace"] = await _listen("marketplace", public_app(cloud), bound["marketplace"])
        md_line += (f"  marketplace    {listeners['marketplace'].site.name}  "
                    f"(public: signed image lists)\n")
    try:
        await asyncio.to_thread(listener.write_ports, config.state_dir, listeners)   # after all are up
    except OSError as e:
        raise StartError(f"cannot write {config.state_dir / 'ports.json'}: {e.strerror or e}") from None

    cfg_arg = os.environ.get("CLOUDCTL_CONFIG_ARG", "")
    console_line = f"  web console    {listeners['admin'].site.name}{console_path}\n" if console_path else ""
    print(f"cloudctl ready in {time.perf_counter() - t0:.1f}s (state in {config.state_dir})\n"
          f"  EC2 Query API  {cloud.endpoint}  region {config.region}, zones {', '.join(config.zones)}\n"
          f"  admin API      {listeners['admin'].site.name}  "
          f"(token in {config.state_dir}/admin.token)\n"
          f"{md_line}{console_line}"
          f"Create the first user with:  cloudctl user create alice{cfg_arg}", flush=True)
    await asyncio.to_thread(malloc.trim)   # what start-up freed goes back to the kernel (~1.7 MiB)

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
    malloc.limit_arenas()   # before the loop's and the hosts' threads exist
    malloc.plain_glib_slices()   # before libvirt (and GLib with it) is loaded
    # The imports' and the CLI's cyclic garbage (argparse's parsers, ~0.4 MiB) freed now: the state's
    # load freezes what exists (`gc.freeze`) before a full collection had come, and kept it for good.
    gc.collect()
    uvloop.run(run(config))
