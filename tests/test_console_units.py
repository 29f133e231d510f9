"""The console's pieces without a server: sessions' expiry and cap, chart geometry, and the
`back` redirect guard (forms may only send their user to a console page)."""
from __future__ import annotations

from cloudctl.config import Console as ConsoleConfig
from cloudctl.console.app import back
from cloudctl.console.charts import HEIGHT, WIDTH, chart
from cloudctl.console.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_when_idle_and_at_its_maximum_age() -> None:
    clock = Clock()
    sessions = Sessions(ConsoleConfig(enabled=True, session_idle_s=60, session_max_s=150), clock)
    s = sessions.open("user", "AKCCX")
    assert sessions.get(s.sid) is s
    clock.now += 59                     # used within the idle time: kept, and the idle time restarts
    assert sessions.get(s.sid) is s
    clock.now += 59
    assert sessions.get(s.sid) is s
    clock.now += 40                     # 158 s old: past the maximum age although in use
    assert sessions.get(s.sid) is None
    assert s.sid not in sessions.rows   # (forgotten, not just refused)
    idle = sessions.open("operator")
    clock.now += 30
    assert sessions.alive(idle)
    clock.now += 31                     # `alive` (a live stream's check) did not count as a use
    assert not sessions.alive(idle)
    assert sessions.get(idle.sid) is None


def test_sessions_are_capped_oldest_first_and_ids_are_unguessable() -> None:
    sessions = Sessions(ConsoleConfig(enabled=True, max_sessions=3), Clock())
    made = [sessions.open("user", f"AK{n}") for n in range(4)]
    assert sessions.get(made[0].sid) is None and all(sessions.get(s.sid) for s in made[1:])
    assert len({s.sid for s in made}) == 4 and all(len(s.sid) >= 40 for s in made)
    assert all(s.csrf != s.sid and len(s.csrf) >= 40 for s in made)
    assert sessions.get("") is None and sessions.get(None) is None and sessions.get("nope") is None
    sessions.close(made[1].sid)
    assert sessions.get(made[1].sid) is None


def test_a_chart_spans_its_box() -> None:
    c = chart("x", "ms", [0.0, 5.0, 10.0])
    pts = [tuple(map(float, p.split(","))) for p in c.points.split()]
    assert pts == [(0.0, HEIGHT), (WIDTH / 2, HEIGHT / 2), (WIDTH, 0.0)]
    assert (c.last, c.top) == (10.0, 10.0)
    flat = chart("y", "", [0.0, 0.0])   # all zero: drawn along the bottom, no division by zero
    assert flat.points == f"0.0,{HEIGHT:.1f} {WIDTH:.1f},{HEIGHT:.1f}"
    assert chart("z", "", []).points == ""


def test_back_goes_only_to_console_pages() -> None:
    assert back({"back": "/console/instances/i-1"}) == "/console/instances/i-1"
    for bad in ("https://evil.example/", "//evil.example/console/", "/console//evil", "/v0/users",
                "/console\\\\evil", "", None):
        assert back({"back": bad}) == "/console/", bad
    assert back({}, "/console/volumes") == "/console/volumes"
