"""A load balancer's own network namespace, plugged into a host bridge like a guest.

`cloudctl-lb-<name>` holds one end of a veth pair, renamed `eth0`, with the balancer's address,
a default route through the subnet's gateway and loopback up; the other end (`lb` + a hash of the
name, so it fits IFNAMSIZ and is the same after a controller restart) joins the host bridge:

- a Linux bridge: the veth joins it directly;
- an Open vSwitch bridge with a VLAN: the veth joins the per-VLAN Linux bridge that guests of that
  VLAN join (`HybridPlug`), so whatever filters guests' bridge ports filters the balancer's too;
- an Open vSwitch bridge without a VLAN: the veth is an OVS port of it.

Every `ip` call is an asyncio subprocess; `ensure` is idempotent (a restart re-runs it).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil

from cloudctl.drivers.hypervisor.ovs_plug import HybridPlug, PlugError
from cloudctl.drivers.loadbalancer.base import LoadBalancerError, Placement

from ...slim import dataclass

NS_PREFIX = "cloudctl-lb-"


@dataclass(frozen=True, slots=True)
class Netns:
    name: str        # the namespace
    veth: str        # the host end of the pair
    ovs_db: str | None = None

    @classmethod
    def of(cls, balancer: str, ovs_db: str | None = None) -> "Netns":
        h = hashlib.sha256(balancer.encode()).hexdigest()[:11]
        return cls(f"{NS_PREFIX}{balancer}", f"lb{h}", ovs_db)    # 13 characters <= IFNAMSIZ - 1

    def vsctl(self, *args: str) -> list[str]:
        db = [f"--db={self.ovs_db}"] if self.ovs_db else []
        return ["ovs-vsctl", *db, "--timeout=10", *args]

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    async def exists(self) -> bool:
        return os.path.exists(f"/run/netns/{self.name}")

    async def ensure(self, p: Placement) -> None:
        assert p.bridge is not None
        if not await self.exists():
            await run("ip", "netns", "add", self.name, ok_if="File exists")
        if not os.path.exists(f"/sys/class/net/{self.veth}"):
            await run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                      "netns", self.name, ok_if="File exists")
        ns = ["ip", "-n", self.name]
        await run(*ns, "link", "set", "lo", "up")
        await run(*ns, "addr", "replace", f"{p.address}/{p.prefix}", "dev", "eth0")
        await run(*ns, "link", "set", "eth0", "up")
        if p.gateway is not None:
            await run(*ns, "route", "replace", "default", "via", p.gateway, "dev", "eth0")
        await self._join(p.bridge, p.vlan)
        await run("ip", "link", "set", self.veth, "up")

    async def _join(self, bridge: str, vlan: int | None) -> None:
        if os.path.isdir(f"/sys/class/net/{bridge}/bridge"):          # a Linux bridge
            await run("ip", "link", "set", self.veth, "master", bridge)
            return
        if vlan is not None:
            plug = HybridPlug.of(bridge, vlan, self.ovs_db)
            try:
                await asyncio.to_thread(plug.ensure)
            except PlugError as e:
                raise LoadBalancerError(f"plugging into {bridge} VLAN {vlan}: {e}") from None
            await run("ip", "link", "set", self.veth, "master", plug.bridge)
            return
        await run(*self.vsctl("--may-exist", "add-port", bridge, self.veth))

    async def remove(self) -> None:
        """Delete the namespace (its `eth0` and so the pair go with it) and the host end if left."""
        if os.path.exists(f"/sys/class/net/{self.veth}"):
            # An OVS port outlives its device in the database; take it out before the link.
            if not os.path.exists(f"/sys/class/net/{self.veth}/brport") and shutil.which("ovs-vsctl"):
                await run(*self.vsctl("--if-exists", "del-port", self.veth), ok_if="")
            await run("ip", "link", "del", self.veth, ok_if="Cannot find device")
        if await self.exists():
            await run("ip", "netns", "del", self.name, ok_if="No such file")


async def run(*argv: str, ok_if: str | None = None) -> str:
    """Run a command off the loop; a failure is a LoadBalancerError with the tool's own text
    (unless its stderr holds `ok_if`; "" accepts any failure)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise LoadBalancerError(f"{argv[0]}: {e.strerror}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise LoadBalancerError(f"{' '.join(argv)}: timed out") from None
    text = err.decode(errors="replace").strip()
    if proc.returncode != 0 and not (ok_if is not None and ok_if in text):
        raise LoadBalancerError(f"{' '.join(argv)}: {text or f'exit status {proc.returncode}'}")
    return out.decode(errors="replace")
