"""Console sessions: kept server-side, in memory, named by a random cookie value.

A session holds who signed in (a cloud user by access key id, or the operator), its CSRF token
and its deadlines; the browser holds only the random id. Signing out deletes the row, so the
cookie is worthless afterwards even if it was copied. Sessions do not survive a restart (users
sign in again); nothing of them is written to disk.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import field
from typing import Literal

from ..config import Console as ConsoleConfig
from ..slim import dataclass

Kind = Literal["user", "operator"]


@dataclass(slots=True)
class Session:
    sid: str
    kind: Kind
    access_key: str          # the user's access key id ("" for the operator)
    csrf: str
    created: float
    seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)   # (level, message) shown on the next page


class Sessions:
    """Sessions by id, least recently used first; expired ones are ended when looked up."""

    def __init__(self, cfg: ConsoleConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.rows: OrderedDict[str, Session] = OrderedDict()

    def open(self, kind: Kind, access_key: str = "") -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), kind, access_key, secrets.token_urlsafe(32), now, now)
        self.rows[s.sid] = s
        while len(self.rows) > self.cfg.max_sessions:
            self.rows.popitem(last=False)
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id, touched; None if unknown, ended or expired."""
        if not sid:
            return None
        s = self.rows.get(sid)
        if s is None:
            return None
        now = self.clock()
        if now - s.seen > self.cfg.session_idle_s or now - s.created > self.cfg.session_max_s:
            del self.rows[sid]
            return None
        s.seen = now
        self.rows.move_to_end(sid)
        return s

    def alive(self, session: Session) -> bool:
        """Whether `session` is still open and unexpired, without counting this as a use (a page
        left open on a live stream does not keep its session from expiring)."""
        now = self.clock()
        return self.rows.get(session.sid) is session and now - session.seen <= self.cfg.session_idle_s \
            and now - session.created <= self.cfg.session_max_s

    def close(self, sid: str) -> None:
        self.rows.pop(sid, None)
