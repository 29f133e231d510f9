"""Classic Elastic Load Balancing: load balancers as rows, each change one journaled put.

A load balancer is one `LoadBalancer` row (listeners, registered instances, health check,
attributes, policies and tags inside it), so every action is one transaction and a crash keeps
either all of a change or none. Names are unique per account; each load balancer also has an id
of its own (`elb-…`), the name of its proxy in the data plane. Its address (the DNSName) is taken
when it is made: a lease from the subnet of its first zone or subnet when that subnet has a
bridge (the guests' plumbing), else the next free address of `elb.loopback_pool`.
After the commit the data plane is told (dataplane.py); the answer does not wait for the proxy.
Its security groups count its address among their members (so an instance rule naming one
admits its traffic) and filter what reaches its proxy, where it has a namespace of its own.
"""
from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...config import Config
from ...drivers.loadbalancer.base import IngressRule, LoadBalancerDriver
from ...store.records import Instance, LoadBalancer, SecurityGroup
from ...store.store import Index, MultiIndex, Store, Txn
from ..context import Caller
from ..errors import CloudError, ErrorKind
from ..ids import random_hex
from ..network import Networks, Subnet
from ..security_groups import SecurityGroups
from ..tasks import Supervisor
from . import errors as err
from .dataplane import DataPlane
from .health import InstanceHealth, health_of
from .model import (
    DEFAULT_ATTRIBUTES,
    MAX_POLICIES,
    MAX_TAGS,
    POLICY_TYPES,
    SCHEMES,
    STICKINESS,
    AttributeChanges,
    HealthCheckDef,
    ListenerDef,
    apply_attributes,
    check_listeners,
    check_name,
    check_tags,
)

MAX_PAGE = 400


class Elb:
    def __init__(self, store: Store, config: Config, network: Networks, driver: LoadBalancerDriver,
                 tasks: Supervisor, security_groups: SecurityGroups | None = None) -> None:
        self.store = store
        self.config = config.elb
        self.region = config.region
        self.zones = tuple(config.zones)
        self.network = network
        self.table = store.table(LoadBalancer)
        self.instances = store.table(Instance)
        self.groups = store.table(SecurityGroup)
        self._by_owner: MultiIndex[LoadBalancer] = self.table.add_index(MultiIndex(lambda lb: lb.owner))
        self._by_name: MultiIndex[LoadBalancer] = self.table.add_index(
            MultiIndex(lambda lb: f"{lb.owner}\x1f{lb.name}"))
        self._by_address: MultiIndex[LoadBalancer] = self.table.add_index(MultiIndex(lambda lb: lb.address))
        self.pool = ipaddress.IPv4Network(self.config.loopback_pool)
        self.tasks = tasks
        self.plane = DataPlane(driver, self.table, self.instances, network.subnets.get, tasks, self.config.stats_page,
                               self.ingress if security_groups is not None else None)
        self.security_groups = security_groups
        if security_groups is not None:
            self.table.add_index(_GroupMembers(security_groups))
            security_groups.watch(self._groups_changed)

    def _groups_changed(self, ids: set[str]) -> None:
        for lb_id in ids:
            if lb_id in self.table.rows:
                self.plane.changed(lb_id)

    def ingress(self, lb: LoadBalancer) -> tuple[IngressRule, ...] | None:
        """What its security groups let reach its proxy (peer groups as member addresses); None
        (unfiltered) without groups: cloudctl gives a load balancer none unless asked."""
        if self.security_groups is None or not lb.security_groups:
            return None
        return tuple(IngressRule(r.protocol, r.from_port, r.to_port, r.peers)
                     for r in self.security_groups.ingress_for(lb.security_groups))

    def start(self) -> None:
        """Supervise the proxies: the first round (now) recreates or adopts every load balancer's."""
        self.tasks.spawn("elb", self.plane.supervise(), "elb first supervision")
        self.tasks.every("elb", self.config.refresh_s, self.plane.supervise)

    async def close(self) -> None:
        await self.plane.close(remove=self.config.remove_proxies_on_stop)

    def report(self) -> list[dict[str, Any]]:
        """Every load balancer and its proxy, for the administrator (`GET /v0/load-balancers`)."""
        out = []
        for lb in sorted(self.table.values(), key=lambda lb: (lb.owner, lb.name)):
            s = self.plane.reading(lb.id)
            out.append({"id": lb.id, "name": lb.name, "owner": lb.owner, "address": lb.address,
                        "ports": [x["port"] for x in lb.listeners], "instances": len(lb.instances),
                        "proxy": self.plane.proxy_state(lb), "read_at": s.seen_at if s else None,
                        "healthy": s.healthy if s else None, "unhealthy": s.unhealthy if s else None})
        return out

    def stats_page_socket(self, lb_id: str) -> Path | None:
        """Where the proxy serves its statistics page, if `elb.stats_page` is on and the data plane
        has one (HAProxy: a unix socket, never on the network)."""
        where = getattr(self.plane.driver, "stats_page_socket", None)
        if not self.config.stats_page or where is None or self.table.get(lb_id) is None:
            return None
        return Path(where(lb_id))

    # -- lookups ---------------------------------------------------------------------------------
    def _get(self, account: str, name: str) -> LoadBalancer:
        lb = self._by_name.first(f"{account}\x1f{name}")
        if lb is None:
            raise err.lb_not_found(name)
        return lb

    def get(self, caller: Caller, name: str) -> LoadBalancer:
        return self._get(caller.account, name)

    def of_owner(self, account: str) -> Mapping[str, LoadBalancer]:
        return self._by_owner.get(account)

    def dns_name(self, lb: LoadBalancer) -> str:
        """The DNSName: the proxy's address itself, which clients reach without a resolver."""
        return lb.address

    def hosted_zone_id(self) -> str:
        return "Z" + hashlib.sha256(self.region.encode()).hexdigest()[:13].upper()

    async def _commit(self, old: LoadBalancer | None, new: LoadBalancer | None) -> None:
        with self.store.txn() as tx:
            if new is not None:
                tx.put(new)
            elif old is not None:
                tx.delete(old)
                if old.leased:
                    self.network.release(tx, old.address)
        await self.store.sync()
        self.plane.changed((new or old).id)   # type: ignore[union-attr]

    # -- load balancers --------------------------------------------------------------------------
    async def create(self, caller: Caller, name: str, listeners: Sequence[ListenerDef], zones: Sequence[str],
                     subnets: Sequence[str], security_groups: Sequence[str], scheme: str | None,
                     tags: Sequence[tuple[str, str]], system_tags: Sequence[tuple[str, str]] = ()) -> LoadBalancer:
        """`system_tags`: `aws:` tags the cloud's own services set (CloudFormation's), never from a wire:
        users may not set or remove them, and they do not count against the limit."""
        check_name(name)
        if not listeners:
            raise err.invalid("Listeners must name at least one listener.")
        listeners = check_listeners(listeners)
        scheme = scheme or "internet-facing"
        if scheme not in SCHEMES:
            raise err.invalid(f"Invalid scheme '{scheme}': expected internet-facing or internal.")
        if zones and subnets:
            raise err.invalid("Give either AvailabilityZones or Subnets, not both.")
        if not zones and not subnets:
            raise err.invalid("Either AvailabilityZones or Subnets must be given.")
        zones, subnet_rows = self._zones(zones), self._subnets(subnets)
        groups = self._groups(caller, security_groups)
        tagmap = check_tags(tags)
        if len(tagmap) > MAX_TAGS:
            raise err.too_many_tags(MAX_TAGS, name)
        tagmap.update(system_tags)
        if self._by_name.first(f"{caller.account}\x1f{name}") is not None:
            raise err.duplicate_name(name)
        if len(self._by_owner.get(caller.account)) >= self.config.max_load_balancers_per_user:
            raise err.too_many(self.config.max_load_balancers_per_user)
        caller.check_dry_run()
        placed = subnet_rows[0] if subnet_rows else self.network.default_for(zones[0])
        lb_id = "elb-" + random_hex(17)
        address = None if placed.bridge else self._loopback_address()
        with self.store.txn() as tx:
            if address is None:
                address, leased = self._lease(tx, placed, lb_id), True
            else:
                leased = False
            lb = LoadBalancer(
                id=lb_id, owner=caller.account, name=name, created=time.time(), address=address, leased=leased,
                placement_subnet=placed.id, scheme=scheme,
                zones=tuple(zones) if zones else tuple(dict.fromkeys(s.zone for s in subnet_rows)),
                subnets=tuple(s.id for s in subnet_rows), security_groups=tuple(groups),
                listeners=tuple(x.row() for x in listeners),
                health_check=HealthCheckDef.default_for(listeners[0]).row(),
                attributes=dict(DEFAULT_ATTRIBUTES), tags=tagmap)
            tx.put(lb)
        await self.store.sync()
        self.plane.changed(lb.id)
        return lb

    def _loopback_address(self) -> str:
        for addr in self.pool.hosts():
            if not self._by_address.get(str(addr)):
                return str(addr)
        raise err.no_address(f"the cloud's loopback pool {self.pool} for load balancers")

    def _lease(self, tx: Txn, subnet: Subnet, lb_id: str) -> str:
        try:
            return self.network.allocate(tx, subnet, lb_id)
        except CloudError as e:
            if e.kind is ErrorKind.CAPACITY:
                raise err.no_address(f"subnet {subnet.id} ({subnet.net})") from None
            raise

    async def delete(self, caller: Caller, name: str) -> None:
        """Deleting a load balancer that does not exist succeeds, as in ELB."""
        check_name(name)
        lb = self._by_name.first(f"{caller.account}\x1f{name}")
        caller.check_dry_run()
        if lb is not None:
            await self._commit(lb, None)

    def describe(self, caller: Caller, names: Sequence[str], marker: str | None,
                 page_size: int | None) -> tuple[list[LoadBalancer], str | None]:
        if page_size is not None and not 1 <= page_size <= MAX_PAGE:
            raise err.invalid(f"PageSize must be between 1 and {MAX_PAGE}.")
        if names:
            found = [self._get(caller.account, n) for n in dict.fromkeys(names)]
        else:
            found = sorted(self._by_owner.get(caller.account).values(), key=lambda lb: lb.name)
        if marker:
            found = [lb for lb in found if lb.name > marker] if not names else found[_index(marker, len(found)):]
        limit = page_size or MAX_PAGE
        page = found[:limit]
        more = len(found) > limit
        if not more:
            return page, None
        return page, (page[-1].name if not names else str(_index(marker, len(found)) + limit))

    # -- listeners -------------------------------------------------------------------------------
    async def create_listeners(self, caller: Caller, name: str, listeners: Sequence[ListenerDef]) -> None:
        lb = self.get(caller, name)
        if not listeners:
            raise err.invalid("Listeners must name at least one listener.")
        new = check_listeners(listeners, [ListenerDef.from_row(x) for x in lb.listeners])
        caller.check_dry_run()
        if new:
            rows = sorted((*lb.listeners, *(x.row() for x in new)), key=lambda x: x["port"])
            await self._commit(lb, replace(lb, listeners=tuple(rows)))

    async def delete_listeners(self, caller: Caller, name: str, ports: Sequence[int]) -> None:
        """Ports without a listener are ignored, as ELB does; the last listener may go too."""
        lb = self.get(caller, name)
        if not ports:
            raise err.invalid("LoadBalancerPorts must name at least one port.")
        caller.check_dry_run()
        keep = tuple(x for x in lb.listeners if x["port"] not in set(ports))
        if keep != lb.listeners:
            await self._commit(lb, replace(lb, listeners=keep))

    # -- instances -------------------------------------------------------------------------------
    def _instances(self, account: str, ids: Sequence[str]) -> list[str]:
        bad = []
        for iid in ids:
            inst = self.instances.get(iid)
            if inst is None or inst.owner != account or inst.state == "terminated":
                bad.append(iid)
        if bad:
            raise err.invalid_instance(bad)
        return list(dict.fromkeys(ids))

    async def register_instances(self, caller: Caller, name: str, ids: Sequence[str]) -> list[str]:
        """Register instances; the answer lists every instance registered afterwards."""
        lb = self.get(caller, name)
        if not ids:
            raise err.invalid("Instances must name at least one instance.")
        ids = self._instances(caller.account, ids)
        caller.check_dry_run()
        now = tuple(dict.fromkeys((*lb.instances, *ids)))
        if now != lb.instances:
            await self._commit(lb, replace(lb, instances=now))
        return list(now)

    async def deregister_instances(self, caller: Caller, name: str, ids: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        if not ids:
            raise err.invalid("Instances must name at least one instance.")
        missing = [i for i in dict.fromkeys(ids) if i not in lb.instances]
        if missing:
            raise err.not_registered(missing, name)
        caller.check_dry_run()
        now = tuple(i for i in lb.instances if i not in set(ids))
        await self._commit(lb, replace(lb, instances=now))
        return list(now)

    def instance_health(self, caller: Caller, name: str, ids: Sequence[str]) -> list[InstanceHealth]:
        lb = self.get(caller, name)
        wanted = list(dict.fromkeys(ids)) if ids else list(lb.instances)
        missing = [i for i in wanted if i not in lb.instances]
        if missing:
            raise err.not_registered(missing, name)
        return [self._health(lb, i) for i in wanted]

    def _health(self, lb: LoadBalancer, iid: str) -> InstanceHealth:
        hc = lb.health_check
        return health_of(iid, self.instances.get(iid), self.plane.reading(lb.id), time.time(), hc["interval"],
                         hc["unhealthy"])

    async def configure_health_check(self, caller: Caller, name: str, hc: HealthCheckDef) -> HealthCheckDef:
        lb = self.get(caller, name)
        hc = hc.checked()
        caller.check_dry_run()
        if hc.row() != lb.health_check:
            await self._commit(lb, replace(lb, health_check=hc.row()))
        return hc

    # -- zones, subnets, security groups -----------------------------------------------------------
    def _zones(self, zones: Sequence[str]) -> list[str]:
        bad = [z for z in zones if z not in self.zones]
        if bad:
            raise err.invalid(f"Invalid Availability Zone: {bad[0]}")
        return list(dict.fromkeys(zones))

    def _subnets(self, ids: Sequence[str]) -> list[Subnet]:
        missing = [s for s in ids if s not in self.network.subnets]
        if missing:
            raise err.subnet_not_found(missing)
        rows = [self.network.subnets[s] for s in dict.fromkeys(ids)]
        zones = [s.zone for s in rows]
        if len(set(zones)) != len(zones):
            raise err.invalid_config("A load balancer can be attached to only one subnet per Availability Zone.")
        return rows

    def _groups(self, caller: Caller, ids: Sequence[str]) -> list[str]:
        bad = [g for g in ids if (row := self.groups.get(g)) is None or row.owner != caller.account]
        if bad:
            raise err.invalid_security_group(bad)
        return list(dict.fromkeys(ids))

    async def enable_zones(self, caller: Caller, name: str, zones: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        zones = self._zones(zones)
        if lb.subnets:
            raise err.invalid_config("This load balancer is in subnets: attach subnets instead of enabling zones.")
        caller.check_dry_run()
        now = tuple(dict.fromkeys((*lb.zones, *zones)))
        if now != lb.zones:
            await self._commit(lb, replace(lb, zones=now))
        return list(now)

    async def disable_zones(self, caller: Caller, name: str, zones: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        zones = self._zones(zones)
        if lb.subnets:
            raise err.invalid_config("This load balancer is in subnets: detach subnets instead of disabling zones.")
        now = tuple(z for z in lb.zones if z not in set(zones))
        if not now:
            raise err.invalid_config("A load balancer must keep at least one Availability Zone.")
        caller.check_dry_run()
        if now != lb.zones:
            await self._commit(lb, replace(lb, zones=now))
        return list(now)

    async def attach_subnets(self, caller: Caller, name: str, ids: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        if not lb.subnets:
            raise err.invalid_config("This load balancer is in Availability Zones, not subnets.")
        rows = self._subnets([*lb.subnets, *ids])
        caller.check_dry_run()
        now = tuple(s.id for s in rows)
        if now != lb.subnets:
            await self._commit(lb, replace(lb, subnets=now, zones=tuple(dict.fromkeys(s.zone for s in rows))))
        return list(now)

    async def detach_subnets(self, caller: Caller, name: str, ids: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        if not lb.subnets:
            raise err.invalid_config("This load balancer is in Availability Zones, not subnets.")
        self._subnets(ids)
        now = tuple(s for s in lb.subnets if s not in set(ids))
        if not now:
            raise err.invalid_config("A load balancer must keep at least one subnet.")
        caller.check_dry_run()
        if now != lb.subnets:
            zones = tuple(dict.fromkeys(self.network.subnets[s].zone for s in now))
            await self._commit(lb, replace(lb, subnets=now, zones=zones))
        return list(now)

    async def apply_security_groups(self, caller: Caller, name: str, ids: Sequence[str]) -> list[str]:
        lb = self.get(caller, name)
        groups = self._groups(caller, ids)
        caller.check_dry_run()
        if tuple(groups) != lb.security_groups:
            await self._commit(lb, replace(lb, security_groups=tuple(groups)))
        return groups

    def source_group(self, lb: LoadBalancer) -> tuple[str, str]:
        """SourceSecurityGroup: (owner, group name) instances' rules name to admit its traffic."""
        g = self.groups.get(lb.security_groups[0]) if lb.security_groups else None
        return (g.owner, g.name) if g is not None else ("amazon-elb", "amazon-elb-sg")

    # -- attributes ------------------------------------------------------------------------------
    def attributes(self, caller: Caller, name: str) -> dict[str, Any]:
        return {**DEFAULT_ATTRIBUTES, **self.get(caller, name).attributes}

    async def modify_attributes(self, caller: Caller, name: str, changes: AttributeChanges) -> dict[str, Any]:
        lb = self.get(caller, name)
        now = apply_attributes(lb.attributes, changes)
        caller.check_dry_run()
        if now != {**DEFAULT_ATTRIBUTES, **lb.attributes}:
            await self._commit(lb, replace(lb, attributes=now))
        return now

    # -- tags ------------------------------------------------------------------------------------
    async def add_tags(self, caller: Caller, names: Sequence[str], tags: Sequence[tuple[str, str]]) -> None:
        lbs = self._many(caller, names)
        new = check_tags(tags)
        if not new:
            raise err.invalid("Tags must name at least one tag.")
        changed = []
        for lb in lbs:
            merged = {**lb.tags, **new}
            if sum(not k.startswith("aws:") for k in merged) > MAX_TAGS:
                raise err.too_many_tags(MAX_TAGS, lb.name)
            if merged != lb.tags:
                changed.append(replace(lb, tags=merged))
        caller.check_dry_run()
        await self._put_all(changed)

    async def remove_tags(self, caller: Caller, names: Sequence[str], keys: Sequence[str]) -> None:
        lbs = self._many(caller, names)
        if not keys:
            raise err.invalid("Tags must name at least one tag key.")
        for k in keys:
            if k.lower().startswith("aws:"):
                raise err.invalid(f"Tag key '{k[:128]}' uses the reserved prefix 'aws:'.")
        caller.check_dry_run()
        gone = set(keys)
        await self._put_all([replace(lb, tags={k: v for k, v in lb.tags.items() if k not in gone})
                             for lb in lbs if gone & set(lb.tags)])

    def tags(self, caller: Caller, names: Sequence[str]) -> list[LoadBalancer]:
        return self._many(caller, names)

    def _many(self, caller: Caller, names: Sequence[str]) -> list[LoadBalancer]:
        if not 1 <= len(names) <= 20:
            raise err.invalid("LoadBalancerNames must name between 1 and 20 load balancers.")
        return [self.get(caller, n) for n in dict.fromkeys(names)]

    async def _put_all(self, rows: Iterable[LoadBalancer]) -> None:
        rows = list(rows)
        if not rows:
            return
        with self.store.txn() as tx:
            for r in rows:
                tx.put(r)
        await self.store.sync()

    # -- policies --------------------------------------------------------------------------------
    async def create_policy(self, caller: Caller, name: str, policy: str, type_name: str,
                            attributes: Sequence[tuple[str, str]]) -> None:
        lb = self.get(caller, name)
        spec = POLICY_TYPES.get(type_name)
        if spec is None:
            raise err.policy_type_not_found([type_name])
        allowed = {a["name"] for a in spec["attributes"]}
        for key, _ in attributes:
            if key not in allowed:
                raise err.invalid_config(f"Policy type {type_name} has no attribute '{key}'.")
        attrs = dict(attributes)
        if type_name == "AppCookieStickinessPolicyType":
            self._cookie_name(attrs.get("CookieName", ""))
        elif "CookieExpirationPeriod" in attrs:
            self._expiration(attrs["CookieExpirationPeriod"])
        await self._add_policy(caller, lb, policy, type_name, tuple(attrs.items()))

    async def create_lb_cookie_policy(self, caller: Caller, name: str, policy: str, expiration: int | None) -> None:
        lb = self.get(caller, name)
        attrs = () if expiration is None else (("CookieExpirationPeriod", self._expiration(str(expiration))),)
        await self._add_policy(caller, lb, policy, "LBCookieStickinessPolicyType", attrs)

    async def create_app_cookie_policy(self, caller: Caller, name: str, policy: str, cookie: str) -> None:
        lb = self.get(caller, name)
        await self._add_policy(caller, lb, policy, "AppCookieStickinessPolicyType",
                               (("CookieName", self._cookie_name(cookie)),))

    @staticmethod
    def _cookie_name(cookie: str) -> str:
        if not cookie or len(cookie) > 128 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in cookie):
            raise err.invalid(f"Invalid cookie name '{cookie[:128]}': 1-128 letters, digits, '-', '_' or '.'.")
        return cookie

    @staticmethod
    def _expiration(value: str) -> str:
        if not (value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= 2**31 - 1):
            raise err.invalid(f"CookieExpirationPeriod '{value[:32]}' must be a whole number of seconds.")
        return str(int(value))

    async def _add_policy(self, caller: Caller, lb: LoadBalancer, policy: str, type_name: str,
                          attrs: tuple[tuple[str, str], ...]) -> None:
        if not policy or len(policy) > 255 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in policy):
            raise err.invalid(f"Invalid policy name '{policy[:255]}': letters, digits, '-', '_' or '.'.")
        if any(p["name"] == policy for p in lb.policies):
            raise err.duplicate_policy(policy)
        if len(lb.policies) >= MAX_POLICIES:
            raise err.too_many_policies(MAX_POLICIES)
        caller.check_dry_run()
        row = {"name": policy, "type": type_name, "attributes": attrs}
        await self._commit(lb, replace(lb, policies=(*lb.policies, row)))

    def policies(self, caller: Caller, name: str | None, policy_names: Sequence[str]) -> list[Mapping[str, Any]]:
        if name is None:
            if policy_names:   # ELB's predefined (SSL negotiation) policies: cloudctl has none
                raise err.policy_not_found(list(policy_names))
            return []
        lb = self.get(caller, name)
        if not policy_names:
            return list(lb.policies)
        mine = {p["name"]: p for p in lb.policies}
        missing = [p for p in policy_names if p not in mine]
        if missing:
            raise err.policy_not_found(missing)
        return [mine[p] for p in dict.fromkeys(policy_names)]

    async def delete_policy(self, caller: Caller, name: str, policy: str) -> None:
        lb = self.get(caller, name)
        if not any(p["name"] == policy for p in lb.policies):
            raise err.policy_not_found([policy])
        if any(policy in x["policies"] for x in lb.listeners):
            raise err.invalid_config(f"Policy '{policy}' is in use by a listener: remove it from the listener first.")
        caller.check_dry_run()
        await self._commit(lb, replace(lb, policies=tuple(p for p in lb.policies if p["name"] != policy)))

    def policy_types(self, names: Sequence[str]) -> list[tuple[str, Mapping[str, Any]]]:
        missing = [n for n in names if n not in POLICY_TYPES]
        if missing:
            raise err.policy_type_not_found(missing)
        return [(n, POLICY_TYPES[n]) for n in (dict.fromkeys(names) if names else POLICY_TYPES)]

    async def set_listener_policies(self, caller: Caller, name: str, port: int, policy_names: Sequence[str]) -> None:
        lb = self.get(caller, name)
        listener = next((x for x in lb.listeners if x["port"] == port), None)
        if listener is None:
            raise err.listener_not_found(port, name)
        mine = {p["name"]: p for p in lb.policies}
        missing = [p for p in policy_names if p not in mine]
        if missing:
            raise err.policy_not_found(missing)
        names = list(dict.fromkeys(policy_names))
        sticky = [p for p in names if mine[p]["type"] in STICKINESS]
        if len(sticky) > 1:
            raise err.invalid_config("A listener can have at most one stickiness policy.")
        if sticky and listener["protocol"] not in ("HTTP", "HTTPS"):
            raise err.invalid_config(f"Stickiness policies apply to HTTP/HTTPS listeners only, not "
                                     f"{listener['protocol']}.")
        caller.check_dry_run()
        if tuple(names) != tuple(listener["policies"]):
            rows = tuple({**x, "policies": tuple(names)} if x["port"] == port else x for x in lb.listeners)
            await self._commit(lb, replace(lb, listeners=rows))

    # -- the seam for AutoScaling (the cloud acting for an account) ---------------------------------
    def exists(self, account: str, name: str) -> bool:
        return self._by_name.first(f"{account}\x1f{name}") is not None

    async def register(self, account: str, name: str, instance_ids: Sequence[str]) -> None:
        """Register the account's instances among `instance_ids` (others are skipped, not refused:
        a group's instance may be gone by now). LoadBalancerNotFound if there is no such one."""
        lb = self._get(account, name)
        ids = [i for i in instance_ids if (inst := self.instances.get(i)) is not None and inst.owner == account]
        now = tuple(dict.fromkeys((*lb.instances, *ids)))
        if now != lb.instances:
            await self._commit(lb, replace(lb, instances=now))

    async def deregister(self, account: str, name: str, instance_ids: Sequence[str]) -> None:
        """Deregister; a load balancer gone meanwhile or an instance not registered is no error."""
        lb = self._by_name.first(f"{account}\x1f{name}")
        if lb is None:
            return
        gone = set(instance_ids)
        now = tuple(i for i in lb.instances if i not in gone)
        if now != lb.instances:
            await self._commit(lb, replace(lb, instances=now))

    def health(self, account: str, name: str) -> Mapping[str, str]:
        """Instance id -> InService | OutOfService | Unknown (the proxy has not judged it yet)."""
        lb = self._get(account, name)
        return {iid: self._health(lb, iid).simple for iid in lb.instances}


def _index(marker: str | None, n: int) -> int:
    """A page marker of a by-name Describe: the position to go on from."""
    if not marker:
        return 0
    if not (marker.isascii() and marker.isdigit() and len(marker) <= 6 and int(marker) <= n):
        raise err.invalid(f"Invalid Marker '{marker[:64]}'.")
    return int(marker)


class _GroupMembers(Index[LoadBalancer]):
    """Feeds each committed load balancer row (and the journal's, at start) to the security
    groups: its address is a member of its groups while the row exists."""

    def __init__(self, groups: SecurityGroups) -> None:
        self._groups = groups

    def add(self, row: LoadBalancer) -> None:
        self._groups.set_member(row.id, row.address, row.security_groups)

    def remove(self, row: LoadBalancer) -> None:
        self._groups.set_member(row.id, None, ())
