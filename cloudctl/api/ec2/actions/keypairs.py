"""CreateKeyPair, ImportKeyPair, DeleteKeyPair, DescribeKeyPairs."""
from __future__ import annotations

from typing import Any

from ....core.cloud import Cloud
from ....core.context import Caller
from ....store.records import KeyPair
from .. import requests
from .registry import action, tag_list, ts


def keypair_view(cloud: Cloud, k: KeyPair, with_public: bool = False) -> dict[str, Any]:
    view = {"KeyPairId": k.id, "KeyName": k.name, "KeyFingerprint": k.fingerprint, "KeyType": k.key_type,
            "Tags": tag_list(cloud, k.id), "CreateTime": ts(k.created)}
    if with_public:
        view["PublicKey"] = k.public_key
    return view


@action("CreateKeyPair")
async def create_key_pair(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    kp, private = await cloud.keypairs.create(caller, req["KeyName"], req.get("KeyType"),
                                              req.get("KeyFormat"), requests.tags_for(req, "key-pair"))
    return {"KeyName": kp.name, "KeyFingerprint": kp.fingerprint, "KeyMaterial": private,
            "KeyPairId": kp.id, "Tags": tag_list(cloud, kp.id)}


@action("ImportKeyPair")
async def import_key_pair(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    kp = await cloud.keypairs.import_(caller, req["KeyName"], req["PublicKeyMaterial"],
                                      requests.tags_for(req, "key-pair"))
    return {"KeyName": kp.name, "KeyFingerprint": kp.fingerprint, "KeyPairId": kp.id,
            "Tags": tag_list(cloud, kp.id)}


@action("DescribeKeyPairs")
async def describe_key_pairs(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    keys = cloud.keypairs.describe(caller, requests.query(req, "KeyPairIds"), tuple(req.get("KeyNames") or ()))
    return {"KeyPairs": [keypair_view(cloud, k, bool(req.get("IncludePublicKey"))) for k in keys]}


@action("DeleteKeyPair")
async def delete_key_pair(cloud: Cloud, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
    await cloud.keypairs.delete(caller, req.get("KeyName"), req.get("KeyPairId"))
    return {"Return": True}
