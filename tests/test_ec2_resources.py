"""Key pairs, tags, images, regions and zones through boto3; isolation between users."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from support import wait_state


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_create_key_pair_fingerprint_as_aws(ec2: Any) -> None:
    kp = ec2.create_key_pair(KeyName="made-here")
    key = serialization.load_pem_private_key(kp["KeyMaterial"].encode(), password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    sha1 = hashlib.sha1(der).hexdigest()
    assert kp["KeyFingerprint"] == ":".join(sha1[i:i + 2] for i in range(0, 40, 2))
    listed = ec2.describe_key_pairs(KeyNames=["made-here"])["KeyPairs"]
    assert listed[0]["KeyFingerprint"] == kp["KeyFingerprint"]
    assert "KeyMaterial" not in listed[0]
    with pytest.raises(ClientError) as e:
        ec2.create_key_pair(KeyName="made-here")
    assert code_of(e) == "InvalidKeyPair.Duplicate"
    ec2.delete_key_pair(KeyName="made-here")
    with pytest.raises(ClientError) as e:
        ec2.describe_key_pairs(KeyNames=["made-here"])
    assert code_of(e) == "InvalidKeyPair.NotFound"


def test_import_key_pair(ec2: Any, image_id: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kp = ec2.import_key_pair(KeyName="imported", PublicKeyMaterial=line + b" me@host",
                             TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "k", "Value": "v"}]}])
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    md5 = hashlib.md5(spki).hexdigest()
    assert kp["KeyFingerprint"] == ":".join(md5[i:i + 2] for i in range(0, 32, 2))
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_line = ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kp2 = ec2.import_key_pair(KeyName="imported-ed", PublicKeyMaterial=ed_line)
    blob = base64.b64decode(ed_line.split()[1])
    assert kp2["KeyFingerprint"] == base64.b64encode(hashlib.sha256(blob).digest()).decode()
    desc = ec2.describe_key_pairs(Filters=[{"Name": "tag:k", "Values": ["v"]}], IncludePublicKey=True)["KeyPairs"]
    assert [k["KeyName"] for k in desc] == ["imported"]
    assert desc[0]["PublicKey"].startswith("ssh-rsa ")
    with pytest.raises(ClientError) as e:
        ec2.import_key_pair(KeyName="garbage", PublicKeyMaterial=b"ssh-rsa not-base64!!")
    assert code_of(e) == "InvalidKey.Format"
    inst = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, KeyName="imported")["Instances"][0]
    assert inst["KeyName"] == "imported"
    got = ec2.describe_instances(Filters=[{"Name": "key-name", "Values": ["imported"]}])
    assert [i["InstanceId"] for r in got["Reservations"] for i in r["Instances"]] == [inst["InstanceId"]]
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])


def test_tags(ec2: Any, image_id: str) -> None:
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2)["Instances"]]
    ec2.create_tags(Resources=ids, Tags=[{"Key": "env", "Value": "test"}, {"Key": "odd", "Value": "<&>\"'é"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]
    assert {(t["ResourceId"], t["Key"], t["Value"]) for t in tags} == \
        {(i, k, v) for i in ids for k, v in (("env", "test"), ("odd", "<&>\"'é"))}
    assert {t["ResourceType"] for t in tags} == {"instance"}
    by_kv = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["env"]}, {"Name": "value", "Values": ["te*"]},
                                       {"Name": "resource-id", "Values": ids}])["Tags"]
    assert len(by_kv) == 2
    ec2.delete_tags(Resources=[ids[0]], Tags=[{"Key": "env", "Value": "other"}])   # value differs: kept
    ec2.delete_tags(Resources=[ids[0]], Tags=[{"Key": "odd"}])
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"]
    assert [(t["Key"], t["Value"]) for t in left] == [("env", "test")]
    # An empty Value removes a tag only if its value is empty; without Value, whatever it holds.
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "blank", "Value": ""}])
    ec2.delete_tags(Resources=ids[1:], Tags=[{"Key": "env", "Value": ""}, {"Key": "blank", "Value": ""}])
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[1]]}])["Tags"]
    assert sorted((t["Key"], t["Value"]) for t in left) == [("env", "test"), ("odd", "<&>\"'é")]
    ec2.delete_tags(Resources=ids[1:], Tags=[{"Key": "env"}, {"Key": "odd"}])
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[1]]}])["Tags"] == []
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "env", "Value": "test"}, {"Key": "odd", "Value": "<&>\"'é"}])
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=["i-00000000000000000"], Tags=[{"Key": "a", "Value": "b"}])
    assert code_of(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=ids, Tags=[{"Key": f"k{n}", "Value": "v"} for n in range(50)])
    assert code_of(e) == "TagLimitExceeded"
    assert len(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[1]]}])["Tags"]) == 2
    pages = list(ec2.get_paginator("describe_tags").paginate(
        Filters=[{"Name": "resource-id", "Values": ids}], PaginationConfig={"PageSize": 5}))
    assert sum(len(p["Tags"]) for p in pages) == 3
    ec2.terminate_instances(InstanceIds=ids)



# NUL, BEL, ESC, VT (from the attack run), TAB, DEL, a C1 control and XML's non-characters:
# XML 1.0 cannot carry them, so DescribeTags would show U+FFFD in their place.
CONTROL = ["\x00", "\x07", "\x1b", "\x0b", "\t", "\x7f", "\x85", "\ufffe"]


def all_tags(ec2: Any) -> list[tuple[str, str, str]]:
    return sorted((t["ResourceId"], t["Key"], t["Value"]) for t in ec2.describe_tags(MaxResults=1000)["Tags"])


def instance_ids(ec2: Any) -> set[str]:
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


@pytest.mark.parametrize("char", CONTROL, ids=lambda c: f"U+{ord(c):04X}")
def test_tags_with_control_characters_are_refused(ec2: Any, image_id: str, char: str) -> None:
    target = ec2.create_key_pair(KeyName=f"ctl-{ord(char):04x}")["KeyPairId"]
    tags_before, instances_before = all_tags(ec2), instance_ids(ec2)
    volumes_before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    for key, value in ((f"k{char}", "v"), ("k", f"before{char}after"), (char, char)):
        tag = [{"Key": key, "Value": value}]
        attempts = [
            lambda: ec2.create_tags(Resources=[target], Tags=[{"Key": "fine", "Value": "ok"}, *tag]),
            lambda: ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                                      TagSpecifications=[{"ResourceType": "instance", "Tags": tag}]),
            lambda: ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=1,
                                      TagSpecifications=[{"ResourceType": "volume", "Tags": tag}]),
            lambda: ec2.create_key_pair(KeyName=f"ctl-new-{ord(char):04x}",
                                        TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag}]),
        ]
        for attempt in attempts:
            with pytest.raises(ClientError) as e:
                attempt()
            assert code_of(e) == "InvalidParameterValue"
            assert f"U+{ord(char):04X}" in e.value.response["Error"]["Message"]
    assert all_tags(ec2) == tags_before            # nothing stored, not even the valid tag beside it
    assert instance_ids(ec2) == instances_before
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == volumes_before
    assert f"ctl-new-{ord(char):04x}" not in {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    ec2.delete_key_pair(KeyPairId=target)


def test_tags_in_any_printable_unicode_round_trip_exactly(ec2: Any) -> None:
    target = ec2.create_key_pair(KeyName="unicode-tags")["KeyPairId"]
    pairs = {
        "Name": "caf\u00e9 \u00fcber \u00df",                 # Latin with diacritics
        "\u540d\u524d": "\u65e5\u672c\u8a9e\u306e\u30bf\u30b0",       # CJK key and value
        "emoji": "\U0001f600 \U0001f680\u200d\U0001f30d",    # astral plane, ZWJ sequence
        "rtl": "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",   # Arabic, Hebrew
        "combining": "e\u0301 \u1e9b\u0323",                 # not normalised on the way
        "spaces": "a\u00a0b\u2009c\u200bd",                  # no-break, thin, zero-width
        "private": "\ue000\U000f0000",                      # private use
        "symbols": "<&>\"' _ . : / = + - @ # % ~ ` | \\",
    }
    ec2.create_tags(Resources=[target], Tags=[{"Key": k, "Value": v} for k, v in pairs.items()])
    got = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [target]}])["Tags"]
    assert {t["Key"]: t["Value"] for t in got} == pairs
    for key, value in pairs.items():               # and each one is found by its exact value
        found = ec2.describe_tags(Filters=[{"Name": "key", "Values": [key]},
                                           {"Name": "resource-id", "Values": [target]}])["Tags"]
        assert [t["Value"] for t in found] == [value]
    ec2.delete_key_pair(KeyPairId=target)

def test_images(server: Any, ec2: Any, image_id: str) -> None:
    im = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert im["Public"] is True and im["State"] == "available"
    # RegisterImage names a file that is already in the image store.
    store = Path(server.cfg["image_store"])
    (store / "mine.raw").write_bytes(b"\0" * 4096)
    new = ec2.register_image(Name="my-image", ImageLocation="mine.raw", Description="test")["ImageId"]
    mine = ec2.describe_images(Owners=["self"])["Images"]
    assert [i["ImageId"] for i in mine] == [new]
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": ["my-*"]}])["Images"][0]["ImageId"] == new
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="escape", ImageLocation="../admin.token")
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.register_image(Name="my-image", ImageLocation="mine.raw")
    assert code_of(e) == "InvalidAMIName.Duplicate"
    iid = ec2.run_instances(ImageId=new, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId=new)
    assert code_of(e) == "InvalidParameterValue" and iid in e.value.response["Error"]["Message"]
    ec2.terminate_instances(InstanceIds=[iid])
    wait_state(ec2, [iid], "terminated")
    ec2.deregister_image(ImageId=new)
    with pytest.raises(ClientError) as e:
        ec2.describe_images(ImageIds=[new])
    assert code_of(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:    # the cloud's own image is not the user's to remove
        ec2.deregister_image(ImageId=image_id)
    assert code_of(e) == "InvalidAMIID.NotFound"


def test_regions_zones_account(server: Any, ec2: Any) -> None:
    regions = ec2.describe_regions()["Regions"]
    assert regions == [{"RegionName": "cloudctl-1", "Endpoint": server.endpoint,
                        "OptInStatus": "opt-in-not-required"}]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["cloudctl-1a", "cloudctl-1b"]
    assert all(z["State"] == "available" for z in zones)
    one = ec2.describe_availability_zones(Filters=[{"Name": "zone-name", "Values": ["*1b"]}])
    assert [z["ZoneName"] for z in one["AvailabilityZones"]] == ["cloudctl-1b"]
    attrs = ec2.describe_account_attributes()["AccountAttributes"]
    assert {a["AttributeName"] for a in attrs} >= {"supported-platforms", "max-instances"}
    types = ec2.describe_instance_types()["InstanceTypes"]
    assert [t["InstanceType"] for t in types] == sorted(server.cfg["instance_types"])


def test_users_are_isolated(server: Any, ec2: Any, bob: dict[str, str], image_id: str) -> None:
    bob_ec2 = server.client(bob)
    mine = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.create_key_pair(KeyName="alice-only")
    assert bob_ec2.describe_key_pairs()["KeyPairs"] == []
    theirs = {i["InstanceId"] for r in bob_ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert mine not in theirs
    for call in (lambda: bob_ec2.describe_instances(InstanceIds=[mine]),
                 lambda: bob_ec2.terminate_instances(InstanceIds=[mine]),
                 lambda: bob_ec2.create_tags(Resources=[mine], Tags=[{"Key": "a", "Value": "b"}])):
        with pytest.raises(ClientError) as e:
            call()
        assert code_of(e) == "InvalidInstanceID.NotFound"
    assert bob_ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [mine]}])["Tags"] == []
    # The same key name is free for another account.
    bob_ec2.create_key_pair(KeyName="alice-only")
    assert wait_state(ec2, [mine], "running")[0]["State"]["Name"] == "running"
    ec2.terminate_instances(InstanceIds=[mine])
