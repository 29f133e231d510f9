"""The HEPiX image list (`hv:imagelist`) as typed models: parsed leniently, written canonically.

Parsing coerces what publishers write loosely (AppDB writes `hv:size` as a string) and keeps
unknown keys (`ad:*` extensions); a list that does not fit is refused with the field named.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...slim import dataclass

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class ListError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def fmt_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(TIME_FORMAT)


def parse_time(s: str) -> float:
    try:
        return dt.datetime.strptime(s.strip(), TIME_FORMAT).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return dt.datetime.fromisoformat(s.strip().replace("Z", "+00:00")).timestamp()


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class X509Endorser(_Doc):
    dn: str = Field(alias="hv:dn")
    ca: str = Field(alias="hv:ca")
    email: str = Field("", alias="hv:email")
    creator: str = Field("", alias="dc:creator")


class Endorser(_Doc):
    x509: X509Endorser = Field(alias="hv:x509")


class ImageEntry(_Doc):
    identifier: Annotated[str, Field(min_length=1, max_length=128)] = Field(alias="dc:identifier")
    title: str = Field(alias="dc:title")
    description: str = Field("", alias="dc:description")
    uri: str = Field(alias="hv:uri")
    size: Annotated[int, Field(ge=0)] = Field(alias="hv:size")
    sha512: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{128}$")] = Field(alias="sl:checksum:sha512")
    version: str = Field("", alias="hv:version")
    hypervisor: str = Field("", alias="hv:hypervisor")
    format: str = Field("", alias="hv:format")
    arch: str = Field("x86_64", alias="sl:arch")
    os: str = Field("", alias="sl:os")
    osversion: str = Field("", alias="sl:osversion")
    comments: str = Field("", alias="sl:comments")
    expires: str | None = Field(None, alias="dc:date:expires")

    @field_validator("uri")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("hv:uri must be an http(s) URL")
        return v

    @field_validator("version", "hypervisor", "format", "os", "osversion", "comments", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return "" if v is None else str(v)


class ImageWrapper(_Doc):
    image: ImageEntry = Field(alias="hv:image")


class ImageList(_Doc):
    identifier: str = Field(alias="dc:identifier")
    title: str = Field("", alias="dc:title")
    description: str = Field("", alias="dc:description")
    source: str = Field("", alias="dc:source")
    created: str = Field(alias="dc:date:created")
    expires: str = Field(alias="dc:date:expires")
    uri: str = Field("", alias="hv:uri")
    version: str = Field(alias="hv:version")
    endorser: Endorser = Field(alias="hv:endorser")
    images: list[dict[str, Any]] = Field(default_factory=list, alias="hv:images")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v)

    @property
    def created_at(self) -> float:
        return parse_time(self.created)

    @property
    def expires_at(self) -> float:
        return parse_time(self.expires)


def parse(content: bytes) -> ImageList:
    """The list in a signed body; ListError `json` (vmcatcher 37/38) if it is not one."""
    try:
        doc = json.loads(content)
    except ValueError as e:
        raise ListError("json", f"the signed content is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hv:imagelist"), dict):
        raise ListError("json", "the signed content is not an hv:imagelist object")
    try:
        lst = ImageList.model_validate(doc["hv:imagelist"])
        lst.created_at, lst.expires_at  # noqa: B018 - both must parse
    except ValidationError as e:
        err = e.errors()[0]
        raise ListError("json", f"hv:imagelist.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    except ValueError as e:
        raise ListError("json", f"hv:imagelist dates: {e}") from None
    return lst


@dataclass(frozen=True, slots=True)
class Dropped:
    """An image entry left out of an accepted list, and why (as vmcatcher skips one it cannot use)."""

    index: int
    identifier: str
    reason: str

    def __str__(self) -> str:
        return f"hv:images[{self.index}] ({self.identifier or 'no dc:identifier'}): {self.reason}"


def images(lst: ImageList) -> tuple[list[ImageEntry], list[Dropped]]:
    """The usable entries, and those dropped with their reason (a missing hv:uri or checksum, a
    bad field): one incomplete entry does not refuse the list. Two entries sharing a
    dc:identifier make the list ambiguous: ListError `image-fields`."""
    out: list[ImageEntry] = []
    dropped: list[Dropped] = []
    for n, wrapped in enumerate(lst.images):
        raw = wrapped.get("hv:image") if isinstance(wrapped, dict) else None
        ident = str(raw.get("dc:identifier", "")) if isinstance(raw, dict) else ""
        try:
            entry = ImageWrapper.model_validate(wrapped).image
            if entry.expires is not None:
                parse_time(entry.expires)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"] if x != "hv:image")
            dropped.append(Dropped(n, ident, f"{where}: {'missing' if err['type'] == 'missing' else err['msg']}"))
            continue
        except ValueError:
            dropped.append(Dropped(n, ident, "dc:date:expires is not a date"))
            continue
        out.append(entry)
    ids = [i.identifier for i in out]
    if len(set(ids)) != len(ids):
        raise ListError("image-fields", "two images share a dc:identifier")
    return out, dropped


_DELIMITED = re.compile(r"[-,./]")
_DIGITS = re.compile(r"[0-9]+")


def _pieces(v: str, sep: re.Pattern[str]) -> list[str]:
    """`v` cut at each match of `sep`, the matches kept as pieces of their own."""
    out, pos = [], 0
    for m in sep.finditer(v):
        if m.start() > pos:
            out.append(v[pos:m.start()])
        out.append(m.group())
        pos = m.end()
    if pos < len(v):
        out.append(v[pos:])
    return out


def _compare_pieces(a: list[str], b: list[str], inner: bool) -> int:
    for x, y in zip(a, b):
        if x == y:
            continue
        xd, yd = x.isascii() and x.isdigit(), y.isascii() and y.isdigit()
        if xd and yd:
            return (int(x) > int(y)) - (int(x) < int(y))   # 0 for 1 vs 01 ends the comparison
        if xd or yd:
            return 1 if xd else -1                        # a number is newer than text
        if inner:
            return 1 if x > y else -1
        c = _compare_pieces(_pieces(x, _DIGITS), _pieces(y, _DIGITS), True)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))          # more parts: newer


def compare_versions(a: str, b: str) -> int:
    """1 if hv:version `a` is newer than `b`, -1 if older, 0 if vmcatcher takes them as the same.

    vmcatcher's order (its split_numeric_sort): cut at `-`, `,`, `.`, `/` (kept as parts), then
    each part into digit runs and text; parts compare numerically when both are numbers, a
    number is newer than text, text compares by code point, and with equal leading parts the
    longer version is newer. So `1-2` < `1-10`, `v2` < `v10`, `1.0` < `1.0.1`."""
    return _compare_pieces(_pieces(a, _DELIMITED), _pieces(b, _DELIMITED), False)


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps({"hv:imagelist": doc}, sort_keys=True, indent=2).encode()
