"""Elastic IPs: public addresses from the admin's pool, held by users and pointed at instances.

The row is the truth; the admin's scripts (`drivers/ip_scripts.py`) make the host's NAT follow
it. A change that needs a script goes: validate, claim the addresses and instances it touches
(other changes on them wait), journal the touched rows marked `nat_unsure` (durably), run the
scripts, then commit the new rows. A failing or timed-out script leaves the rows as they were:
the scripts already run are undone (associations that existed are associated again, others
disassociated) and the call fails with `InternalError`. A crash in between leaves `nat_unsure`
rows; at start-up `reconcile` runs the disassociate script for those, then the associate script
for every recorded association, so the host's NAT matches the state whatever happened.

A launch on a subnet that maps public addresses takes one from the same pool (`launch` rows,
econe-style): written associated and `nat_unsure` in the launch's own transaction, so a crash
never leaves an instance half given its address; the associate script runs right after the
commit (or at the next start). They are not Elastic IPs: DescribeAddresses does not list them,
the per-user limit does not count them, and they go back to the pool when the instance
terminates or takes an Elastic IP instead.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field, replace
from typing import Any

from ..config import Config
from ..drivers.ip_scripts import AddressScripts, NetworkTemplate, NoScripts, ScriptError
from ..slim import dataclass
from ..store.records import Address, Instance
from ..store.store import CountIndex, MultiIndex, Store, Txn
from .context import Caller
from .errors import CloudError, not_found
from .filters import FilterSet
from .ids import new_id, well_formed
from .network import LiveByPrivateIp, Networks, interface_id
from .query import Query
from .tags import Tags

log = logging.getLogger("cloudctl.addresses")

DOMAINS = ("vpc", "standard")
ASSOCIABLE = ("running", "stopped")
RECONCILE_PARALLEL = 4
_UNASSOCIATED: dict[str, Any] = dict(association_id=None, instance_id=None, private_ip=None,
                                     network_interface_id=None, associated_at=None)


def public_dns(ip: str, region: str) -> str:
    """A public host name in EC2's shape; no DNS server answers for it."""
    return f"ec2-{ip.replace('.', '-')}.{region}.compute.external"


@dataclass(frozen=True, slots=True)
class Association:
    """AssociateAddress's ask: the address (by allocation id or public address, one of them)
    and where it goes (an instance, its interface, or the private address it holds)."""

    allocation_id: str | None = None
    public_ip: str | None = None
    instance_id: str | None = None
    network_interface_id: str | None = None
    private_ip: str | None = None
    allow_reassociation: bool = False


@dataclass(slots=True)
class _Step:
    """One script run: associate `ip` with `private_ip` (with its template), or disassociate `ip`."""

    ip: str
    private_ip: str | None = None
    network: NetworkTemplate | None = None


@dataclass(slots=True)
class _Change:
    """What a validated call will do: rows as they are, scripts to run, rows to commit."""

    before: list[Address]
    steps: list[_Step]
    after: list[Address]
    keys: set[str]
    gone: list[Address] = field(default_factory=list)   # launch addresses going back to the pool


class Addresses:
    def __init__(self, store: Store, config: Config, tags: Tags, network: Networks,
                 scripts: AddressScripts | None = None) -> None:
        self.store = store
        self.config = config
        self.tags = tags
        self.network = network
        self.scripts = scripts or NoScripts()
        self.pool = config.elastic_ips.addresses()
        self._in_pool = self.pool
        self.limit = config.elastic_ips.max_addresses_per_user
        self.table = store.table(Address)
        pool = self.pool
        # Pool addresses held (Elastic or launch-assigned), counted as rows change: every public
        # launch asks, and a scan of the table cost O(addresses) per launch.
        self._held: CountIndex[Address] = self.table.add_index(
            CountIndex(lambda a: "pool" if a.public_ip in pool else None))
        self.instances = store.table(Instance)
        # Launch addresses are no Elastic IPs: the user's calls on those never see them.
        self._by_owner: MultiIndex[Address] = self.table.add_index(
            MultiIndex(lambda a: None if a.launch else a.owner))
        self._by_alloc: MultiIndex[Address] = self.table.add_index(
            MultiIndex(lambda a: None if a.launch else a.allocation_id))
        self._by_assoc: MultiIndex[Address] = self.table.add_index(
            MultiIndex(lambda a: None if a.launch else a.association_id))
        self._by_instance: MultiIndex[Address] = self.table.add_index(MultiIndex(lambda a: a.instance_id))
        self._inst_by_ip = LiveByPrivateIp(store)
        self._busy: dict[str, asyncio.Event] = {}
        self._cursor = 0
        self._tasks: set[asyncio.Task[None]] = set()
        region = config.region
        self.filters = FilterSet({
            "public-ip": lambda a: a.public_ip,
            "allocation-id": lambda a: a.allocation_id,
            "association-id": lambda a: a.association_id,
            "instance-id": lambda a: a.instance_id,
            "private-ip-address": lambda a: a.private_ip,
            "domain": lambda a: a.domain,
            "network-interface-id": lambda a: a.network_interface_id,
            "network-interface-owner-id": lambda a: a.owner if a.network_interface_id else None,
            "public-ipv4-pool": lambda a: "amazon",
            "network-border-group": lambda a: region,
        }, tags_of=lambda a: tags.of(a.allocation_id))
        tags.register("elastic-ip", self._check_allocation)

    # -- lookups -------------------------------------------------------------------------------
    def _check_allocation(self, caller: Caller, allocation_id: str) -> None:
        self._by_allocation_id(caller, allocation_id)

    def _by_allocation_id(self, caller: Caller, allocation_id: str) -> Address:
        if not well_formed(allocation_id, "eipalloc"):
            raise CloudError("InvalidAllocationID.Malformed", f"Invalid id: \"{allocation_id}\" "
                             f"(expecting \"eipalloc-...\")")
        addr = _one(self._by_alloc.get(allocation_id))
        if addr is None or addr.owner != caller.account:
            raise CloudError.not_found("InvalidAllocationID.NotFound",
                                       f"The allocation ID '{allocation_id}' does not exist")
        return addr

    def _by_public_ip(self, caller: Caller, ip: str) -> Address:
        addr = self.table.get(_ipv4(ip))
        if addr is None or addr.owner != caller.account or addr.launch:
            raise CloudError.not_found("InvalidAddress.NotFound", f"Address '{ip}' not found.")
        return addr

    def _named(self, caller: Caller, alloc: str | None, ip: str | None) -> Address:
        """The caller's address named by AllocationId or PublicIp (exactly one of them)."""
        if alloc and ip:
            raise CloudError("InvalidParameterCombination", "Specify either AllocationId or PublicIp, not both")
        if alloc:
            return self._by_allocation_id(caller, alloc)
        if ip:
            return self._by_public_ip(caller, ip)
        raise CloudError("MissingParameter", "The request must contain the parameter AllocationId or PublicIp")

    def of_instance(self, instance_id: str) -> Address | None:
        """The address associated with an instance, if any (DescribeInstances, metadata)."""
        return _one(self._by_instance.get(instance_id))

    def owned_by(self, account: str) -> list[Address]:
        return list(self._by_owner.get(account).values())

    # -- AllocateAddress -----------------------------------------------------------------------
    async def allocate(self, caller: Caller, domain: str | None = None, address: str | None = None,
                       tags: tuple[tuple[str, str], ...] = ()) -> Address:
        """A free pool address (or `address`, if free) for the caller, within their limit."""
        domain, wanted = domain or "vpc", address
        if domain not in DOMAINS:
            raise CloudError("InvalidParameterValue", f"Invalid value '{domain}' for domain.")
        if wanted:
            wanted = _ipv4(wanted, "InvalidAddress.Malformed")
            if wanted not in self._in_pool:
                raise CloudError.not_found("InvalidAddress.NotFound",
                                           f"Address '{wanted}' is not in this cloud's public address pool.")
            if self.table.get(wanted) is not None:
                raise CloudError.conflict("InvalidIPAddress.InUse", f"Address '{wanted}' is already allocated.")
        if len(self._by_owner.get(caller.account)) >= self.limit:
            raise CloudError.limit("AddressLimitExceeded",
                                   f"The maximum number of addresses has been reached ({self.limit} per user).")
        ip = wanted or self._free()
        if ip is None:
            raise CloudError.capacity("InsufficientAddressCapacity",
                                      "There are no free addresses in this cloud's public address pool.")
        caller.check_dry_run()
        addr = Address(public_ip=ip, allocation_id=new_id("eipalloc"), owner=caller.account,
                       allocated=time.time(), domain=domain)
        with self.store.txn() as tx:
            tx.put(addr)
            if tags:
                self.tags.put(tx, caller.account, addr.allocation_id, "elastic-ip", list(tags))
        await self.store.sync()
        return addr

    def _free(self) -> str | None:
        """The next free pool address after the last one handed out: a released address is
        reused as late as possible, so traffic meant for its old holder rarely reaches a new one."""
        n = len(self.pool)
        for step in range(n):
            i = (self._cursor + step) % n
            if self.pool[i] not in self.table.rows:
                self._cursor = i + 1
                return self.pool[i]
        return None

    # -- public addresses on launch -------------------------------------------------------------
    def free_count(self) -> int:
        """Pool addresses nobody holds, Elastic or launch-assigned."""
        return len(self.pool) - self._held.counts.get("pool", 0)

    def assign_at_launch(self, tx: Txn, inst: Instance) -> Address:
        """Give a launching instance a public address, in the launch's transaction (the caller
        checked `free_count`). Written `nat_unsure`: `settle` runs the associate script."""
        ip = self._free()
        if ip is None:
            raise CloudError.capacity("InsufficientAddressCapacity",
                                      "There are no free addresses in this cloud's public address pool.")
        assert inst.private_ip is not None
        now = time.time()
        row = Address(public_ip=ip, allocation_id="", owner=inst.owner, allocated=now,
                      association_id=new_id("eipassoc"), instance_id=inst.id, private_ip=inst.private_ip,
                      network_interface_id=interface_id(inst.id), associated_at=now, nat_unsure=True, launch=True)
        tx.put(row)
        return row

    def settle(self, ips: list[str]) -> None:
        """After a launch's commit: make the host's NAT follow its new addresses, in the background
        (as start-up does for `nat_unsure` rows; a failed script leaves them for the next start)."""
        todo: list[tuple[str, set[str] | None]] = [(ip, None) for ip in ips]
        if todo:
            task = asyncio.get_running_loop().create_task(self._reconcile(todo, only_unsure=True))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- ReleaseAddress ------------------------------------------------------------------------
    async def release(self, caller: Caller, allocation_id: str | None, public_ip: str | None) -> None:
        while True:
            addr = self._named(caller, allocation_id, public_ip)
            if addr.association_id:
                raise CloudError.conflict("InvalidIPAddress.InUse",
                                          f"The address with allocation id [{addr.allocation_id}] is in use "
                                          f"(associated as {addr.association_id}); disassociate it first.")
            caller.check_dry_run()
            if not await self._wait_or_claim({addr.public_ip}):
                break
        try:
            with self.store.txn() as tx:
                tx.delete(addr)
                self.tags.remove_all(tx, addr.allocation_id)
            await self.store.sync()
        finally:
            self._unclaim({addr.public_ip})

    # -- AssociateAddress ----------------------------------------------------------------------
    def _target(self, caller: Caller, req: Association) -> Instance:
        iid, eni, pip = req.instance_id, req.network_interface_id, req.private_ip
        if iid and eni:
            raise CloudError("InvalidParameterCombination",
                             "Specify either an instance ID or a network interface ID, not both")
        inst: Instance | None
        if eni:
            if not well_formed(eni, "eni"):
                raise CloudError("InvalidNetworkInterfaceID.Malformed", f"Invalid id: \"{eni}\"")
            inst = self.instances.get("i-" + eni.partition("-")[2])
            if inst is None or inst.owner != caller.account or inst.state == "terminated":
                raise CloudError.not_found("InvalidNetworkInterfaceID.NotFound",
                                           f"The networkInterface ID '{eni}' does not exist")
        elif iid:
            if not well_formed(iid, "i"):
                raise CloudError("InvalidInstanceID.Malformed", f"Invalid id: \"{iid}\"")
            inst = self.instances.get(iid)
            if inst is None or inst.owner != caller.account:
                raise not_found("InstanceID", iid)
        elif pip:
            inst = _one({k: i for k, i in self._inst_by_ip.get(_ipv4(pip)).items() if i.owner == caller.account})
            if inst is None:
                raise CloudError("InvalidParameterValue",
                                 f"The private IP address {pip} is not assigned to any of your instances")
        else:
            raise CloudError("MissingParameter",
                             "The request must contain the parameter InstanceId, "
                             "NetworkInterfaceId or PrivateIpAddress")
        if pip and _ipv4(pip) != inst.private_ip:
            raise CloudError("InvalidParameterValue",
                             f"The private IP address {pip} is not assigned to the network interface of {inst.id}")
        if inst.state not in ASSOCIABLE or not inst.private_ip:
            raise CloudError.wrong_state("IncorrectInstanceState",
                                         f"The instance '{inst.id}' is '{inst.state}'; it must be running or stopped.")
        return inst

    def _plan_associate(self, caller: Caller, req: Association) -> _Change | Address:
        addr = self._named(caller, req.allocation_id, req.public_ip)
        inst = self._target(caller, req)
        if addr.instance_id == inst.id:
            caller.check_dry_run()
            return addr          # already there: nothing to do, the association stands
        if addr.association_id and not req.allow_reassociation:
            raise CloudError.conflict("Resource.AlreadyAssociated", f"resource {addr.allocation_id} is already "
                                      f"associated with associate-id {addr.association_id}")
        caller.check_dry_run()
        assert inst.private_ip is not None
        before, steps, after = [addr], [], []
        keys = {addr.public_ip, inst.id}
        held = self.of_instance(inst.id)
        gone = []
        if held is not None:          # one address per instance: the one it holds lets go
            before.append(held)
            steps.append(_Step(held.public_ip))
            if held.launch:           # a launch address goes back to the pool, as EC2's public IPs do
                gone.append(held)
            else:
                after.append(replace(held, **_UNASSOCIATED, nat_unsure=False))
            keys.add(held.public_ip)
        if addr.association_id:       # reassociation: the address leaves its old instance
            steps.append(_Step(addr.public_ip))
            keys.add(addr.instance_id or "")
        new = replace(addr, association_id=new_id("eipassoc"), instance_id=inst.id, private_ip=inst.private_ip,
                      network_interface_id=interface_id(inst.id), associated_at=time.time(), nat_unsure=False)
        steps.append(_Step(addr.public_ip, inst.private_ip, self.template(new, inst)))
        after.insert(0, new)
        return _Change(before, steps, after, keys - {""}, gone)

    async def associate(self, caller: Caller, req: Association) -> Address:
        while True:
            plan = self._plan_associate(caller, req)
            if isinstance(plan, Address):
                return plan
            if not await self._wait_or_claim(plan.keys):
                break
        await self._apply(plan, "associated")
        return plan.after[0]

    # -- DisassociateAddress -------------------------------------------------------------------
    def _plan_disassociate(self, caller: Caller, assoc: str | None, ip: str | None) -> _Change | None:
        if assoc and ip:
            raise CloudError("InvalidParameterCombination", "Specify either AssociationId or PublicIp, not both")
        if assoc:
            addr = _one(self._by_assoc.get(assoc)) if well_formed(assoc, "eipassoc") else None
            if addr is None or addr.owner != caller.account:
                raise CloudError.not_found("InvalidAssociationID.NotFound",
                                           f"The association ID '{assoc}' does not exist")
        elif ip:
            addr = self._by_public_ip(caller, ip)
        else:
            raise CloudError("MissingParameter", "The request must contain the parameter AssociationId or PublicIp")
        caller.check_dry_run()
        if addr.association_id is None:
            return None          # by PublicIp, already disassociated: nothing to do
        return _Change([addr], [_Step(addr.public_ip)], [replace(addr, **_UNASSOCIATED, nat_unsure=False)],
                       {addr.public_ip, addr.instance_id or addr.public_ip})

    async def disassociate(self, caller: Caller, association_id: str | None, public_ip: str | None) -> None:
        while True:
            plan = self._plan_disassociate(caller, association_id, public_ip)
            if plan is None:
                return
            if not await self._wait_or_claim(plan.keys):
                break
        await self._apply(plan, "disassociated")

    # -- running a change ------------------------------------------------------------------------
    async def _apply(self, change: _Change, verb: str) -> None:
        """Journal the intent, run the scripts, commit; on failure undo and leave the rows as
        they were. The caller holds the claim on `change.keys`; this releases it."""
        try:
            with self.store.txn() as tx:
                for row in change.before:
                    tx.put(replace(row, nat_unsure=True))
            await self.store.sync()
            done: list[_Step] = []
            try:
                for step in change.steps:
                    done.append(step)
                    await self._run(step)
            except ScriptError as e:
                log.error("address %s could not be %s: %s", change.before[0].public_ip, verb, e)
                await self._undo(change.before, done)
                raise CloudError.unavailable("InternalError", f"The address {change.before[0].public_ip} could not "
                                             f"be {verb}: {e.summary}. Nothing was changed; try again later.") from None
            with self.store.txn() as tx:
                for row in change.after:
                    tx.put(row)
                for row in change.gone:
                    tx.delete(row)
            await self.store.sync()
        finally:
            self._unclaim(change.keys)

    async def _run(self, step: _Step) -> None:
        if step.private_ip is None:
            await self.scripts.disassociate(step.ip)
        else:
            assert step.network is not None
            await self.scripts.associate(step.ip, step.private_ip, step.network)

    async def _undo(self, before: list[Address], done: list[_Step]) -> None:
        """Put the host back as the rows say: rows whose addresses a script touched get their
        old association again (or none); a row whose undo fails stays `nat_unsure`."""
        touched = {s.ip for s in done}
        restored = []
        for row in before:
            ok = True
            if row.public_ip in touched:
                try:
                    if row.association_id and row.instance_id and row.private_ip:
                        inst = self.instances.get(row.instance_id)
                        await self.scripts.associate(row.public_ip, row.private_ip, self.template(row, inst))
                    else:
                        await self.scripts.disassociate(row.public_ip)
                except ScriptError as e:
                    ok = False
                    log.error("address %s: undoing a failed change failed too, left for the next start: %s",
                              row.public_ip, e)
            restored.append(replace(row, nat_unsure=not ok))
        with self.store.txn() as tx:
            for row in restored:
                tx.put(row)
        await self.store.sync()

    def template(self, addr: Address, inst: Instance | None) -> NetworkTemplate:
        sub = self.network.of(inst) if inst is not None else None
        return NetworkTemplate(
            elastic_ip=addr.public_ip, private_ip=addr.private_ip or "", instance_id=addr.instance_id or "",
            allocation_id=addr.allocation_id, association_id=addr.association_id or "",
            network_interface_id=addr.network_interface_id, mac=inst.mac if inst else None,
            subnet=str(sub.net) if sub else None, prefixlen=sub.net.prefixlen if sub else None,
            gateway=str(sub.gateway) if sub else None, bridge=sub.bridge if sub else None,
            subnet_id=sub.id if sub else None, zone=inst.zone if inst else "", host=inst.host if inst else "")

    # -- claims: one change at a time per address and per instance -------------------------------
    async def _wait_or_claim(self, keys: set[str]) -> bool:
        """Claim `keys` at once if none is busy (returns False: go ahead); else wait for one to
        be released and return True, so the caller validates again against the new state."""
        busy = [self._busy[k] for k in keys if k in self._busy]
        if busy:
            await busy[0].wait()
            return True
        for k in keys:
            self._busy[k] = asyncio.Event()
        return False

    def _unclaim(self, keys: set[str]) -> None:
        for k in keys:
            ev = self._busy.pop(k, None)
            if ev is not None:
                ev.set()

    @contextmanager
    def _claimed(self, keys: set[str]) -> Iterator[None]:
        try:
            yield
        finally:
            self._unclaim(keys)

    # -- DescribeAddresses ---------------------------------------------------------------------
    def describe(self, caller: Caller, query: Query, public_ips: tuple[str, ...] = ()) -> list[Address]:
        """The caller's addresses (`query.ids` are allocation ids), all on one page."""
        ips, allocs = public_ips, query.ids
        match = self.filters.compile(query.filters)
        picked: dict[str, Address] = {}
        for ip in ips:
            a = self._by_public_ip(caller, ip)
            picked[a.public_ip] = a
        for alloc in allocs:
            a = self._by_allocation_id(caller, alloc)
            picked[a.public_ip] = a
        caller.check_dry_run()
        pool = picked if ips or allocs else self._by_owner.get(caller.account)
        rows = [a for a in pool.values() if not match or match(a)]
        return sorted(rows, key=lambda a: ipaddress.IPv4Address(a.public_ip))

    # -- instances going away, start-up ----------------------------------------------------------
    async def instance_gone(self, instance_id: str) -> None:
        """The instance is being terminated: its address is disassociated (script run). A failed
        script still ends the association — the instance is going — but leaves the row
        `nat_unsure`, so the next start runs the disassociate script again."""
        while True:
            addr = self.of_instance(instance_id)
            if addr is None:
                return
            keys = {addr.public_ip, instance_id}
            if not await self._wait_or_claim(keys):
                break
        with self._claimed(keys):
            with self.store.txn() as tx:
                tx.put(replace(addr, nat_unsure=True))
            await self.store.sync()
            ok = True
            try:
                await self.scripts.disassociate(addr.public_ip)
            except ScriptError as e:
                ok = False
                log.error("address %s: disassociating from terminated %s failed, retried at the next start: %s",
                          addr.public_ip, instance_id, e)
            cur = self.table.get(addr.public_ip)
            if cur is not None:
                with self.store.txn() as tx:
                    if cur.launch and ok:
                        tx.delete(cur)    # back to the pool; if the script failed, start-up retries first
                    else:
                        tx.put(replace(cur, **_UNASSOCIATED, nat_unsure=not ok))
                await self.store.sync()

    def reconcile(self, only_unsure: bool = False) -> list[str]:
        """Make the host's NAT match the rows, in the background: every `nat_unsure` address is
        disassociated first, then (at start-up; with `only_unsure`, only for those) every
        association is applied again. The addresses are claimed here, before any call is
        served, so calls on them wait for their turn (one already claimed by a change under
        way is handled after it). After a journal rollback, `only_unsure` mends what a change
        whose commit was undone left behind."""
        report: list[str] = []
        # (`_held` counts the addresses in the pool: when that is all of them, none is looked at;
        # 52,500 pool tests were ~0.1 s of the loop's start-up at 50,000 instances.)
        outside = not only_unsure and self._held.counts.get("pool", 0) < len(self.table)
        for a in self.table.values() if outside else ():
            if a.public_ip not in self._in_pool:
                report.append(f"{a.public_ip}: held by {a.owner} ({a.allocation_id}) but no longer in the pool")
        todo: list[tuple[str, set[str] | None]] = []
        # Without scripts a sure association has nothing to re-apply: only one whose instance is
        # gone changes its row. (50,000 launch addresses were 50,000 tasks on the loop at start-up,
        # ~1 s of its CPU, for no change.)
        nothing = self.scripts.applies_nothing
        for a in list(self.table.values()):
            if not (a.nat_unsure or (a.association_id and not only_unsure)):
                continue
            if nothing and not a.nat_unsure and not self._instance_gone(a):
                continue
            keys = self._keys_of(a)
            todo.append((a.public_ip, None if any(k in self._busy for k in keys) else keys))
            if todo[-1][1] is not None:
                for k in keys:
                    self._busy[k] = asyncio.Event()
        if todo:
            report.append(f"re-applying the NAT of {len(todo)} elastic IP address(es)")
            task = asyncio.get_running_loop().create_task(self._reconcile(todo, only_unsure))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for line in report:
            log.warning("reconcile: %s", line)
        return report

    @staticmethod
    def _keys_of(a: Address) -> set[str]:
        return {a.public_ip} | ({a.instance_id} if a.instance_id else set())

    async def _reconcile(self, todo: list[tuple[str, set[str] | None]], only_unsure: bool) -> None:
        # A bounded number of scripts at once; the semaphore is taken only once the claim is
        # held, so no task waits for a claim while keeping others from running.
        sem = asyncio.Semaphore(RECONCILE_PARALLEL)

        def wanted(a: Address | None) -> bool:
            return a is not None and (a.nat_unsure or (a.association_id is not None and not only_unsure))

        async def one(ip: str, keys: set[str] | None) -> None:
            while keys is None:
                a = self.table.get(ip)
                if a is None or not wanted(a):
                    return
                k = self._keys_of(a)
                if not await self._wait_or_claim(k):
                    keys = k
            with self._claimed(keys):
                async with sem:
                    a = self.table.get(ip)
                    if a is not None and wanted(a):
                        await self._reconcile_one(a)
        await asyncio.gather(*(one(ip, keys) for ip, keys in todo))

    def _instance_gone(self, a: Address) -> bool:
        """Whether `a`'s association is to an instance that is gone or going (it is undone)."""
        inst = self.instances.get(a.instance_id) if a.instance_id else None
        return inst is None or inst.state in ("shutting-down", "terminated")

    async def _reconcile_one(self, a: Address) -> None:
        try:
            if a.nat_unsure:
                await self.scripts.disassociate(a.public_ip)
            inst = self.instances.get(a.instance_id) if a.instance_id else None
            if a.association_id and self._instance_gone(a):
                if not a.nat_unsure:
                    await self.scripts.disassociate(a.public_ip)
                a = replace(a, **_UNASSOCIATED)
            elif a.association_id and a.private_ip:
                await self.scripts.associate(a.public_ip, a.private_ip, self.template(a, inst))
        except ScriptError as e:
            log.error("reconcile: address %s: %s; left for the next start", a.public_ip, e)
            new = replace(a, nat_unsure=True)
        else:
            new = replace(a, nat_unsure=False)
        if new.launch and new.association_id is None and not new.nat_unsure:
            with self.store.txn() as tx:   # its instance is gone: the launch address goes back to the pool
                tx.delete(new)
            self.store.flush()
        elif self.table.get(a.public_ip) != new:
            with self.store.txn() as tx:
                tx.put(new)
            self.store.flush()

    async def idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _one(group: dict[str, Address] | dict[str, Instance]) -> Any:
    return next(iter(group.values())) if len(group) == 1 else None


def _ipv4(text: str, code: str = "InvalidParameterValue") -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise CloudError(code, f"Invalid IPv4 address '{text}'") from None
