"""The typed rows the store holds.

Rows are immutable (frozen, with tuples for sequences and `FrozenMap`s for key/value fields): a
change is a new row (`dataclasses.replace`) put in a transaction. That lets a checkpoint copy a table
by reference and encode it on a worker thread while the loop runs, and lets a failed transaction
restore the old row objects untouched. Lists and dicts given to a row (by a caller, or decoded from
JSON: journals and checkpoints hold plain lists and objects, and the format does not change) become
tuples and FrozenMaps as it is made.
Times are float epoch seconds, converted to the wire format only at the API edge.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import attrgetter
from typing import Any, ClassVar

from ..derived import MARKER, DerivedField, derive_mac, derive_uuid
from ..slim import dataclass
from .frozen import EMPTY, FrozenMap, freeze, shared, shared_map
from .rare import RARE_SLOT, fast_init, rare_fields


@dataclass(frozen=True, slots=True)
class Row:
    """Base of every row; each subclass names its table and says which field is its `key`."""

    table: ClassVar[str]
    key_field: ClassVar[str] = "id"
    # Text fields whose values other rows hold equal copies of (owners, zones, states, the ids of
    # other rows): a load from disk makes one object of each value for all of them (store._row_from),
    # where JSON decoding made one per row (~1.4 KiB per instance at 50,000 after a start).
    repeated: ClassVar[tuple[str, ...]] = ("owner",)

    @property
    def key(self) -> str:
        """The row's primary key in its table."""
        return getattr(self, self.key_field)  # type: ignore[no-any-return]

    def __init_subclass__(cls) -> None:
        """A row type whose key is one of its fields reads it by one C call (`attrgetter`), not
        through `Row.key`'s Python getter: each put and each index reads it (~13 a launch). A type
        with its own `key` (a tag's, made of two fields) keeps it."""
        if "key" not in cls.__dict__:   # (object's own __init_subclass__ does nothing)
            cls.key = property(attrgetter(cls.key_field), doc="The row's primary key in its table.")  # type: ignore[assignment,method-assign]

    def to_dict(self) -> dict[str, Any]:
        names, values = _getters(type(self))
        return dict(zip(names, values(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Row":
        names = _field_names(cls)
        # Unknown keys come from a newer writer; missing ones take their defaults.
        return cls(**{k: v for k, v in d.items() if k in names})


_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls) if f.init)   # (init=False: derived, not stored)
    return names


_GETTERS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _getters(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """A row type's stored field names, and one C call that reads all their values."""
    got = _GETTERS.get(cls)
    if got is None:
        names = _field_names(cls)
        one = attrgetter(*names)
        got = _GETTERS[cls] = (names, one if len(names) > 1 else (lambda r: (one(r),)))
    return got


def _no_default(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


# json.dumps(d, separators=(",", ":")) builds a JSONEncoder and then a C encoder on every call; this is
# that C encoder made once, with the same settings (ASCII, NaN allowed, keys unsorted) but no check for
# circular references: rows are trees of immutable values. Same bytes, ~2.5x faster per row.
_encode = c_make_encoder(None, _no_default, encode_basestring_ascii, None, ":", ",", False, False, True) \
    if c_make_encoder is not None else None


def encode_row(row: Row) -> str:
    """A row as the journal and the checkpoint store it: compact JSON of its fields, in field order.
    The format is unchanged since version 1 (`json.dumps(row.to_dict(), separators=(",", ":"))`)."""
    names, values = _getters(type(row))
    d = dict(zip(names, values(row)))
    if _encode is None:   # (a Python without the _json accelerator)
        return json.dumps(d, separators=(",", ":"))
    return "".join(_encode(d, 0))


def encode_changes(changes: list[tuple[Any, str, Any, Row | None]]) -> str:
    """A transaction's journal record: `[op, ...]`, each `["p",table,key,{row}]` (a put) or
    `["d",table,key]` (a delete), from (table, key, old, new) entries (new None: a delete).
    The same bytes as joining each op's own `encode_row` text (`json.dumps` of each op, compact),
    made after the transaction, not inside each put: each row's text by its type's generated
    encoder (`_row_encoder`), the JSON encoder called only for what is not plain text or None."""
    if _encode is None:   # (a Python without the _json accelerator)
        getters = _GETTERS
        ops: list[list[Any]] = []
        for table, key, _, row in changes:
            if row is None:
                ops.append(["d", table.name, key])
                continue
            got = getters.get(type(row)) or _getters(type(row))
            ops.append(["p", table.name, key, dict(zip(got[0], got[1](row)))])
        return json.dumps(ops, separators=(",", ":"))
    encoders = _ROW_ENCODERS
    out: list[str] = []
    for table, key, _, row in changes:
        name = table.name
        if row is None:
            out.append("".join(_encode(["d", name, key], 0)))
            continue
        enc = encoders.get(type(row)) or _row_encoder(type(row))
        head = _PUT_HEADS.get(name)
        if head is None:
            head = _PUT_HEADS[name] = '["p",' + "".join(_encode(name, 0)) + ","
        if type(key) is str and json_plain(key):
            out.append(f'{head}"{key}",{enc(row)}]')
        else:
            out.append(f'{head}{"".join(_encode(key, 0))},{enc(row)}]')
    return "[" + ",".join(out) + "]"


_PUT_HEADS: dict[str, str] = {}
_FLOATS: dict[float, str] = {}   # the last few floats' text: a launch's time is in several of its rows


_float_repr = float.__repr__   # (what the JSON encoder writes for a finite float: its repr)


def _float(v: float) -> str:
    """The JSON text of the float `v` (not zero), kept for the next equal one. A finite float's is
    its repr, taken directly (the encoder's call, its list and the join were ~4k instructions of a
    new timestamp's ~13k); NaN and the infinities by the encoder. All forgotten when 64 are kept:
    one C call, safe beside a checkpoint encoded on a thread (dropping the oldest key, an iterator
    then a delete, could meet another thread's change between the two and raise)."""
    assert _encode is not None
    text = _float_repr(v) if v - v == 0.0 else "".join(_encode(v, 0))
    if len(_FLOATS) >= 64:
        _FLOATS.clear()
    _FLOATS[v] = text
    return text


# What the JSON encoder escapes in ASCII text: the controls, DEL excepted (`isprintable`'s
# refusals among ASCII characters are the controls and DEL), the quote and the backslash.
_JSON_ESCAPED = bytes(range(32)) + b'\x7f"\\'


def json_plain(s: str) -> bool:
    """Whether the JSON encoder writes `s` unchanged between its quotes (printable ASCII without a
    quote or a backslash): the hand-written encoders' test for writing text as it is. Longer text
    (a row's joined values) as its bytes with those characters deleted in one C pass (`isascii` is
    a flag, `encode` a copy): the same answer as `isprintable` and two `in` scans, ~27 % fewer
    instructions for ~260 characters; below ~80 the scans' fixed cost is the smaller."""
    if len(s) < 80:
        return s.isascii() and s.isprintable() and '"' not in s and "\\" not in s
    return s.isascii() and len(s.encode().translate(None, _JSON_ESCAPED)) == len(s)


_ROW_ENCODERS: dict[type, Callable[[Any], str]] = {}
_PLANS_MAX = 64   # row shapes (the types of its values) kept per row type; beyond, the field-by-field encoder


def _row_encoder(cls: type) -> Callable[[Any], str]:
    """`encode_row` for rows of `cls`. A row's *shape* (the type of each value, read in one C
    call) picks a plan made once per shape: a generated function that unpacks the values and
    returns one f-string holding the field names' text, `null` for each None, each str between
    quotes and each int as is, so that only the other values (bools, floats, tuples, maps: a few a
    row) are turned to text by a call (a bool from a table, a float as the JSON encoder wrote it
    for an equal float lately, a shared map or tuple as it was written lately, () as `[]`,
    anything else by the JSON encoder, as inside the row's object). It applies when every str
    value of the row is plain printable ASCII without a quote or a backslash (what the JSON
    encoder would write unchanged: the plan returns None otherwise); a row with text to escape,
    or of a shape beyond the first `_PLANS_MAX`, goes `_field_encoder`'s way. (The plan was a `%`
    format until perf-launch8: `%` parses its format on every call, ~1k instructions for ten
    fields, and needed the values picked and converted into a tuple first.) The same text as
    `"".join(_encode(row.to_dict(), 0))` (tests/test_journal_shapes.py holds them equal)."""
    names, values = _getters(cls)
    slow = _field_encoder(cls)
    plans: dict[tuple[type, ...], Callable[[tuple[Any, ...]], str | None]] = {}

    def enc(row: Any) -> str:
        vals = values(row)
        shape = tuple(map(type, vals))
        plan = plans.get(shape)
        if plan is None:
            if len(plans) >= _PLANS_MAX:
                return slow(row)
            plan = plans[shape] = _plan(cls, names, vals)
        text = plan(vals)
        return slow(row) if text is None else text

    raw = _slot_encoder(cls, names, enc)
    _ROW_ENCODERS[cls] = raw or enc
    return raw or enc


def _slot_encoder(cls: type, names: tuple[str, ...], general: Callable[[Any], str]) -> Callable[[Any], str] | None:
    """For a row type with rare fields (store/rare.py) or derived ones (cloudctl/derived.py): an
    encoder for its rows whose rare fields all hold their defaults (the one shared object) and
    whose derived fields hold the marker, `general` for any other row; None for other row types.

    Reading an instance row's 31 values by name went through a property for each of its ten rare
    fields and a Python descriptor for its MAC and UUID (~17.6k of the ~49k instructions an
    instance row's text took); here one `attrgetter` reads the plain fields and the rare slot,
    the derived slots are read by their member descriptors, and the plan writes the rare
    defaults' text as part of its literal and each derived value by the function its descriptor
    would call (a kept text: a dict look-up). The plan is `_plan`'s otherwise: the same text
    (tests/test_journal_shapes.py holds both encoders to `json.dumps`)."""
    rare: tuple[str, ...] = getattr(cls, "__rare__", ())
    derived = {n: d for n in names if isinstance(d := getattr(cls, n, None), DerivedField)}
    if not rare and not derived:
        return None
    assert _encode is not None
    read = [n for n in names if n not in rare and n not in derived]
    if rare:
        read.append(RARE_SLOT)
    plain_read = attrgetter(*read)
    none = getattr(cls, "__rare_defaults__", None)
    marks = [d._slot.__get__ for d in derived.values()]
    plans: dict[tuple[type, ...], Callable[[tuple[Any, ...]], str | None]] = {}
    env: dict[str, Any] = {"plain_read": plain_read, "general": general, "plans": plans, "_N": none,
                           "_D": MARKER, "MAX": _PLANS_MAX, "make": lambda vals: _slot_plan(cls, names, read, rare,
                                                                                             derived, vals)}
    test = []
    if rare:
        test.append("vals[-1] is not _N")
    for k, m in enumerate(marks):
        env[f"_m{k}"] = m
        test.append(f"_m{k}(row) is not _D")
    src = "\n".join([
        "def enc(row):",
        "    vals = plain_read(row)",
        f"    if {' or '.join(test)}:",
        "        return general(row)",
        "    shape = tuple(map(type, vals))",
        "    plan = plans.get(shape)",
        "    if plan is None:",
        "        if len(plans) >= MAX:",
        "            return general(row)",
        "        plan = plans[shape] = make(vals)",
        "    text = plan(vals)",
        "    return general(row) if text is None else text"])
    exec(compile(src, f"<records slot encoder {cls.__name__}>", "exec"), env)   # noqa: S102
    enc: Callable[[Any], str] = env["enc"]
    return enc


def _slot_plan(cls: type, names: tuple[str, ...], read: list[str], rare: tuple[str, ...],
               derived: dict[str, Any], vals: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], str | None]:
    """`_plan` for `_slot_encoder`: `vals` are the `read` fields' values (the rare slot last,
    holding the defaults); a rare field's text is its default's, a derived field's is made from
    its key's value. The derived values are left out of the plain-text check: a MAC made from a
    key is hex digits and colons, a UUID the key's own characters (checked) with hex and dashes."""
    assert _encode is not None
    at = {n: k for k, n in enumerate(read)}
    defaults = dict(zip(rare, getattr(cls, "__rare_defaults__", ())))
    parts: list[str] = []
    strs: list[str] = []
    env: dict[str, Any] = {"plain": json_plain}
    for name in names:
        key = "".join(_encode(name, 0)).replace("{", "{{").replace("}", "}}")
        if name in defaults:
            parts.append(f"{key}:" + "".join(_encode(defaults[name], 0)).replace("{", "{{").replace("}", "}}"))
            continue
        if name in derived:
            d = derived[name]
            n = at[d._key.__name__]
            env[f"d_{name}"] = d.marked_text()
            parts.append(f'{key}:"{{d_{name}(v{n})}}"')
            continue
        n = at[name]
        _value_part(parts, strs, env, key, n, vals[n])
    return _compiled_plan(f"<records slot plan {cls.__name__}>", len(read), parts, strs, env)


def _plan(cls: type, names: tuple[str, ...], vals: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], str | None]:
    """The function writing rows whose values have the types `vals`' have (None: a str value
    to escape)."""
    assert _encode is not None
    parts: list[str] = []
    strs: list[str] = []
    env: dict[str, Any] = {"plain": json_plain}
    for n, (name, v) in enumerate(zip(names, vals)):
        key = "".join(_encode(name, 0)).replace("{", "{{").replace("}", "}}")
        _value_part(parts, strs, env, key, n, v)
    return _compiled_plan(f"<records plan {cls.__name__}>", len(names), parts, strs, env)


def _value_part(parts: list[str], strs: list[str], env: dict[str, Any], key: str, n: int, v: Any) -> None:
    """A plan's `key:value` for value `n` (`v` its type's example): null, a str to check plain, an
    exact int as an f-string writes it (int.__repr__'s text, as the JSON encoder's), or the
    converter of its type."""
    t = type(v)
    if v is None:
        parts.append(f"{key}:null")
    elif t is str:
        strs.append(f"{{v{n}}}")
        parts.append(f'{key}:"{{v{n}}}"')
    elif t is int:
        parts.append(f"{key}:{{v{n}}}")
    else:
        env[f"c{n}"] = _CONVERT.get(t, _json_text)
        parts.append(f"{key}:{{c{n}(v{n})}}")


def _compiled_plan(label: str, count: int, parts: list[str], strs: list[str],
                   env: dict[str, Any]) -> Callable[[tuple[Any, ...]], str | None]:
    """The function of `count` values returning the row's text from `parts` (one f-string), or
    None when a str value (`strs`) needs the JSON encoder's escapes."""
    text = "{{" + ",".join(parts) + "}}"
    assert "\\" not in text   # (field names: no escapes in the literal)
    lines = ["def plan(vals):", f"    {''.join(f'v{n}, ' for n in range(count))}= vals"]
    if strs:
        lines.append(f"    if not plain(f'{''.join(strs)}'):")
        lines.append("        return None")
    lines.append(f"    return f{text!r}")
    exec(compile("\n".join(lines), label, "exec"), env)   # noqa: S102
    plan: Callable[[tuple[Any, ...]], str | None] = env["plan"]
    return plan


def _json_text(v: Any) -> str:
    assert _encode is not None
    return "".join(_encode(v, 0))


def _float_text(v: float) -> str:
    if v:   # (0.0 and -0.0 are equal keys with different text: not kept)
        return _FLOATS.get(v) or _float(v)
    return _json_text(v)


# The text of the last few maps and tuples of strings written, by identity (each kept with its
# object, so an id is not reused while kept): rows share one object for equal ones (`shared`,
# `shared_map`: an event's {owner, host, state}, an instance's groups), so a state change's event
# and a launch's rows find theirs here (~0.1 us against ~1.7 us of the JSON encoder for a map).
# Both are immutable: a FrozenMap's values are frozen, a tuple of strings is.
_BY_ID: dict[int, tuple[Any, str]] = {}
_BY_ID_MAX = 64
_STR_TYPE = {str}


def _kept_text(v: Any) -> str:
    got = _BY_ID.get(id(v))
    if got is not None and got[0] is v:
        return got[1]
    text = _json_text(v)
    if type(v) is FrozenMap or set(map(type, v)) == _STR_TYPE:
        if len(_BY_ID) >= _BY_ID_MAX:   # (all forgotten at once: one C call, safe beside a checkpoint
            _BY_ID.clear()              # written by a thread, see `derived._kept`)
        _BY_ID[id(v)] = (v, text)
    return text


def _tuple_text(v: tuple[Any, ...]) -> str:
    return _kept_text(v) if v else "[]"


_BOOL_TEXT = {True: "true", False: "false"}
_CONVERT: dict[type, Callable[[Any], str]] = {bool: _BOOL_TEXT.__getitem__, float: _float_text, tuple: _tuple_text,
                                              FrozenMap: _kept_text}


def _field_encoder(cls: type) -> Callable[[Any], str]:
    """The row encoder field by field (rows with text to escape): the field names' text is
    constant, a str value is written as is when every str value of the row is plain printable
    ASCII without a quote or a backslash, None as `null`, a float other than zero as the JSON
    encoder wrote it for an equal float lately; any other value (numbers, tuples, maps, text to
    escape) by the JSON encoder, as inside the row's object."""
    names, values = _getters(cls)
    assert _encode is not None
    ns: dict[str, Any] = {"values": values, "J": _encode, "F": _FLOATS, "_float": _float, "plain": json_plain}
    vs = [f"v{n}" for n in range(len(names))]
    lines = ["def enc(row):", f"    {', '.join(vs)}, = values(row)",
             f"    s = ''.join([v for v in ({', '.join(vs)},) if type(v) is str])",
             "    ok = plain(s)"]
    for v in vs:
        lines += [f"    if type({v}) is str:",
                  f"        {v} = '\"' + {v} + '\"' if ok else ''.join(J({v}, 0))",
                  f"    elif {v} is None:",
                  f"        {v} = 'null'",
                  f"    elif type({v}) is float and {v}:",   # (0.0 and -0.0 are equal keys: not kept)
                  f"        {v} = F.get({v}) or _float({v})",
                  "    else:",
                  f"        {v} = ''.join(J({v}, 0))"]
    body = ",".join(f"{''.join(_encode(name, 0))}:{{{v}}}" for name, v in zip(names, vs))
    assert "'" not in body and "\\" not in body
    lines.append(f"    return '{{' f'{body}' '}}'")
    exec(compile("\n".join(lines), f"<records encoder {cls.__name__}>", "exec"), ns)
    enc: Callable[[Any], str] = ns["enc"]
    return enc


def _tupled(v: Any) -> tuple[Any, ...]:
    """`v` (a list or tuple) as a tuple, lists inside it too."""
    return tuple(_tupled(x) if type(x) is list else x for x in v)


def _tuples(row: Row, *names: str) -> None:
    """Make the named sequence fields of a row being built tuples (frozen: set through object)."""
    for n in names:
        v = getattr(row, n)
        if type(v) is not tuple or (v and type(v[0]) is list):
            object.__setattr__(row, n, _tupled(v))


def _frozen(row: Row, *names: str) -> None:
    """Make the named key/value fields of a row being built (and tuples of them) read-only."""
    for n in names:
        v = getattr(row, n)
        if type(v) is FrozenMap or (type(v) is tuple and all(type(x) is FrozenMap for x in v)):
            continue
        object.__setattr__(row, n, freeze(v))


@dataclass(frozen=True, slots=True)
class User(Row):
    table: ClassVar[str] = "users"
    key_field: ClassVar[str] = "name"
    name: str
    access_key: str
    secret_key: str
    account_id: str
    created: float
    # Certificate subjects that are this user (econe's one-line form: `/C=../O=../CN=..`,
    # whitespace removed); see core/users.py for how a presented certificate logs in.
    dns: tuple[str, ...] = ()
    x509_only: bool = False   # a matching client certificate alone logs in (no EC2 signature)
    ec2_only: bool = False    # econe's `public` driver: the EC2 listener only, no XML-RPC session

    def __post_init__(self) -> None:
        _tuples(self, "dns")


# Ten fields a running instance launched without those options holds at their default, in one slot
# (store/rare.py): 31 slots were 280 B a row, 22 are 208.
@rare_fields("state_reason_code", "state_reason_message", "transition_reason", "disable_api_termination",
             "terminated_at", "kernel_id", "ramdisk_id", "root_gib", "vlan_nics", "ephemeral")
@dataclass(frozen=True, slots=True)
class Instance(Row):
    table: ClassVar[str] = "instances"
    repeated: ClassVar[tuple[str, ...]] = (
        "owner", "reservation_id", "image_id", "instance_type", "host", "zone", "state", "private_ip",
        "subnet_id", "root_device", "shutdown_behavior", "key_name", "kernel_id", "ramdisk_id")
    id: str
    owner: str                   # account id
    reservation_id: str
    image_id: str
    instance_type: str
    host: str
    zone: str
    state: str                   # pending | running | stopping | stopped | shutting-down | terminated
    launch_time: float
    launch_index: int = 0
    key_name: str | None = None
    user_data: str | None = None  # base64, as the client sent it
    client_token: str | None = None
    private_ip: str | None = None
    mac: str | None = None
    uuid: str = ""
    state_reason_code: str | None = None
    state_reason_message: str | None = None
    transition_reason: str = ""
    disable_api_termination: bool = False
    shutdown_behavior: str = "stop"
    terminated_at: float | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    root_gib: int | None = None       # root disk size asked for in BlockDeviceMappings
    subnet_id: str | None = None      # None in instances from before networks: the zone's default
    group_ids: tuple[str, ...] = ()   # security groups
    ever_ran: bool = False            # reached running once: a failed start is not a failed launch
    # The root volume's device name (EBS-backed: the root disk is a volume). None: launched by
    # an older version, whose root disk is an overlay in the instance's own directory.
    root_device: str | None = None
    # NICs on bare-metal project networks (a headnode's): {"name", "mac", "vlan"} each, on the
    # config's baremetal.headnode_bridge with the network's VLAN.
    vlan_nics: tuple[Mapping[str, Any], ...] = ()
    # Instance-store disks, "ephemeralN=/dev/sdX" each, in N order (core/instance_store.py); their
    # files exist only while the instance runs and are derived from its id.
    ephemeral: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Inline (a replay makes one per instance record): group ids are strings, so a list of them
        # needs no recursive conversion; one tuple for every instance of the same groups (48 B each).
        g = self.group_ids
        if g:
            object.__setattr__(self, "group_ids", shared(g if type(g) is tuple else tuple(g)))
        elif type(g) is not tuple:
            object.__setattr__(self, "group_ids", ())
        if self.vlan_nics:   # (only headnodes have any)
            _tuples(self, "vlan_nics")
            _frozen(self, "vlan_nics")
        elif type(self.vlan_nics) is not tuple:
            object.__setattr__(self, "vlan_nics", ())
        if type(self.ephemeral) is not tuple:   # (a list, read back from the journal)
            object.__setattr__(self, "ephemeral", shared(tuple(self.ephemeral)))


# A row keeps neither when it is the one its id gives (cloudctl/derived.py): ~150 B an instance.
derive_mac(Instance, "id")
derive_uuid(Instance, "id")


@dataclass(frozen=True, slots=True)
class Reservation(Row):
    table: ClassVar[str] = "reservations"
    repeated: ClassVar[tuple[str, ...]] = ("owner", "client_token")
    id: str
    owner: str
    instance_ids: tuple[str, ...] = ()
    client_token: str | None = None
    request_hash: str | None = None   # ties a ClientToken to the request that first used it

    def __post_init__(self) -> None:
        _tuples(self, "instance_ids")


@dataclass(frozen=True, slots=True)
class Image(Row):
    table: ClassVar[str] = "images"
    id: str
    owner: str                   # account id, or "cloudctl" for images the cloud provides
    name: str
    path: str                    # file inside the image store
    size: int
    sha256: str
    created: float
    description: str = ""
    public: bool = False
    state: str = "available"
    architecture: str = "x86_64"
    disk_format: str = "raw"
    image_type: str = "machine"      # machine | kernel | ramdisk (EC2's AMI / AKI / ARI)
    kernel_id: str | None = None     # a machine image booted directly from a kernel image
    ramdisk_id: str | None = None
    deprecation_time: float | None = None   # hidden from DescribeImages after it unless IncludeDeprecated
    virtual_size: int = 0            # bytes the guest sees (qemu-img info); 0: not probed (older images)


@dataclass(frozen=True, slots=True)
class KeyPair(Row):
    table: ClassVar[str] = "keypairs"
    id: str
    owner: str
    name: str
    fingerprint: str
    public_key: str
    key_type: str
    created: float


@dataclass(frozen=True, slots=True)
class Tag(Row):
    table: ClassVar[str] = "tags"
    repeated: ClassVar[tuple[str, ...]] = ("resource_id", "resource_type", "owner", "tag_key", "value")
    resource_id: str
    resource_type: str
    owner: str
    tag_key: str
    value: str
    # The table does not keep Tag rows (store/tagtable.py packs a resource's tags in one tuple and
    # makes rows as they are read), so the key is built when asked for, not held by each row.

    @property
    def key(self) -> str:
        return f"{self.resource_id}\x1f{self.tag_key}"


@dataclass(frozen=True, slots=True)
class Lease(Row):
    table: ClassVar[str] = "leases"
    key_field: ClassVar[str] = "ip"
    repeated: ClassVar[tuple[str, ...]] = ("zone", "instance_id", "subnet_id")
    ip: str
    zone: str
    instance_id: str
    subnet_id: str | None = None      # None in leases from before networks: the zone's default


# A volume's rarely given options and its error message in one slot (store/rare.py): 19 slots were
# 184 B a row (192 in the allocator), 16 are 160.
@rare_fields("snapshot_id", "iops", "throughput", "state_message")
@dataclass(frozen=True, slots=True)
class Volume(Row):
    table: ClassVar[str] = "volumes"
    repeated: ClassVar[tuple[str, ...]] = (
        "owner", "zone", "volume_type", "state", "instance_id", "device", "target", "attach_state", "image_id",
        "snapshot_id")
    id: str
    owner: str
    zone: str
    size: int                    # GiB
    volume_type: str             # standard | gp2 | gp3, as given
    state: str                   # creating | available | in-use | deleting | deleted | error
    created: float
    snapshot_id: str | None = None
    iops: int | None = None
    throughput: int | None = None
    client_token: str | None = None
    instance_id: str | None = None    # the attachment, while there is one
    device: str | None = None         # as the user named it, e.g. /dev/sdf
    target: str | None = None         # the guest disk it became, e.g. vdf
    attach_state: str | None = None   # attaching | attached | detaching
    attach_time: float | None = None
    delete_on_termination: bool = False
    state_message: str | None = None  # why it is in `error`
    image_id: str | None = None       # a root volume's image: its file is an overlay over the image's


@dataclass(frozen=True, slots=True)
class Snapshot(Row):
    table: ClassVar[str] = "snapshots"
    id: str
    owner: str
    volume_id: str
    volume_size: int             # GiB
    state: str                   # pending | completed | error
    started: float
    description: str = ""
    progress: str = "0%"
    completed_at: float | None = None
    state_message: str | None = None


@dataclass(frozen=True, slots=True)
class Event(Row):
    """One line of the operator's event log (instance/host state, switch ops, marketplace checks)."""

    table: ClassVar[str] = "events"
    repeated: ClassVar[tuple[str, ...]] = ("kind", "subject")
    id: str                      # zero-padded sequence: sorts in the order events happened
    time: float
    kind: str                    # dotted area, e.g. instance.state, host.state, marketplace.list
    subject: str                 # what it is about: an instance id, host name, list URL...
    message: str
    code: str | None = None      # a machine-readable reason, e.g. a vmcatcher check's code
    data: Mapping[str, Any] = EMPTY

    def __post_init__(self) -> None:
        # (inline: every state change records an event; each field set again only if it changes)
        data = given = self.data
        if type(data) is not FrozenMap:
            data = freeze(data)
        # Most events repeat a few messages and data maps (`pending -> running`, {owner, host,
        # state}): one object each for all of them (~260 B an event otherwise).
        if data:
            data = shared_map(data)
        if data is not given:
            object.__setattr__(self, "data", data)
        message = self.message
        if len(message) <= 64:
            kept = shared(message)
            if kept is not message:
                object.__setattr__(self, "message", kept)


# -- bare metal (HIL): projects, nodes, switches, networks, switch operations -------------------
def _k(*parts: str) -> str:
    return "\x1f".join(parts)


@dataclass(frozen=True, slots=True)
class BmProject(Row):
    table: ClassVar[str] = "bm_projects"
    key_field: ClassVar[str] = "name"
    name: str
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class BmUser(Row):
    """A user of the bare-metal API (HIL's database auth): HTTP Basic, admin or per-project."""
    table: ClassVar[str] = "bm_users"
    key_field: ClassVar[str] = "name"
    name: str
    password_hash: str           # scrypt$<salt hex>$<hash hex>
    is_admin: bool = False
    projects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _tuples(self, "projects")


@dataclass(frozen=True, slots=True)
class BmNode(Row):
    table: ClassVar[str] = "bm_nodes"
    key_field: ClassVar[str] = "name"
    name: str
    project: str | None = None   # None: free
    # {type: ipmi, host, port, user, password, cipher_suite?} | {type: mock, host, user, password}
    # | {type: obmd, uri, admin_token, node_token?} (HIL's obmd; node_token while enabled)
    obm: Mapping[str, Any] = EMPTY
    created: float = 0.0
    console: bool = False        # serial console capture on (HIL's start_console)
    metadata: Mapping[str, str] = EMPTY   # label -> JSON text of the value (as HIL stores it)
    obm_enabled: bool = False    # HIL's `PUT /node/N/obm {"enabled"}`

    def __post_init__(self) -> None:
        _frozen(self, "obm", "metadata")


@dataclass(frozen=True, slots=True)
class BmNic(Row):
    table: ClassVar[str] = "bm_nics"
    node: str
    name: str
    macaddr: str

    @property
    def key(self) -> str:
        return _k(self.node, self.name)


@dataclass(frozen=True, slots=True)
class BmSwitch(Row):
    table: ClassVar[str] = "bm_switches"
    key_field: ClassVar[str] = "name"
    name: str
    type: str                    # driver family: ovs | dell | cisco
    options: Mapping[str, Any] = EMPTY   # driver fields (host, port, user, key...)

    def __post_init__(self) -> None:
        _frozen(self, "options")


@dataclass(frozen=True, slots=True)
class BmPort(Row):
    """A switch port, and the NIC cabled to it (at most one)."""
    table: ClassVar[str] = "bm_ports"
    switch: str
    name: str
    node: str | None = None
    nic: str | None = None

    @property
    def key(self) -> str:
        return _k(self.switch, self.name)


@dataclass(frozen=True, slots=True)
class BmNetwork(Row):
    table: ClassVar[str] = "bm_networks"
    key_field: ClassVar[str] = "name"
    name: str
    vlan: int
    owner: str | None = None     # project; None: the admin's
    access: tuple[str, ...] = ()   # empty: public
    allocated: bool = True       # from the pool (False: an external id the admin gave)
    created: float = 0.0

    def __post_init__(self) -> None:
        _tuples(self, "access")


@dataclass(frozen=True, slots=True)
class BmAttachment(Row):
    """A network on a NIC's channel (`vlan/native` untagged, `vlan/<id>` tagged), as the switch has it."""
    table: ClassVar[str] = "bm_attachments"
    node: str
    nic: str
    network: str
    channel: str

    @property
    def key(self) -> str:
        return _k(self.node, self.nic, self.network)


@dataclass(frozen=True, slots=True)
class BmOperation(Row):
    """A queued switch change (HIL's NetworkingAction); kept after it ends so its status stays queryable."""
    table: ClassVar[str] = "bm_operations"
    id: str
    seq: int                     # order within the switch
    type: str                    # connect | detach | revert
    switch: str
    port: str
    node: str | None
    nic: str | None
    status: str = "pending"      # pending | done | error
    network: str | None = None
    channel: str | None = None
    error: str = ""
    created: float = 0.0
    finished: float | None = None


@dataclass(frozen=True, slots=True)
class BmHeadnode(Row):
    """A project's VM on its networks (HIL's headnode); an instance once first started, after
    which its NICs' networks are fixed, as in HIL."""
    table: ClassVar[str] = "bm_headnodes"
    key_field: ClassVar[str] = "name"
    name: str
    project: str
    image_id: str
    created: float
    hnics: Mapping[str, Mapping[str, Any]] = EMPTY   # name -> {"mac", "network"}
    instance_id: str | None = None
    instance_type: str | None = None
    user_data: str | None = None   # base64

    def __post_init__(self) -> None:
        _frozen(self, "hnics")


@dataclass(frozen=True, slots=True)
class HostAdmin(Row):
    """The operator's setting for a hypervisor host; its monitored state is not stored."""

    table: ClassVar[str] = "hosts"
    key_field: ClassVar[str] = "name"
    name: str
    admin: str = "enabled"       # enabled | disabled (no new placements) | offline (not monitored)
    changed_at: float = 0.0


@dataclass(frozen=True, slots=True)
class NumericId(Row):
    """A small integer naming a resource for APIs that use numbers (OpenNebula's XML-RPC)."""

    table: ClassVar[str] = "numeric_ids"
    key_field: ClassVar[str] = "resource"
    resource: str                # "<kind>/<id>", e.g. "vm/i-0abc...", "user/alice"
    kind: str
    num: int


@dataclass(frozen=True, slots=True)
class PublishedList(Row):
    """The image list this cloud publishes: what it holds, and the signed bytes served."""

    table: ClassVar[str] = "published_lists"
    id: str                      # the list's dc:identifier
    version: str                 # hv:version of the signed list
    created: float
    expires: float
    image_ids: tuple[str, ...] = ()      # ami ids, in publishing order
    sha512: Mapping[str, str] = EMPTY       # ami id -> sha512 (hashed once at publish)
    sha1: Mapping[str, str] = EMPTY         # ami id -> sha1 (the StratusLab identifier)
    deprecated: Mapping[str, str] = EMPTY   # ami id -> reason, no longer listed
    signed: str = ""             # the S/MIME message subscribers fetch

    def __post_init__(self) -> None:
        _tuples(self, "image_ids")
        _frozen(self, "sha512", "sha1", "deprecated")


@dataclass(frozen=True, slots=True)
class Subscription(Row):
    """A remote image list this cloud follows, and the last version of it that passed every check."""

    table: ClassVar[str] = "subscriptions"
    id: str
    url: str
    identifier: str              # the expected dc:identifier
    endorsers: tuple[tuple[str, ...], ...]   # allowed (subject DN, issuer DN) pairs
    trust: str                   # CA anchors (+ CRLs): a PEM bundle or a directory
    policy: str                  # accept | hold: new images download at once, or wait for approval
    interval_s: float
    created: float
    version: str | None = None   # last accepted hv:version
    list_created: float | None = None
    list_expires: float | None = None
    endorser: tuple[str, ...] = ()   # (dn, ca) that signed the accepted list
    title: str = ""
    signed: str = ""             # the accepted signed bytes, kept for audit
    last_poll: float | None = None
    last_result: str = ""        # accepted, unchanged, or the reason code of the last refusal
    etag: str = ""               # of the accepted list, for conditional polls
    last_message: str = ""

    def __post_init__(self) -> None:
        _tuples(self, "endorsers", "endorser")


@dataclass(frozen=True, slots=True)
class MarketImage(Row):
    """One image of a subscribed list at one sha512; a new checksum is a new row (and AMI)."""

    table: ClassVar[str] = "market_images"
    id: str                      # the stable AMI id: from (list id, image id, sha512)
    subscription: str
    list_id: str
    identifier: str              # the image's dc:identifier
    sha512: str
    size: int
    uri: str
    title: str
    description: str = ""
    arch: str = "x86_64"
    version: str = ""
    list_version: str = ""
    endorser: str = ""
    expires: float | None = None   # the earlier of the image's and the list's expiry
    state: str = "held"          # held | queued | downloading | available | failed | expired | deregistered
    reason: str = ""             # why it is failed or expired
    attempts: int = 0
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class MetadataEntry(Row):
    """One immutable StratusLab-style signed endorsement of an image: (identifier, e-mail, created)."""

    table: ClassVar[str] = "metadata_entries"
    id: str                      # identifier/email/created
    identifier: str              # 27 characters from the image's SHA-1
    email: str
    created: float
    valid: float                 # dcterms:valid, the end of the endorsement
    subject: str
    issuer: str
    location: str
    sha512: str
    image_id: str
    signed: str                  # the S/MIME-signed RDF/XML entry
    deprecated: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityGroup(Row):
    table: ClassVar[str] = "security_groups"
    id: str
    owner: str
    vpc_id: str
    name: str
    description: str
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class SecurityGroupRule(Row):
    """One rule of a group: one protocol/port range and one peer (a CIDR or a group)."""

    table: ClassVar[str] = "security_group_rules"
    id: str                          # sgr-...
    group_id: str
    owner: str                       # the group's owner
    egress: bool
    protocol: str                    # tcp | udp | icmp | -1 (all) | another IP protocol number
    from_port: int | None = None     # tcp/udp: first port; icmp: type (-1 = any)
    to_port: int | None = None       # tcp/udp: last port; icmp: code (-1 = any)
    cidr: str | None = None          # the peer: a CIDR ...
    peer_group_id: str | None = None  # ... or a group, whose members' addresses are the peer
    peer_owner: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ImportTask(Row):
    """An ImportImage task: a disk image the controller fetches, then registers as an image."""
    table: ClassVar[str] = "import_tasks"
    id: str                      # import-ami-...
    owner: str
    url: str
    state: str                   # active | completed | deleting | deleted
    created: float
    description: str = ""
    disk_format: str | None = None    # as the user declared it (RAW, QCOW2), checked on arrival
    architecture: str = "x86_64"
    platform: str = "Linux"
    client_token: str | None = None
    status_message: str = ""
    image_id: str | None = None       # once completed
    size: int | None = None           # bytes received, once completed
    file: str | None = None           # the file in the image store while it downloads


@dataclass(frozen=True, slots=True)
class Address(Row):
    """An Elastic IP. Keyed by the public address itself, so the table can never hold one
    address twice, whatever a crash or a replay does."""

    table: ClassVar[str] = "addresses"
    key_field: ClassVar[str] = "public_ip"
    repeated: ClassVar[tuple[str, ...]] = ("owner", "domain", "instance_id", "private_ip")
    public_ip: str
    allocation_id: str           # eipalloc-...
    owner: str                   # account id
    allocated: float
    domain: str = "vpc"
    association_id: str | None = None     # eipassoc-..., while associated
    instance_id: str | None = None
    private_ip: str | None = None
    network_interface_id: str | None = None
    associated_at: float | None = None
    # A script run for this address began and its outcome was not recorded: the host's NAT
    # may differ from this row. Start-up runs the disassociate script, then re-associates.
    nat_unsure: bool = False
    # Assigned by a launch on a subnet mapping public addresses (not an Elastic IP): not listed
    # by DescribeAddresses nor counted in the user's limit; gone back to the pool when its
    # instance terminates (or takes an Elastic IP instead).
    launch: bool = False


@dataclass(frozen=True, slots=True)
class LaunchConfiguration(Row):
    """An AutoScaling launch configuration: what a group's launches ask for (immutable in AWS)."""

    table: ClassVar[str] = "asg_launch_configurations"
    id: str                          # owner + "/" + name (names are unique per account)
    owner: str
    name: str
    arn: str
    image_id: str
    instance_type: str
    created: float
    key_name: str | None = None
    security_groups: tuple[str, ...] = ()    # ids (sg-...) or names, as given
    user_data: str | None = None     # base64
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    associate_public_ip: bool | None = None
    monitoring: bool = True
    block_devices: tuple[Any, ...] = ()      # FrozenMaps: DeviceName, VolumeSize, VolumeType, ...

    def __post_init__(self) -> None:
        _tuples(self, "security_groups")
        if self.block_devices:
            _frozen(self, "block_devices")


@dataclass(frozen=True, slots=True)
class ScalingGroup(Row):
    """An AutoScaling group: its desired state, which the reconciler (core/autoscaling) converges to."""

    table: ClassVar[str] = "asg_groups"
    id: str                          # owner + "/" + name
    owner: str
    name: str
    arn: str
    min_size: int
    max_size: int
    desired: int
    created: float
    launch_configuration: str | None = None
    template_id: str | None = None   # a launch template by id or name, and its version
    template_name: str | None = None
    template_version: str | None = None
    zones: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()   # VPCZoneIdentifier
    default_cooldown: int = 300
    health_check_type: str = "EC2"
    grace_period: int = 0
    termination_policies: tuple[str, ...] = ("Default",)
    load_balancers: tuple[str, ...] = ()
    suspended: tuple[tuple[str, str], ...] = ()   # (process, reason)
    tags: tuple[tuple[str, str, bool], ...] = ()  # (key, value, propagate at launch)
    protect_new: bool = False
    deleting: bool = False           # ForceDelete: the reconciler terminates the instances, then the row goes
    last_scaled: float = 0.0         # end of the last scaling by a policy (cooldown)
    failures: int = 0                # launches failed in a row (the backoff's exponent)
    retry_at: float = 0.0            # no launch before this (backoff)

    def __post_init__(self) -> None:
        _tuples(self, "zones", "subnet_ids", "termination_policies", "load_balancers", "suspended", "tags")


@dataclass(frozen=True, slots=True)
class ScalingMember(Row):
    """An instance in a group (launched by it or attached to it)."""

    table: ClassVar[str] = "asg_members"
    id: str                          # the instance id
    owner: str
    group: str                       # the group's name
    zone: str
    launched: float
    launch_configuration: str | None = None
    template: str | None = None      # "id\x1fname\x1fversion" of the launch template it came from
    health: str = "Healthy"
    lifecycle: str = "InService"     # InService | Terminating | Detaching
    protected: bool = False


@dataclass(frozen=True, slots=True)
class ScalingActivity(Row):
    """A scaling activity; an InProgress launch is resumed with the same ClientToken after a crash."""

    table: ClassVar[str] = "asg_activities"
    id: str                          # uuid
    owner: str
    group: str
    kind: str                        # launch | terminate | detach
    cause: str
    description: str
    start: float
    status: str = "InProgress"       # InProgress | Successful | Failed | Cancelled
    status_message: str = ""
    end: float | None = None
    progress: int = 0
    zone: str | None = None          # a launch: where, how many
    subnet_id: str | None = None
    count: int = 0
    instance_ids: tuple[str, ...] = ()
    details: str = ""

    def __post_init__(self) -> None:
        _tuples(self, "instance_ids")


@dataclass(frozen=True, slots=True)
class ScalingPolicy(Row):
    """A simple scaling policy of a group."""

    table: ClassVar[str] = "asg_policies"
    id: str                          # owner + "/" + group + "/" + name
    owner: str
    group: str
    name: str
    arn: str
    adjustment_type: str
    adjustment: int
    cooldown: int | None = None
    min_magnitude: int | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LaunchTemplate(Row):
    """An EC2 launch template: a name over numbered versions, one of them the default."""

    table: ClassVar[str] = "launch_templates"
    id: str                      # lt-...
    owner: str                   # account id
    name: str
    created: float
    created_by: str              # the creating user's name (the API shows it as an ARN)
    default_version: int = 1
    latest_version: int = 1      # the highest number of the versions there are
    last_version: int = 1        # the highest number ever made: numbers are never reused
    client_token: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchTemplateVersion(Row):
    """One immutable version of a launch template. Keyed `<template id>/<number, zero-padded>`, so
    sorting keys sorts a template's versions by number."""

    table: ClassVar[str] = "launch_template_versions"
    id: str
    template_id: str
    owner: str
    number: int
    created: float
    created_by: str
    description: str = ""
    # The launch settings (core.launch_templates.TemplateData as plain values: the core reads and
    # writes them; the store keeps them as they are).
    data: Mapping[str, Any] = EMPTY

    def __post_init__(self) -> None:
        _frozen(self, "data")


@dataclass(frozen=True, slots=True)
class LoadBalancer(Row):
    """A classic Elastic Load Balancer: its whole configuration in one row, so every ELB action
    is one put and a crash never leaves half a change. Keyed by an id of its own (`elb-…`, the
    data plane's name for its proxy): names are unique per account only."""

    table: ClassVar[str] = "load_balancers"
    id: str
    owner: str                        # account id
    name: str
    created: float
    address: str                      # where its proxy listens (the DNSName): a lease or a loopback address
    leased: bool = False              # `address` is a lease of `placement_subnet` (a bridged subnet)
    placement_subnet: str | None = None
    scheme: str = "internet-facing"
    zones: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    # {protocol, port, instance_protocol, instance_port, certificate, policies: (names…)}, by port
    listeners: tuple[FrozenMap, ...] = ()
    instances: tuple[str, ...] = ()   # registered instance ids, in registration order
    health_check: FrozenMap = EMPTY   # {target, interval, timeout, healthy, unhealthy}
    attributes: FrozenMap = EMPTY     # {cross_zone, draining, draining_timeout, idle_timeout, access_log, extra}
    policies: tuple[FrozenMap, ...] = ()   # {name, type, attributes: ((name, value), …)}
    tags: FrozenMap = EMPTY

    def __post_init__(self) -> None:
        _tuples(self, "zones", "subnets", "security_groups", "instances")
        _frozen(self, "listeners", "health_check", "attributes", "policies", "tags")


@dataclass(frozen=True, slots=True)
class CfnStack(Row):
    """A CloudFormation stack: its template and inputs as given, and its status as it changes
    (journaled at each step so a restart resumes the operation in progress)."""

    table: ClassVar[str] = "cfn_stacks"
    id: str                           # the stack ARN (StackId)
    owner: str
    name: str
    created: float
    template: str                     # the body, as given
    status: str                       # CREATE_IN_PROGRESS | CREATE_COMPLETE | ... | DELETE_COMPLETE
    reason: str = ""
    parameters: FrozenMap = EMPTY     # name -> value, as given
    on_failure: str = "ROLLBACK"      # ROLLBACK | DELETE | DO_NOTHING
    tags: FrozenMap = EMPTY
    description: str = ""
    updated: float | None = None
    deleted: float | None = None      # DELETE_COMPLETE at (kept for DescribeStacks by id, then trimmed)
    outputs: tuple[FrozenMap, ...] = ()   # {key, value, description}
    no_echo: tuple[str, ...] = ()     # parameters DescribeStacks shows as "****" (NoEcho)
    generation: int = 0               # updates started so far (names and ClientTokens of replacements)
    prior_template: str = ""          # during an update: the template before it (after a rollback's
    prior_parameters: FrozenMap = EMPTY   # start: the one rolled back from), and its parameters
    prior_no_echo: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _frozen(self, "parameters", "tags", "outputs", "prior_parameters")
        _tuples(self, "no_echo", "prior_no_echo")


@dataclass(frozen=True, slots=True)
class CfnResource(Row):
    """One logical resource of a stack: its type, physical id and status, journaled as they change."""

    table: ClassVar[str] = "cfn_resources"
    id: str                           # stack id + "|" + logical id
    stack_id: str
    logical: str
    type: str
    status: str                       # CREATE_IN_PROGRESS | CREATE_COMPLETE | CREATE_FAILED | DELETE_* ...
    updated: float
    physical: str = ""
    reason: str = ""
    attributes: FrozenMap = EMPTY     # Fn::GetAtt values the handler reported
    props: str = ""                   # JSON: the resolved properties the physical resource has now
    generation: int = 0               # the stack update that made `physical` (its name and ClientToken)
    touched: int = 0                  # the stack update that last changed this row ...
    change: str = ""                  # ... how: Add | Modify | Replace
    prior_props: str = ""             # JSON: the properties before that change (what a rollback restores)
    other_physical: str = ""          # a replacement's other physical resource, deleted at cleanup
    other_attributes: FrozenMap = EMPTY
    other_generation: int = 0

    def __post_init__(self) -> None:
        _frozen(self, "attributes", "other_attributes")


@dataclass(frozen=True, slots=True)
class CfnEvent(Row):
    """A stack event (DescribeStackEvents); numbered per stack so they list newest first."""

    table: ClassVar[str] = "cfn_events"
    id: str                           # a uuid (EventId)
    stack_id: str
    seq: int
    at: float
    logical: str
    type: str
    status: str
    physical: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CfnSignal(Row):
    """A signal sent to a WaitConditionHandle's URL (cfn-signal's JSON body), one per UniqueId."""

    table: ClassVar[str] = "cfn_signals"
    id: str                           # handle id + "|" + UniqueId
    handle: str                       # the handle's id (in its URL)
    unique_id: str
    status: str                       # SUCCESS | FAILURE
    at: float
    reason: str = ""
    data: str = ""


@dataclass(frozen=True, slots=True)
class CfnWait(Row):
    """A WaitCondition's deadline, journaled when its wait starts, so that a restart mid-wait keeps
    it; removed when the wait ends."""

    table: ClassVar[str] = "cfn_waits"
    id: str                           # stack id + "|" + logical id
    deadline: float                   # wall-clock time (time.time()) the wait fails at


@dataclass(frozen=True, slots=True)
class CfnChangeSet(Row):
    """A change set: a stack update (or, for a new stack, its create) computed for review, run
    later by ExecuteChangeSet."""

    table: ClassVar[str] = "cfn_change_sets"
    id: str                           # the change set ARN
    stack_id: str
    owner: str
    name: str
    created: float
    kind: str                         # CREATE | UPDATE (ChangeSetType)
    status: str                       # CREATE_PENDING | CREATE_COMPLETE | FAILED | DELETE_COMPLETE
    execution: str = "UNAVAILABLE"    # UNAVAILABLE | AVAILABLE | EXECUTE_IN_PROGRESS | EXECUTE_COMPLETE | OBSOLETE
    reason: str = ""
    template: str = ""
    parameters: FrozenMap = EMPTY
    tags: FrozenMap = EMPTY
    description: str = ""
    changes: str = "[]"               # JSON: the Changes DescribeChangeSet shows

    def __post_init__(self) -> None:
        _frozen(self, "parameters", "tags")


@dataclass(frozen=True, slots=True)
class VmTemplate(Row):
    """A user's saved VM template (OpenNebula's `one.template.*`): the text as given, launched by name or number."""

    table: ClassVar[str] = "vm_templates"
    id: str                           # tmpl-...
    owner: str                        # account id
    name: str
    body: str                         # the template text (OpenNebula syntax or XML), as given
    created: float


@dataclass(frozen=True, slots=True)
class VmUserTemplate(Row):
    """The template an instance was launched with through OpenNebula's API, shown back by `one.vm.info`."""

    table: ClassVar[str] = "vm_user_templates"
    id: str                           # the instance id
    body: str


ROW_TYPES: tuple[type[Row], ...] = (User, Instance, Reservation, Image, KeyPair, Tag, Lease, Volume, Snapshot,
                                     Event, BmProject, BmUser, BmNode, BmNic, BmSwitch, BmPort, BmNetwork,
                                     BmAttachment, BmOperation, BmHeadnode, HostAdmin, NumericId, PublishedList,
                                     Subscription, MarketImage, MetadataEntry, ImportTask, Address, SecurityGroup,
                                     SecurityGroupRule, LaunchConfiguration, ScalingGroup, ScalingMember,
                                     ScalingActivity, ScalingPolicy,
                                     LaunchTemplate, LaunchTemplateVersion, LoadBalancer,
                                     CfnStack, CfnResource, CfnEvent, CfnSignal, CfnWait, CfnChangeSet,
                                     VmTemplate, VmUserTemplate)
# The rows every launch makes (instances and volumes, with rare fields, have theirs already): their
# fields set through their descriptors. Not every type: each generated __init__ and its bound setters
# are ~3 KiB kept from the start (base RSS), worth it where a row is made per launch.
for _cls in (Reservation, Tag, Lease, Event, Address):
    fast_init(_cls)
