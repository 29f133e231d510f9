"""The bare-metal service: its parts over the site's tables, and what it runs in the background."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ...config import Baremetal as BaremetalConfig
from ...config import LoginThrottle, parse_vlan_ranges
from ...store.store import Store
from ..compute import Compute
from ..events import Events
from ..images import Images
from ..tasks import Supervisor
from ..throttle import Throttle
from ..users import Users
from ..workpool import WorkPool
from .auth import Caller
from .console import Consoles
from .headnodes import Headnodes
from .networks import Networks
from .obm import Obm
from .operations import Operations
from .secrets import BmSecrets
from .site import Site
from .users import BmUsers

log = logging.getLogger("cloudctl.baremetal")


class Baremetal:
    def __init__(self, store: Store, config: BaremetalConfig, events: Events, compute: Compute, users: Users,
                 images: Images, secrets: BmSecrets, console_dir: Path, tasks: Supervisor,
                 logins: LoginThrottle = LoginThrottle(), throttle: Throttle | None = None,
                 hashing: WorkPool | None = None) -> None:
        self.tasks = tasks
        self.config = config
        self.site = Site(store, parse_vlan_ranges(config.vlans), secrets)
        self.site.switch_timeout_s = config.switch_timeout_s
        self.headnodes = Headnodes(self.site, compute, users, images, config.headnode_bridge)
        self.networks = Networks(self.site)
        self.ops = Operations(self.site, config, events, tasks)
        self.users = BmUsers(self.site, config.auth, logins, throttle, hashing)
        self.obm = Obm(self.site, config.command_timeout_s)
        self.console = Consoles(self.site, config, console_dir, events, tasks)
        self._audit: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Resume pending operations and audit the switches, in the background: a dead switch
        must not hold up the controller's start."""
        self.ops.start()
        self.console.start()
        self._audit = self.tasks.spawn("start-up", self._audit_on_start(), "switch audit at start")

    async def _audit_on_start(self) -> None:
        try:
            n = await self.ops.trim()     # the retention may have shrunk since the last run
            if n:
                log.info("pruned %d finished switch operations", n)
        except Exception:
            log.exception("pruning finished switch operations failed")
        try:
            await self.ops.audit_on_start()
        except Exception:
            log.exception("start-up switch audit failed")

    async def delete_switch(self, caller: Caller, name: str) -> None:
        await self.site.delete_switch(caller, name)
        await self.ops.forget_switch(name)

    async def detach_node(self, caller: Caller, project: str, node: str) -> None:
        """Leaving its project ends the node's console capture (the next owner must not read it)."""
        await self.site.detach_node(caller, project, node)
        await self.console.forget(node)

    async def delete_node(self, caller: Caller, name: str) -> None:
        await self.site.delete_node(caller, name)
        await self.console.forget(name)

    async def close(self) -> None:
        await self.console.close()
        if self._audit is not None:
            self._audit.cancel()
            await asyncio.gather(self._audit, return_exceptions=True)
        await self.ops.close()
        self.users.close()
