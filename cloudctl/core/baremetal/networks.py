"""Networks: a VLAN from the configured pool (or an external id the admin names), an owner, and
the projects allowed to attach it. An empty access list means public (admin networks only).

The legal combinations follow HIL's: a project creates networks only for itself, with a pool
VLAN; the admin may create networks for anyone, public ones, and ones on an external VLAN.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from ...store.records import BmNetwork
from .auth import Caller
from .errors import AuthorizationError, BadArgumentError, BlockedError, DuplicateError, NotFoundError
from .names import label
from .site import Site
from .views import Attachment, NetworkView


class Networks:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.pool_set = frozenset(site.pool)

    def _vlans_in_use(self) -> set[int]:
        return {n.vlan for n in self.site.networks.values()}

    def _allocate(self) -> int:
        used = self._vlans_in_use()
        for v in self.site.pool:
            if v not in used:
                return v
        raise BlockedError("the VLAN pool is exhausted")

    async def create(self, caller: Caller, name: str, owner: Any, access: Any, net_id: Any) -> BmNetwork:
        label("network", name)
        site = self.site
        if name in site.networks.rows:
            raise DuplicateError(f"network {name!r} already exists")
        if owner in (None, "admin"):
            caller.require_admin()
            owner = None
        elif not isinstance(owner, str):
            raise BadArgumentError("owner must be a project name or 'admin'")
        else:
            site.project(owner)
            caller.require_project(owner)
        if access is None:
            access = [owner] if owner else []
        if isinstance(access, str):
            access = [access] if access else []
        if not isinstance(access, list) or not all(isinstance(p, str) for p in access):
            raise BadArgumentError("access must be a list of project names")
        for p in access:
            site.project(p)
        if not caller.is_admin and access != [owner]:
            raise AuthorizationError("a project's network is accessible to that project only; "
                                     "ask an administrator to grant others access")
        if net_id in (None, ""):
            vlan, allocated = self._allocate(), True
        else:
            try:
                vlan = int(net_id)
            except (TypeError, ValueError):
                raise BadArgumentError(f"net_id {net_id!r} must be a VLAN number") from None
            if not 1 <= vlan <= 4094:
                raise BadArgumentError(f"net_id {vlan} must be a VLAN number in 1-4094")
            if vlan not in self.pool_set and not caller.is_admin:
                raise AuthorizationError(f"VLAN {vlan} is outside the pool; only an administrator "
                                         f"may name an external VLAN")
            if vlan in self._vlans_in_use():
                raise DuplicateError(f"VLAN {vlan} already belongs to another network")
            allocated = vlan in self.pool_set
        net = BmNetwork(name=name, vlan=vlan, owner=owner, access=sorted(set(access)), allocated=allocated,
                        created=time.time())
        await site.commit(net)
        return net

    async def delete(self, caller: Caller, name: str) -> None:
        net = self.site.network(name)
        self._require_owner(caller, net)
        if self.site.att_by_network.get(name):
            raise BlockedError(f"network {name!r} is attached to NICs")
        if hn := self.site.headnodes_on(name):
            raise BlockedError(f"network {name!r} is attached to headnode {hn[0]!r}")
        if any(o.network == name for o in self.site.ops.values() if o.status == "pending"):
            raise BlockedError(f"network {name!r} has pending switch operations")
        await self.site.commit(delete=(net,))

    def _require_owner(self, caller: Caller, net: BmNetwork) -> None:
        if net.owner is None:
            caller.require_admin()
        else:
            caller.require_project(net.owner)

    def visible(self, caller: Caller, net: BmNetwork) -> bool:
        return (caller.is_admin or not net.access or caller.may_access(net.owner)
                or any(p in caller.projects for p in net.access))

    async def grant(self, caller: Caller, name: str, project: str) -> None:
        net = self.site.network(name)
        self._require_owner(caller, net)
        self.site.project(project)
        if not net.access:
            raise BlockedError(f"network {name!r} is public")
        if project in net.access:
            raise DuplicateError(f"project {project!r} already has access to network {name!r}")
        await self.site.commit(dataclasses.replace(net, access=sorted([*net.access, project])))

    async def revoke(self, caller: Caller, name: str, project: str) -> None:
        net = self.site.network(name)
        self._require_owner(caller, net)
        self.site.project(project)
        if project not in net.access:
            raise NotFoundError(f"project {project!r} has no access to network {name!r}")
        if project == net.owner:
            raise BlockedError(f"project {project!r} owns network {name!r}")
        for a in self.site.att_by_network.get(name).values():
            if self.site.nodes.rows[a.node].project == project:
                raise BlockedError(f"project {project!r} still has node {a.node} on network {name!r}")
        if hn := self.site.headnodes_on(name, project):
            raise BlockedError(f"project {project!r} still has headnode {hn[0]} on network {name!r}")
        await self.site.commit(dataclasses.replace(net, access=[p for p in net.access if p != project]))

    def show(self, caller: Caller, name: str) -> NetworkView:
        """The network and the nodes on it the caller may see (those of the projects it is in,
        or all for the network's owner), as HIL's show_network."""
        net = self.site.network(name)
        if not self.visible(caller, net):
            raise AuthorizationError(f"you have no access to network {name!r}")
        owner = caller.is_admin or (net.owner is not None and caller.may_access(net.owner))
        out: dict[str, list[str]] = {}
        for a in self.site.att_by_network.get(name).values():
            if owner or caller.may_access(self.site.nodes.rows[a.node].project):
                out.setdefault(a.node, []).append(a.nic)
        return NetworkView(net, {k: tuple(sorted(v)) for k, v in sorted(out.items())})

    @staticmethod
    def channels(net: BmNetwork) -> list[str]:
        """The channels a NIC may carry the network on: untagged, or tagged with its VLAN."""
        return ["vlan/native", f"vlan/{net.vlan}"]

    def list(self, caller: Caller) -> list[BmNetwork]:
        """The networks the caller may see, by name."""
        return [n for n in sorted(self.site.networks.values(), key=lambda n: n.name) if self.visible(caller, n)]

    def project_networks(self, caller: Caller, project: str) -> list[str]:
        caller.require_project(project)
        self.site.project(project)
        return sorted(n.name for n in self.site.networks.values() if n.owner == project or project in n.access)

    def attachments(self, caller: Caller, name: str, project: str | None) -> list[Attachment]:
        """The NICs on the network (of `project`'s nodes only, if given), sorted by node and NIC."""
        net = self.site.network(name)
        if project is not None:
            self.site.project(project)
        self._require_owner(caller, net)
        out = []
        for a in self.site.att_by_network.get(name).values():
            node = self.site.nodes.rows[a.node]
            if project is None or node.project == project:
                out.append(Attachment(a.node, a.nic, a.channel, node.project))
        return sorted(out, key=lambda a: (a.node, a.nic))
