"""What a launch asks for, in the core's own terms.

Every front end — EC2's RunInstances, XML-RPC's `one.vm.allocate`, HIL headnodes, and whatever
launches instances from inside the cloud later — builds a `LaunchSpec`; `Compute.run` validates what
it names (the image exists, the subnet holds the address, the quota allows it) and carries it out.
Turning a front end's wire format into a spec, and refusing what is that format's to refuse, is the
front end's job (EC2's: `api/ec2/launch.py`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import attrgetter
from typing import Any

from ..slim import dataclass
from ..store.rare import fast_init
from ..store.records import json_plain

Tag = tuple[str, str]


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """One EBS volume to make at launch: the root device's size and type, or a data volume."""
    device: str
    size: int | None = None               # GiB; None: the image's (root) or the snapshot's
    volume_type: str | None = None        # None: the default type
    snapshot_id: str | None = None
    delete_on_termination: bool = True


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    """A block device mapping naming no EBS volume: an instance-store disk (`ephemeralN`) at a
    device, or (virtual_name None) EC2's NoDevice, which leaves that device out."""
    device: str
    virtual_name: str | None = None


@dataclass(frozen=True, slots=True)
class VlanNic:
    """An extra NIC on a bare-metal project network (HIL headnodes)."""
    name: str
    mac: str
    vlan: int


@fast_init   # (made per launch: each field set through its slot's descriptor)
@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One launch request: `min_count`..`max_count` instances of one image, alike."""
    image_id: str
    min_count: int = 1
    max_count: int = 1
    instance_type: str | None = None      # None: the first configured type
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    zone: str | None = None               # None: the subnet's zone, else the one with most room
    subnet_id: str | None = None          # None: the subnet holding private_ip, else the zone's default
    private_ip: str | None = None         # only when launching one instance
    public_ip: bool | None = None         # a public address from the pool; None: as the subnet maps them
    group_ids: tuple[str, ...] = ()       # security groups by id and by name; none at all: "default"
    group_names: tuple[str, ...] = ()
    key_name: str | None = None
    user_data: str | None = None          # base64, as the metadata service hands it back
    block_devices: tuple[BlockDevice, ...] = ()
    device_mappings: tuple[DeviceMapping, ...] = ()   # instance-store disks and NoDevice
    instance_tags: tuple[Tag, ...] = ()
    volume_tags: tuple[Tag, ...] = ()     # on every volume the launch makes, the root one included
    # Tags the cloud itself puts on the instances (`aws:` keys, which users may not set: the launch
    # template an instance came from, later its scaling group). Set by core services, never from a wire.
    system_tags: tuple[Tag, ...] = ()
    client_token: str | None = None       # idempotency: the same token and spec launch once
    shutdown_behavior: str = "stop"       # what a guest's own power-off does: "stop" or "terminate"
    disable_api_termination: bool = False
    vlan_nics: tuple[VlanNic, ...] = ()
    # The account the instances belong to. None: the caller's own. Another account only when the
    # cloud's own services launch (a headnode for its project's user, a scaling group for its owner).
    owner: str | None = None

    def request_hash(self) -> str:
        """What a repeated ClientToken must match: every field but the token itself, the owner (the
        token is looked up in the owner's account already, so naming one's own account or not is the
        same launch) and the headnode NICs (their networks may change between a lost answer and its
        retry; the launch is the same).

        The text hashed is `json.dumps(body, sort_keys=True, default=...)` of those fields, with each
        nested dataclass as its `asdict`: hashes stored with reservations must keep matching, so the
        bytes never change. Written by `_hash_text` (the names' text kept, in their sorted order),
        else by an encoder built once."""
        text = _hash_text(self)
        if text is None:
            text = _HASH_JSON(self._hash_body())
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _hash_body(self) -> dict[str, object]:
        """The fields `request_hash` covers, by name."""
        get = self.__getattribute__
        body = {name: get(name) for name in _HASHED}
        if self.public_ip is None:   # absent as before the field existed: earlier tokens still match
            del body["public_ip"]
        if not self.system_tags:     # (likewise)
            del body["system_tags"]
        if not self.device_mappings:   # (likewise)
            del body["device_mappings"]
        return body


def _hash_text(spec: LaunchSpec) -> str | None:
    """`_hash_fields`' text by a function generated once per spec *shape* (the type of each hashed
    value, and whether the fields left out when empty are): one f-string holding the names' text,
    None and bools written as such, each str between quotes, ints as they are, the rest by a call;
    None when a str value is not plain (as `_hash_fields`). Beyond `_HASH_PLANS_MAX` shapes,
    `_hash_fields` writes it. (The loop over ~21 fields was ~half of the hash's ~75k instructions.)"""
    vals = _SORTED_VALUES(spec)
    shape = (*map(type, vals), not vals[_I_SYSTEM_TAGS], not vals[_I_DEVICE_MAPPINGS])
    plan = _HASH_PLANS.get(shape)
    if plan is None:
        if len(_HASH_PLANS) >= _HASH_PLANS_MAX or _HASH_ENCODE is None:
            return _hash_fields(spec)
        plan = _HASH_PLANS[shape] = _hash_plan(vals)
    return plan(vals)


_HASH_PLANS: dict[tuple[object, ...], Callable[[tuple[Any, ...]], str | None]] = {}
_HASH_PLANS_MAX = 64


def _hash_plan(vals: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], str | None]:
    """The function writing the hash text of specs whose values have the types (and, for the
    fields left out when empty, the emptiness) `vals`' have: `_hash_fields`' choices, made once."""
    parts: list[str] = []
    strs: list[str] = []
    env: dict[str, Any] = {"plain": json_plain, "B": {True: "true", False: "false"}, "T": _hash_tuple,
                           "J": _hash_json}
    for n, (absent, key, v) in enumerate(zip(_ABSENT, _KEYS, vals)):
        if absent and (v is None if absent == 1 else not v):
            continue
        key = key.replace("{", "{{").replace("}", "}}")
        t = type(v)
        if t is str:
            strs.append(f"{{v{n}}}")
            parts.append(f'{key}"{{v{n}}}"')
        elif v is None:
            parts.append(key + "null")
        elif t is bool:
            parts.append(f"{key}{{B[v{n}]}}")
        elif t is int:   # (an f-string writes int.__repr__'s text)
            parts.append(f"{key}{{v{n}}}")
        elif t is tuple:
            parts.append(f"{key}{{T(v{n})}}")
        else:
            parts.append(f"{key}{{J(v{n})}}")
    text = "{{" + ", ".join(parts) + "}}"
    lines = ["def plan(vals):", f"    {''.join(f'v{n}, ' for n in range(len(vals)))}= vals"]
    if strs:
        lines += [f"    if not plain(f'{''.join(strs)}'):", "        return None"]
    lines.append(f"    return f{text!r}")
    exec(compile("\n".join(lines), "<launch hash plan>", "exec"), env)   # noqa: S102
    plan: Callable[[tuple[Any, ...]], str | None] = env["plan"]
    return plan


def _hash_json(v: object) -> str:
    assert _HASH_ENCODE is not None
    return "".join(_HASH_ENCODE(v, 0))


def _hash_tuple(v: tuple[Any, ...]) -> str:
    return _hash_json(v) if v else "[]"


def _hash_fields(spec: LaunchSpec) -> str | None:
    """`_HASH_JSON(spec._hash_body())` written field by field in the sorted order of their names
    (constant texts for the names, a str as it is, None, bools, ints; () as `[]`; anything else by
    a kept C encoder with the same settings), or None when a str value is not plain printable
    ASCII without a quote or a backslash (what the encoder would write unchanged): the general
    encoder then writes it. JSONEncoder.encode built a C encoder each call, and sorting and
    encoding the ~21 names was most of a launch's ~120k instructions for its hash."""
    parts = []
    strs = []
    for absent, key, v in zip(_ABSENT, _KEYS, _SORTED_VALUES(spec)):
        if absent and (v is None if absent == 1 else not v):   # (as `_hash_body` leaves them out)
            continue
        t = type(v)
        if t is str:
            strs.append(v)
            parts.append(f'{key}"{v}"')
        elif v is None:
            parts.append(key + "null")
        elif t is tuple and not v:
            parts.append(key + "[]")
        elif t is bool:
            parts.append(key + ("true" if v else "false"))
        elif t is int:
            parts.append(key + int.__repr__(v))
        elif _HASH_ENCODE is not None:
            parts.append(key + "".join(_HASH_ENCODE(v, 0)))
        else:   # (a Python without the _json accelerator)
            return None
    if not json_plain("".join(strs)):
        return None
    return "{" + ", ".join(parts) + "}"


def _plain(value: object) -> object:
    if type(value) in _FLAT:   # (BlockDevice, DeviceMapping: scalar fields only, so asdict's copy is a dict)
        return {name: getattr(value, name) for name in _FLAT[type(value)]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot hash a {type(value).__name__}")


_HASHED = tuple(f.name for f in dataclasses.fields(LaunchSpec)
                if f.name not in ("client_token", "vlan_nics", "owner"))
_FLAT = {t: tuple(f.name for f in dataclasses.fields(t)) for t in (BlockDevice, DeviceMapping)}
# json.dumps(body, sort_keys=True, default=_plain) builds this encoder on every call; same settings, same text.
_HASH_JSON = json.JSONEncoder(sort_keys=True, default=_plain).encode
# The C encoder JSONEncoder.encode makes, made once (no check for circular references: a spec's
# values are tuples of values and of frozen dataclasses, made fresh, which hold no reference back).
_HASH_ENCODE = c_make_encoder(None, _plain, encode_basestring_ascii, None, ": ", ", ", True, False, True) \
    if c_make_encoder is not None else None
_SORTED = tuple(sorted(_HASHED))
_KEYS = tuple(encode_basestring_ascii(name) + ": " for name in _SORTED)
_SORTED_VALUES = attrgetter(*_SORTED)
# 1: left out when None, 2: left out when empty (fields added later: earlier tokens still match)
_ABSENT = tuple({"public_ip": 1, "system_tags": 2, "device_mappings": 2}.get(name, 0) for name in _SORTED)
_I_SYSTEM_TAGS, _I_DEVICE_MAPPINGS = _SORTED.index("system_tags"), _SORTED.index("device_mappings")
