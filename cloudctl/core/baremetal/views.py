"""What the inventory's show calls return: the records joined for one object, no wire format
(each API builds its own answer from these)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...slim import dataclass
from ...store.records import BmNetwork, BmNode, BmOperation, BmPort, BmSwitch


@dataclass(frozen=True)
class NicView:
    name: str
    macaddr: str
    switch: str | None            # where it is cabled (None: not cabled)
    port: str | None
    networks: Mapping[str, str]   # channel -> network


@dataclass(frozen=True)
class NodeView:
    node: BmNode
    nics: tuple[NicView, ...]


@dataclass(frozen=True)
class SwitchView:
    switch: BmSwitch
    options: Mapping[str, Any]    # without secrets
    ports: tuple[str, ...]        # registered port names, sorted


@dataclass(frozen=True)
class PortView:
    port: BmPort
    networks: Mapping[str, str]   # channel -> network of the cabled NIC


@dataclass(frozen=True)
class NetworkView:
    network: BmNetwork
    connected: Mapping[str, tuple[str, ...]]   # node -> its NICs on the network the caller may see


@dataclass(frozen=True)
class Attachment:
    node: str
    nic: str
    channel: str
    project: str | None


__all__ = ["Attachment", "BmOperation", "NetworkView", "NicView", "NodeView", "PortView", "SwitchView"]
