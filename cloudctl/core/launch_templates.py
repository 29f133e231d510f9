"""EC2 launch templates: named, versioned launch settings, launched by RunInstances and by the
cloud's own services (AutoScaling groups, through `launch_spec`).

A version's settings are a `TemplateData`: the part of a launch a template can carry and
`LaunchSpec` can express. Turning a wire request into one, and refusing the members cloudctl
cannot honour, is the front end's job (EC2's: `api/ec2/launch.py`); the core checks what the
settings say (types, zones, shutdown behaviour, user data) and keeps the versions. What the
settings name (an image, a key pair, groups, a subnet) is checked at launch, as EC2 does: a
template may name an image made later.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..config import Config
from ..slim import dataclass
from ..store.records import LaunchTemplate, LaunchTemplateVersion
from ..store.store import MultiIndex, Store
from .compute import InstanceAttributes
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .ids import new_id, well_formed
from .launch import BlockDevice, LaunchSpec, Tag
from .query import Query
from .tags import Tags

MAX_TEMPLATES = 5000          # per account, as EC2's quota
MAX_VERSIONS = 10000          # per template, as EC2's
MAX_USER_DATA = 16 * 1024
LATEST, DEFAULT = "$Latest", "$Default"
TEMPLATE_TAG, VERSION_TAG = "aws:ec2launchtemplate:id", "aws:ec2launchtemplate:version"
_NAME = re.compile(r"[a-zA-Z0-9().\-/_]{3,128}\Z")


@dataclass(frozen=True, slots=True)
class TemplateData:
    """Launch settings, every one optional: a template version's, or the parameters a RunInstances
    request gives itself (which override its template's, see `merged`)."""
    image_id: str | None = None
    instance_type: str | None = None
    key_name: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    zone: str | None = None
    user_data: str | None = None              # base64
    group_ids: tuple[str, ...] = ()           # SecurityGroupIds
    group_names: tuple[str, ...] = ()         # SecurityGroups
    # The network interface (device 0): given as one (`interface`), or by a request's SubnetId.
    interface: bool = False
    subnet_id: str | None = None
    private_ip: str | None = None
    public_ip: bool | None = None
    interface_group_ids: tuple[str, ...] = ()
    block_devices: tuple[BlockDevice, ...] = ()
    instance_tags: tuple[Tag, ...] = ()
    volume_tags: tuple[Tag, ...] = ()
    shutdown_behavior: str | None = None      # stop | terminate; None: stop
    disable_api_termination: bool | None = None

    def merged(self, over: TemplateData) -> TemplateData:
        """These settings with `over`'s where it gives them: scalars one by one; the groups as one
        setting (ids, names and the interface's, as EC2 takes a request's groups whole); block
        devices by device name; tags by key (a key given in both takes `over`'s value)."""
        out: dict[str, Any] = {}
        for name in ("image_id", "instance_type", "key_name", "kernel_id", "ramdisk_id", "zone", "user_data",
                     "subnet_id", "private_ip", "public_ip", "shutdown_behavior", "disable_api_termination"):
            value = getattr(over, name)
            if value is not None:
                out[name] = value
        if over.group_ids or over.group_names or over.interface_group_ids:
            out |= {"group_ids": over.group_ids, "group_names": over.group_names,
                    "interface_group_ids": over.interface_group_ids}
        if over.interface:
            out["interface"] = True
        if over.block_devices:
            mine = {b.device: b for b in self.block_devices}
            out["block_devices"] = tuple({**mine, **{b.device: b for b in over.block_devices}}.values())
        if over.instance_tags:
            out["instance_tags"] = tuple({**dict(self.instance_tags), **dict(over.instance_tags)}.items())
        if over.volume_tags:
            out["volume_tags"] = tuple({**dict(self.volume_tags), **dict(over.volume_tags)}.items())
        return replace(self, **out)

    def launch_spec(self, min_count: int = 1, max_count: int = 1, client_token: str | None = None,
                    owner: str | None = None, system_tags: tuple[Tag, ...] = ()) -> LaunchSpec:
        if not self.image_id:
            raise CloudError("MissingParameter", "The request must contain the parameter ImageId "
                             "(neither the request nor its launch template gives one)")
        return LaunchSpec(
            image_id=self.image_id, min_count=min_count, max_count=max_count, instance_type=self.instance_type,
            kernel_id=self.kernel_id, ramdisk_id=self.ramdisk_id, zone=self.zone, subnet_id=self.subnet_id,
            private_ip=self.private_ip, public_ip=self.public_ip,
            group_ids=self.group_ids + self.interface_group_ids, group_names=self.group_names,
            key_name=self.key_name, user_data=self.user_data, block_devices=self.block_devices,
            instance_tags=self.instance_tags, volume_tags=self.volume_tags, client_token=client_token,
            shutdown_behavior=self.shutdown_behavior or "stop",
            disable_api_termination=bool(self.disable_api_termination), owner=owner, system_tags=system_tags)

    # -- as a version row stores it ---------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Plain values, the unset ones left out (so settings added later read back as unset)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or v == () or v is False and f.name == "interface":
                continue
            if f.name == "block_devices":
                v = [dataclasses.asdict(b) for b in v]
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> TemplateData:
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                continue   # written by a newer version
            if k == "block_devices":
                v = tuple(BlockDevice(**b) for b in v)
            elif k in ("instance_tags", "volume_tags"):
                v = tuple((t[0], t[1]) for t in v)
            elif isinstance(v, (list, tuple)):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A template named by id or by name (exactly one of them)."""
    template_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A template, one of its versions, and that version's settings."""
    template: LaunchTemplate
    version: LaunchTemplateVersion
    data: TemplateData


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


class LaunchTemplates:
    def __init__(self, store: Store, config: Config, tags: Tags,
                 attributes: Callable[[Caller, str], InstanceAttributes]) -> None:
        self.store = store
        self.attributes = attributes
        self.config = config
        self.tags = tags
        self.table = store.table(LaunchTemplate)
        self.versions = store.table(LaunchTemplateVersion)
        self._by_owner: MultiIndex[LaunchTemplate] = self.table.add_index(MultiIndex(lambda t: t.owner))
        self._versions_of: MultiIndex[LaunchTemplateVersion] = self.versions.add_index(
            MultiIndex(lambda v: v.template_id))
        self.filters = FilterSet({
            "launch-template-name": lambda t: t.name,
            "create-time": lambda t: _iso(t.created),
        }, tags_of=lambda t: tags.of(t.id))
        self.version_filters = FilterSet({
            "create-time": lambda r: _iso(r[0].created),
            "image-id": lambda r: r[1].image_id,
            "instance-type": lambda r: r[1].instance_type,
            "kernel-id": lambda r: r[1].kernel_id,
            "ram-disk-id": lambda r: r[1].ramdisk_id,
            "is-default-version": lambda r: r[2],
            "ebs-optimized": lambda r: False,
        })
        tags.register("launch-template", lambda caller, tid: self._by_id(caller.account, tid) and None)

    # -- lookups ------------------------------------------------------------------------------------
    def _by_id(self, account: str, template_id: str) -> LaunchTemplate:
        if not well_formed(template_id, "lt"):
            raise CloudError("InvalidLaunchTemplateId.Malformed",
                             f"The specified ID for the launch template ({template_id}) is not valid")
        t = self.table.get(template_id)
        if t is None or t.owner != account:
            raise CloudError.not_found("InvalidLaunchTemplateId.NotFound",
                                       f"The specified launch template, with template ID {template_id}, "
                                       "does not exist.")
        return t

    def by_name(self, account: str, name: str) -> LaunchTemplate | None:
        for t in self._by_owner.get(account).values():
            if t.name == name:
                return t
        return None

    def _by_name(self, account: str, name: str) -> LaunchTemplate:
        t = self.by_name(account, name)
        if t is None:
            raise CloudError.not_found("InvalidLaunchTemplateName.NotFoundException",
                                       f"The specified launch template, with template name {name}, does not exist.")
        return t

    def template(self, account: str, ref: TemplateRef) -> LaunchTemplate:
        if ref.template_id and ref.name:
            raise CloudError("InvalidParameterCombination",
                             "Specify either the launch template ID or the launch template name, not both")
        if ref.template_id:
            return self._by_id(account, ref.template_id)
        if ref.name:
            return self._by_name(account, ref.name)
        raise CloudError("MissingParameter", "The request must include either the launch template ID or "
                         "the launch template name")

    def version_number(self, t: LaunchTemplate, version: str | None) -> int:
        """`$Latest`, `$Default` (also None) or a number, as a number of one of `t`'s versions."""
        if version is None or version == DEFAULT:
            return t.default_version
        if version == LATEST:
            return t.latest_version
        n = int(version) if version.isascii() and version.isdigit() and len(version) < 19 else 0
        if n < 1 or self.versions.get(_version_key(t.id, n)) is None:
            raise CloudError.not_found("InvalidLaunchTemplateId.VersionNotFound",
                                       f"Could not find launch template version {version} for launch template "
                                       f"{t.id}")
        return n

    def resolve(self, account: str, ref: TemplateRef, version: str | None = None) -> Resolved:
        """The template `ref` names in `account`, its version `version` (None: its default)."""
        t = self.template(account, ref)
        row = self.versions.get(_version_key(t.id, self.version_number(t, version)))
        assert row is not None
        return Resolved(t, row, TemplateData.from_record(row.data))

    def launch_spec(self, account: str, template_id: str | None, name: str | None,
                    version: str | None) -> LaunchSpec:
        """What a cloud service launches from a template of `account`'s (the AutoScaling seam): one
        instance, its owner left to the service (min/max 1, owner None), carrying the template tags."""
        got = self.resolve(account, TemplateRef(template_id, name), version)
        return got.data.launch_spec(system_tags=_system_tags(got))

    def run_spec(self, caller: Caller, ref: TemplateRef, version: str | None, over: TemplateData,
                 min_count: int, max_count: int, client_token: str | None) -> LaunchSpec:
        """RunInstances from a template: its settings, the request's own over them."""
        got = self.resolve(caller.account, ref, version)
        return got.data.merged(over).launch_spec(min_count, max_count, client_token,
                                                 system_tags=_system_tags(got))

    def versions_of(self, template_id: str) -> list[LaunchTemplateVersion]:
        return sorted(self._versions_of.get(template_id).values(), key=lambda v: v.number)

    # -- checks --------------------------------------------------------------------------------------
    def _check_data(self, data: TemplateData) -> None:
        """What the settings say on their own; what they name is checked at launch."""
        if data.instance_type is not None and data.instance_type not in self.config.instance_types:
            raise CloudError("InvalidParameterValue", f"Invalid value '{data.instance_type}' for InstanceType.")
        if data.zone is not None and data.zone not in self.config.zones:
            raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{data.zone}]")
        if data.shutdown_behavior not in (None, "stop", "terminate"):
            raise CloudError("InvalidParameterValue",
                             f"Invalid value '{data.shutdown_behavior}' for InstanceInitiatedShutdownBehavior")
        if data.user_data:
            try:
                raw = base64.b64decode(data.user_data, validate=True)
            except (binascii.Error, ValueError):
                raise CloudError("InvalidUserData.Malformed", "Invalid BASE64 encoding of user data.") from None
            if len(raw) > MAX_USER_DATA:
                raise CloudError("InvalidUserData.Malformed",
                                 f"User data is limited to {MAX_USER_DATA} bytes (got {len(raw)})")
        for b in data.block_devices:
            if b.size is not None and not 1 <= b.size <= 16384:
                raise CloudError("InvalidParameterValue",
                                 f"Volume size {b.size} of {b.device} is out of range (1-16384 GiB)")
        Tags.validate_pairs(data.instance_tags)
        Tags.validate_pairs(data.volume_tags)

    @staticmethod
    def _check_description(description: str | None) -> str:
        if description and len(description) > 255:
            raise CloudError("InvalidParameterValue", "The version description must be at most 255 characters")
        return description or ""

    # -- changes --------------------------------------------------------------------------------------
    async def create(self, caller: Caller, name: str, description: str | None, data: TemplateData,
                     tags: Sequence[tuple[str, str]] = (), client_token: str | None = None,
                     system_tags: Sequence[tuple[str, str]] = ()) -> tuple[LaunchTemplate, LaunchTemplateVersion]:
        """A new template with version 1 as its default. A ClientToken used before by this account
        answers the template it made. `system_tags`: `aws:` tags the cloud's own services set
        (CloudFormation's), never from a wire; the user tag check does not apply to them."""
        mine = self._by_owner.get(caller.account)
        if client_token:
            for t in mine.values():
                if t.client_token == client_token:
                    caller.check_dry_run()
                    v = self.versions.get(_version_key(t.id, 1)) or self.versions_of(t.id)[0]
                    return t, v
        if not isinstance(name, str) or not _NAME.match(name):
            raise CloudError("InvalidLaunchTemplateName.MalformedException",
                             "A launch template name must be 3-128 characters: letters, digits and ( ) . - / _")
        if self.by_name(caller.account, name) is not None:
            raise CloudError.conflict("InvalidLaunchTemplateName.AlreadyExistsException",
                                      f"Launch template name already in use: {name}")
        if len(mine) >= MAX_TEMPLATES:
            raise CloudError.limit("LaunchTemplateLimitExceeded",
                                   f"You have reached the limit of {MAX_TEMPLATES} launch templates")
        description = self._check_description(description)
        self._check_data(data)
        pairs = Tags.validate_pairs(tags) + list(system_tags)
        caller.check_dry_run()
        now = time.time()
        t = LaunchTemplate(id=new_id("lt"), owner=caller.account, name=name, created=now,
                           created_by=caller.user.name, client_token=client_token or None)
        v = LaunchTemplateVersion(id=_version_key(t.id, 1), template_id=t.id, owner=caller.account, number=1,
                                  created=now, created_by=caller.user.name, description=description,
                                  data=data.to_record())
        with self.store.txn() as tx:
            tx.put(t)
            tx.put(v)
            if pairs:
                self.tags.put(tx, caller.account, t.id, "launch-template", pairs)
        await self.store.sync()
        return t, v

    async def create_version(self, caller: Caller, ref: TemplateRef, source_version: str | None,
                             description: str | None, data: TemplateData) -> LaunchTemplateVersion:
        """A new version, numbered after every one made before; with `source_version`, that version's
        settings with `data`'s over them."""
        t = self.template(caller.account, ref)
        if source_version is not None:
            data = self.resolve(caller.account, TemplateRef(t.id), source_version).data.merged(data)
        description = self._check_description(description)
        self._check_data(data)
        if len(self._versions_of.get(t.id)) >= MAX_VERSIONS:
            raise CloudError.limit("VersionLimitExceeded",
                                   f"Launch template {t.id} has reached the limit of {MAX_VERSIONS} versions")
        caller.check_dry_run()
        n = t.last_version + 1
        v = LaunchTemplateVersion(id=_version_key(t.id, n), template_id=t.id, owner=t.owner, number=n,
                                  created=time.time(), created_by=caller.user.name, description=description,
                                  data=data.to_record())
        with self.store.txn() as tx:
            tx.put(v)
            tx.put(replace(t, latest_version=n, last_version=n))
        await self.store.sync()
        return v

    async def set_default(self, caller: Caller, ref: TemplateRef, version: str | None) -> LaunchTemplate:
        t = self.template(caller.account, ref)
        if version is None:   # ModifyLaunchTemplate changes nothing else
            caller.check_dry_run()
            return t
        n = self.version_number(t, version)
        caller.check_dry_run()
        if n == t.default_version:
            return t
        t = replace(t, default_version=n)
        with self.store.txn() as tx:
            tx.put(t)
        await self.store.sync()
        return t

    async def delete(self, caller: Caller, ref: TemplateRef) -> LaunchTemplate:
        """The template, its versions and its tags; what was launched from it stays."""
        t = self.template(caller.account, ref)
        caller.check_dry_run()
        with self.store.txn() as tx:
            for v in list(self._versions_of.get(t.id).values()):
                tx.delete(v)
            self.tags.remove_all(tx, t.id)
            tx.delete(t)
        await self.store.sync()
        return t

    async def delete_versions(self, caller: Caller, ref: TemplateRef, versions: Sequence[str]
                              ) -> tuple[LaunchTemplate, list[int], list[tuple[str, str, str]]]:
        """Deletes the versions named (numbers); answers those deleted and, for each refused,
        (version, EC2's launch template error code, message): the default version is never deleted."""
        t = self.template(caller.account, ref)
        if not versions:
            raise CloudError("MissingParameter", "The request must contain the parameter LaunchTemplateVersion")
        if len(versions) > 200:
            raise CloudError("InvalidParameterValue", "At most 200 versions can be deleted at once")
        caller.check_dry_run()
        done: dict[int, LaunchTemplateVersion] = {}
        failed: list[tuple[str, str, str]] = []
        for text in versions:
            n = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0
            row = self.versions.get(_version_key(t.id, n)) if n else None
            if row is None:
                failed.append((text, "launchTemplateVersionDoesNotExist",
                               f"The specified launch template version {text} does not exist"))
            elif n == t.default_version:
                failed.append((text, "unexpectedError",
                               "The default version of a launch template cannot be deleted"))
            else:
                done[n] = row
        if done:
            left = [v.number for v in self._versions_of.get(t.id).values() if v.number not in done]
            with self.store.txn() as tx:
                for row in done.values():
                    tx.delete(row)
                # The latest is the highest left; numbers go on from the highest ever made.
                tx.put(replace(t, latest_version=max(left)))
            await self.store.sync()
        return t, sorted(done), failed

    # -- reads --------------------------------------------------------------------------------------
    def describe(self, caller: Caller, query: Query, names: Sequence[str] = ()
                 ) -> tuple[list[LaunchTemplate], str | None]:
        """The caller's templates by id (`query.ids`) and/or name, filtered, one page."""
        match = self.filters.compile(query.filters)
        page = query.page(1, 200, "launch-templates", sorted(names),
                          not_with_ids="MaxResults cannot be given with LaunchTemplateIds")
        chosen: dict[str, LaunchTemplate] = {}
        for i in query.ids:
            chosen[i] = self._by_id(caller.account, i)
        for n in names:
            t = self._by_name(caller.account, n)
            chosen[t.id] = t
        caller.check_dry_run()
        pool = chosen if query.ids or names else self._by_owner.get(caller.account)
        rows = {k: t for k, t in pool.items() if match(t)}
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token

    def describe_versions(self, caller: Caller, ref: TemplateRef | None, versions: Sequence[str],
                          lo: str | None, hi: str | None, query: Query
                          ) -> tuple[list[tuple[LaunchTemplate, LaunchTemplateVersion]], str | None]:
        """Versions of one template (all of them, those named, or those in `lo`..`hi`), or without
        `ref` those of all the caller's templates (only `$Latest`/`$Default` may be named); filtered,
        one page."""
        match = self.version_filters.compile(query.filters)
        page = query.page(1, 200, "launch-template-versions", ref.template_id if ref else None,
                          ref.name if ref else None, list(versions), lo, hi)
        if ref is None:   # (nothing named at all: every version of every template, EC2's listing)
            if any(v not in (LATEST, DEFAULT) for v in versions):
                raise CloudError("InvalidParameterCombination",
                                 "Without a launch template ID or name, only the $Latest and $Default versions "
                                 "of every launch template can be described")
            templates = list(self._by_owner.get(caller.account).values())
        else:
            templates = [self.template(caller.account, ref)]
        bounds = [int(x) if x.isascii() and x.isdigit() and len(x) < 19 else None for x in (lo or "0", hi or "0")]
        if None in bounds:
            raise CloudError("InvalidParameterValue", f"MinVersion and MaxVersion must be version numbers "
                             f"(got {lo!r}, {hi!r})")
        chosen: dict[str, tuple[LaunchTemplate, LaunchTemplateVersion]] = {}
        for t in templates:
            if versions:
                numbers = [self.version_number(t, v) for v in versions]
                rows = [self.versions.get(_version_key(t.id, n)) for n in numbers]
            else:
                rows = list(self._versions_of.get(t.id).values())
            for row in rows:
                assert row is not None
                if (lo and row.number < bounds[0]) or (hi and row.number > bounds[1]):
                    continue
                chosen[row.id] = (t, row)
        caller.check_dry_run()
        picked = {k: (t, v) for k, (t, v) in chosen.items()
                  if not match or match((v, TemplateData.from_record(v.data), v.number == t.default_version))}
        keys, token = page.of(sorted(picked))
        return [picked[k] for k in keys], token

    def instance_data(self, caller: Caller, instance_id: str) -> TemplateData:
        """An instance's launch settings as template data (GetLaunchTemplateData); the cloud's own
        `aws:` tags are left out, as EC2 does."""
        a = self.attributes(caller, instance_id)
        i = a.instance
        return TemplateData(
            image_id=i.image_id, instance_type=i.instance_type, key_name=i.key_name, zone=i.zone,
            kernel_id=i.kernel_id, ramdisk_id=i.ramdisk_id, user_data=i.user_data,
            interface=i.subnet_id is not None, subnet_id=i.subnet_id, interface_group_ids=tuple(g for g, _ in a.groups),
            block_devices=tuple(BlockDevice(v.device or "", v.size, v.volume_type, v.snapshot_id,
                                            v.delete_on_termination) for v in a.volumes),
            instance_tags=tuple((k, v) for k, v in self.tags.of(i.id).items() if not k.startswith("aws:")),
            shutdown_behavior=i.shutdown_behavior, disable_api_termination=i.disable_api_termination)


def _version_key(template_id: str, number: int) -> str:
    return f"{template_id}/{number:012d}"


def _system_tags(got: Resolved) -> tuple[Tag, ...]:
    return ((TEMPLATE_TAG, got.template.id), (VERSION_TAG, str(got.version.number)))
