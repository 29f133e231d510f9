"""The bodies of the bare-metal API's routes, one model per route, checked before the core runs.

As HIL does: a key the route does not take, a value of the wrong JSON type, a missing argument
or a body that is not a JSON object is refused with 400 `ValidationError`; routes whose
arguments are all in the path take no body (or `{}`), and a GET takes no body at all. Types
are strict (no "1" for 1, no 1 for true). The values' meaning (names, MACs, VLANs, OBM
fields) is the core's to check, as it is for the CLI.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """No arguments in the body: the routes whose arguments are all in the path."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeRef(Body):
    node: str


class ProjectRef(Body):
    project: str


class NetworkRef(Body):
    network: str


class RegisterNode(Body):
    obm: dict[str, Any] | None = None   # its fields depend on its type: the core checks them


class RegisterNic(Body):
    macaddr: str


class PowerCycle(Body):
    force: bool = False


class BootDevice(Body):
    bootdev: str


class ConnectNetwork(Body):
    network: str
    channel: str | None = None


class CreateNetwork(Body):
    owner: str | None = None
    # HIL sends one name (or ""); the CLI a list. Bounded: a long list of wrong items would
    # otherwise cost an error each, on the event loop.
    access: Annotated[list[str], Field(max_length=1024)] | str | None = None
    net_id: int | str | None = None         # HIL sends the VLAN as a string


class RegisterSwitch(BaseModel):
    """`type` names the family; the family's own options model checks the rest (HIL answers a
    bad option of a known type with BadArgumentError, and so does the core)."""
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: str


class Audit(Body):
    repair: bool = False


class CableNic(Body):
    node: str
    nic: str


class CreateHeadnode(Body):
    project: str
    base_img: str
    instance_type: str | None = None
    user_data: str | None = None


class CreateUser(Body):
    password: str
    is_admin: bool = False


class SetAdmin(Body):
    is_admin: bool
