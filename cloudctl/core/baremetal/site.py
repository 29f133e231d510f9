"""The inventory: projects, nodes and their NICs, switches, ports, and the cabling between them.

These calls only write records; nothing here talks to a switch (cabling is a record of where a
wire goes, as in HIL). Objects in use cannot be deleted: the caller must undo the use first.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from ...drivers.switch.base import (
    DEFAULT_TIMEOUT_S,
    SwitchError,
    SwitchUnreachable,
    driver_class,
    families,
    secret_fields,
)
from ...store.records import (
    BmAttachment,
    BmHeadnode,
    BmNetwork,
    BmNic,
    BmNode,
    BmOperation,
    BmPort,
    BmProject,
    BmSwitch,
    BmUser,
)
from ...store.store import MultiIndex, Store
from ..secrets import is_sealed
from .auth import Caller
from .errors import BadArgumentError, BlockedError, DuplicateError, NotFoundError, ProjectMismatchError
from .names import label, macaddr
from .secrets import BmSecrets
from .views import NicView, NodeView, PortView, SwitchView

# ipmi: a BMC over IPMI-over-LAN; mock: HIL's test OBM (power calls do nothing); obmd: HIL's OBM
# daemon, which the API redirects power and console calls to (as HIL does).
_OBM_TYPES = ("ipmi", "mock", "obmd")
METADATA_MAX = 64 * 1024     # bytes of a node's metadata, its JSON text
log = logging.getLogger("cloudctl.baremetal")


def _k(*parts: str) -> str:
    return "\x1f".join(parts)


class Site:
    switch_timeout_s: float = DEFAULT_TIMEOUT_S     # per switch command, when a port is checked

    def __init__(self, store: Store, vlan_pool: list[int], secrets: BmSecrets) -> None:
        self.store = store
        self.secrets = secrets
        self.projects = store.table(BmProject)
        self.nodes = store.table(BmNode)
        self.nics = store.table(BmNic)
        self.switches = store.table(BmSwitch)
        self.ports = store.table(BmPort)
        self.networks = store.table(BmNetwork)
        self.attachments = store.table(BmAttachment)
        self.ops = store.table(BmOperation)
        self.users = store.table(BmUser)
        self.headnodes = store.table(BmHeadnode)
        self.pool = vlan_pool
        self.nics_by_node: MultiIndex[BmNic] = self.nics.add_index(MultiIndex(lambda n: n.node))
        self.ports_by_switch: MultiIndex[BmPort] = self.ports.add_index(MultiIndex(lambda p: p.switch))
        self.port_by_nic: MultiIndex[BmPort] = self.ports.add_index(
            MultiIndex(lambda p: _k(p.node, p.nic) if p.node and p.nic else None))
        self.att_by_nic: MultiIndex[BmAttachment] = self.attachments.add_index(
            MultiIndex(lambda a: _k(a.node, a.nic)))
        self.att_by_network: MultiIndex[BmAttachment] = self.attachments.add_index(MultiIndex(lambda a: a.network))
        self.pending_by_nic: MultiIndex[BmOperation] = self.ops.add_index(
            MultiIndex(lambda o: _k(o.node, o.nic) if o.status == "pending" and o.node and o.nic else None))
        self.pending_by_switch: MultiIndex[BmOperation] = self.ops.add_index(
            MultiIndex(lambda o: o.switch if o.status == "pending" else None))
        self.pending_by_port: MultiIndex[BmOperation] = self.ops.add_index(
            MultiIndex(lambda o: _k(o.switch, o.port) if o.status == "pending" else None))

    # -- lookups ----------------------------------------------------------------------------------
    def project(self, name: str) -> BmProject:
        p = self.projects.get(name)
        if p is None:
            raise NotFoundError(f"project {name!r} does not exist")
        return p

    def node(self, name: str) -> BmNode:
        n = self.nodes.get(name)
        if n is None:
            raise NotFoundError(f"node {name!r} does not exist")
        return n

    def nic(self, node: str, nic: str) -> BmNic:
        self.node(node)
        row = self.nics.get(_k(node, nic))
        if row is None:
            raise NotFoundError(f"node {node!r} has no NIC {nic!r}")
        return row

    def switch(self, name: str) -> BmSwitch:
        s = self.switches.get(name)
        if s is None:
            raise NotFoundError(f"switch {name!r} does not exist")
        return s

    def port(self, switch: str, port: str) -> BmPort:
        self.switch(switch)
        row = self.ports.get(_k(switch, port))
        if row is None:
            raise NotFoundError(f"switch {switch!r} has no port {port!r}")
        return row

    def network(self, name: str) -> BmNetwork:
        n = self.networks.get(name)
        if n is None:
            raise NotFoundError(f"network {name!r} does not exist")
        return n

    def port_of(self, node: str, nic: str) -> BmPort | None:
        return next(iter(self.port_by_nic.get(_k(node, nic)).values()), None)

    def pending_for_nic(self, node: str, nic: str) -> BmOperation | None:
        return next(iter(self.pending_by_nic.get(_k(node, nic)).values()), None)

    def headnodes_on(self, network: str, project: str | None = None) -> list[str]:
        """Headnodes with a NIC on `network` (of `project` only, if given)."""
        return sorted(h.name for h in self.headnodes.values()
                      if (project is None or h.project == project)
                      and any(v["network"] == network for v in h.hnics.values()))

    def node_busy(self, node: str) -> str | None:
        """Why the node's NICs are in use (attachments or pending operations), or None."""
        for nic in self.nics_by_node.get(node).values():
            if self.att_by_nic.get(nic.key):
                return f"NIC {nic.name} is attached to a network"
            if self.pending_for_nic(node, nic.name):
                return f"NIC {nic.name} has a pending switch operation"
        return None

    async def commit(self, *rows: Any, delete: tuple[Any, ...] = ()) -> None:
        with self.store.txn() as tx:
            for r in rows:
                tx.put(r)
            for r in delete:
                tx.delete(r)
        await self.store.sync()

    # -- projects ---------------------------------------------------------------------------------
    def list_projects(self, caller: Caller) -> list[str]:
        caller.require_admin()
        return sorted(self.projects.rows)

    async def create_project(self, caller: Caller, name: str) -> None:
        caller.require_admin()
        label("project", name)
        if name in self.projects.rows:
            raise DuplicateError(f"project {name!r} already exists")
        await self.commit(BmProject(name=name, created=time.time()))

    async def delete_project(self, caller: Caller, name: str) -> None:
        caller.require_admin()
        p = self.project(name)
        if any(n.project == name for n in self.nodes.values()):
            raise BlockedError(f"project {name!r} still has nodes")
        if any(h.project == name for h in self.headnodes.values()):
            raise BlockedError(f"project {name!r} still has headnodes")
        if any(n.owner == name for n in self.networks.values()):
            raise BlockedError(f"project {name!r} still owns networks")
        if any(name in n.access for n in self.networks.values()):
            raise BlockedError(f"project {name!r} is still on a network's access list")
        await self.commit(delete=(p,))

    async def connect_node(self, caller: Caller, project: str, node: str) -> None:
        caller.require_project(project)
        self.project(project)
        n = self.node(node)
        if n.project is not None:
            raise BlockedError(f"node {node!r} already belongs to a project")
        await self.commit(BmNode(**{**n.to_dict(), "project": project}))

    async def detach_node(self, caller: Caller, project: str, node: str) -> None:
        caller.require_project(project)
        self.project(project)
        n = self.node(node)
        if n.project != project:
            raise NotFoundError(f"node {node!r} is not in project {project!r}")
        if n.obm_enabled:
            raise BlockedError(f"node {node!r}: its OBM is enabled; disable it first")
        why = self.node_busy(node)
        if why:
            raise BlockedError(f"node {node!r}: {why}; detach its networks first")
        await self.commit(BmNode(**{**n.to_dict(), "project": None, "console": False}))

    def project_nodes(self, caller: Caller, project: str) -> list[str]:
        caller.require_project(project)
        self.project(project)
        return sorted(n.name for n in self.nodes.values() if n.project == project)

    # -- nodes and NICs -----------------------------------------------------------------------------
    async def register_node(self, caller: Caller, name: str, obm: Any, metadata: dict[str, Any] | None = None
                            ) -> None:
        """`metadata` values are any JSON; each is kept as its JSON text (HIL's model)."""
        caller.require_admin()
        label("node", name)
        if name in self.nodes.rows:
            raise DuplicateError(f"node {name!r} already exists")
        meta = {label("metadata", k): json.dumps(v) for k, v in (metadata or {}).items()}
        _check_metadata_size(meta)
        await self.commit(BmNode(name=name, obm=self.secrets.seal_obm(name, _check_obm(obm)), created=time.time(),
                                 metadata=meta))

    async def set_metadata(self, caller: Caller, name: str, key: str, value: Any) -> None:
        """Add or replace one metadata label (HIL's node_set_metadata)."""
        caller.require_admin()
        n = self.node(name)
        meta = {**n.metadata, label("metadata", key): json.dumps(value)}
        _check_metadata_size(meta)
        await self.commit(BmNode(**{**n.to_dict(), "metadata": meta}))

    async def delete_metadata(self, caller: Caller, name: str, key: str) -> None:
        caller.require_admin()
        n = self.node(name)
        if key not in n.metadata:
            raise NotFoundError(f"node {name!r} has no metadata {key!r}")
        await self.commit(BmNode(**{**n.to_dict(), "metadata": {k: v for k, v in n.metadata.items() if k != key}}))

    async def set_obm_enabled(self, caller: Caller, name: str, enabled: bool, node_token: str | None = None) -> None:
        """Record the OBM's state; for an obmd node, with the token obmd gave (None when disabled)."""
        n = self.node(name)
        caller.require_project(n.project)
        obm = dict(n.obm)
        obm.pop("node_token", None)
        if node_token is not None:
            obm["node_token"] = node_token
        await self.commit(BmNode(**{**n.to_dict(), "obm_enabled": enabled,
                                    "obm": self.secrets.seal_obm(name, obm)}))

    async def delete_node(self, caller: Caller, name: str) -> None:
        caller.require_admin()
        n = self.node(name)
        if n.project is not None:
            raise BlockedError(f"node {name!r} is in project {n.project!r}")
        if self.nics_by_node.get(name):
            raise BlockedError(f"node {name!r} still has NICs")
        await self.commit(delete=(n,))

    async def register_nic(self, caller: Caller, node: str, nic: str, mac: Any) -> None:
        caller.require_admin()
        self.node(node)
        label("NIC", nic)
        if _k(node, nic) in self.nics.rows:
            raise DuplicateError(f"node {node!r} already has a NIC {nic!r}")
        await self.commit(BmNic(node=node, name=nic, macaddr=macaddr(mac)))

    async def delete_nic(self, caller: Caller, node: str, nic: str) -> None:
        caller.require_admin()
        row = self.nic(node, nic)
        if self.port_of(node, nic) is not None:
            raise BlockedError(f"NIC {node}/{nic} is cabled to a switch port; detach it first")
        await self.commit(delete=(row,))

    def list_nodes(self, caller: Caller, which: str) -> list[str]:
        """Node names, to any authenticated caller (as HIL)."""
        if which not in ("all", "free"):
            raise BadArgumentError("list nodes 'all' or 'free'")
        return sorted(n.name for n in self.nodes.values() if which == "all" or n.project is None)

    def show_node(self, caller: Caller, name: str) -> NodeView:
        """A free node is shown to any authenticated caller, a project's node to its members (HIL)."""
        n = self.node(name)
        if n.project is not None:
            caller.require_project(n.project)
        nics = []
        for nic in sorted(self.nics_by_node.get(name).values(), key=lambda x: x.name):
            port = self.port_of(name, nic.name)
            nics.append(NicView(nic.name, nic.macaddr, port.switch if port else None, port.name if port else None,
                                {a.channel: a.network for a in self.att_by_nic.get(nic.key).values()}))
        return NodeView(n, tuple(nics))

    # -- switches and ports -------------------------------------------------------------------------
    async def register_switch(self, caller: Caller, name: str, family: str, options: dict[str, Any]) -> None:
        """`family` is a switch driver family (drivers/switch); `options` its options model's fields."""
        caller.require_admin()
        label("switch", name)
        if name in self.switches.rows:
            raise DuplicateError(f"switch {name!r} already exists")
        cls = driver_class(family)
        if cls is None:
            raise BadArgumentError(f"switch family {family!r} is not one of: {', '.join(families())}")
        try:
            checked = cls.options_model.model_validate(options)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise BadArgumentError(f"switch {name!r}: {where}: {err['msg']}") from None
        dummy = getattr(checked, "dummy_vlan", None)
        if dummy is not None and dummy in self.pool:
            raise BadArgumentError(f"switch {name!r}: dummy_vlan {dummy} lies in the network VLAN pool")
        options = self.secrets.seal_switch_options(name, family, checked.stored())
        await self.commit(BmSwitch(name=name, type=family, options=options))

    async def delete_switch(self, caller: Caller, name: str) -> None:
        caller.require_admin()
        s = self.switch(name)
        if self.ports_by_switch.get(name):
            raise BlockedError(f"switch {name!r} still has ports")
        await self.commit(delete=(s,))

    async def register_port(self, caller: Caller, switch: str, port: str) -> None:
        caller.require_admin()
        s = self.switch(switch)
        cls = driver_class(s.type)
        assert cls is not None
        why = cls.check_port_name(port)
        if why:
            raise BadArgumentError(f"port {port!r} on switch {switch!r}: {why}")

        def refuse_duplicate() -> None:
            same = next((p.name for p in self.ports_by_switch.get(switch).values()
                         if p.name == port or cls.canonical_port(p.name) == cls.canonical_port(port)), None)
            if same is not None:
                raise DuplicateError(f"switch {switch!r} already has port {port!r}" +
                                     (f" (as {same!r})" if same != port else ""))
        refuse_duplicate()
        # Asked of the switch itself, so a typo is refused now rather than at the first connect.
        # A switch that cannot be reached at all does not block the record (cabling may be
        # recorded before the switch is up); one that answers must list the port.
        driver = cls(switch, self.secrets.switch_options(s), self.switch_timeout_s)
        try:
            present = await driver.has_port(port)
        except SwitchUnreachable as e:
            log.warning("switch %s unreachable; port %r registered unchecked: %s", switch, port, e)
            present = True
        except SwitchError as e:
            raise BadArgumentError(f"cannot check port {port!r} on switch {switch!r}: {e}") from None
        finally:
            await driver.close()
        if not present:
            raise BadArgumentError(f"switch {switch!r} has no port {port!r} (read back from the switch)")
        if self.switch(switch) != s:           # while the switch was asked, it went (or was replaced)
            raise NotFoundError(f"switch {switch!r} changed while its port list was read; try again")
        refuse_duplicate()                     # or someone registered the port meanwhile
        await self.commit(BmPort(switch=switch, name=port))

    async def delete_port(self, caller: Caller, switch: str, port: str) -> None:
        caller.require_admin()
        p = self.port(switch, port)
        if p.nic is not None:
            raise BlockedError(f"port {port!r} is cabled to {p.node}/{p.nic}")
        if self.pending_by_port.get(p.key):
            raise BlockedError(f"port {port!r} has a pending switch operation")
        await self.commit(delete=(p,))

    async def connect_nic(self, caller: Caller, switch: str, port: str, node: Any, nic: Any) -> None:
        caller.require_admin()
        p = self.port(switch, port)
        if not isinstance(node, str) or not isinstance(nic, str):
            raise BadArgumentError('expected {"node": ..., "nic": ...}')
        self.nic(node, nic)
        if p.nic is not None:
            raise DuplicateError(f"port {port!r} is already cabled to {p.node}/{p.nic}")
        other = self.port_of(node, nic)
        if other is not None:
            raise DuplicateError(f"NIC {node}/{nic} is already cabled to {other.switch} port {other.name}")
        await self.commit(BmPort(switch=switch, name=port, node=node, nic=nic))

    async def detach_nic(self, caller: Caller, switch: str, port: str) -> None:
        caller.require_admin()
        p = self.port(switch, port)
        if p.nic is None or p.node is None:
            raise NotFoundError(f"port {port!r} has no NIC cabled")
        if self.nodes.rows[p.node].project is not None:
            raise BlockedError(f"node {p.node!r} is in a project; detach it from the project first")
        if self.att_by_nic.get(_k(p.node, p.nic)) or self.pending_by_port.get(p.key):
            raise BlockedError(f"port {port!r} has networks or a pending operation")
        await self.commit(BmPort(switch=switch, name=port))

    def list_switches(self, caller: Caller) -> list[str]:
        caller.require_admin()
        return sorted(self.switches.rows)

    def show_switch(self, caller: Caller, name: str) -> SwitchView:
        caller.require_admin()
        s = self.switch(name)
        hidden = secret_fields(s.type)
        public = {k: v for k, v in s.options.items() if k not in hidden and not is_sealed(v)}
        return SwitchView(s, public, tuple(sorted(p.name for p in self.ports_by_switch.get(name).values())))

    def show_port(self, caller: Caller, switch: str, port: str) -> PortView:
        caller.require_admin()
        p = self.port(switch, port)
        nets = ({a.channel: a.network for a in self.att_by_nic.get(_k(p.node, p.nic)).values()}
                if p.node and p.nic else {})
        return PortView(p, nets)

    def require_node_access(self, caller: Caller, node: BmNode) -> None:
        if node.project is None:
            if not caller.is_admin:
                raise ProjectMismatchError(f"node {node.name!r} is not in a project")
            return
        caller.require_project(node.project)


def _check_metadata_size(meta: dict[str, str]) -> None:
    if sum(len(k) + len(v) for k, v in meta.items()) > METADATA_MAX:
        raise BadArgumentError(f"a node's metadata is limited to {METADATA_MAX} bytes of JSON")


def _check_obm(obm: Any) -> dict[str, Any]:
    """The OBM's fields checked; every key given must be one its type takes."""
    if obm is None or obm == {}:
        return {}
    if not isinstance(obm, dict) or obm.get("type") not in _OBM_TYPES:
        raise BadArgumentError(f"obm must be an object with type one of: {', '.join(_OBM_TYPES)}")
    takes = {"ipmi": ("type", "host", "port", "user", "password", "cipher_suite"),
             "mock": ("type", "host", "user", "password"),
             "obmd": ("type", "uri", "admin_token")}[obm["type"]]
    unknown = next((k for k in obm if k not in takes), None)
    if unknown is not None:
        raise BadArgumentError(f"obm of type {obm['type']}: unknown field {str(unknown)[:64]!r}; "
                               f"it takes {', '.join(takes[1:])}")
    if obm["type"] == "obmd":
        return _check_obmd(obm)
    out: dict[str, Any] = {"type": obm["type"]}
    if obm["type"] == "mock":
        for key in ("host", "user", "password"):
            if not isinstance(obm.get(key), str):
                raise BadArgumentError(f"obm.{key} must be a string")
            out[key] = obm[key]
        return out
    host = obm.get("host")
    if not isinstance(host, str) or not host or not all(c.isalnum() or c in ".-:" for c in host):
        raise BadArgumentError("obm.host must be a host name or address")
    out["host"] = host
    port = obm.get("port", 623)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadArgumentError("obm.port must be a port number")
    out["port"] = port
    for key in ("user", "password"):
        v = obm.get(key)
        if not isinstance(v, str) or not v or "\n" in v:
            raise BadArgumentError(f"obm.{key} must be a non-empty string")
        out[key] = v
    cipher = obm.get("cipher_suite")
    if cipher is not None:
        if not isinstance(cipher, int) or isinstance(cipher, bool) or not 0 <= cipher <= 17:
            raise BadArgumentError("obm.cipher_suite must be an IPMI cipher suite id, 0-17")
        out["cipher_suite"] = cipher
    return out


def _check_obmd(obm: dict[str, Any]) -> dict[str, Any]:
    uri, token = obm.get("uri"), obm.get("admin_token")
    if not isinstance(uri, str) or urlsplit(uri).scheme not in ("http", "https") or not urlsplit(uri).netloc:
        raise BadArgumentError("obmd.uri must be an http:// or https:// URL")
    if any(c.isspace() or ord(c) < 32 for c in uri) or "?" in uri or "#" in uri:
        raise BadArgumentError("obmd.uri must be a plain URL (no spaces, query or fragment)")
    if not isinstance(token, str) or not token or "\n" in token:
        raise BadArgumentError("obmd.admin_token must be a non-empty string")
    return {"type": "obmd", "uri": uri.rstrip("/"), "admin_token": token}
