"""Who is asking, whether they only want to know if they could, and how they share the loop."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ..slim import dataclass
from ..store.records import User
from .errors import CloudError


@asynccontextmanager
async def next_turn() -> AsyncIterator[None]:
    """Let the event loop run other work first (the default Caller.turn)."""
    await asyncio.sleep(0)
    yield


@dataclass(slots=True)
class Caller:
    user: User
    dry_run: bool = False
    # Long synchronous work for this request is done in pieces, each in `async with turn():`
    # (the block must not await). The EC2 endpoint hands out turns across its requests.
    turn: Callable[[], AbstractAsyncContextManager[None]] = next_turn
    # The cloud's own services (HIL headnodes; AutoScaling, CloudFormation later) launch for the
    # account a request names; no request from outside is ever `system`.
    system: bool = False

    @classmethod
    def service(cls, name: str) -> Caller:
        """The cloud acting on its own, as `name`: it owns nothing and names whom it acts for."""
        return cls(User(name=name, access_key="", secret_key="", account_id="", created=0.0), system=True)

    @property
    def account(self) -> str:
        return self.user.account_id

    def check_dry_run(self) -> None:
        """Called by every action after validation and before any change."""
        if self.dry_run:
            raise CloudError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
