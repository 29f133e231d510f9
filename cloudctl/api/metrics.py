"""`GET /metrics`: the controller's figures in Prometheus text format.

Served on the admin listener without the admin token: the token is a full-admin credential
(it creates users and reads consoles), and putting it in a monitoring system's scrape config
would spread it further than read-only counters are worth. The admin listener is bound to
localhost or a management network, and nothing here is secret: ids, states, counts, timings
(no user names, keys or user data; instance owners are not labels).

Names follow Prometheus conventions: a `cloudctl_` prefix, base units (seconds, bytes),
`_total` on counters, `_info` for metadata joined on labels. Live state is read at scrape time
without a pass over the instances: hosts by a collector (a few lines per host), instances by
state from a count the instances table keeps as rows change, and the per-instance series from
text cached per host poll (see metrics_instances.py), so a scrape never holds the loop for long.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from ..core.compute import STATE_CODES
from .metrics_elb import ElbCollector
from .metrics_format import CONTENT_TYPE, Family, Registry
from .metrics_instances import InstanceSeries
from .metrics_plain import PlainCounter, PlainHistogram
from .metrics_text import registry_text

if TYPE_CHECKING:
    from ..core.cloud import Cloud
    from ..core.throttle import Throttle
    from ..core.workpool import WorkPool

HOST_STATES = ("init", "on", "error", "disabled", "offline")
_FAST = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0)
_MIB = 1024 * 1024
_SEND_PER_TURN = 256 * 1024   # bytes of a scrape's answer written per loop turn


class Metrics:
    def __init__(self, cloud: "Cloud", known_actions: Iterable[str] = ()) -> None:
        self.cloud = cloud
        self.known = set(known_actions)   # (grows as query services load: api/query/services.py)
        # The labelled children by (api, action, code), looked up once each: bounded like their labels.
        self._children: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}
        r = self.registry = Registry()
        # (plain numbers: touched by every request, see metrics_plain)
        self.requests = PlainCounter("cloudctl_api_requests", "API requests by API, action and outcome "
                                     "(ok or the error code)", ["api", "action", "code"])
        r.register(self.requests)
        self.latency = PlainHistogram("cloudctl_api_request_duration_seconds", "API request handling time",
                                      ["api", "action"], _FAST)
        r.register(self.latency)
        self.fsync = PlainHistogram("cloudctl_journal_fsync_duration_seconds", "journal write+fsync time (one "
                                    "group commit)", (), _FAST)
        self.checkpoint = PlainHistogram("cloudctl_checkpoint_duration_seconds", "checkpoint time", (),
                                         (.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        # (unlabelled: their one series is written from the start, with zero counts)
        self.observe_fsync, self.observe_checkpoint = self.fsync.observer(), self.checkpoint.observer()
        r.register(self.fsync)
        r.register(self.checkpoint)
        self.poll = PlainHistogram("cloudctl_host_poll_duration_seconds", "one monitoring poll of one host",
                                   ["host"], _FAST)
        r.register(self.poll)
        self.poll_failures = PlainCounter("cloudctl_host_poll_failures", "monitoring polls that failed", ["host"])
        r.register(self.poll_failures)
        self.refusals = PlainCounter("cloudctl_api_refusals", "requests refused before reaching an action "
                                     "(malformed, oversize, unknown method, bad credentials), by API and reason",
                                     ["api", "reason"])
        r.register(self.refusals)
        self.refusals_suppressed = PlainCounter("cloudctl_log_refusals_suppressed", "refusals not logged "
                                                "because their source had used up its log lines for the minute",
                                                ["api"])
        r.register(self.refusals_suppressed)
        self.loop_lag = PlainHistogram("cloudctl_event_loop_lag_seconds", "how late a 10 ms ticker on the "
                                       "event loop woke up", (), _FAST)
        self.observe_loop_lag = self.loop_lag.observer()
        r.register(self.loop_lag)
        r.register(_StateCollector(cloud))
        r.register(ElbCollector(cloud))
        self.instances = InstanceSeries(cloud)

    def attach(self) -> None:
        """Hook into the store and the monitor (after the cloud has started)."""
        if self.cloud.store.journal is not None:
            self.cloud.store.journal.on_fsync = self.observe_fsync
        self.cloud.store.on_checkpoint = self.observe_checkpoint
        self.cloud.monitor.on_poll = self._on_poll

    def _on_poll(self, host: str, seconds: float, ok: bool) -> None:
        self.poll.observe(self.poll.child(host), seconds)
        if not ok:
            self.poll_failures.inc(host)

    def request(self, api: str, action: str, code: str, seconds: float) -> None:
        """Count one API request; unknown action names are folded into one label value."""
        if action not in self.known:
            action = "other"
        children = self._children.get((api, action, code))
        if children is None:
            children = self._children[(api, action, code)] = (self.requests.child(api, action, code),
                                                              self.latency.child(api, action))
        children[0][0] += 1
        self.latency.observe(children[1], seconds)

    def refusal(self, api: str, reason: str, logged: bool) -> None:
        """Count one refused request (see api.refusals; `reason` is from the code, never the wire)."""
        self.refusals.inc(api, reason)
        if not logged:
            self.refusals_suppressed.inc(api)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The registry's families, then the per-instance ones, each written a slice per loop
        turn and sent chunk by chunk (megabytes at tens of thousands of instances: never
        joined into one buffer on the loop)."""
        tail = await self.instances.chunks()
        head = await registry_text(self.registry)
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        resp.content_length = sum(map(len, head)) + sum(map(len, tail))
        await resp.prepare(request)
        if request.method != "HEAD":
            sent = 0
            for chunk in (*head, *tail):
                await resp.write(chunk)
                sent += len(chunk)
                if sent >= _SEND_PER_TURN:
                    # A client that reads as fast as we write never pauses the transport, so
                    # write() never waits: without this the whole body went in one turn (~1.5 ms/MB).
                    sent = 0
                    await asyncio.sleep(0)
        await resp.write_eof()
        return resp


class _StateCollector:
    """Hosts, instance counts and switch queues as they are at scrape time (the per-instance
    series are rendered apart: InstanceSeries)."""

    def __init__(self, cloud: "Cloud") -> None:
        self.cloud = cloud

    def collect(self) -> Iterable[Family]:
        cloud = self.cloud
        sched, mon = cloud.scheduler, cloud.monitor
        info = Family.gauge("cloudctl_host_info", "hypervisor hosts", labels=["host", "zone"])
        state = Family.gauge("cloudctl_host_state", "1 for the host's current state",
                             labels=["host", "state"])
        vcpus = Family.gauge("cloudctl_host_vcpus", "vCPUs offered (after overcommit)", labels=["host"])
        vcpus_used = Family.gauge("cloudctl_host_vcpus_used", "vCPUs held by instances", labels=["host"])
        mem = Family.gauge("cloudctl_host_memory_bytes", "memory offered (after overcommit)",
                           labels=["host"])
        mem_used = Family.gauge("cloudctl_host_memory_used_bytes", "memory held by instances",
                                labels=["host"])
        mem_free = Family.gauge("cloudctl_host_memory_free_bytes", "free memory the hypervisor reports",
                                labels=["host"])
        cpu = Family.counter("cloudctl_host_cpu_seconds", "host CPU time by mode, from the last poll",
                             labels=["host", "mode"])
        seen = Family.gauge("cloudctl_host_last_seen_timestamp_seconds", "last successful poll",
                            labels=["host"])
        for name, h in mon.hosts.items():
            cap = sched.hosts.get(name)
            info.add([name, cap.zone if cap else ""], 1)
            for s in HOST_STATES:
                state.add([name, s], 1 if h.state == s else 0)
            if cap is not None:
                vcpus.add([name], cap.vcpus)
                vcpus_used.add([name], cap.used_vcpus)
                mem.add([name], cap.memory_mib * _MIB)
                mem_used.add([name], cap.used_memory_mib * _MIB)
            if h.last is not None:
                if h.last.resources.free_memory_mib is not None:
                    mem_free.add([name], h.last.resources.free_memory_mib * _MIB)
                for mode, ns in h.last.cpu_time_ns.items():
                    cpu.add([name, mode], ns / 1e9)
            if h.last_seen is not None:
                seen.add([name], h.last_seen)
        yield from (info, state, vcpus, vcpus_used, mem, mem_used, mem_free, cpu, seen)

        counts = dict.fromkeys(STATE_CODES, 0)
        counts.update(cloud.compute.by_state.counts)   # kept by the table as instances change
        by_state = Family.gauge("cloudctl_instances", "instances by state", labels=["state"])
        for s, n in counts.items():
            by_state.add([s], n)
        yield by_state

        # Switch operations (bare metal): the queue per switch, and how many ended in error.
        queue = Family.gauge("cloudctl_switch_operations_pending", "switch operations waiting to be applied",
                             labels=["switch"])
        failed = Family.counter("cloudctl_switch_operation_failures", "switch operations that ended in error",
                                labels=["switch"])
        pending: dict[str, int] = {}
        errors: dict[str, int] = {}
        if cloud.built("baremetal"):   # (not built: no switch, no operation, nothing to count)
            site = cloud.baremetal.site
            pending = {sw: 0 for sw in site.switches.rows}
            # Rows pruned by the retention still count: a counter never goes down while the controller runs.
            errors = {sw: cloud.baremetal.ops.pruned_errors[sw] for sw in pending}
            for op in site.ops.values():
                if op.status == "pending":
                    pending[op.switch] = pending.get(op.switch, 0) + 1
                elif op.status == "error":
                    errors[op.switch] = errors.get(op.switch, 0) + 1
        for sw in sorted(pending):
            queue.add([sw], pending[sw])
            failed.add([sw], errors.get(sw, 0))
        yield from (queue, failed)


class LoginCollector:
    """Failed logins and the throttle's answers per API, and the password checks run (scrypt)."""

    def __init__(self, throttles: "dict[str, Throttle]", hashing: "WorkPool") -> None:
        self.throttles = throttles   # api -> its throttle (XML-RPC's is added when that listener starts)
        self.hashing = hashing

    def collect(self) -> Iterable[Family]:
        failures = Family.counter("cloudctl_login_failures", "failed logins (wrong credentials)", labels=["api"])
        refused = Family.counter("cloudctl_login_refusals", "logins refused unchecked while their address "
                                 "or (user, address) backs off", labels=["api"])
        delayed = Family.counter("cloudctl_login_delays", "logins delayed while their user name backs off",
                                 labels=["api"])
        tracked = Family.gauge("cloudctl_login_tracked_keys", "names, addresses and pairs the throttle "
                               "remembers", labels=["api"])
        for api, t in sorted(self.throttles.items()):
            failures.add([api], t.failures)
            refused.add([api], t.refused)
            delayed.add([api], t.delayed)
            tracked.add([api], t.tracked())
        yield from (failures, refused, delayed, tracked)
        yield Family.counter("cloudctl_password_checks", "password hashes computed (scrypt)",
                             value=self.hashing.runs)
        yield Family.counter("cloudctl_password_checks_refused", "password checks refused because "
                             "the hashing threads' wait list was full", value=self.hashing.refused)
