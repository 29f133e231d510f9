"""Security groups: stateful allow-lists per instance NIC, enforced by the hypervisor hosts.

A group is a row and each of its rules another (one protocol/port range, one peer: a CIDR or a
group). An instance names its groups in `Instance.group_ids`; what its NIC may receive and
send is the union of its groups' rules, with peer groups expanded to their members' private
addresses. That union is computed here (`spec_for`) and handed to the host's driver, which
enforces it; whenever rules or memberships change, the instances whose union changed get it
again, in the same per-instance order as the rest of their hypervisor work.

Load balancers are members too: the ELB core feeds each committed row's address and groups
(`set_member`), so a rule naming a load balancer's group admits its traffic; the proxy's own
ingress (`ingress_for`) is computed like an instance's, and `watch` tells when it may move.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..drivers.hypervisor.base import FirewallRule, FirewallSpec, HypervisorDriver, HypervisorError
from ..store.records import Instance, SecurityGroup, SecurityGroupRule
from ..store.store import Index, MultiIndex, Store, Txn
from . import sg_permissions as check
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .ids import new_id, well_formed
from .query import Query
from .sg_permissions import ANYWHERE, MAX_TEXT, TEXT, GroupPeer, NewRule, Permission, RuleChange, TagPairs
from .tags import Tags
from .work import KeyedWork

log = logging.getLogger("cloudctl.security_groups")

DEFAULT = "default"
_GONE = frozenset({"shutting-down", "terminated"})
FLUSH_DELAY_S = 0.1   # changes within this long reach the hosts together
RETRY_S = 2.0         # a host that failed to take a filter is given it again after this long


def identity(r: SecurityGroupRule) -> tuple[Any, ...]:
    return (r.egress, r.protocol, r.from_port, r.to_port, r.cidr, r.peer_group_id)


class _MembersIndex(Index[Instance]):
    """Group id -> its instances (an instance may be in several groups), and the sorted private
    addresses of its live members; tells `changed` of every instance row that comes or goes, with
    the groups whose addresses that changed, so filters follow without callers having to.

    The addresses are kept as each row comes and goes (a sorted list, and since two members on
    different networks may share one, a count of the members beyond an address's first: a dict
    entry per member was ~30-45 B an instance for what is almost always 1), not recomputed from all
    members on every change: a launch, or its state change to running, in a group of n members
    costs a bisection, not a pass over n rows. A group's members are the sorted list of their ids
    (the rows' own id objects; the rows are the table's): a dict by id per group was ~26 B an
    instance in groups of 50-250, the list is ~9, and a member's change that keeps its groups and
    address touches nothing here."""

    def __init__(self, changed: Callable[[Instance, list[str]], None]) -> None:
        self.members: dict[str, list[str]] = {}   # group -> its instances' ids, sorted
        self.sorted: dict[str, list[str]] = {}        # group -> its live members' addresses, sorted
        self.extra: dict[str, dict[str, int]] = {}    # group -> address -> members with it beyond one
        self._changed = changed

    def add(self, row: Instance) -> None:
        moved: list[str] = []
        ip = row.private_ip if row.state not in _GONE else None
        rid = row.id
        for g in row.group_ids:
            ids = self.members.get(g)
            if ids is None:
                self.members[g] = [rid]
            else:
                i = bisect.bisect_left(ids, rid)
                if i == len(ids) or ids[i] != rid:
                    ids.insert(i, rid)
            if ip:
                ips = self.sorted.get(g)
                if ips is None:
                    ips = self.sorted[g] = []
                i = bisect.bisect_left(ips, ip)
                if i < len(ips) and ips[i] == ip:
                    extra = self.extra.setdefault(g, {})
                    extra[ip] = extra.get(ip, 0) + 1
                else:
                    ips.insert(i, ip)
                    moved.append(g)
        self._changed(row, moved)

    def remove(self, row: Instance) -> None:
        moved: list[str] = []
        ip = row.private_ip if row.state not in _GONE else None
        rid = row.id
        for g in row.group_ids:
            m = self.members.get(g)
            if m is not None:
                i = bisect.bisect_left(m, rid)
                if i < len(m) and m[i] == rid:
                    del m[i]
                if not m:
                    del self.members[g]
            ips = self.sorted.get(g)
            if not ip or ips is None:
                continue
            extra = self.extra.get(g)
            n = extra.get(ip, 0) if extra is not None else 0
            if extra is not None and n:   # another member still has the address
                if n > 1:
                    extra[ip] = n - 1
                else:
                    del extra[ip]
                    if not extra:
                        del self.extra[g]
                continue
            i = bisect.bisect_left(ips, ip)
            if i == len(ips) or ips[i] != ip:
                continue   # (not counted in: no live address when it was added)
            del ips[i]
            if not ips:
                del self.sorted[g]
            moved.append(g)
        self._changed(row, moved)

    def update(self, old: Instance, new: Instance) -> None:
        """Most changes of a member (its state while it stays live, a timestamp) change neither
        its groups nor its live address: then only the row is replaced, and `changed` is told
        once, with no group moved (remove then add would have counted the address out and back)."""
        if old.group_ids != new.group_ids or old.private_ip != new.private_ip \
                or (old.state in _GONE) != (new.state in _GONE):
            self.remove(old)
            self.add(new)
            return
        self._changed(new, [])

    def ips(self, group_id: str) -> list[str]:
        """The live members' private addresses, sorted (the index's own list: not to be changed)."""
        return self.sorted.get(group_id, [])

    def get(self, group_id: str) -> list[str]:
        """The group's instances' ids, sorted (the index's own list: not to be changed)."""
        return self.members.get(group_id, [])


class SecurityGroups:
    def __init__(self, store: Store, tags: Tags, vpc_id: str, drivers: dict[str, HypervisorDriver],
                 work: KeyedWork) -> None:
        self.store = store
        self.tags = tags
        self.vpc_id = vpc_id
        self.drivers = drivers
        self.work = work                 # compute's: filters and domain changes in one order
        self.table = store.table(SecurityGroup)
        self.rules = store.table(SecurityGroupRule)
        self.instances = store.table(Instance)
        self._by_owner: MultiIndex[SecurityGroup] = self.table.add_index(MultiIndex(lambda g: g.owner))
        self._by_name: MultiIndex[SecurityGroup] = self.table.add_index(
            MultiIndex(lambda g: f"{g.owner}\x1f{g.vpc_id}\x1f{g.name}"))
        self._rules_of: MultiIndex[SecurityGroupRule] = self.rules.add_index(MultiIndex(lambda r: r.group_id))
        self._referrers: MultiIndex[SecurityGroupRule] = self.rules.add_index(MultiIndex(lambda r: r.peer_group_id))
        self._applied: dict[str, FirewallSpec] = {}   # given to the host, or queued for it
        self._ips: dict[str, tuple[str, ...]] = {}   # group -> its members' addresses, shared
        self._stale: set[str] = set()                # groups whose member list may have changed
        self._changed: set[str] = set()              # groups whose member list did change
        self._dirty: set[str] = set()                # instances whose filter may have changed
        self._dirty_groups: set[str] = set()         # groups whose rules changed
        self._flush_task: asyncio.Task[None] | None = None
        self._rulesets: dict[tuple[str, ...], tuple[tuple[FirewallRule, ...], tuple[FirewallRule, ...]]] = {}
        self._running = False
        self._others: dict[str, dict[str, str]] = {}              # group -> {member: address}, not instances
        self._other_of: dict[str, tuple[tuple[str, ...], str]] = {}  # such a member -> (its groups, address)
        self._watchers: list[Callable[[set[str]], None]] = []
        self._members: _MembersIndex = self.instances.add_index(_MembersIndex(self._instance_changed))
        tags.register("security-group", self._check_group)
        tags.register("security-group-rule", self._check_rule)
        self.filters = self._filter_set()
        self.rule_filters = FilterSet({
            "group-id": lambda r: r.group_id,
            "security-group-rule-id": lambda r: r.id,
        }, tags_of=lambda r: tags.of(r.id))

    def _filter_set(self) -> FilterSet:
        def over(egress: bool, get: Callable[[SecurityGroupRule], Any]) -> Callable[[SecurityGroup], list[Any]]:
            return lambda g: [v for r in self.rules_of(g.id) if r.egress == egress and (v := get(r)) is not None]

        fields: dict[str, Callable[[SecurityGroup], Any]] = {
            "group-id": lambda g: g.id,
            "group-name": lambda g: g.name,
            "vpc-id": lambda g: g.vpc_id,
            "description": lambda g: g.description,
            "owner-id": lambda g: g.owner,
        }
        for prefix, egress in (("ip-permission.", False), ("egress.ip-permission.", True)):
            fields.update({
                prefix + "protocol": over(egress, lambda r: r.protocol),
                prefix + "from-port": over(egress, lambda r: r.from_port),
                prefix + "to-port": over(egress, lambda r: r.to_port),
                prefix + "cidr": over(egress, lambda r: r.cidr),
                prefix + "group-id": over(egress, lambda r: r.peer_group_id),
                prefix + "group-name": over(egress, lambda r: self.name_of(r.peer_group_id)),
                prefix + "user-id": over(egress, lambda r: r.peer_owner),
                prefix + "ipv6-cidr": over(egress, lambda r: None),
                prefix + "prefix-list-id": over(egress, lambda r: None),
            })
        return FilterSet(fields, tags_of=lambda g: self.tags.of(g.id))

    # -- lookups -------------------------------------------------------------------------------
    def rules_of(self, group_id: str) -> list[SecurityGroupRule]:
        return sorted(self._rules_of.get(group_id).values(), key=lambda r: r.id)

    def name_of(self, group_id: str | None) -> str | None:
        g = self.table.get(group_id) if group_id else None
        return g.name if g is not None else None

    def _check_group(self, caller: Caller, group_id: str) -> None:
        self._group_by_id(caller, group_id)

    def _check_rule(self, caller: Caller, rule_id: str) -> None:
        r = self.rules.get(rule_id)
        if r is None or r.owner != caller.account:
            raise CloudError.not_found("InvalidSecurityGroupRuleId.NotFound",
                                       f"The security group rule ID '{rule_id}' does not exist")

    def _group_by_id(self, caller: Caller, group_id: str) -> SecurityGroup:
        if not well_formed(group_id or "", "sg"):
            raise CloudError("InvalidGroupId.Malformed", f"Invalid id: \"{group_id}\" (expecting \"sg-...\")")
        g = self.table.get(group_id)
        if g is None or g.owner != caller.account:
            raise CloudError.not_found("InvalidGroup.NotFound", f"The security group '{group_id}' does not exist")
        return g

    def _group_by_name(self, owner: str, name: str) -> SecurityGroup | None:
        found = self._by_name.get(f"{owner}\x1f{self.vpc_id}\x1f{name}")
        return next(iter(found.values()), None)

    def _named(self, caller: Caller, name: str, pending: dict[str, SecurityGroup]) -> SecurityGroup:
        g = pending.get(name) or self._group_by_name(caller.account, name)
        if g is None:
            if name == DEFAULT:   # exists for every account, made on first use
                return self._new_default(caller.account, pending)
            raise CloudError.not_found("InvalidGroup.NotFound",
                                       f"The security group '{name}' does not exist in default VPC '{self.vpc_id}'")
        return g

    def group(self, caller: Caller, group_id: str | None, group_name: str | None,
              pending: dict[str, SecurityGroup]) -> SecurityGroup:
        """The caller's group by id or else by name (`pending` holds a default group not yet stored)."""
        if group_id:
            return self._group_by_id(caller, group_id)
        if group_name:
            return self._named(caller, group_name, pending)
        raise CloudError("MissingParameter", "The request must contain the parameter groupId or groupName")

    # -- the default group ---------------------------------------------------------------------
    def _new_default(self, owner: str, pending: dict[str, SecurityGroup]) -> SecurityGroup:
        g = SecurityGroup(id=new_id("sg"), owner=owner, vpc_id=self.vpc_id, name=DEFAULT,
                          description="default VPC security group", created=time.time())
        pending[DEFAULT] = g
        return g

    def store_pending(self, tx: Txn, pending: dict[str, SecurityGroup]) -> None:
        """Write a default group that a call needed (with its rules) in the call's transaction."""
        g = pending.get(DEFAULT)
        if g is None or self.table.get(g.id) is not None:
            return
        tx.put(g)
        tx.put(self._rule(g, NewRule(False, "-1", None, None, None, g.id, g.owner)))
        tx.put(self._rule(g, NewRule(True, "-1", None, None, ANYWHERE, None, None)))

    # -- CreateSecurityGroup / DeleteSecurityGroup ---------------------------------------------
    async def create(self, caller: Caller, name: str | None, description: str | None, vpc_id: str | None = None,
                     tags: TagPairs = ()) -> SecurityGroup:
        """A group in the VPC, allowing all egress; the name is the caller's to pick, once."""
        if not name:
            raise CloudError("MissingParameter", "The request must contain the parameter groupName")
        if description is None or description == "":
            raise CloudError("MissingParameter", "The request must contain the parameter groupDescription")
        for what, text in (("groupName", name), ("GroupDescription", description)):
            if len(text) > MAX_TEXT:
                raise CloudError("InvalidParameterValue",
                                 f"Invalid value '{text[:40]}...' for {what}. Length exceeds maximum of 255 characters")
            if not TEXT.match(text):
                raise CloudError("InvalidParameterValue",
                                 f"Invalid value '{text}' for {what}. Character sets beyond ASCII are not supported.")
        if name.lower().startswith("sg-"):
            raise CloudError("InvalidParameterValue",
                             f"Invalid value '{name}' for groupName. Group names may not be in the format sg-*.")
        vpc = vpc_id or self.vpc_id
        if vpc != self.vpc_id:
            raise CloudError.not_found("InvalidVpcID.NotFound", f"The vpc ID '{vpc}' does not exist")
        if name == DEFAULT:
            raise CloudError("InvalidGroup.Reserved", "The security group 'default' is reserved")
        if self._group_by_name(caller.account, name) is not None:
            raise CloudError.conflict("InvalidGroup.Duplicate",
                                      f"The security group '{name}' already exists for VPC '{self.vpc_id}'")
        caller.check_dry_run()
        g = SecurityGroup(id=new_id("sg"), owner=caller.account, vpc_id=self.vpc_id, name=name,
                          description=description, created=time.time())
        with self.store.txn() as tx:
            tx.put(g)
            tx.put(self._rule(g, NewRule(True, "-1", None, None, ANYWHERE, None, None)))
            if tags:
                self.tags.put(tx, caller.account, g.id, "security-group", list(tags))
        await self.store.sync()
        return g

    def in_use_by(self, group_id: str) -> list[str]:
        rows = self.instances.rows
        return sorted([i for i in self._members.get(group_id) if rows[i].state != "terminated"]
                      + list(self._others.get(group_id, ())))

    async def delete(self, caller: Caller, gid: str | None, name: str | None) -> SecurityGroup:
        """The caller's group by id, else by name; not the default one, nor one in use or referred to."""
        if gid:
            g = self._group_by_id(caller, gid)
        elif name:
            found = self._group_by_name(caller.account, name)
            if found is None:
                raise CloudError.not_found("InvalidGroup.NotFound",
                                           f"The security group '{name}' does not exist in default VPC '{self.vpc_id}'")
            g = found
        else:
            raise CloudError("MissingParameter", "The request must contain the parameter groupId or groupName")
        if g.name == DEFAULT:
            raise CloudError("CannotDelete", f"the specified group: \"{g.id}\" name: \"default\" "
                                             f"cannot be deleted by a user")
        if self.in_use_by(g.id):
            raise CloudError.conflict("DependencyViolation", f"resource {g.id} has a dependent object")
        if any(r.group_id != g.id for r in self._referrers.get(g.id).values()):
            raise CloudError.conflict("DependencyViolation", f"resource {g.id} has a dependent object")
        caller.check_dry_run()
        with self.store.txn() as tx:
            for r in list(self._rules_of.get(g.id).values()):
                tx.delete(r)
                self.tags.remove_all(tx, r.id)
            tx.delete(g)
            self.tags.remove_all(tx, g.id)
        await self.store.sync()
        return g

    # -- DescribeSecurityGroups / DescribeSecurityGroupRules -----------------------------------
    async def describe(self, caller: Caller, query: Query,
                       names: tuple[str, ...] = ()) -> tuple[list[SecurityGroup], str | None]:
        """The caller's groups (`query.ids`, and `names`: those only); the caller's default group
        is made if it does not exist yet, as EC2 shows one to every account."""
        ids = query.ids
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "security-groups", list(names))
        pool: dict[str, SecurityGroup] = {}
        for gid in ids:
            g = self._group_by_id(caller, gid)
            pool[g.id] = g
        pending: dict[str, SecurityGroup] = {}
        for name in names:
            g = self._named(caller, name, pending)
            pool[g.id] = g
        caller.check_dry_run()
        if self._group_by_name(caller.account, DEFAULT) is None:
            pending.setdefault(DEFAULT, self._new_default(caller.account, {}))
        if pending:
            with self.store.txn() as tx:
                self.store_pending(tx, pending)
            await self.store.sync()
        if not ids and not names:
            pool = dict(self._by_owner.get(caller.account))
        rows = {k: g for k, g in pool.items() if match(g)} if match else pool
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    def describe_rules(self, caller: Caller, query: Query) -> tuple[list[SecurityGroupRule], str | None]:
        ids = query.ids
        match = self.rule_filters.compile(query.filters)
        page = query.page(5, 1000, "security-group-rules")
        if ids:
            pool = {r.id: r for r in self._rules_by_id(caller, ids)}
        else:
            gids = match.exact_values("group-id")
            source = ([r for gid in gids for r in self._rules_of.get(gid).values()] if gids is not None
                      else self.rules.values())
            pool = {r.id: r for r in source if r.owner == caller.account}
        caller.check_dry_run()
        rows = {k: r for k, r in pool.items() if match(r)} if match else pool
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    def _rules_by_id(self, caller: Caller, ids: Iterable[str]) -> list[SecurityGroupRule]:
        out = []
        for rid in ids:
            if not well_formed(rid, "sgr"):
                raise CloudError("InvalidSecurityGroupRuleId.Malformed",
                                 f"Invalid id: \"{rid}\" (expecting \"sgr-...\")")
            r = self.rules.get(rid)
            if r is None or r.owner != caller.account:
                raise CloudError.not_found("InvalidSecurityGroupRuleId.NotFound",
                                           f"The security group rule ID '{rid}' does not exist")
            out.append(r)
        return out

    # -- Authorize / Revoke --------------------------------------------------------------------
    def _target(self, caller: Caller, change: RuleChange, pending: dict[str, SecurityGroup]) -> SecurityGroup:
        if change.egress and not change.group_id:
            raise CloudError("MissingParameter", "The request must contain the parameter groupId")
        return self.group(caller, change.group_id, change.group_name, pending)

    def permissions(self, caller: Caller, perms: Iterable[Permission], egress: bool,
                    pending: dict[str, SecurityGroup]) -> list[NewRule]:
        """The rules some permissions name, one per range or peer, their values checked and their
        peer groups looked up; none at all is refused."""
        out: list[NewRule] = []
        for p in perms:
            proto = check.protocol(p.protocol)
            lo, hi = check.ports(proto, p.from_port, p.to_port)
            if p.ipv6_ranges or p.prefix_lists:
                raise CloudError("InvalidParameterValue",
                                 "IPv6 ranges and prefix lists are not supported by this cloud")
            if not p.ranges and not p.peers:
                raise CloudError("InvalidParameterValue",
                                 "An IpPermission must name at least one IpRange or UserIdGroupPair")
            for rng in p.ranges:
                out.append(NewRule(egress, proto, lo, hi, check.cidr(rng.cidr), None, None,
                                   check.rule_description(rng.description)))
            for pair in p.peers:
                peer = self._peer(caller, pair, pending)
                out.append(NewRule(egress, proto, lo, hi, None, peer.id, peer.owner,
                                   check.rule_description(pair.description)))
        if not out:
            raise CloudError("MissingParameter", "The request must contain the parameter ipPermissions")
        return out

    def _peer(self, caller: Caller, pair: GroupPeer, pending: dict[str, SecurityGroup]) -> SecurityGroup:
        owner = pair.user_id or caller.account
        gid, name = pair.group_id, pair.group_name
        if gid:
            if not well_formed(gid, "sg"):
                raise CloudError("InvalidGroupId.Malformed", f"Invalid id: \"{gid}\" (expecting \"sg-...\")")
            g = self.table.get(gid)
            # another account's group may be named by its id (both accounts share the VPC)
            if g is None or (g.owner != caller.account and g.owner != pair.user_id):
                raise CloudError.not_found("InvalidGroup.NotFound", f"The security group '{gid}' does not exist")
            return g
        if name:
            if owner == caller.account:
                return self._named(caller, name, pending)
            found = self._group_by_name(owner, name)
            if found is None:
                raise CloudError.not_found("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
            return found
        raise CloudError("MissingParameter", "A UserIdGroupPair must contain GroupId or GroupName")

    def _rule(self, g: SecurityGroup, p: NewRule) -> SecurityGroupRule:
        return SecurityGroupRule(id=new_id("sgr"), group_id=g.id, owner=g.owner, egress=p.egress,
                                 protocol=p.protocol, from_port=p.from_port, to_port=p.to_port, cidr=p.cidr,
                                 peer_group_id=p.peer_group_id, peer_owner=p.peer_owner, description=p.description)

    async def authorize(self, caller: Caller, change: RuleChange) -> list[SecurityGroupRule]:
        pending: dict[str, SecurityGroup] = {}
        g = self._target(caller, change, pending)
        perms = self.permissions(caller, change.permissions, change.egress, pending)
        have = {identity(r) for r in self._rules_of.get(g.id).values()}
        seen: set[tuple[Any, ...]] = set()
        for p in perms:
            if p.identity in have or p.identity in seen:
                raise CloudError.conflict("InvalidPermission.Duplicate",
                                          f'the specified rule "{p.text()}" already exists')
            seen.add(p.identity)
        caller.check_dry_run()
        added = [self._rule(g, p) for p in perms]
        with self.store.txn() as tx:
            self.store_pending(tx, pending)
            for r in added:
                tx.put(r)
                if change.tags:
                    self.tags.put(tx, g.owner, r.id, "security-group-rule", list(change.tags))
        await self.store.sync()
        self.refresh_groups([g.id])
        return added

    async def revoke(self, caller: Caller, change: RuleChange) -> list[SecurityGroupRule]:
        """Remove the rules named by id and by permission; any not in the group fails the call."""
        pending: dict[str, SecurityGroup] = {}
        g = self._target(caller, change, pending)
        if any(p.ipv6_ranges or p.prefix_lists for p in change.permissions):
            # authorize refuses such rules, so none exists: revoking one is "not found" (Terraform
            # revokes the IPv6 egress rule AWS gives every new group, and ignores only this code)
            raise CloudError.not_found("InvalidPermission.NotFound",
                                       "The specified rule does not exist in this security group.")
        current = {identity(r): r for r in self._rules_of.get(g.id).values()}
        gone: dict[str, SecurityGroupRule] = {}
        if change.rule_ids:
            for r in self._rules_by_id(caller, change.rule_ids):
                if r.group_id != g.id or r.egress != change.egress:
                    raise CloudError.not_found("InvalidSecurityGroupRuleId.NotFound",
                                               f"The security group rule ID '{r.id}' does not exist in {g.id}")
                gone[r.id] = r
        if change.permissions or not change.rule_ids:
            for p in self.permissions(caller, change.permissions, change.egress, pending):
                r = current.get(p.identity)
                if r is None:
                    raise CloudError.not_found("InvalidPermission.NotFound",
                                               "The specified rule does not exist in this security group.")
                gone[r.id] = r
        caller.check_dry_run()
        with self.store.txn() as tx:
            for r in gone.values():
                tx.delete(r)
                self.tags.remove_all(tx, r.id)
        await self.store.sync()
        self.refresh_groups([g.id])
        return list(gone.values())

    # -- instances' groups ---------------------------------------------------------------------
    def for_launch(self, caller: Caller, ids: Iterable[str], names: Iterable[str],
                   pending: dict[str, SecurityGroup]) -> list[str]:
        """The group ids a launch names by id and by name, validated; none named means the default
        group (made into `pending` if the caller has none yet)."""
        out = [self._group_by_id(caller, gid).id for gid in ids]
        for name in names:
            g = self._named(caller, name, pending)
            out.append(g.id)
        if not out:
            out.append(self._named(caller, DEFAULT, pending).id)
        return list(dict.fromkeys(out))

    def group_ids_for(self, caller: Caller, ids: Iterable[str]) -> list[str]:
        """Validate the group ids an instance is to be given (ModifyInstanceAttribute)."""
        out = [self._group_by_id(caller, gid).id for gid in ids]
        if not out:
            raise CloudError("InvalidParameterValue", "An instance must be in at least one security group")
        return list(dict.fromkeys(out))

    def groups_of(self, inst: Instance) -> list[tuple[str, str]]:
        """(id, name) of an instance's groups that still exist."""
        return [(gid, g.name) for gid in inst.group_ids if (g := self.table.get(gid)) is not None]

    def members_of(self, group_ids: Iterable[str]) -> set[str]:
        return {iid for gid in group_ids for iid in self._members.get(gid)}

    # -- the filters on the hosts --------------------------------------------------------------
    # Changes are collected and applied together a moment later (`_flush`): a launch changes the
    # filter of every member of every group that admits the new instance's groups, and a burst
    # of launches should cost one pass over those members, not one per launch. Member address
    # lists are cached per group and shared by all the specs naming them; a list is replaced
    # only when its content changes, so "same object" means "unchanged" when comparing specs.

    def _instance_changed(self, row: Instance, moved: list[str]) -> None:
        """Called by the members index on every change of an instance row, with the groups
        whose member addresses that changed."""
        self._dirty.add(row.id)
        if moved:
            self._stale.update(moved)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_task is None and self._running:
            self._flush_task = self.work.spawn(self._flush())

    # -- members that are not instances (load balancers) ----------------------------------------
    def set_member(self, key: str, address: str | None, group_ids: Iterable[str]) -> None:
        """`key` (a load balancer's id) is, as committed now, a member of `group_ids` at `address`
        (None or no groups: of none). Its groups' member lists follow in the next pass."""
        groups = tuple(dict.fromkeys(group_ids))
        new = (groups, address) if groups and address else None
        old = self._other_of.pop(key, None)
        if old == new:
            if old is not None:
                self._other_of[key] = old
            return
        if old is not None:
            for g in old[0]:
                m = self._others.get(g)
                if m is not None:
                    m.pop(key, None)
                    if not m:
                        del self._others[g]
            self._stale.update(old[0])
        if new is not None:
            self._other_of[key] = new
            for g in groups:
                self._others.setdefault(g, {})[key] = new[1]
            self._stale.update(groups)
        self._schedule()

    def watch(self, changed: Callable[[set[str]], None]) -> None:
        """Call `changed` with the non-instance members whose groups' ingress may have changed
        (their rules, or the members of a group they name), once per pass."""
        self._watchers.append(changed)

    def ingress_for(self, group_ids: Iterable[str]) -> tuple[FirewallRule, ...]:
        """What a member of exactly these groups may receive (for a load balancer's proxy)."""
        key = tuple(group_ids)
        ruleset = self._rulesets.get(key)
        if ruleset is None:
            ruleset = self._rulesets[key] = self._ruleset(key)
        return ruleset[0]

    def _ips_of(self, group_id: str) -> tuple[str, ...]:
        old = self._ips.get(group_id)
        if old is not None and group_id not in self._stale:
            return old
        self._stale.discard(group_id)
        others = self._others.get(group_id)
        ips = self._members.ips(group_id)
        new = tuple(sorted({*ips, *others.values()})) if others else tuple(ips)
        if old is not None and old == new:
            return old
        self._ips[group_id] = new
        self._changed.add(group_id)
        return new

    def member_ips(self, group_id: str) -> list[str]:
        return list(self._ips_of(group_id))

    def spec_for(self, inst: Instance) -> FirewallSpec | None:
        if not inst.private_ip or not inst.mac or inst.state in _GONE:
            return None
        key = tuple(inst.group_ids)
        ruleset = self._rulesets.get(key)
        if ruleset is None:
            ruleset = self._rulesets[key] = self._ruleset(key)
        return FirewallSpec(name=inst.id, mac=inst.mac, ip=inst.private_ip, ingress=ruleset[0], egress=ruleset[1])

    def _ruleset(self, group_ids: tuple[str, ...]) -> tuple[tuple[FirewallRule, ...], tuple[FirewallRule, ...]]:
        """What members of exactly these groups may receive and send; shared by all of them."""
        rules: dict[tuple[Any, ...], FirewallRule] = {}
        for gid in group_ids:
            for r in self._rules_of.get(gid).values():
                peer = r.cidr or f"sg:{r.peer_group_id}"
                key = (r.egress, r.protocol, -2 if r.from_port is None else r.from_port,
                       -2 if r.to_port is None else r.to_port, peer)
                if key in rules:
                    continue
                peers = (r.cidr,) if r.cidr else self._ips_of(r.peer_group_id or "")
                if peers:
                    rules[key] = FirewallRule("all" if r.protocol == "-1" else r.protocol, r.from_port,
                                              r.to_port, peers)
        ordered = sorted(rules.items(), key=lambda kv: kv[0])
        return tuple(v for k, v in ordered if not k[0]), tuple(v for k, v in ordered if k[0])

    def _forget_rulesets(self, groups: set[str]) -> None:
        if groups:
            for key in [k for k in self._rulesets if groups.intersection(k)]:
                del self._rulesets[key]

    def refresh_groups(self, group_ids: Iterable[str]) -> None:
        """The rules of these groups changed: their members' filters follow."""
        self._dirty_groups.update(group_ids)
        self._forget_rulesets(set(group_ids))
        self._schedule()

    async def _flush(self) -> None:
        """One pass at a time, at most every FLUSH_DELAY_S."""
        await asyncio.sleep(FLUSH_DELAY_S)
        try:
            await self._pass()
        finally:
            self._flush_task = None
        if self._dirty or self._dirty_groups or self._stale or self._changed:
            self._schedule()

    async def _pass(self) -> None:
        for gid in list(self._stale):
            self._ips_of(gid)
        changed, self._changed = self._changed, set()
        admitting = {r.group_id for gid in changed for r in self._referrers.get(gid).values()}
        self._forget_rulesets(admitting | self._dirty_groups)
        if self._watchers and self._other_of:
            moved = admitting | self._dirty_groups
            others = {k for k, (groups, _) in self._other_of.items() if moved.intersection(groups)}
            if others:
                for w in self._watchers:
                    w(others)
        ids = self._dirty | self.members_of(self._dirty_groups | admitting)
        self._dirty, self._dirty_groups = set(), set()
        for n, iid in enumerate(ids):
            if n % 512 == 511:
                await asyncio.sleep(0)   # long passes must not stall the loop
            inst = self.instances.get(iid)
            driver = self.drivers.get(inst.host) if inst is not None else None
            spec = self.spec_for(inst) if inst is not None else None
            if driver is None or spec is None or _same(self._applied.get(iid), spec):
                continue
            self._applied[iid] = spec
            if driver.records_firewall_only:   # a simulated host: nothing to wait for
                await self._set(driver, iid, spec)
            else:   # after the instance's queued work (its launch defines the domain after this)
                self.work.run((iid,), self._set(driver, iid, spec))

    async def _set(self, driver: HypervisorDriver, iid: str, spec: FirewallSpec) -> None:
        inst = self.instances.get(iid)
        if inst is None or inst.state in _GONE:
            return   # termination removes the filter itself
        try:
            await driver.set_firewall(iid, spec)
        except HypervisorError as e:
            log.error("security groups of %s on %s: %s; trying again in %.0f s", iid, inst.host, e, RETRY_S)
            self._applied.pop(iid, None)
            self.work.spawn(self._retry(iid))

    async def _retry(self, iid: str) -> None:
        await asyncio.sleep(RETRY_S)
        self._dirty.add(iid)
        self._schedule()

    async def apply(self, driver: HypervisorDriver, inst: Instance) -> None:
        """Give the instance's host its current filter (before its domain is defined)."""
        spec = self.spec_for(inst)
        if spec is None or _same(self._applied.get(inst.id), spec):
            return
        self._applied[inst.id] = spec
        try:
            await driver.set_firewall(inst.id, spec)
        except HypervisorError:
            self._applied.pop(inst.id, None)
            raise

    async def remove(self, driver: HypervisorDriver, iid: str) -> None:
        """After the domain is gone."""
        self._applied.pop(iid, None)
        await driver.remove_firewall(iid)

    def start(self) -> None:
        """At start-up, once the hosts are connected: every live instance's filter, once
        (hosts may have lost or kept them), then changes as they come."""
        self._running = True
        self._dirty.update(i.id for i in self.instances.values() if i.state not in _GONE and i.group_ids)
        self._schedule()


def _same(a: FirewallSpec | None, b: FirewallSpec) -> bool:
    if a is None or a.mac != b.mac or a.ip != b.ip or \
            len(a.ingress) != len(b.ingress) or len(a.egress) != len(b.egress):
        return False
    if a.ingress is b.ingress and a.egress is b.egress:
        return True
    for x, y in zip(a.ingress + a.egress, b.ingress + b.egress):
        if (x.protocol, x.from_port, x.to_port) != (y.protocol, y.from_port, y.to_port):
            return False
        if x.peers is not y.peers and (len(x.peers) != len(y.peers) or x.peers != y.peers):
            return False
    return True
