"""Open vSwitch driven over SSH with `ovs-vsctl`.

Access ports are `vlan_mode=access tag=N`; trunks `vlan_mode=trunk trunks=…`; a native VLAN
with tagged ones is `vlan_mode=native-untagged`. An OVS port with neither tag nor trunks passes
every VLAN, so a port with nothing attached is parked as a trunk of the switch's `dummy_vlan`
alone, where untagged traffic is dropped. Each change is one `ovs-vsctl` transaction, and OVS
keeps its configuration in its database, so "save" has nothing to do.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import Field

from .base import DEFAULT_TIMEOUT_S, DriverOptions, PortVlans, Secret, SwitchDriver, SwitchError
from .ssh import ShellSession

_PORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")


class OvsOptions(DriverOptions):
    hostname: Annotated[str, Field(pattern=r"^[A-Za-z0-9.:_-]+$")]
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    username: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]*$")]
    host_key: Annotated[str, Field(pattern=r"^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+$")]   # pinned
    password: Secret | None = None
    client_key: str | None = None          # private key file on the controller
    bridge: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")]
    ovsdb: Annotated[str, Field(pattern=r"^(unix|tcp|ssl):[A-Za-z0-9./_:-]+$")] | None = None
    dummy_vlan: Annotated[int, Field(ge=1, le=4094)] = 4094


def _set(value: Any) -> list[Any]:
    """ovs-vsctl's JSON: a set is ["set", [...]], a one-element set is the bare value."""
    if isinstance(value, list) and value and value[0] == "set":
        return list(value[1])
    return [value]


class OvsDriver(SwitchDriver):
    family = "ovs"
    options_model = OvsOptions
    options: OvsOptions

    def __init__(self, name: str, options: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name, options, timeout)
        o = self.options
        self.session = ShellSession(o.hostname, o.ssh_port, o.username, o.host_key, o.password, o.client_key,
                                    timeout)

    @classmethod
    def check_port_name(cls, name: str) -> str | None:
        if _PORT.match(name):
            return None
        return "an Open vSwitch port name is 1-15 letters, digits or ._- (a Linux interface name)"

    def _vsctl(self, *args: str) -> list[str]:
        db = [f"--db={self.options.ovsdb}"] if self.options.ovsdb else []
        return ["ovs-vsctl", f"--timeout={max(1, int(self.timeout))}", *db, *args]

    async def set_port(self, port: str, vlans: PortVlans) -> None:
        tagged = ",".join(str(v) for v in sorted(vlans.tagged))
        if vlans.native is not None and tagged:
            cmd = ["set", "port", port, "vlan_mode=native-untagged", f"tag={vlans.native}", f"trunks={tagged}"]
        elif vlans.native is not None:
            cmd = ["set", "port", port, "vlan_mode=access", f"tag={vlans.native}", "--",
                   "clear", "port", port, "trunks"]
        elif tagged:
            cmd = ["set", "port", port, "vlan_mode=trunk", f"trunks={tagged}", "--", "clear", "port", port, "tag"]
        else:
            cmd = ["set", "port", port, "vlan_mode=trunk", f"trunks={self.options.dummy_vlan}", "--",
                   "clear", "port", port, "tag"]
        await self.session.check(self._vsctl("--", *cmd))

    async def read_port(self, port: str) -> PortVlans:
        out = await self.session.check(self._vsctl("--format=json", "--columns=tag,trunks,vlan_mode",
                                                   "list", "port", port))
        try:
            tag_v, trunks_v, mode_v = json.loads(out)["data"][0]
        except (ValueError, KeyError, IndexError) as e:
            raise SwitchError(f"cannot parse ovs-vsctl output for port {port}: {e}") from None
        tag = (_set(tag_v) or [None])[0]
        trunks = frozenset(int(v) for v in _set(trunks_v)) - {self.options.dummy_vlan}
        mode = (_set(mode_v) or [None])[0] or ("access" if tag is not None else "trunk")
        if mode == "access":
            return PortVlans(native=tag)
        if mode == "trunk":
            if not _set(trunks_v):
                return PortVlans(trunk_all=True)
            return PortVlans(tagged=trunks)
        # native-untagged / native-tagged
        return PortVlans(native=tag, tagged=trunks, trunk_all=not _set(trunks_v))

    async def list_ports(self) -> list[str]:
        return (await self.session.check(self._vsctl("list-ports", self.options.bridge))).split()

    async def has_port(self, port: str) -> bool:
        return port in await self.list_ports()        # Linux names: exact, case matters

    async def save(self) -> None:
        return None

    async def close(self) -> None:
        await self.session.close()
