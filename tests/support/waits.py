"""Waiting on a condition instead of a fixed sleep: a test waits as long as it must, no longer."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _tries(check: Callable[[], T], timeout: float, what: str) -> Iterator[T | None]:
    """None for each try of `check` that is false, then its true value; fail after `timeout` s.
    (The caller chooses how to wait between tries.)"""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield None
    yield got


def wait_until(check: Callable[[], T], timeout: float = 20, what: str = "the condition",
               interval: float = 0.05) -> T:
    """Poll `check` until it returns something true and return that; fail after `timeout` s."""
    for got in _tries(check, timeout, what):
        if got:
            return got
        time.sleep(interval)
    raise AssertionError("unreachable")


async def eventually(check: Callable[[], T], timeout: float = 20, what: str = "the condition",
                     interval: float = 0.01) -> T:
    """`wait_until` for a test on the loop: the loop runs (and delivers) while it waits."""
    for got in _tries(check, timeout, what):
        if got:
            return got
        await asyncio.sleep(interval)
    raise AssertionError("unreachable")


def wait_state(ec2: Any, ids: list[str], state: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The instances `ids` once all are in `state`, or as they are after `timeout` s (the caller
    asserts on what it got, so a failure shows the states seen)."""
    deadline = time.time() + timeout
    while True:
        res = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        insts = [i for r in res for i in r["Instances"]]
        if all(i["State"]["Name"] == state for i in insts) or time.time() > deadline:
            return insts
        time.sleep(0.05)


def wait_polls(server: Any, host: str, n: int = 3, timeout: float = 60) -> None:
    """Wait for the monitor to poll `host` `n` more times (failed polls count): the honest way to
    see that nothing happens "for a while", however loaded the machine is."""
    start = server.admin("GET", f"/v0/hosts/{host}")["polls"]
    wait_until(lambda: server.admin("GET", f"/v0/hosts/{host}")["polls"] >= start + n, timeout,
               f"{n} more polls of {host}")
