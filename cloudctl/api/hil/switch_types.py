"""HIL's switch type URIs and their registration fields, mapped to cloudctl's switch families.

HIL registers a switch as `{"type": <URI>, <that type's fields>}`. Each URI names the cloudctl
family that drives the same hardware, and HIL's field names are renamed to the family's
options (`ovs_bridge` -> `bridge`). cloudctl reaches every switch over SSH with a pinned host
key, so each type also takes the family's own connection fields (`ssh_port`, `host_key`,
`enable_password`, and for OVS `hostname`, `username`...). A field neither HIL's type nor the
family takes is refused, never dropped. Which families exist is asked of drivers.switch at
request time: a type whose family is not (yet) installed is a clear 400.
"""
from __future__ import annotations

from typing import Any

from ...core.baremetal.errors import BadArgumentError
from ...slim import dataclass

PREFIX = "http://schema.massopencloud.org/haas/v0/switches/"


@dataclass(frozen=True)
class HilType:
    family: str                         # cloudctl's driver family
    fields: tuple[str, ...]             # HIL's required fields for the type
    rename: tuple[tuple[str, str], ...] = ()   # HIL name -> the family's option name
    capabilities: tuple[str, ...] = ()  # as HIL's driver for the type reports them


_NATIVELESS = ("nativeless-trunk-mode",)
TYPES: dict[str, HilType] = {
    PREFIX + "nexus": HilType("cisco", ("hostname", "username", "password", "dummy_vlan"), (), _NATIVELESS),
    PREFIX + "powerconnect55xx": HilType("dell", ("hostname", "username", "password"), (), _NATIVELESS),
    PREFIX + "delln3000": HilType("dell10g", ("hostname", "username", "password", "dummy_vlan"), (), _NATIVELESS),
    PREFIX + "dellnos9": HilType("dell10g", ("hostname", "username", "password", "interface_type")),
    PREFIX + "brocade": HilType("brocade", ("hostname", "username", "password", "interface_type")),
    PREFIX + "ovs": HilType("ovs", ("ovs_bridge",), (("ovs_bridge", "bridge"),)),
}
MOCK = PREFIX + "mock"


def family_options(type_: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, options) for a registration body; a cloudctl family name passes through as is."""
    if type_ == MOCK:
        raise BadArgumentError(f"{type_!r}: HIL's mock switch is a test double; cloudctl has no such switch "
                               f"(use a simulator with a real family, see docs/baremetal.md)")
    t = TYPES.get(type_)
    if t is None:
        if type_.startswith(PREFIX) or "://" in type_:
            raise BadArgumentError(f"{type_!r} is not a valid switch type; HIL's types here: "
                                   f"{', '.join(sorted(TYPES))}")
        return type_, dict(fields)      # a cloudctl family name with its own option names
    missing = [f for f in t.fields if f not in fields]
    if missing:
        raise BadArgumentError(f"The arguments are not valid for this switch type: "
                               f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    renames = dict(t.rename)
    out: dict[str, Any] = {}
    if "interface_type" in t.fields:
        _check_interface_type(t.family, fields["interface_type"])
    for k, v in fields.items():
        if k == "interface_type":
            continue     # checked above; the port names carry it here (Te1/0/1, ethernet 1/1/5)
        if k == "dummy_vlan" and isinstance(v, str):   # HIL takes it as a string of digits
            if not (v.isascii() and v.isdigit()):
                raise BadArgumentError("The arguments are not valid for this switch type: dummy_vlan must be "
                                       "a VLAN number")
            v = int(v)
        out[renames.get(k, k)] = v
    return t.family, out


# HIL's dellnos9 and brocade drivers prefix a bare port number with `interface_type`. The families
# that stand for them here name every port in full (`Te1/0/1`, `ethernet 1/1/5`), so the field is
# checked to be a type those names can have and is not kept (docs/baremetal.md, differences).
_INTERFACE_TYPES = {
    "dell10g": ("gigabitethernet", "tengigabitethernet", "fortygigabitethernet", "gi", "te", "fo"),
    "brocade": ("ethernet",),
}


def _check_interface_type(family: str, value: Any) -> None:
    allowed = _INTERFACE_TYPES.get(family, ())
    if not isinstance(value, str) or value.lower() not in allowed:
        raise BadArgumentError(f"The arguments are not valid for this switch type: interface_type {value!r} is not "
                               f"one of {', '.join(allowed)} (the {family} family names ports in full, "
                               f"e.g. {'Te1/0/1' if family == 'dell10g' else 'ethernet 1/1/5'})")


def capabilities(family: str) -> list[str]:
    """HIL's capabilities of the type a family stands for (nativeless trunks where HIL's
    driver for that hardware reports them)."""
    return sorted({c for t in TYPES.values() if t.family == family for c in t.capabilities})
