"""The background-task supervisor: a task that dies is logged, shutdown follows the declared order."""
from __future__ import annotations

import asyncio
import logging

import pytest

from cloudctl.core.tasks import Supervisor


async def test_a_task_that_dies_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Supervisor(("poll",))

    async def broken() -> None:
        raise RuntimeError("poller bug")

    with caplog.at_level(logging.ERROR, logger="cloudctl.tasks"):
        t = tasks.spawn("poll", broken(), "monitor host-a")
        await asyncio.gather(t, return_exceptions=True)
        await asyncio.sleep(0)   # the done callback runs on the next turn
    assert "background task 'monitor host-a' died: RuntimeError: poller bug" in caplog.text
    assert tasks.running("poll") == 0
    await tasks.stop()


async def test_periodic_job_survives_a_failed_round(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Supervisor(("periodic",))
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise OSError("disk hiccup")

    with caplog.at_level(logging.ERROR, logger="cloudctl.tasks"):
        tasks.every("periodic", 0.001, job)
        while len(rounds) < 3:
            await asyncio.sleep(0.001)
    assert "periodic task job failed" in caplog.text
    assert tasks.running("periodic") == 1
    await tasks.stop()
    assert tasks.running("periodic") == 0


async def test_groups_stop_in_the_declared_order_each_before_the_next() -> None:
    tasks = Supervisor(("pollers", "jobs", "sessions"))
    ended: list[str] = []

    async def run(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)   # cleanup that takes a while: the next group must wait for it
            ended.append(name)

    for group in ("sessions", "jobs", "pollers"):   # started in the reverse order
        tasks.spawn(group, run(f"{group}-1"), f"{group}-1")
        tasks.spawn(group, run(f"{group}-2"), f"{group}-2")
    await asyncio.sleep(0)
    await tasks.stop()
    assert [n.rsplit("-", 1)[0] for n in ended] == ["pollers"] * 2 + ["jobs"] * 2 + ["sessions"] * 2
    late = tasks.spawn("jobs", run("late"), "late")   # after stop: never runs
    await asyncio.gather(late, return_exceptions=True)
    assert late.cancelled() and "late" not in ended


def test_an_undeclared_group_is_refused() -> None:
    with pytest.raises(KeyError):
        Supervisor(("a",)).spawn("b", asyncio.sleep(0), "x")
