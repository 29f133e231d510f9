"""Switch operations: queued as records, applied by one worker per switch.

A connect, detach or revert is checked, written to the journal as a pending operation and
answered with 202 before any switch is touched. Each switch has its own worker, so a slow or
dead switch delays only its own queue (HIL drained one global FIFO). A worker computes the
port's whole desired VLAN set when it applies an operation and records the outcome together with
the attachment change in one transaction. Setting a whole set is idempotent, so an operation
that was applied but not yet recorded when the controller died is applied again at start-up and
recorded once. A switch failure ends that one operation with the switch's text; the worker goes
on with the next.

Finished operations are kept only within `baremetal.finished_operations` (count and age, the
event log's retention): the count bound is enforced in the transaction that finishes an
operation, the age bound by a periodic trim. Pending operations and the newest operation of each
port are never pruned; a pruned id answers 404.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from typing import Any

from ...config import Baremetal as BaremetalConfig
from ...drivers.switch.base import PortVlans, SwitchDriver, SwitchError, SwitchUnreachable, driver_class
from ...store.journal import JournalError
from ...store.records import BmAttachment, BmOperation, BmPort
from .. import retention
from ..events import Events
from ..ids import new_id
from ..tasks import Supervisor
from .auth import Caller
from .errors import BadArgumentError, BlockedError, NotFoundError, ProjectMismatchError
from .site import Site, _k

log = logging.getLogger("cloudctl.baremetal")


class Operations:
    def __init__(self, site: Site, config: BaremetalConfig, events: Events, tasks: Supervisor) -> None:
        self.site = site
        self.tasks = tasks
        self.config = config
        self.events = events
        self.drivers: dict[str, SwitchDriver] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._seq = max((o.seq for o in site.ops.values()), default=0)
        # Per switch, failed operations already pruned: the failure metric is a counter and must
        # not go down when their rows go (it restarts from the kept rows with the controller).
        self.pruned_errors: Counter[str] = Counter()

    # -- queueing -----------------------------------------------------------------------------------
    def _check_nic(self, caller: Caller, node: str, nic: str) -> BmPort:
        n = self.site.node(node)
        self.site.nic(node, nic)
        if n.project is None:
            raise ProjectMismatchError(f"node {node!r} is not in a project")
        caller.require_project(n.project)
        port = self.site.port_of(node, nic)
        if port is None:
            raise NotFoundError(f"NIC {node}/{nic} is not cabled to any switch port")
        pending = self.site.pending_for_nic(node, nic)
        if pending is not None:
            raise BlockedError(f"NIC {node}/{nic} has a pending operation {pending.id}; wait for it to finish")
        return port

    async def _queue(self, op: BmOperation) -> BmOperation:
        self._seq += 1
        op = dataclasses.replace(op, seq=self._seq, created=time.time())
        await self.site.commit(op)
        self._wake_switch(op.switch)
        return op

    async def connect(self, caller: Caller, node: str, nic: str, network: Any, channel: Any) -> BmOperation:
        port = self._check_nic(caller, node, nic)
        if not isinstance(network, str):
            raise BadArgumentError('expected {"network": ..., "channel": ...}')
        net = self.site.network(network)
        project = self.site.nodes.rows[node].project
        if net.access and project not in net.access:
            raise ProjectMismatchError(f"project {project!r} has no access to network {network!r}")
        channel = channel or "vlan/native"
        if channel not in ("vlan/native", f"vlan/{net.vlan}"):
            raise BadArgumentError(f"channel {channel!r} is not legal for network {network!r}: "
                                   f"use vlan/native or vlan/{net.vlan}")
        for a in self.site.att_by_nic.get(_k(node, nic)).values():
            if a.network == network:
                raise BlockedError(f"network {network!r} is already attached to NIC {node}/{nic}")
            if a.channel == channel:
                raise BlockedError(f"channel {channel} of NIC {node}/{nic} already carries network {a.network!r}")
        return await self._queue(BmOperation(id=new_id("op"), seq=0, type="connect", switch=port.switch,
                                             port=port.name, node=node, nic=nic, network=network, channel=channel))

    async def detach(self, caller: Caller, node: str, nic: str, network: Any) -> BmOperation:
        port = self._check_nic(caller, node, nic)
        if not isinstance(network, str):
            raise BadArgumentError('expected {"network": ...}')
        self.site.network(network)
        att = self.site.attachments.get(_k(node, nic, network))
        if att is None:
            raise BadArgumentError(f"network {network!r} is not attached to NIC {node}/{nic}")
        return await self._queue(BmOperation(id=new_id("op"), seq=0, type="detach", switch=port.switch,
                                             port=port.name, node=node, nic=nic, network=network,
                                             channel=att.channel))

    async def revert(self, caller: Caller, switch: str, port: str) -> BmOperation:
        caller.require_admin()
        p = self.site.port(switch, port)
        if p.nic is None:
            raise NotFoundError(f"port {port!r} is not attached to a NIC")
        if self.site.pending_by_port.get(p.key):
            raise BlockedError(f"port {port!r} has a pending operation")
        return await self._queue(BmOperation(id=new_id("op"), seq=0, type="revert", switch=switch, port=port,
                                             node=p.node, nic=p.nic))

    def show(self, caller: Caller, op_id: str) -> BmOperation:
        op = self.site.ops.get(op_id)
        if op is None:
            r = self.config.finished_operations
            raise NotFoundError(f"operation {op_id!r} does not exist or was pruned (finished operations are "
                                f"kept for {r.max_age_days:g} days, the newest {r.max_count} of them)")
        if not caller.is_admin:
            node = self.site.nodes.get(op.node or "")
            caller.require_project(node.project if node else None)
        return op

    # -- desired state ------------------------------------------------------------------------------
    def desired(self, port: BmPort, op: BmOperation | None = None) -> PortVlans:
        """The port's VLANs from the NIC's attachments, with `op` applied if given."""
        chans: dict[str, int] = {}
        if port.node and port.nic:
            for a in self.site.att_by_nic.get(_k(port.node, port.nic)).values():
                if not (op is not None and op.type == "detach" and a.network == op.network):
                    chans[a.channel] = self.site.networks.rows[a.network].vlan
        if op is not None and op.type == "connect":
            assert op.channel and op.network
            chans[op.channel] = self.site.networks.rows[op.network].vlan
        if op is not None and op.type == "revert":
            chans = {}
        native = chans.pop("vlan/native", None)
        return PortVlans(native=native, tagged=frozenset(chans.values()))

    # -- workers ------------------------------------------------------------------------------------
    def start(self) -> None:
        for name in self.site.switches.rows:
            self._wake_switch(name)

    def _wake_switch(self, switch: str) -> None:
        ev = self._wake.setdefault(switch, asyncio.Event())
        ev.set()
        task = self._workers.get(switch)
        if task is None or task.done():
            self._workers[switch] = self.tasks.spawn("switch-ops", self._worker(switch), f"switch {switch}")

    def driver(self, switch: str) -> SwitchDriver:
        d = self.drivers.get(switch)
        row = self.site.switch(switch)
        if d is None:
            cls = driver_class(row.type)
            assert cls is not None
            d = self.drivers[switch] = cls(switch, self.site.secrets.switch_options(row),
                                           self.config.switch_timeout_s)
        return d

    def lock(self, switch: str) -> asyncio.Lock:
        return self.locks.setdefault(switch, asyncio.Lock())

    async def _worker(self, switch: str) -> None:
        ev = self._wake[switch]
        while True:
            ev.clear()
            pending = sorted((o for o in self.site.pending_by_switch.get(switch).values()), key=lambda o: o.seq)
            for op in pending:
                try:
                    await self._apply(op)
                except asyncio.CancelledError:
                    raise
                except JournalError as e:
                    # The outcome could not be recorded (the store rolled it back): the operation
                    # is still pending and is applied again, harmlessly, once the journal works.
                    log.error("switch %s: cannot record operation %s: %s; retrying", switch, op.id, e)
                    await asyncio.sleep(self.config.backoff_s * 4)
                    break
                except Exception:   # a bug must not stop the switch's queue
                    log.exception("operation %s on switch %s", op.id, switch)
                    try:
                        await self._finish(op, "error", "internal error; see the controller's log")
                    except JournalError:
                        await asyncio.sleep(self.config.backoff_s * 4)
                        break
            if not pending:
                await ev.wait()

    async def _with_retries(self, switch: str, fn: Any, locked: bool = False) -> Any:
        """Run `fn(driver)` under the switch's lock (unless the caller holds it), retrying broken
        sessions with exponential backoff; a refusal by the switch is not retried."""
        delay = self.config.backoff_s
        for attempt in range(1, self.config.attempts + 1):
            try:
                if locked:
                    return await fn(self.driver(switch))
                async with self.lock(switch):
                    return await fn(self.driver(switch))
            except SwitchUnreachable as e:
                if attempt == self.config.attempts:
                    raise
                log.warning("switch %s: %s; retrying in %.1fs (attempt %d/%d)", switch, e, delay, attempt,
                            self.config.attempts)
                await asyncio.sleep(delay)
                delay *= 2

    async def _apply(self, op: BmOperation) -> None:
        port = self.site.ports.get(_k(op.switch, op.port))
        if port is None or op.switch not in self.site.switches.rows:
            await self._finish(op, "error", "the port no longer exists")
            return
        want = self.desired(port, op)

        async def change(d: SwitchDriver) -> None:
            await d.set_port(op.port, want)
            await d.save()

        try:
            await self._with_retries(op.switch, change)
        except SwitchError as e:
            log.warning("operation %s (%s %s on %s port %s) failed: %s", op.id, op.type, op.network or "",
                        op.switch, op.port, e)
            await self._finish(op, "error", str(e))
            return
        await self._finish(op, "done", "", port)

    async def _finish(self, op: BmOperation, status: str, error: str, port: BmPort | None = None) -> None:
        site = self.site
        with site.store.txn() as tx:
            if status == "done" and port is not None and port.node and port.nic:
                key = _k(port.node, port.nic)
                if op.type == "connect":
                    assert op.network and op.channel
                    tx.put(BmAttachment(node=port.node, nic=port.nic, network=op.network, channel=op.channel))
                elif op.type == "detach":
                    for a in list(site.att_by_nic.get(key).values()):
                        if a.network == op.network:
                            tx.delete(a)
                else:
                    for a in list(site.att_by_nic.get(key).values()):
                        tx.delete(a)
            now = time.time()
            tx.put(dataclasses.replace(op, status=status, error=error, finished=now))
            pruned = self._over_count(now)
            for old in pruned:
                tx.delete(old)
            what = " ".join(f"{op.type} {op.network or ''} {op.channel or ''}".split())
            where = f" on {op.node}/{op.nic}" if op.node else ""
            self.events.add(tx, "switch.operation", f"{op.switch}/{op.port}",
                            f"{what}{where}: {status}{': ' + error if error else ''}",
                            code=status, operation=op.id, node=op.node, nic=op.nic)
        await site.store.sync()
        self._count_pruned(pruned)

    # -- retention ----------------------------------------------------------------------------------
    def _expired(self, now: float) -> list[BmOperation]:
        """Finished operations beyond the retention bounds, the newest of each port excepted."""
        newest: dict[str, BmOperation] = {}
        for o in self.site.ops.values():            # pending ones too: they are newer than any finished
            k = _k(o.switch, o.port)
            if k not in newest or o.seq > newest[k].seq:
                newest[k] = o
        kept = {o.id for k, o in newest.items() if k in self.site.ports.rows}
        finished = [o for o in self.site.ops.values() if o.status != "pending"]
        candidates = [o for o in finished if o.id not in kept]
        r = self.config.finished_operations
        return retention.expired(candidates, r.max_count - (len(finished) - len(candidates)), r.max_age_days * 86400,
                                 now, order=lambda o: (o.finished or o.created, o.seq),
                                 stamp=lambda o: o.finished or o.created)

    def _over_count(self, now: float) -> list[BmOperation]:
        """What `_expired` says, computed only when the count bound is passed (cheap otherwise)."""
        pending = sum(self.site.pending_by_switch.sizes())
        if len(self.site.ops) - pending <= self.config.finished_operations.max_count:
            return []
        return self._expired(now)

    def _count_pruned(self, pruned: list[BmOperation]) -> None:
        for o in pruned:
            if o.status == "error":
                self.pruned_errors[o.switch] += 1

    async def trim(self) -> int:
        """Prune finished operations beyond the bounds; run at start and periodically."""
        pruned = self._expired(time.time())
        n = await retention.delete(self.site.store, pruned)
        self._count_pruned(pruned)
        return n

    # -- audit --------------------------------------------------------------------------------------
    async def audit(self, switches: list[str] | None, repair: bool) -> list[dict[str, Any]]:
        names = switches if switches is not None else sorted(self.site.switches.rows)
        for n in names:
            self.site.switch(n)
        results = await asyncio.gather(*(self._audit_switch(n, repair) for n in names))
        return [r for rows in results for r in rows]

    async def _audit_switch(self, switch: str, repair: bool) -> list[dict[str, Any]]:
        out = []
        for port in sorted(self.site.ports_by_switch.get(switch).values(), key=lambda p: p.name):
            # Under the switch's lock: a worker changes a port and then records the change while
            # its operation is still pending, so what is read here is never ahead of the records.
            async with self.lock(switch):
                out.append(await self._audit_port(switch, port.name, repair))
        return out

    async def _audit_port(self, switch: str, name: str, repair: bool) -> dict[str, Any]:
        port = self.site.ports.get(_k(switch, name))
        row: dict[str, Any] = {"switch": switch, "port": name, "node": port and port.node, "nic": port and port.nic}
        if port is None:
            return {**row, "status": "gone"}
        if self.site.pending_by_port.get(port.key):
            return {**row, "status": "pending"}
        want = self.desired(port)
        row["expected"] = want.describe()
        try:
            have = await self._with_retries(switch, lambda d: d.read_port(name), locked=True)
        except SwitchError as e:
            return {**row, "status": "error", "error": str(e)}
        row["actual"] = have.describe()
        if have == want:
            return {**row, "status": "ok"}
        self.events.emit("switch.drift", f"{switch}/{name}", f"expected {row['expected']}, found {row['actual']}"
                         + ("; repairing" if repair else ""), code="drift")
        if not repair:
            return {**row, "status": "drift"}

        async def fix(d: SwitchDriver) -> None:
            await d.set_port(name, want)
            await d.save()

        try:
            await self._with_retries(switch, fix, locked=True)
        except SwitchError as e:
            return {**row, "status": "error", "error": str(e)}
        return {**row, "status": "repaired"}

    async def audit_on_start(self) -> None:
        mode = self.config.audit_on_start
        if mode == "off" or not self.site.switches.rows:
            return
        for r in await self.audit(None, repair=mode == "repair"):
            if r["status"] not in ("ok", "pending"):
                log.warning("switch audit: %s port %s: %s (expected %s, found %s)%s", r["switch"], r["port"],
                            r["status"], r.get("expected"), r.get("actual"),
                            f": {r['error']}" if r.get("error") else "")

    async def forget_switch(self, switch: str) -> None:
        task = self._workers.pop(switch, None)
        if task:
            task.cancel()
        d = self.drivers.pop(switch, None)
        if d:
            await d.close()

    async def close(self) -> None:
        for t in self._workers.values():
            t.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        for d in self.drivers.values():
            try:
                await d.close()
            except Exception:
                pass
