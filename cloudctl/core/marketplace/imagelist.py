"""The HEPiX image list (`hv:imagelist`) as typed models: parsed leniently, written canonically.

Parsing coerces what publishers write loosely (AppDB writes `hv:size` as a string) and keeps
unknown keys (`ad:*` extensions); a list that does not fit is refused with the field named.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


def images(lst: ImageList) -> list[ImageEntry]:
    """The per-image entries; ListError `image-fields` naming the first that is incomplete."""
    out = []
    for n, wrapped in enumerate(lst.images):
        try:
            out.append(ImageWrapper.model_validate(wrapped).image)
        except ValidationError as e:
            err = e.errors()[0]
            raise ListError("image-fields",
                            f"hv:images[{n}].{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if out[-1].expires is not None:
            try:
                parse_time(out[-1].expires)
            except ValueError:
                raise ListError("image-fields", f"hv:images[{n}]: bad dc:date:expires") from None
    ids = [i.identifier for i in out]
    if len(set(ids)) != len(ids):
        raise ListError("image-fields", "two images share a dc:identifier")
    return out


def version_key(v: str) -> tuple[int, ...] | tuple[str]:
    """hv:version compares numerically when it is numeric (vmcatcher), by dotted parts if dotted."""
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (v,)


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps({"hv:imagelist": doc}, sort_keys=True, indent=2).encode()
