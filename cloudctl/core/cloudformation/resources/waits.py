"""AWS::CloudFormation::WaitConditionHandle and WaitCondition. A handle is a presigned URL on the
EC2 listener (`PUT /cfn-signal/<handle>?Signature=…`, signed with the stack owner's secret key so
only the URL's holder can signal); the guest sends cfn-signal's JSON body there. A condition
waits for Count SUCCESS signals, fails on a FAILURE one or after Timeout seconds."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ....store.records import CfnSignal
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
        end = time.monotonic() + timeout
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
            if time.monotonic() > end:
                raise Failed(f"WaitCondition timed out. Received {len(ok)} conditions when expecting {count}")
            await asyncio.sleep(0.2)

    async def delete(self, ctx: Ctx, physical: str) -> None:
        return None
