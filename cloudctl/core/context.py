"""Who is asking, and whether they only want to know if they could."""
from __future__ import annotations

from dataclasses import dataclass

from ..store.records import User
from .errors import CloudError


@dataclass(slots=True)
class Caller:
    user: User
    dry_run: bool = False

    @property
    def account(self) -> str:
        return self.user.account_id

    def check_dry_run(self) -> None:
        """Called by every action after validation and before any change."""
        if self.dry_run:
            raise CloudError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
