"""AWS::CloudFormation::WaitConditionHandle and WaitCondition. A handle is a presigned URL on the
EC2 listener (`PUT /cfn-signal/<handle>?Signature=…`, signed with the stack owner's secret key so
only the URL's holder can signal); the guest sends cfn-signal's JSON body there. A condition
waits for Count SUCCESS signals, fails on a FAILURE one or after Timeout seconds, counted from when
the wait first started (its deadline is journaled then: a restart mid-wait keeps it)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ....store.records import CfnSignal, CfnWait
from . import Ctx, Failed, Handler, Made, as_int, handler, need

PATH = "/cfn-signal/"
MAX_TIMEOUT_S = 43200


def signature(secret: str, handle: str) -> str:
    return hmac.new(secret.encode(), f"cfn-signal:{handle}".encode(), hashlib.sha256).hexdigest()


def handle_of(url: str) -> str | None:
    """The handle id in a handle URL (a WaitCondition's Handle property), or None."""
    path = url.split("?", 1)[0]
    at = path.find(PATH)
    return path[at + len(PATH):] if at >= 0 else None


def signals(store: Any, handle: str) -> list[CfnSignal]:
    return [s for s in store.table(CfnSignal).values() if s.handle == handle]


@handler
class WaitConditionHandle(Handler):
    type = "AWS::CloudFormation::WaitConditionHandle"

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        handle = ctx.digest[:40]
        sig = signature(ctx.caller.user.secret_key, handle)
        return Made(f"{ctx.services.endpoint}{PATH}{handle}?Signature={sig}")

    async def delete(self, ctx: Ctx, physical: str) -> None:
        handle = handle_of(physical)
        store = ctx.services.store
        gone = signals(store, handle or "")
        if gone:
            with store.txn() as tx:
                for s in gone:
                    tx.delete(s)
            await store.sync()


@handler
class WaitCondition(Handler):
    type = "AWS::CloudFormation::WaitCondition"
    attributes = frozenset({"Data"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        handle = handle_of(str(need(props, "Handle")))
        if handle is None:
            raise Failed("Handle must be the URL of a WaitConditionHandle")
        timeout = as_int(props, "Timeout")
        if timeout is None or not 0 < timeout <= MAX_TIMEOUT_S:
            raise Failed(f"Timeout must be 1..{MAX_TIMEOUT_S} seconds")
        count = as_int(props, "Count", 1) or 1
        store = ctx.services.store
        key = f"{ctx.stack_id}|{ctx.logical}"
        wait = store.table(CfnWait).get(key)
        if wait is None:   # (else resumed after a restart: the deadline the first start journaled)
            wait = CfnWait(id=key, deadline=time.time() + timeout)
            with store.txn() as tx:
                tx.put(wait)
            await store.sync()
        try:
            made = await self._wait(ctx, handle, count, wait.deadline)
        except Failed:
            await _ended(store, key)
            raise
        await _ended(store, key)
        return made

    @staticmethod
    async def _wait(ctx: Ctx, handle: str, count: int, deadline: float) -> Made:
        while True:
            got = signals(ctx.services.store, handle)
            failed = [s for s in got if s.status == "FAILURE"]
            if failed:
                raise Failed(f"WaitCondition received failed message: '{failed[0].reason}' for uniqueId: "
                             f"{failed[0].unique_id}")
            ok = [s for s in got if s.status == "SUCCESS"]
            if len(ok) >= count:
                data = json.dumps({s.unique_id: s.data for s in sorted(ok, key=lambda s: s.at)})
                return Made(ctx.name(), {"Data": data})
            if time.time() > deadline:
                raise Failed(f"WaitCondition timed out. Received {len(ok)} conditions when expecting {count}")
            await asyncio.sleep(0.2)

    async def delete(self, ctx: Ctx, physical: str) -> None:
        return None


async def _ended(store: Any, key: str) -> None:
    """The wait is over (made or failed): its deadline goes (a later create of it starts afresh)."""
    row = store.table(CfnWait).get(key)
    if row is not None:
        with store.txn() as tx:
            tx.delete(row)
        await store.sync()
