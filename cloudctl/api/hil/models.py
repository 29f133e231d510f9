"""The bodies of HIL's routes, one model per route, checked before the core runs.

As HIL does: a key the route does not take, a value of the wrong JSON type, a missing argument
or a body that is not a JSON object is refused with 400 `ValidationError`; routes whose
arguments are all in the path take no body (or `{}`), and a GET takes no body at all. Types
are strict (no "1" for 1, no 1 for true). The values' meaning (names, MACs, VLANs, OBM
fields) is the core's to check, as it is for the CLI.
"""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Body(BaseModel):
    """No arguments in the body: the routes whose arguments are all in the path."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeRef(Body):
    node: str


class ProjectRef(Body):
    project: str


class NetworkRef(Body):
    network: str


IPMI_URI = "http://schema.massopencloud.org/haas/v0/obm/ipmi"   # HIL v0.3's OBM types
MOCK_URI = "http://schema.massopencloud.org/haas/v0/obm/mock"


class Obmd(Body):
    """HIL (after v0.4)'s OBM: the node's obmd and the admin token it was given."""
    uri: str
    admin_token: str

    @field_validator("uri")
    @classmethod
    def _http(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):   # as HIL's schema
            raise ValueError("must be an http:// or https:// URL")
        return v


class RegisterNode(Body):
    """HIL v0.3's `obm` (a type URI, or cloudctl's `ipmi`, and that type's fields: the core
    checks them) or HIL HEAD's `obmd`; at most one of the two."""
    obm: dict[str, Any] | None = None
    obmd: Obmd | None = None
    metadata: Annotated[dict[str, Any], Field(max_length=1024)] | None = None


class ObmEnabled(Body):
    enabled: bool


class MetadataValue(Body):
    value: Any


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
    """`type` is HIL's type URI (or a cloudctl family name); the other fields depend on it
    (api/hil/switch_types.py maps them; HIL answers a bad field of a known type with
    BadArgumentError, and so does this API)."""
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
