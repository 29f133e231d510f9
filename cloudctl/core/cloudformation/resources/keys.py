"""AWS::EC2::KeyPair over core/keypairs: a new key (its private half is not kept, as the API's
CreateKeyPair answer is the only place it appears) or an imported public key."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import CloudError
from . import STACK_ID, Ctx, Handler, Made, gone, handler, need


@handler
class KeyPair(Handler):
    type = "AWS::EC2::KeyPair"
    attributes = frozenset({"KeyPairId", "KeyFingerprint"})

    async def create(self, ctx: Ctx, props: Mapping[str, Any]) -> Made:
        keys = ctx.services.keypairs
        name = str(need(props, "KeyName"))
        k = keys.by_name(ctx.owner, name)
        if k is None or ctx.services.tags.of(k.id).get(STACK_ID) != ctx.stack_id:
            tags = ctx.system_tags
            if props.get("PublicKeyMaterial"):
                k = await keys.import_(ctx.caller, name, str(props["PublicKeyMaterial"]).encode(), tags)
            else:
                k, _ = await keys.create(ctx.caller, name, props.get("KeyType"), props.get("KeyFormat"), tags)
        return Made(name, {"KeyPairId": k.id, "KeyFingerprint": k.fingerprint})

    async def delete(self, ctx: Ctx, physical: str) -> None:
        try:
            await ctx.services.keypairs.delete(ctx.caller, physical, None)
        except CloudError as e:
            if not gone(e):
                raise
