"""Large answers written in slices, one slice per turn of the event loop (api/turns.py): each
answer is still one snapshot of the state, pages still join up, and answers keep their order."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from cloudctl.api.ec2.actions import ACTIONS
from cloudctl.api.ec2.model import OPERATIONS, load_model
from cloudctl.api.ec2.protocol import Protocol
from cloudctl.api.turns import Turns
from cloudctl.config import load_config
from cloudctl.core.cloud import Cloud
from cloudctl.core.context import Caller
from cloudctl.core.instance_facts import describe_page
from cloudctl.core.launch import LaunchSpec
from cloudctl.core.query import Query

from support import write_config

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


@pytest.fixture
async def cloud(tmp_path: Path, model_cache: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.open(load_config(write_config(tmp_path, model_cache)), "http://127.0.0.1:0")
    yield c
    await c.stop()


def tags_by_instance(body: bytes) -> dict[str, dict[str, str]]:
    root = ET.fromstring(body)
    out = {}
    for inst in root.iter(f"{NS}instancesSet"):
        for item in inst.findall(f"{NS}item"):
            tags = {t.findtext(f"{NS}key"): t.findtext(f"{NS}value") for t in item.iterfind(f"{NS}tagSet/{NS}item")}
            out[item.findtext(f"{NS}instanceId")] = tags
    return out


async def test_an_answer_is_the_state_when_it_was_asked(cloud: Cloud) -> None:
    """A change made while an answer is being written (between two slices) is not in it."""
    caller = Caller(await cloud.users.create("u"))
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(caller, LaunchSpec(image.id, 12, 12, instance_type="t3.nano"))
    await cloud.compute.idle()
    ids = sorted(i.id for i in insts)
    protocol = Protocol(load_model(OPERATIONS, cloud.config.cache_dir))
    describe = ACTIONS["DescribeInstances"]

    result = await describe(cloud, caller, {})
    pieces = protocol.serialize_iter("DescribeInstances", result, "r-1", slice_items=1)
    head = next(pieces)          # the answer is under way...
    await cloud.tags.create(caller, [ids[0], ids[-1]], [("team", "blue")])   # ...one change
    await cloud.compute.stop(caller, [ids[-1]])
    answer = head + b"".join(pieces)

    tags = tags_by_instance(answer)
    assert sorted(tags) == ids
    assert all(t == {} for t in tags.values())
    states = {i.findtext(f"{NS}instanceId"): i.findtext(f"{NS}instanceState/{NS}name")
              for i in ET.fromstring(answer).iter(f"{NS}item") if i.find(f"{NS}instanceState") is not None}
    assert states[ids[-1]] == "running"

    after = tags_by_instance(b"".join(protocol.serialize_iter("DescribeInstances", await describe(cloud, caller, {}),
                                                              "r-2", slice_items=1)))
    assert after[ids[0]] == after[ids[-1]] == {"team": "blue"}


async def test_a_large_page_is_read_in_turns_as_of_one_moment(cloud: Cloud) -> None:
    """The page's facts are read a chunk per turn; a change between two chunks (here: tags on the
    first and the last instance, in one transaction) makes the read start over, so the page
    never shows the first instance as before the change and the last as after it."""
    owner = await cloud.users.create("u")
    image = next(iter(cloud.images.table.values()))
    _, insts = await cloud.compute.run(Caller(owner), LaunchSpec(image.id, 12, 12, instance_type="t3.nano"))
    await cloud.compute.idle()
    ids = sorted(i.id for i in insts)
    turns: list[int] = []

    @asynccontextmanager
    async def turn() -> AsyncIterator[None]:
        turns.append(len(turns))
        if len(turns) == 2:     # between the second and the third chunk: one change
            await cloud.tags.create(Caller(owner), [ids[0], ids[-1]], [("team", "blue")])
        yield

    page, token = await describe_page(cloud, Caller(owner, turn=turn), Query(), chunk=4)
    assert token is None
    facts = [f for _, fs in page for f in fs]
    assert [f.inst.id for f in facts] == ids
    tagged = {f.inst.id: dict(f.tags) for f in facts}
    assert tagged[ids[0]] == tagged[ids[-1]] == {"team": "blue"}   # read again, after the change
    assert len(turns) == 2 + 2          # 12 instances: 3 chunks, the first without a turn; then again

    quiet: list[int] = []

    @asynccontextmanager
    async def counted() -> AsyncIterator[None]:
        quiet.append(1)
        yield

    again, _ = await describe_page(cloud, Caller(owner, turn=counted), Query(max_results=10), chunk=4)
    assert [f.inst.id for _, fs in again for f in fs] == ids[:10] and len(quiet) == 2


async def test_turns_run_one_slice_per_loop_turn_first_come_first() -> None:
    turns = Turns()
    log: list[str] = []
    stop = False

    async def ticker() -> None:      # marks every turn of the loop
        while not stop:
            log.append("tick")
            await asyncio.sleep(0)

    async def answer(name: str, since: float, slices: int) -> None:
        for k in range(slices):
            async with turns.turn(since):
                log.append(f"{name}{k}")

    async def late(name: str, since: float, slices: int) -> None:
        while "A1" not in log:
            await asyncio.sleep(0)
        await answer(name, since, slices)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await answer("L", 0.0, 3)        # alone: still one slice per turn of the loop
    # Started in this order, but C's request came first, then A's, then B's; E and D come
    # last, while A is under way.
    await asyncio.gather(answer("A", 2.0, 3), answer("B", 3.0, 2), answer("C", 1.0, 2),
                         late("D", 5.0, 2), late("E", 4.0, 1))
    stop = True
    await tick
    slices = [e for e in log if e != "tick"]
    # A, first to ask for a turn, takes the free one; then the earliest request goes first.
    assert slices == ["L0", "L1", "L2", "A0", "C0", "C1", "A1", "A2", "B0", "B1", "E0", "D0", "D1"]
    for a, b in zip(log, log[1:]):
        assert "tick" in (a, b), f"{a} and {b} ran in the same turn of the loop"
    assert turns.waiting == 0


async def test_requests_start_one_per_loop_turn() -> None:
    """Turns.wait: each request's first step (before its first await) runs in its own turn."""
    turns = Turns()
    log: list[str] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            log.append("tick")
            await asyncio.sleep(0)

    async def request(name: str, since: float) -> None:
        await turns.wait(since)
        log.append(name)                 # its synchronous step
        await asyncio.sleep(0)           # its handler's first await: the turn has passed on
        log.append(name + "'")

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(request("a", 1.0), request("b", 3.0), request("c", 2.0))
    stop = True
    await tick
    starts = [e for e in log if e in ("a", "b", "c")]
    assert starts == ["a", "c", "b"]
    for x, y in zip(starts, starts[1:]):
        assert "tick" in log[log.index(x):log.index(y)], f"{x} and {y} started in the same turn"


async def test_a_request_takes_back_the_turn_it_passed_on_until_it_suspends() -> None:
    """Turns.pass_on/wait with a token, then take_free: a request's first slice joins its start
    (one block, in the same turn of the loop), once, only while nothing older waits and before
    the request suspends; everyone else still finds the turn held."""
    turns = Turns()
    a, b = object(), object()
    assert turns.pass_on(a, 1.0)
    assert not turns.pass_on(b, 2.0) and not turns.take_free(b) and not turns.take_free()
    assert turns.take_free(a)            # its first slice, in the turn of its start
    turns.release()
    assert not turns.take_free(a)        # once: a second slice waits for the next turn
    await asyncio.sleep(0)               # (the turn passes: free again)
    assert turns.pass_on(a, 3.0)
    await asyncio.sleep(0)               # a suspended after its start: the loan has lapsed,
    assert turns.take_free(b)            # so once another holds the turn...
    assert not turns.take_free(a)        # ...a waits like everyone
    turns.release()
    await asyncio.sleep(0)

    # Handed the turn after waiting (wait), with an older and a newer request still waiting.
    order: list[str] = []

    async def request(name: str, since: float, token: object) -> None:
        await turns.wait(since, token)
        if turns.take_free(token):
            order.append(name + " start+slice")
            turns.release()
        else:
            order.append(name + " start")
            async with turns.turn(since):
                order.append(name + " slice")

    async with turns.turn(0.0):          # held while all three queue
        tasks = [asyncio.create_task(request(n, s, object())) for n, s in (("new", 9.0), ("old", 1.0), ("mid", 5.0))]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    # Each, handed the turn in arrival order, writes its first slice at once: nothing older waits.
    assert order == ["old start+slice", "mid start+slice", "new start+slice"]


async def test_a_cancelled_answer_passes_its_turn_on() -> None:
    turns = Turns()
    done: list[str] = []

    async def answer(name: str, since: float) -> None:
        async with turns.turn(since):
            done.append(name)

    async with turns.turn(0.0):      # held: the others wait
        a = asyncio.create_task(answer("a", 1.0))
        b = asyncio.create_task(answer("b", 2.0))
        await asyncio.sleep(0)
    a.cancel()                       # the client went away while waiting
    await asyncio.gather(a, b, return_exceptions=True)
    assert done == ["b"]
    async with turns.turn(3.0):      # and the turn is free again
        done.append("c")
    assert done == ["b", "c"]


@pytest.mark.slow
def test_concurrent_changes_never_tear_an_answer(new_server: Any) -> None:
    """Served with one element per slice: while describes run, two instances are re-tagged
    together, again and again (one CreateTags each time). No answer may show them differing, and
    pages (larger than a slice) still list every instance once."""
    server = new_server(ec2={"listen": "127.0.0.1", "port": 0, "answer_slice_items": 1})
    user = server.create_user("pacer")
    ec2 = server.client(user)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    ids = sorted(i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=30, MaxCount=30,
                                                            InstanceType="t3.nano")["Instances"])
    pair = [ids[0], ids[-1]]          # the first and the last of every answer: many slices apart
    ec2.create_tags(Resources=pair, Tags=[{"Key": "v", "Value": "0"}])
    stop = threading.Event()
    changes = [0]
    failures: list[str] = []
    seen_values: set[str] = set()
    lock = threading.Lock()

    def tagger() -> None:
        client = server.client(user)
        while not stop.is_set():
            changes[0] += 1
            client.create_tags(Resources=pair, Tags=[{"Key": "v", "Value": str(changes[0])}])

    def describer(paged: bool) -> None:
        client = server.client(user)
        for _ in range(12):
            if paged:
                pages = client.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 7})
                listed = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
                if listed != ids:
                    with lock:
                        failures.append(f"pages listed {len(listed)} instances, {len(set(listed))} distinct")
                continue
            insts = {i["InstanceId"]: i for r in client.describe_instances()["Reservations"] for i in r["Instances"]}
            values = [{t["Key"]: t["Value"] for t in insts[iid].get("Tags", [])}.get("v") for iid in pair]
            with lock:
                seen_values.add(values[0] or "")
                if values[0] != values[1]:
                    failures.append(f"one answer shows the pair tagged {values}")

    workers = [threading.Thread(target=describer, args=(k % 3 == 0,)) for k in range(6)]
    tag_thread = threading.Thread(target=tagger)
    tag_thread.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    tag_thread.join()
    assert failures == []
    assert len(seen_values) > 1, "the tags never changed while the describes ran: the test proved nothing"


async def test_loop_monitor_sees_a_blocked_loop() -> None:
    """The stall the bench reports: a loop held for 50 ms shows as 50 ms late, in wall-clock time
    and as the loop's own lateness (the thread was not waiting for a CPU while it slept)."""
    from cloudctl.server import LoopMonitor
    monitor = LoopMonitor()
    monitor.start()
    await asyncio.sleep(0.05)
    monitor.reset()
    time.sleep(0.05)                  # code that holds the loop
    await asyncio.sleep(0.03)
    wall, own = monitor.reset()
    monitor.stop()
    assert wall >= 0.035 and own >= 0.035
    assert own <= wall + 0.002
