"""The switch driver contract.

A driver configures the VLANs of one switch's ports and reads them back. It knows nothing of
nodes, projects or the store: it is told a port's whole desired VLAN set and makes the switch
match it. Setting the whole set (rather than "add VLAN 5") makes every change idempotent, so an
operation replayed after a crash converges instead of doubling up, and the audit can compare
what a port has with what it should have.

A family is one `SwitchDriver` subclass in a module of this package: defining the class with its
`family` name registers it (no list to edit), and its options model marks its own secret fields
(`Secret`, or pydantic's `SecretStr`), which are what the controller seals at rest and never shows.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated, Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo

from ...slim import dataclass


@dataclass(frozen=True, slots=True)
class PortVlans:
    """What a port carries: one untagged (native) VLAN and tagged VLANs.

    `trunk_all` is a read-back only state: the port passes every VLAN (an unconfigured OVS port,
    a Cisco trunk with no allowed list). It is never desired, so it always shows as drift.
    """
    native: int | None = None
    tagged: frozenset[int] = frozenset()
    trunk_all: bool = False

    def describe(self) -> str:
        if self.trunk_all:
            return "all VLANs (unconfigured trunk)"
        parts = [f"native {self.native}"] if self.native is not None else []
        if self.tagged:
            parts.append("tagged " + ",".join(str(v) for v in sorted(self.tagged)))
        return ", ".join(parts) or "no VLAN"


class SwitchError(Exception):
    """The switch refused or failed a command: the operation fails with this text."""


class SwitchUnreachable(SwitchError):
    """The session broke or timed out: worth reconnecting and trying again."""


#: A password, token or key: sealed in the journal and checkpoints, hidden from `show_switch`,
#: opened only for the driver. (A `SecretStr` field is treated the same way.)
Secret = Annotated[str, Field(json_schema_extra={"secret": True})]


def _marked(info: Any) -> bool:
    extra = info.json_schema_extra if isinstance(info, FieldInfo) else None
    return isinstance(extra, dict) and extra.get("secret") is True


def _is_secret(field: FieldInfo) -> bool:
    if _marked(field):
        return True
    parts: list[Any] = [field.annotation]
    for t in parts:      # the annotation and what it is made of: `Secret | None` keeps its mark inside
        parts.extend(get_args(t))
    return any(_marked(t) or (isinstance(t, type) and issubclass(t, SecretStr)) for t in parts)


class DriverOptions(BaseModel):
    """Registration fields; each family extends it. Secret fields are top-level strings."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        """The fields marked `Secret` or typed `SecretStr`: sealed at rest, never shown."""
        return _secret_fields(cls)

    def stored(self) -> dict[str, Any]:
        """The options as plain values to keep (secret ones still clear: the caller seals them)."""
        out = self.model_dump(exclude_none=True)
        for f in self.secret_fields():
            if isinstance(out.get(f), SecretStr):
                out[f] = out[f].get_secret_value()
        return out


@functools.cache
def _secret_fields(model: type[DriverOptions]) -> tuple[str, ...]:
    return tuple(name for name, f in model.model_fields.items() if _is_secret(f))


_REGISTRY: dict[str, type[SwitchDriver]] = {}   # family name -> driver class

#: Seconds a switch has to answer one command (or the login) as expected before the call fails.
DEFAULT_TIMEOUT_S = 5.0

_IFNAME = re.compile(r"^([A-Za-z-]*)\s*([0-9][0-9/:.]*)$")


def interface_key(name: str) -> tuple[str, str] | None:
    """An interface name as (lowercase type word, numbers): `Gi1/0/5` -> ("gi", "1/0/5")."""
    m = _IFNAME.match(name.strip())
    return (m.group(1).lower(), m.group(2)) if m else None


def same_interface(listed: str, given: str) -> bool:
    """Whether `given` names the switch's interface `listed`, as switch CLIs read names: case
    does not matter and the type word may be abbreviated (`gi1/0/5` is `GigabitEthernet1/0/5`)."""
    a, b = interface_key(listed), interface_key(given)
    if a is None or b is None:
        return listed.strip().lower() == given.strip().lower()
    return a[1] == b[1] and (a[0].startswith(b[0]) or b[0].startswith(a[0]))


class SwitchDriver(ABC):
    """One switch, one persistent session; calls are serialized by the caller (one worker per switch)."""

    family: ClassVar[str]
    options_model: ClassVar[type[DriverOptions]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class that names its own `family` registers it; one class per family."""
        super().__init_subclass__(**kwargs)
        family = cls.__dict__.get("family")
        if family is None:
            return
        model = getattr(cls, "options_model", None)
        if not (isinstance(model, type) and issubclass(model, DriverOptions)):
            raise TypeError(f"switch family {family!r}: {cls.__name__}.options_model is not a DriverOptions model")
        other = _REGISTRY.setdefault(family, cls)
        if other is not cls:
            raise TypeError(f"switch family {family!r} is already registered by {other.__module__}.{other.__name__}")

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.name = name
        self.options = self.options_model.model_validate(options)
        self.timeout = timeout

    @classmethod
    @abstractmethod
    def check_port_name(cls, name: str) -> str | None:
        """None if the switch can have a port by this name, else why not."""

    @classmethod
    def canonical_port(cls, name: str) -> str:
        """The switch's own spelling of a port name (`gi1/0/11` -> `Gi1/0/11`): two names with the
        same canonical form are one port."""
        return name

    @abstractmethod
    async def set_port(self, port: str, vlans: PortVlans) -> None:
        """Make the port carry exactly `vlans`; no VLAN at all parks it where no traffic passes."""

    @abstractmethod
    async def read_port(self, port: str) -> PortVlans: ...

    @abstractmethod
    async def list_ports(self) -> list[str]:
        """The switch's own interface names, read from it (not from our records)."""

    async def has_port(self, port: str) -> bool:
        """Whether the switch has this port, as its CLI would read the name."""
        return any(same_interface(p, port) for p in await self.list_ports())

    @abstractmethod
    async def save(self) -> None:
        """Persist the running configuration, so a switch reboot keeps the VLANs."""

    @abstractmethod
    async def close(self) -> None: ...



@functools.cache
def _discover() -> None:
    """Import this package's modules once, so each built-in family's class registers itself."""
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{m.name}")


def driver_class(family: str) -> type[SwitchDriver] | None:
    """The driver for a family name (modules imported on first use)."""
    _discover()
    return _REGISTRY.get(family)


def families() -> tuple[str, ...]:
    """Every registered family name, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def secret_fields(family: str) -> tuple[str, ...]:
    """The secret option names of a family; none for a family not (or no longer) registered."""
    cls = driver_class(family)
    return cls.options_model.secret_fields() if cls is not None else ()
