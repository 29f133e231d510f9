"""HIL's answers built from the core's views and rows: the keys and values HIL's api.py returns
(HIL's client and CLI read them by name)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.baremetal.auth import Caller
from ...store.records import BmNetwork, BmUser
from .switch_types import capabilities

if TYPE_CHECKING:   # (the bare-metal service is loaded at its first use: core/cloud.py)
    from ...core.baremetal.views import Attachment, BmOperation, NetworkView, NodeView, PortView, SwitchView

STATUS = {"pending": "PENDING", "done": "DONE", "error": "ERROR"}     # HIL's NetworkingAction.status
ACTION = {"connect": "modify_port", "detach": "modify_port", "revert": "revert_port"}


def node(v: NodeView, caller: Caller) -> dict[str, Any]:
    """HIL's show_node: a NIC's switch and port only for admins; metadata values as JSON text."""
    nics = []
    for n in v.nics:
        nic: dict[str, Any] = {"label": n.name, "macaddr": n.macaddr, "networks": dict(n.networks)}
        if caller.is_admin:
            nic.update(port=n.port, switch=n.switch)
        nics.append(nic)
    return {"name": v.node.name, "project": v.node.project, "nics": nics, "metadata": dict(v.node.metadata)}


def switch(v: SwitchView) -> dict[str, Any]:
    return {"name": v.switch.name, "ports": [{"label": p} for p in v.ports],
            "capabilities": capabilities(v.switch.type)}


def port(v: PortView) -> dict[str, Any]:
    """HIL's show_port: `{}` for a port with no NIC cabled."""
    p = v.port
    if p.node is None or p.nic is None:
        return {}
    return {"node": p.node, "nic": p.nic, "networks": dict(v.networks)}


def networks(rows: list[BmNetwork]) -> dict[str, Any]:
    return {n.name: {"network_id": str(n.vlan), "projects": sorted(n.access) or None} for n in rows}


def network(v: NetworkView) -> dict[str, Any]:
    from ...core.baremetal.networks import Networks  # (loaded with the service that made `v`)
    n = v.network
    return {"name": n.name, "owner": n.owner or "admin", "access": list(n.access) or None,
            "channels": Networks.channels(n), "connected-nodes": {k: list(x) for k, x in v.connected.items()}}


def attachments(rows: list[Attachment]) -> dict[str, Any]:
    """HIL's list_network_attachments: one `{nic, channel, project}` per node."""
    return {a.node: {"nic": a.nic, "channel": a.channel, "project": a.project} for a in rows}


def networking_action(op: BmOperation) -> dict[str, Any]:
    """HIL's show_networking_action (`new_network`: the network a connect puts on the channel)."""
    return {"status": STATUS.get(op.status, op.status.upper()), "node": op.node, "nic": op.nic,
            "type": ACTION.get(op.type, op.type), "channel": op.channel or "",
            "new_network": op.network if op.type == "connect" else None}


def operation(op: BmOperation) -> dict[str, Any]:
    """cloudctl's fuller view of an operation (`GET /operation/<id>`): where, and why it failed."""
    return {"id": op.id, "status": op.status, "type": op.type, "switch": op.switch, "port": op.port,
            "node": op.node, "nic": op.nic, "network": op.network, "channel": op.channel, "error": op.error,
            "created": op.created, "finished": op.finished}


def users(rows: list[BmUser]) -> dict[str, Any]:
    return {u.name: {"is_admin": u.is_admin, "projects": sorted(u.projects)} for u in rows}
