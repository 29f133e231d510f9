"""KeyedWork: background work in order per key, a failure logged without stopping what follows."""
from __future__ import annotations

import asyncio
import logging

import pytest

from cloudctl.core.work import KeyedWork


async def test_work_runs_in_order_per_key_and_a_failure_stops_nothing_after_it(
        caplog: pytest.LogCaptureFixture) -> None:
    work = KeyedWork()
    done: list[str] = []
    gate = asyncio.Event()

    async def step(name: str, fail: bool = False, wait: bool = False) -> None:
        if wait:
            await gate.wait()
        done.append(name)
        if fail:
            raise RuntimeError(f"{name} failed")

    work.run(["i-1"], step("a", wait=True))    # first under i-1: the task itself
    work.run(["i-1"], step("b", fail=True))    # after a
    work.run(["i-1", "v-1"], step("c"))        # after b, failed or not
    work.run(["v-2"], step("d"))               # another key: not held back by a
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert done == ["d"] and work.busy("i-1") and work.busy("v-1") and not work.busy("v-2")
    with caplog.at_level(logging.ERROR, logger="cloudctl.work"):
        gate.set()
        await work.idle()
    assert done == ["d", "a", "b", "c"]
    assert not work.busy("i-1") and not work.busy("v-1") and work.pending == 0
    failed = [r for r in caplog.records if r.name == "cloudctl.work"]
    assert len(failed) == 1 and "i-1" in failed[0].getMessage() and "b failed" in str(failed[0].exc_info[1])


async def test_close_cancels_what_outlives_the_timeout() -> None:
    work = KeyedWork()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    work.run(["i-1"], forever())
    await started.wait()
    await work.close(timeout=0.01)
    assert work.pending == 0 and not work.busy("i-1")


async def test_keys_left_out_when_empty_and_one_key_waits_as_several_do() -> None:
    """None and "" name no key (work under them alone runs at once); work under one key waits for
    the work queued under it, as work under several keys waits for all of theirs."""
    work = KeyedWork()
    done: list[str] = []
    gate = asyncio.Event()

    async def step(name: str, wait: bool = False) -> None:
        if wait:
            await gate.wait()
        done.append(name)

    work.run(("v-1", None, ""), step("a", wait=True))
    work.run([None, ""], step("b"))          # no key: not held back
    work.run(("v-1",), step("c"))            # one key, after a
    work.run(iter(["v-1", "i-1"]), step("d"))   # after a and c (an iterator of keys, read once)
    for _ in range(3):
        await asyncio.sleep(0)
    assert done == ["b"] and work.busy("v-1") and work.busy("i-1") and not work.busy("")
    gate.set()
    await work.idle()
    assert done == ["b", "a", "c", "d"] and not work.busy("v-1") and not work.busy("i-1")
