"""Instance lifecycle: the store records what users asked for; a per-instance task makes the
hypervisor match it.

Every API call changes only the store (journaled, then acknowledged) and returns; the
hypervisor work happens afterwards in `_converge`, which drives the domain towards the state
the record says (pending → running, stopping → stopped, shutting-down → terminated). The same
routine, called for every instance at start-up, is the reconciliation after a crash.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, InstanceType
from ..derived import derived_or_none
from ..drivers.hypervisor.base import DomainEvent, DomainInfo, DomainStates, HypervisorDriver, HypervisorError, Power
from ..drivers.storage.base import StorageError
from ..slim import dataclass
from ..store.idgroups import IdGroups
from ..store.records import Image, Instance, Reservation, Volume
from ..store.store import CountIndex, MultiIndex, Store, SumIndex, Txn
from .configdrive import ConfigDriveError
from .context import Caller
from .domains import DomainRenderer, interface_xml
from .errors import CloudError, not_found
from .events import Events, state_data
from .filters import FilterSet, Matcher
from .ids import new_id, new_mac, new_uuid, well_formed
from .images import MARKET_OWNER, Images
from .instance_files import InstanceFiles
from .instance_store import HOLDING, InstanceStore, gib_needed
from .instance_store import plan as plan_instance_store
from .keypairs import KeyPairs
from .launch import LaunchSpec
from .network import Networks, Subnet, tap_name
from .query import Query
from .scheduler import Scheduler
from .tags import Tags
from .users import Users
from .work import KeyedWork

if TYPE_CHECKING:
    from .addresses import Addresses
    from .security_groups import SecurityGroups
    from .volumes import Volumes

log = logging.getLogger("cloudctl.compute")

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}
#: Hosts listed (reconcile) or connected (start-up) at once: each call runs in its driver's threads,
#: so this bounds the threads busy together, not the hosts.
HOSTS_AT_ONCE = 16
TRANSITIONAL = frozenset({"pending", "stopping", "shutting-down"})
MAX_USER_DATA = 16 * 1024


@dataclass(frozen=True, slots=True)
class DeleteOnTermination:
    """A new DeleteOnTermination flag for the volume attached at `device` (which, if
    `volume_id` is given, must be that volume)."""
    device: str
    delete: bool
    volume_id: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceAttributes:
    """An instance with what it is attached to: its groups (id, name) and volumes, root first."""
    instance: Instance
    groups: tuple[tuple[str, str], ...]
    volumes: tuple[Volume, ...]


@dataclass(frozen=True, slots=True)
class InstanceChanges:
    """ModifyInstanceAttribute: what to change; None (or empty `delete_on_termination`) leaves
    an attribute as it is. Type and user data change only while the instance is stopped."""
    instance_type: str | None = None
    user_data: bytes | None = None
    disable_api_termination: bool | None = None
    shutdown_behavior: str | None = None
    group_ids: tuple[str, ...] | None = None
    delete_on_termination: tuple[DeleteOnTermination, ...] = ()

    def __bool__(self) -> bool:
        return self != InstanceChanges()


class Compute:
    def __init__(self, store: Store, config: Config, tags: Tags, images: Images, keypairs: KeyPairs,
                 network: Networks, scheduler: Scheduler, drivers: dict[str, HypervisorDriver],
                 files: InstanceFiles, events: Events, controller_id: str, work: KeyedWork, volumes: Volumes,
                 security_groups: SecurityGroups, addresses: Addresses,
                 host_trouble: Callable[[str], str | None], users: Users,
                 instance_store: InstanceStore | None = None) -> None:
        self.store = store
        # Ephemeral disks: files made before an instance starts, removed when it stops or ends.
        self.instance_store = instance_store or InstanceStore(files.base, files.storage)
        self.users = users   # the accounts the cloud's own services launch for
        self.config = config
        self.tags = tags
        self.images = images
        self.keypairs = keypairs
        self.network = network
        self.scheduler = scheduler
        self.drivers = drivers
        self.controller_id = controller_id
        self.renderer = DomainRenderer(config, controller_id)
        self._image_paths: dict[str, tuple[Image, Path, str]] = {}   # the domain XML's image files
        self._zones = tuple(config.zones)   # (a property walking every host; the hosts are the config's)
        self.files = files
        self.events = events
        self.volumes = volumes   # launch volumes, data disks, release at terminate
        self.security_groups = security_groups   # launch groups, packet filters applied before domains are defined
        self.addresses = addresses   # elastic IPs let go at terminate
        self.table = store.table(Instance)
        self.reservations = store.table(Reservation)
        # (groups of ids read through the table: a dict by id per owner and per host was ~26-38 B
        # an instance at 50,000, store/idgroups.py)
        # (keys read by `attrgetter`, one C call, where a lambda was a Python call: each put of an
        # instance reads each index's key, a state change twice)
        self._by_owner: IdGroups[Instance] = self.table.add_index(IdGroups(self.table, attrgetter("owner")))
        self._by_host: IdGroups[Instance] = self.table.add_index(IdGroups(self.table, attrgetter("host")))
        self._usage: SumIndex[Instance] = self.table.add_index(SumIndex(
            lambda i: i.owner if i.state != "terminated" else None, self._vcpus))
        self.by_state: CountIndex[Instance] = self.table.add_index(CountIndex(attrgetter("state")))   # metrics
        self._by_token: MultiIndex[Reservation] = self.reservations.add_index(
            MultiIndex(lambda r: f"{r.owner}\x1f{r.client_token}" if r.client_token else None))
        self.work = work   # hypervisor work after the answer, in order per instance (shared with volumes, groups)
        self._hard_stop: set[str] = set()   # instances whose pending stop is forced
        self.reconcile_report: list[str] = []
        # Why instances on a host are impaired (its host is in error), or None; the monitor's polls decide.
        self.host_trouble = host_trouble
        tags.register("instance", self._check_owner)
        self.filters = self._filter_set()
        self.status_filters = self._status_filter_set()

    def _filter_set(self) -> FilterSet:
        t = self.config.instance_types
        return FilterSet({
            "instance-id": lambda i: i.id,
            "instance-state-name": lambda i: i.state,
            "instance-state-code": lambda i: STATE_CODES[i.state],
            "instance-type": lambda i: i.instance_type,
            "image-id": lambda i: i.image_id,
            "availability-zone": lambda i: i.zone,
            "key-name": lambda i: i.key_name,
            "private-ip-address": lambda i: i.private_ip,
            "network-interface.addresses.private-ip-address": lambda i: i.private_ip,
            "subnet-id": self._subnet_id,
            "network-interface.subnet-id": self._subnet_id,
            "vpc-id": lambda i: self.network.vpc_id,
            "network-interface.vpc-id": lambda i: self.network.vpc_id,
            "private-dns-name": lambda i: private_dns(i, self.config.region) if i.private_ip else None,
            "network-interface.mac-address": lambda i: i.mac,
            "mac-address": lambda i: i.mac,
            "reservation-id": lambda i: i.reservation_id,
            "client-token": lambda i: i.client_token,
            "owner-id": lambda i: i.owner,
            "launch-index": lambda i: i.launch_index,
            "architecture": lambda i: "x86_64",
            "root-device-type": lambda i: "ebs" if i.root_device else "instance-store",
            "root-device-name": lambda i: i.root_device or "/dev/vda",
            "block-device-mapping.device-name": lambda i: [v.device for v in self._volumes_of(i)],
            "block-device-mapping.volume-id": lambda i: [v.id for v in self._volumes_of(i)],
            "block-device-mapping.status": lambda i: [v.attach_state for v in self._volumes_of(i)],
            "block-device-mapping.delete-on-termination":
                lambda i: [v.delete_on_termination for v in self._volumes_of(i)],
            "virtualization-type": lambda i: "hvm",
            "tenancy": lambda i: "default",
            "state-reason-code": lambda i: i.state_reason_code,
            "cpu-options.core-count": lambda i: t[i.instance_type].vcpus if i.instance_type in t else None,
            "host-id": lambda i: i.host,
            "instance.group-id": lambda i: i.group_ids,
            "group-id": lambda i: i.group_ids,
            "instance.group-name": self._group_names,
            "group-name": self._group_names,
            "ip-address": self._public_ip,
            "network-interface.association.public-ip": self._public_ip,
        }, tags_of=lambda i: self.tags.of(i.id))

    def _public_ip(self, i: Instance) -> str | None:
        eip = self.addresses.of_instance(i.id)
        return eip.public_ip if eip is not None else None

    def _status_filter_set(self) -> FilterSet:
        return FilterSet({
            "availability-zone": lambda i: i.zone,
            "instance-state-name": lambda i: i.state,
            "instance-state-code": lambda i: STATE_CODES[i.state],
            "instance-status.status": self._status,
            "system-status.status": self._status,
            "instance-status.reachability": self._reachability,
            "system-status.reachability": self._reachability,
        })

    def _subnet_id(self, i: Instance) -> str | None:
        s = self.network.of(i)
        return s.id if s else None

    def _group_names(self, i: Instance) -> list[str]:
        return [n for _, n in self.security_groups.groups_of(i)]

    # -- lookups -------------------------------------------------------------------------------
    def _volumes_of(self, inst: Instance) -> list[Volume]:
        return self.volumes.attached_to(inst.id)

    def _check_owner(self, caller: Caller, instance_id: str) -> None:
        self.owned(caller, [instance_id])

    def of_owner(self, account: str) -> Mapping[str, Instance]:
        """An account's instances by id, terminated ones included (a live view: do not keep it)."""
        return self._by_owner.get(account)

    def owned(self, caller: Caller, ids: list[str]) -> list[Instance]:
        """The caller's instances by id; any malformed or unknown id fails the whole call."""
        bad = [i for i in ids if not well_formed(i, "i")]
        if bad:
            raise CloudError("InvalidInstanceID.Malformed", f"Invalid id: \"{bad[0]}\"")
        mine = self._by_owner.get(caller.account)
        missing = [i for i in ids if i not in mine]
        if missing:
            raise not_found("InstanceID", missing)
        return [mine[i] for i in ids]

    def owned_one(self, caller: Caller, iid: str) -> Instance:
        """`owned` for one id, with its refusals, without its lists (a by-id describe's step)."""
        if not well_formed(iid, "i"):
            raise CloudError("InvalidInstanceID.Malformed", f"Invalid id: \"{iid}\"")
        inst = self._by_owner.get(caller.account).get(iid)
        if inst is None:
            raise not_found("InstanceID", [iid])
        return inst

    def type_of(self, name: str) -> InstanceType:
        t = self.config.instance_types.get(name)
        if t is None:
            raise CloudError("InvalidParameterValue", f"Invalid value '{name}' for InstanceType.")
        return t

    # -- RunInstances --------------------------------------------------------------------------
    async def run(self, caller: Caller, spec: LaunchSpec) -> tuple[Reservation, list[Instance]]:
        """Launch what `spec` asks for, as one reservation (RunInstances' semantics, whoever asks).

        Refusals, by kind: not found (image, kernel, key pair, subnet, group, snapshot); invalid
        (counts, type, user data, zone, address, devices, tags); wrong state (image not available);
        conflict (a ClientToken reused for another spec, an address in use); capacity (no room in
        the zone, no free private address, no free public one where the launch takes one); limit
        (instances, vCPUs, volumes); auth (an owner other than the caller, unless the cloud's own
        services launch)."""
        caller = self._launcher(caller, spec.owner)
        token = spec.client_token
        if token is not None and not (0 < len(token) <= 64 and token.isascii()):
            raise CloudError("InvalidParameterValue", "ClientToken must be 1-64 ASCII characters")
        # (a token ties a reservation to its request; without one there is nothing to compare)
        req_hash = spec.request_hash() if token else None
        if token:
            prior = self._by_token.get(f"{caller.account}\x1f{token}")
            if prior:
                res = next(iter(prior.values()))
                if res.request_hash != req_hash:
                    raise CloudError.conflict("IdempotentParameterMismatch",
                                              f"The client token '{token}' was used with different parameters")
                caller.check_dry_run()
                return res, [i for i in (self.table.get(x) for x in res.instance_ids) if i is not None]

        image_id = spec.image_id
        image = self.images.visible(caller, image_id)
        if image.state != "available":
            raise CloudError.wrong_state("InvalidAMIID.Unavailable",
                                         f"The image '{image_id}' is {image.state}, not available")
        if image.owner == MARKET_OWNER and image.deprecation_time is not None and image.deprecation_time <= time.time():
            raise CloudError.wrong_state("InvalidAMIID.Unavailable",
                                         f"The image '{image_id}' is deprecated: its endorsement expired")
        kernel_id, ramdisk_id = spec.kernel_id, spec.ramdisk_id
        if kernel_id:
            self.images.visible(caller, kernel_id, "kernel")
        if ramdisk_id:
            self.images.visible(caller, ramdisk_id, "ramdisk")
        type_name = spec.instance_type or next(iter(self.config.instance_types))
        itype = self.type_of(type_name)
        lo, hi = spec.min_count, spec.max_count
        if lo < 1 or hi < lo:
            raise CloudError("InvalidParameterValue",
                             f"MinCount ({lo}) must be at least 1 and MaxCount ({hi}) at least MinCount")
        if hi > 1000:
            raise CloudError.limit("InstanceLimitExceeded", "At most 1000 instances can be launched per request")
        key_name = spec.key_name
        if key_name and self.keypairs.by_name(caller.account, key_name) is None:
            raise CloudError.not_found("InvalidKeyPair.NotFound", f"The key pair '{key_name}' does not exist")
        user_data = spec.user_data
        if user_data:
            try:
                raw = base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                raise CloudError("InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
            if len(raw) > MAX_USER_DATA:
                raise CloudError("InvalidParameterValue",
                                 f"User data is limited to {MAX_USER_DATA} bytes (got {len(raw)})")
        behaviour = spec.shutdown_behavior
        if behaviour not in ("stop", "terminate"):
            raise CloudError("InvalidParameterValue",
                             f"Invalid value '{behaviour}' for InstanceInitiatedShutdownBehavior")
        zone = spec.zone
        if zone is not None and zone not in self._zones:
            raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        subnet, chosen_ip = self._nic_request(spec, zone)
        if subnet is not None:
            zone = subnet.zone
        if chosen_ip is not None and hi > 1:
            raise CloudError("InvalidParameterCombination",
                             "A private IP address can only be given when launching one instance (MaxCount=1)")
        tag_pairs, volume_tags = Tags.validate_pairs(spec.instance_tags), Tags.validate_pairs(spec.volume_tags)
        if spec.system_tags:   # the cloud's own `aws:` tags, not checked as a user's are
            tag_pairs += spec.system_tags
        root_spec, launch_volumes = self.volumes.launch_specs(caller, spec.block_devices)
        ephemeral: tuple[str, ...] = ()
        if itype.ephemeral_gib or spec.device_mappings:   # (types without instance store: nothing to do)
            ephemeral = plan_instance_store(itype, spec.device_mappings, (v.target for v in launch_volumes))
        disk = itype.ephemeral_gib * len(ephemeral)
        root_gib = root_spec.size if root_spec else None
        least = self.images.min_root_gib(image)
        if root_gib is not None and root_gib < least:
            raise CloudError("InvalidParameterValue", f"Volume of size {root_gib}GB is smaller than image "
                             f"'{image.id}', expect size >= {least}GB")
        new_groups: dict[str, Any] = {}   # a default group made by this launch
        group_ids = self.security_groups.for_launch(caller, spec.group_ids, spec.group_names, new_groups)
        caller.check_dry_run()

        if zone is None:  # one request lands in one zone, as in EC2: the one with most room
            rooms = self.scheduler.rooms(itype, disk)   # (each zone walked once, not twice)
            zone = max(self._zones, key=lambda z: rooms.get(z, 0))
            room = rooms.get(zone, 0)
        else:   # (enough to know whether `hi` fit: only the count below and the refusal's text read it)
            room = self.scheduler.room(zone, itype, disk, cap=hi)
        if room < lo:
            raise CloudError.capacity("InsufficientInstanceCapacity",
                                      f"We currently do not have sufficient {type_name} capacity in the Availability "
                                      f"Zone you requested ({zone}): {room} more fit, {lo} requested.")
        count = min(hi, room, self._quota_left(caller.account, itype, lo))
        root_size = (root_gib or max(itype.disk_gib, least)) if root_spec is not None else 0
        if launch_volumes or root_spec is not None:
            # Root volumes count, as EBS ones do in EC2's storage quotas.
            self.volumes.check_quota(caller.account, count * (len(launch_volumes) + (root_spec is not None)),
                                     count * (root_size + sum(v.size for v in launch_volumes)))
        now = time.time()
        subnet = subnet or self.network.default_for(zone)
        public = subnet.map_public_ip if spec.public_ip is None else spec.public_ip
        if public:   # econe-style: from the elastic-IP pool, checked before anything is made
            free = self.addresses.free_count()
            if free < lo:
                raise CloudError.capacity("InsufficientAddressCapacity",
                                          f"Not enough public addresses are free for this launch: {free} free, "
                                          f"{lo} requested.")
            count = min(count, free)
        public_ips: list[str] = []
        res_id = new_id("r")
        launched: list[Instance] = []
        volume_ids: dict[str, list[str]] = {}
        with self.store.txn() as tx:
            for n in range(count):
                host = self.scheduler.pick(zone, itype, disk=disk)
                assert host is not None  # room was checked above, inside this same transaction
                iid = new_id("i")
                derived = derived_or_none(iid)   # (new ids: the MAC and UUID follow from the id)
                inst = Instance(
                    id=iid, owner=caller.account, reservation_id=res_id, image_id=image.id,
                    instance_type=type_name, host=host.name, zone=zone, state="pending", launch_time=now,
                    launch_index=n, key_name=key_name, user_data=user_data, client_token=token,
                    private_ip=self.network.allocate(tx, subnet, iid, chosen_ip),
                    subnet_id=subnet.id, mac=derived or new_mac(), uuid=derived or new_uuid(),
                    disable_api_termination=spec.disable_api_termination,
                    shutdown_behavior=behaviour, kernel_id=kernel_id, ramdisk_id=ramdisk_id,
                    root_gib=root_gib, group_ids=group_ids, root_device=root_spec.device if root_spec else None,
                    vlan_nics=[dataclasses.asdict(n) for n in spec.vlan_nics], ephemeral=ephemeral)
                tx.put(inst)
                if public:
                    public_ips.append(self.addresses.assign_at_launch(tx, inst).public_ip)
                made: list[str] = []   # this instance's new volumes, which take the launch's volume tags
                if root_spec is not None:
                    made.append(self.volumes.add_root_at_launch(tx, caller.account, iid, zone, root_spec,
                                                                root_size, image.id, now).id)
                if launch_volumes:
                    volume_ids[iid] = self.volumes.add_at_launch(tx, caller.account, iid, zone, launch_volumes, now)
                    made += volume_ids[iid]
                if tag_pairs:
                    self.tags.put(tx, caller.account, iid, "instance", tag_pairs)
                if volume_tags:
                    for vid in made:
                        self.tags.put(tx, caller.account, vid, "volume", volume_tags)
                launched.append(inst)
            res = Reservation(id=res_id, owner=caller.account, client_token=token, request_hash=req_hash,
                              instance_ids=tuple(i.id for i in launched))
            tx.put(res)
            self.security_groups.store_pending(tx, new_groups)
        await self.store.sync()
        self.addresses.settle(public_ips)
        for inst in launched:
            if inst.id in volume_ids:
                self.volumes.make_launch_files(inst.id, volume_ids[inst.id])   # queued before the launch
            self.converge(inst.id)
        return res, launched

    def _launcher(self, caller: Caller, owner: str | None) -> Caller:
        """Whom a launch acts as: the caller itself, or the account a cloud service launches for."""
        if not caller.system:
            if owner is not None and owner != caller.account:
                raise CloudError.auth("UnauthorizedOperation",
                                      f"You are not authorized to launch instances for account {owner}")
            return caller
        if owner is None:
            raise CloudError("InvalidParameterValue", f"A launch by {caller.user.name} must name its owner")
        user = self.users.by_account(owner)
        if user is None:
            raise CloudError.not_found("InvalidUserID.NotFound", f"The account '{owner}' does not exist")
        return Caller(user, dry_run=caller.dry_run, turn=caller.turn)

    def _vcpus(self, i: Instance) -> int:
        t = self.config.instance_types.get(i.instance_type)
        return t.vcpus if t else 1

    def _quota_left(self, owner: str, itype: InstanceType, at_least: int) -> int:
        """How many more instances of `itype` the owner's quotas allow (at least `at_least`)."""
        limits = self.config.limits
        n, vcpus = self._usage.get(owner)
        unlimited = 1 << 31
        by_count = unlimited if limits.instances is None else limits.instances - n
        if by_count < at_least:
            raise CloudError.limit("InstanceLimitExceeded",
                                   f"Your quota allows for {max(by_count, 0)} more running instance(s). "
                                   f"You requested at least {at_least}.")
        by_vcpu = unlimited if limits.vcpus is None else (limits.vcpus - vcpus) // itype.vcpus
        if by_vcpu < at_least:
            raise CloudError.limit("VcpuLimitExceeded",
                                   f"You have requested more vCPU capacity than your current vCPU limit of "
                                   f"{limits.vcpus} allows ({vcpus} in use, {at_least * itype.vcpus} requested).")
        return min(by_count, by_vcpu)

    def _nic_request(self, spec: LaunchSpec, zone: str | None) -> tuple[Subnet | None, str | None]:
        """The subnet and private address asked for: the subnet named, else the one holding the address."""
        subnet_id, ip = spec.subnet_id, spec.private_ip
        if not subnet_id:
            subnet = None
            if ip is not None:   # the subnet holding the address, within the zone if one was given
                subnet = self.network.containing(ip, zone)
                if subnet is None:
                    raise CloudError("InvalidParameterValue",
                                     f"Address {ip} is in no subnet{' of ' + zone if zone else ''}")
        else:
            subnet = self.network.get(subnet_id)
            if zone is not None and zone != subnet.zone:
                raise CloudError("InvalidParameterValue",
                                 f"Value ({zone}) for parameter availabilityZone is invalid. "
                                 f"Subnet '{subnet.id}' is in the availability zone {subnet.zone}")
        return subnet, ip

    # -- DescribeInstances ---------------------------------------------------------------------
    def _candidates(self, caller: Caller, match: Matcher) -> Mapping[str, Instance]:
        """Start from the narrowest index a filter allows, else the caller's instances."""
        mine = self._by_owner.get(caller.account)
        sets: list[set[str]] = []
        for name in ("instance-id", "reservation-id"):
            vals = match.exact_values(name)
            if vals is not None:
                if name == "reservation-id":
                    vals = {i for r in vals if (res := self.reservations.get(r)) for i in res.instance_ids}
                sets.append(vals)
        for key, values in match.tag_lookups():
            sets.append(self.tags.resources_with(key, values))
        if not sets:
            return mine
        ids = set.intersection(*sets) if len(sets) > 1 else sets[0]
        return {i: mine[i] for i in ids if i in mine}

    def _select(self, caller: Caller, query: Query, filters: FilterSet, *fingerprint: str | bool,
                keep: Callable[[Instance], bool] | None = None) -> tuple[Mapping[str, Instance], list[str], str | None]:
        """The shared part of the instance Describe* calls: ids or filters, then one page."""
        ids = query.ids
        match = filters.compile(query.filters)
        page = query.page(5, 1000, *fingerprint,
                          not_with_ids="The parameter instancesSet cannot be used with the parameter maxResults")
        pool = {i.id: i for i in self.owned(caller, ids)} if ids else self._candidates(caller, match)
        caller.check_dry_run()
        if match or keep is not None:
            pool = {k: i for k, i in pool.items() if (keep is None or keep(i)) and match(i)}
        keys, token = page.of(sorted(pool))
        return pool, keys, token

    def describe(self, caller: Caller, query: Query) -> tuple[list[tuple[Reservation, list[Instance]]], str | None]:
        """The caller's instances `query` selects, one page, grouped by reservation."""
        rows, keys, token = self._select(caller, query, self.filters, "instances")
        groups: dict[str, list[Instance]] = {}
        for k in keys:
            inst = rows[k]
            groups.setdefault(inst.reservation_id, []).append(inst)
        out = []
        for rid, insts in groups.items():
            res = self.reservations.get(rid) or Reservation(id=rid, owner=insts[0].owner)
            out.append((res, insts))
        return out, token

    def _reachability(self, i: Instance) -> str:
        st = self._status(i)
        return {"ok": "passed", "impaired": "failed"}.get(st, st)

    def _status(self, i: Instance) -> str:
        if i.state == "running":
            return "impaired" if self.host_trouble(i.host) else "ok"
        return "initializing" if i.state == "pending" else "not-applicable"

    def describe_status(self, caller: Caller, query: Query, include_all: bool = False
                        ) -> tuple[list[tuple[Instance, str, str | None]], str | None]:
        """(instance, status, why impaired) per instance; impaired while its host is in error.
        Only running instances, unless `include_all`."""
        rows, keys, token = self._select(caller, query, self.status_filters, "status", include_all,
                                         keep=None if include_all else lambda i: i.state == "running")
        out = []
        for k in keys:
            status = self._status(rows[k])
            out.append((rows[k], status, self.host_trouble(rows[k].host) if status == "impaired" else None))
        return out, token

    def on_host(self, host: str) -> Mapping[str, Instance]:
        """A host's instances by id (a live view: do not keep it)."""
        return self._by_host.get(host)

    # -- state changes -------------------------------------------------------------------------
    async def _transition(self, caller: Caller, ids: list[str],
                          decide: Callable[[Instance], Instance | None]) -> list[tuple[Instance, Instance]]:
        """Apply `decide` (validate and return the new row, or None for no change) to all ids at once."""
        insts = self.owned(caller, ids)
        changes = [(i, decide(i)) for i in insts]   # raises before anything changes
        caller.check_dry_run()
        with self.store.txn() as tx:
            for old, new in changes:
                if new is not None:
                    tx.put(new)
                    self._event(tx, old_state=old.state, new=new)
        await self.store.sync()
        out = []
        for old, new in changes:
            if new is not None:
                self.converge(new.id)
            out.append((old, new or old))
        return out

    async def terminate(self, caller: Caller, ids: list[str]) -> list[tuple[Instance, Instance]]:
        def decide(i: Instance) -> Instance | None:
            if i.state in ("shutting-down", "terminated"):
                return None
            if i.disable_api_termination:
                raise CloudError.wrong_state("OperationNotPermitted",
                                             f"The instance '{i.id}' may not be terminated. Modify its "
                                             f"'disableApiTermination' instance attribute and try again.")
            return replace(i, state="shutting-down", transition_reason=_reason("User initiated"),
                           state_reason_code="Client.UserInitiatedShutdown",
                           state_reason_message="Client.UserInitiatedShutdown: User initiated shutdown")
        return await self._transition(caller, ids, decide)

    async def stop(self, caller: Caller, ids: list[str], force: bool = False) -> list[tuple[Instance, Instance]]:
        def decide(i: Instance) -> Instance | None:
            if i.state in ("stopping", "stopped"):
                return None
            if i.state not in ("pending", "running"):
                raise CloudError.wrong_state("IncorrectInstanceState",
                                             f"The instance '{i.id}' is not in a state from which it can be stopped.")
            return replace(i, state="stopping", transition_reason=_reason("User initiated"),
                           state_reason_code="Client.UserInitiatedShutdown",
                           state_reason_message="Client.UserInitiatedShutdown: User initiated shutdown")
        if force:
            self._hard_stop.update(ids)
        return await self._transition(caller, ids, decide)

    async def start(self, caller: Caller, ids: list[str]) -> list[tuple[Instance, Instance]]:
        def decide(i: Instance) -> Instance | None:
            if i.state in ("pending", "running"):
                return None
            if i.state != "stopped":
                raise CloudError.wrong_state("IncorrectInstanceState",
                                             f"The instance '{i.id}' is not in a state from which it can be started.")
            if i.root_device and self.volumes.root_of(i.id) is None:
                raise CloudError("InvalidParameterValue", f"Invalid value '{i.id}' for instanceId. Instance "
                                 f"does not have a volume attached at root ({i.root_device})")
            t = self.type_of(i.instance_type)
            if not self.scheduler.fits(i.host, t, gib_needed(i, t)):
                raise CloudError.capacity("InsufficientInstanceCapacity",
                                          f"There is not enough {i.instance_type} capacity on the host of {i.id} "
                                          f"in {i.zone} to start it now; try again later.")
            return replace(i, state="pending", transition_reason="", state_reason_code=None,
                           state_reason_message=None)
        return await self._transition(caller, ids, decide)

    async def reboot(self, caller: Caller, ids: list[str]) -> None:
        insts = self.owned(caller, ids)
        for i in insts:
            if i.state not in ("pending", "running"):
                raise CloudError.wrong_state("IncorrectInstanceState",
                                             f"The instance '{i.id}' is not in a state from which it can be rebooted.")
        caller.check_dry_run()
        for i in insts:
            self._serial(i.id, self._reboot(i.id))

    async def _reboot(self, iid: str) -> None:
        inst = self.table.get(iid)
        if inst is None or inst.state != "running":
            return
        try:
            await self.drivers[inst.host].reboot(iid)
        except HypervisorError as e:
            log.warning("reboot of %s on %s failed: %s", iid, inst.host, e)

    # -- attributes ----------------------------------------------------------------------------
    def attributes(self, caller: Caller, iid: str) -> InstanceAttributes:
        """What DescribeInstanceAttribute may ask of one instance, read at once."""
        inst = self.owned(caller, [iid])[0]
        caller.check_dry_run()
        return InstanceAttributes(inst, tuple(self.security_groups.groups_of(inst)),
                                  tuple(self._volumes_of(inst)))

    async def modify_attribute(self, caller: Caller, iid: str, changes: InstanceChanges) -> None:
        inst = self.owned(caller, [iid])[0]
        if not changes:
            raise CloudError("MissingParameter", "The request must contain an attribute to modify")
        updates: dict[str, Any] = {}
        if changes.instance_type is not None:
            self.type_of(changes.instance_type)
            self._stopped(inst)
            updates["instance_type"] = changes.instance_type
        if changes.user_data is not None:
            self._stopped(inst)
            raw = changes.user_data
            if len(raw) > MAX_USER_DATA:
                raise CloudError("InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes")
            updates["user_data"] = base64.b64encode(raw).decode() if raw else None
        if changes.disable_api_termination is not None:
            updates["disable_api_termination"] = changes.disable_api_termination
        if changes.shutdown_behavior is not None:
            if changes.shutdown_behavior not in ("stop", "terminate"):
                raise CloudError("InvalidParameterValue",
                                 f"Invalid value '{changes.shutdown_behavior}' for instanceInitiatedShutdownBehavior")
            updates["shutdown_behavior"] = changes.shutdown_behavior
        if changes.group_ids is not None:
            updates["group_ids"] = self.security_groups.group_ids_for(caller, changes.group_ids)
        volume_changes = self._delete_on_termination(iid, changes.delete_on_termination)
        caller.check_dry_run()
        with self.store.txn() as tx:
            for vol in volume_changes:
                tx.put(vol)
            if updates:
                tx.put(replace(inst, **updates))
        await self.store.sync()

    @staticmethod
    def _stopped(inst: Instance) -> None:
        if inst.state != "stopped":
            raise CloudError.wrong_state("IncorrectInstanceState",
                                         f"The instance '{inst.id}' is not in the 'stopped' state.")

    def _delete_on_termination(self, iid: str, flags: Sequence[DeleteOnTermination]) -> list[Volume]:
        """The volumes attached at the named devices (the root one included) with their new
        DeleteOnTermination flag, for the caller to put."""
        by_device = {v.device: v for v in self.volumes.attached_to(iid)}
        out = []
        for f in flags:
            vol = by_device.get(f.device)
            if vol is None:
                raise CloudError("InvalidInstanceAttributeValue",
                                 f"No device is currently mapped at {f.device or '(no device name)'}")
            if f.volume_id and f.volume_id != vol.id:
                raise CloudError("InvalidInstanceAttributeValue",
                                 f"Volume {f.volume_id} is not the volume mapped at {f.device}")
            out.append(replace(vol, delete_on_termination=f.delete))
        return out

    async def create_image(self, caller: Caller, instance_id: str, name: str, description: str = "",
                           no_reboot: bool = False, tags: Sequence[tuple[str, str]] = ()) -> Image:
        """CreateImage: the instance's root disk, flattened into a new image of the caller's.
        A running instance only with `no_reboot`; `tags` (checked pairs) go on the new image."""
        inst = self.owned(caller, [instance_id])[0]
        if inst.state != "stopped" and not (inst.state == "running" and no_reboot):
            raise CloudError.wrong_state("IncorrectInstanceState",
                                         f"The instance '{inst.id}' must be stopped (or running, with NoReboot) "
                                         f"to image it.")
        root = self.volumes.root_of(inst.id)
        disk = self.files.root_disk(inst.id)
        if root is not None:
            disk = self.volumes.volume_path(root.id)
            if disk is not None and not disk.exists():
                disk = None
        if disk is None:
            raise CloudError("InvalidParameterValue",
                             f"The instance '{inst.id}' has no disk of its own to image (its host is simulated).")
        self.images.check_user_name(caller.account, name)
        image = self.images.table.get(inst.image_id)
        caller.check_dry_run()
        return await self.images.capture(
            caller.account, name, description, disk,
            inst.kernel_id or (image.kernel_id if image else None),
            inst.ramdisk_id or (image.ramdisk_id if image else None), list(tags), self.files.storage.copy)

    async def console_output(self, caller: Caller, iid: str) -> tuple[Instance, bytes]:
        inst = self.owned(caller, [iid])[0]
        caller.check_dry_run()
        return inst, await self.console_bytes(inst)

    async def console_bytes(self, inst: Instance, limit: int | None = 65536) -> bytes:
        """The tail of what the guest printed; nothing before its domain exists or after it is gone."""
        if inst.state == "terminated":
            return b""
        try:
            data = await self.drivers[inst.host].console_output(inst.id)
        except HypervisorError:
            return b""
        return data if limit is None else data[-limit:]

    # -- converging the hypervisor to the record -----------------------------------------------
    def _spawn(self, coro: Any) -> None:
        self.work.spawn(coro)

    def _serial(self, iid: str, coro: Any) -> None:
        self.work.run((iid,), coro)

    def converge(self, iid: str, ensure: bool = False) -> None:
        self._serial(iid, self._converge(iid, ensure))

    def _set_state(self, iid: str, expect: str, **updates: Any) -> Instance | None:
        """Record the end of a transition, unless the user changed the instance meanwhile.

        Not awaited to disk: if a crash loses this record, the instance is still in its
        transitional state at start-up and reconciliation drives it there again.
        """
        inst = self.table.get(iid)
        if inst is None or inst.state != expect:
            return inst
        with self.store.txn() as tx:
            new = _replaced(inst, updates)
            if updates.get("state") == "terminated":
                self.network.release(tx, inst.private_ip)
                self.volumes.release_instance(iid, tx)
                new = replace(new, private_ip=None)
            tx.put(new)
            self._event(tx, old_state=inst.state, new=new)
        self.store.flush()
        return new

    def _event(self, tx: Any, old_state: str, new: Instance) -> None:
        if old_state != new.state:
            reason = f" ({new.state_reason_message})" if new.state_reason_message else ""
            self.events.record(tx, "instance.state", new.id, f"{old_state} -> {new.state}{reason}",
                               new.state_reason_code, state_data(new.owner, new.host, new.state))

    async def _converge(self, iid: str, ensure: bool = False) -> None:
        for _ in range(8):   # a few rounds: the user may change the target meanwhile
            inst = self.table.get(iid)
            if inst is None or not (ensure or inst.state in TRANSITIONAL):
                return
            ensure = False
            driver = self.drivers.get(inst.host)
            if driver is None:
                log.error("instance %s is on unknown host %s", iid, inst.host)
                return
            before = inst.state
            try:
                await self._drive(driver, inst)
            except HypervisorError as e:
                await self._failed(inst, e)
                return
            now = self.table.get(iid)
            if now is None or now.state == before or now.state not in TRANSITIONAL:
                return

    async def _drive(self, driver: HypervisorDriver, inst: Instance) -> None:
        iid = inst.id
        if inst.state in ("pending", "running"):
            await self.security_groups.apply(driver, inst)   # the definition refers to it
            await driver.define_and_start(iid, await self._xml(inst, starting=True))
            self._set_state(iid, "pending", state="running", ever_ran=True, transition_reason="",
                                  state_reason_code=None, state_reason_message=None)
        elif inst.state in ("stopping", "stopped"):
            if inst.state == "stopping":
                await driver.stop(iid, force=iid in self._hard_stop, timeout=self.config.stop_timeout_s)
                self._hard_stop.discard(iid)
            else:
                await self.security_groups.apply(driver, inst)
                await driver.define(iid, await self._xml(inst))
            if inst.ephemeral:   # gone before the record says stopped: a start gets empty ones
                if inst.state == "stopping":   # the stopped definition names no disk that is gone
                    await driver.define(iid, await self._xml(inst))
                await self._remove_ephemeral(iid)
            self._set_state(iid, "stopping", state="stopped")
        else:  # shutting-down, terminated
            await self.addresses.instance_gone(iid)   # before the private address can go to another instance
            await driver.undefine(iid)
            if inst.ephemeral:
                await self._remove_ephemeral(iid)
            await self.files.remove(iid)
            await self.security_groups.remove(driver, iid)   # its address leaves its groups' peers' filters
            self._set_state(iid, "shutting-down", state="terminated", terminated_at=time.time())

    async def _failed(self, inst: Instance, err: HypervisorError) -> None:
        log.error("instance %s on %s: %s failed: %s", inst.id, inst.host, inst.state, err)
        if inst.state == "pending" and inst.ever_ran:
            # A start that failed: the instance (and its disk) stays, stopped, as EC2 does.
            self._set_state(inst.id, "pending", state="stopped", state_reason_code="Server.InternalError",
                            state_reason_message=f"Server.InternalError: Internal error on start: {err}",
                            transition_reason=_reason("Server error"))
        elif inst.state == "pending":
            await self.addresses.instance_gone(inst.id)
            self._set_state(inst.id, "pending", state="terminated", terminated_at=time.time(),
                                  state_reason_code="Server.InternalError",
                                  state_reason_message=f"Server.InternalError: Internal error on launch: {err}",
                                  transition_reason=_reason("Server error"))

    async def _remove_ephemeral(self, iid: str) -> None:
        try:
            await self.instance_store.remove(iid)
        except StorageError as e:
            raise HypervisorError(f"removing the ephemeral disks of {iid}: {e}") from e

    async def _xml(self, inst: Instance, starting: bool = False) -> str:
        """The domain definition; `starting`: with its ephemeral disks, made now if missing (a
        stopped instance's definition names none: they exist only while it runs)."""
        image = self.images.table.get(inst.image_id)
        path, path_text = self._image_path(image) if image else (None, "")
        itype = self.type_of(inst.instance_type)
        net = self.network.of(inst)
        try:
            root = self.volumes.root_of(inst.id) if inst.root_device else None
            if inst.root_device and root is None:
                raise StorageError(f"{inst.id} has no volume attached at its root device {inst.root_device}")
            template = self.renderer.template_text(inst.instance_type)
            files = self.files.plain(inst.id, template)   # (a template naming no disk or drive file)
            if files is None:
                kp = self.keypairs.by_name(inst.owner, inst.key_name) if inst.key_name else None
                files = await self.files.prepare(
                    inst, itype, image, path, template,
                    [kp.public_key] if kp else [], hostname=private_dns(inst, self.config.region),
                    gateway=str(net.gateway) if net else None, prefixlen=net.net.prefixlen if net else None,
                    dns=list(net.dns) if net else None, root_volume=self._root_file(root) if root is not None else None)
            disks = self.volumes.disks_for(inst.id)
            if starting and inst.ephemeral:
                disks = sorted(disks + await self.instance_store.ensure(inst, itype), key=lambda d: d[1])
        except (OSError, StorageError, ConfigDriveError) as e:
            raise HypervisorError(f"preparing the files of {inst.id}: {e}") from e
        kernel, initrd = self.images.boot_files(image, inst.kernel_id, inst.ramdisk_id) if image else (None, None)
        driver = self.drivers[inst.host]
        bridge = None
        if net is not None and net.bridge is not None:
            # Guests on Open vSwitch sit on a per-VLAN Linux bridge, where nwfilter works too.
            bridge = (await driver.plug_ovs(net.bridge, net.vlan, net.ovs_db)
                      if net.bridge_type == "openvswitch" else net.bridge)
        ref = driver.firewall_ref(inst.id) if bridge else None
        nics = interface_xml(inst.mac or "", bridge, tap_name(inst.id) if bridge else None,
                             f"<filterref filter='{ref}'/>" if ref else "")
        if inst.vlan_nics:   # (a headnode's: an empty async comprehension still made a coroutine a launch)
            nics += "".join([await self._vlan_nic(driver, n) for n in inst.vlan_nics])
        return self.renderer.render(inst, itype, path_text, files, kernel, initrd, disks, nics)

    def _image_path(self, image: Image) -> tuple[Path, str]:
        """The image's file, as a Path and as text, kept per image row (rows are immutable: a
        changed image is another object)."""
        hit = self._image_paths.get(image.id)
        if hit is not None and hit[0] is image:
            return hit[1], hit[2]
        if len(self._image_paths) >= 1024:
            self._image_paths.clear()
        path = self.images.path_of(image)
        self._image_paths[image.id] = (image, path, str(path))
        return path, str(path)

    async def _vlan_nic(self, driver: HypervisorDriver, nic: dict[str, Any]) -> str:
        """A headnode's NIC on a bare-metal project network: the VLAN on the headnode bridge."""
        bm = self.config.baremetal
        if bm.headnode_bridge is None:
            raise HypervisorError("baremetal.headnode_bridge is not configured: a headnode's NICs have no bridge")
        bridge = await driver.plug_ovs(bm.headnode_bridge, int(nic["vlan"]), bm.headnode_ovs_db)
        return interface_xml(nic["mac"], bridge)

    def _root_file(self, root: Volume) -> Callable[[], Awaitable[Path]]:
        """Makes (once) and returns the root volume's file; called only where the domain needs it."""
        volumes = self.volumes
        return lambda: volumes.ensure_file(root, volumes.image_file(root.image_id) if root.image_id else None)

    # -- events, reconciliation, expiry --------------------------------------------------------
    def on_domain_event(self, ev: DomainEvent) -> None:
        """A guest powering itself off is a stop (or terminate, per its shutdown behaviour)."""
        if not ev.guest_initiated or ev.kind not in ("stopped", "shutdown", "crashed"):
            return
        inst = self.table.get(ev.name)
        if inst is None or inst.host != ev.host or inst.state != "running":
            return
        self._spawn(self._guest_stopped(inst, ev))

    def relocate(self, tx: Txn, inst: Instance, target: str, why: str) -> Instance:
        """Record, in the caller's transaction, that an instance of a fenced host boots again on
        `target` (the caller converges it once the transaction is on disk). Only for a host known
        to be off: its disks must be on storage both hosts see. A crash after the record is a
        pending instance on `target`, which start-up reconciliation boots; before it, nothing moved."""
        new = replace(inst, host=target, state="pending", state_reason_code="Server.InternalError",
                      state_reason_message=f"Server.InternalError: {why}; restarted on another host",
                      transition_reason=_reason("Server error"))
        tx.put(new)
        self.events.add(tx, "instance.restart", inst.id, f"{inst.host} -> {target}: {why}",
                        "Server.InternalError", owner=inst.owner, host=target, previous_host=inst.host)
        return new

    def remove_stray(self, host: str, name: str) -> None:
        """A domain of an instance that now lives on another host (restarted while this one was
        fenced): it must not run twice, so it goes."""
        driver = self.drivers.get(host)
        if driver is not None:
            self._spawn(self._remove_orphan(driver, name))

    def domain_lost(self, inst: Instance, why: str) -> None:
        """A running instance's domain died without our asking (its qemu killed, a host
        crash): recorded as stopped. EC2 documents no code for an unexpected stop; its
        server-side failure code is Server.InternalError, which is what this uses."""
        new = self._set_state(inst.id, "running", state="stopped", state_reason_code="Server.InternalError",
                              state_reason_message=f"Server.InternalError: {why}",
                              transition_reason=_reason("Server error"))
        if new is not None and new.state == "stopped":
            log.warning("instance %s stopped: %s", inst.id, why)

    async def _guest_stopped(self, inst: Instance, ev: DomainEvent) -> None:
        if ev.kind == "crashed":
            code, msg = "Server.InternalError", "Server.InternalError: the guest crashed"
        elif ev.detail == "failed":   # stopped/failed: the qemu process died (killed, OOM)
            code, msg = "Server.InternalError", \
                "Server.InternalError: the instance's hypervisor process ended unexpectedly"
        else:
            code, msg = "Client.InstanceInitiatedShutdown", \
                "Client.InstanceInitiatedShutdown: Instance initiated shutdown"
        target = "shutting-down" if inst.shutdown_behavior == "terminate" and code.startswith("Client.") \
            else "stopped"
        new = self._set_state(inst.id, "running", state=target, state_reason_code=code,
                                    state_reason_message=msg, transition_reason=_reason("Instance initiated"))
        if new is not None and target == "shutting-down":
            self.converge(inst.id)

    async def reconcile(self, listed: Mapping[str, Awaitable[DomainStates | None]] | None = None) -> list[str]:
        """Match every host's domains against the store; fix what can be fixed and say so.

        The hosts are listed concurrently (a few at a time, each in its driver's threads) and
        each is reconciled as soon as its listing arrives; the report keeps the hosts' order.
        `listed`: hosts' states listed earlier (at start-up, while the state loaded), used where
        the driver says they still hold and they name only the store's instances."""
        gate = asyncio.Semaphore(HOSTS_AT_ONCE)
        # Listed before any host's converge starts: one that removes a stopped instance's files
        # would otherwise hide from the report what the crash left.
        with_files = await self.instance_store.with_files()

        async def one(name: str, driver: HypervisorDriver) -> list[str]:
            async with gate:
                return await self._reconcile_host(name, driver, listed.get(name) if listed else None)

        parts = await asyncio.gather(*(one(n, d) for n, d in self.drivers.items()))
        report = [line for part in parts for line in part] + self._ephemeral_strays(with_files)
        for line in report:
            log.warning("reconcile: %s", line)
        self.reconcile_report = report
        return report

    def _ephemeral_strays(self, with_files: list[str]) -> list[str]:
        """Remove ephemeral files no instance may hold now (a crash came between a file and the
        record that would have removed it, or the instance's record is gone)."""
        report = []
        for iid in with_files:
            inst = self.table.get(iid)
            if inst is None or inst.state not in HOLDING:
                why = inst.state if inst else "no instance"
                report.append(f"{iid}: ephemeral disk files left ({why}); removing them")
                self._serial(iid, self._drop_stray(iid))
        return report

    async def _drop_stray(self, iid: str) -> None:
        inst = self.table.get(iid)
        if inst is not None and inst.state in HOLDING:   # started meanwhile: its files are in use
            return
        try:
            await self.instance_store.remove(iid)
        except StorageError as e:
            log.error("could not remove the ephemeral disks of %s: %s", iid, e)

    async def _listing(self, name: str, driver: HypervisorDriver, early: Awaitable[DomainStates | None] | None = None
                       ) -> tuple[dict[str, DomainInfo], dict[str, Instance]]:
        """The host's domains and the store's instances on it, read after the listing.

        The store's instances are given as known, so the driver reads no metadata for them. A known
        one gone from the store meanwhile (expired) would then lack its owner: list again.
        `early`: the host's states listed before (while the state loaded): taken as the listing if
        the driver says nothing changed since and every domain in it is the store's (no metadata
        to read), the store's instances read with no await between the check and their use."""
        if early is not None:
            try:
                states = await early
            except HypervisorError:
                states = None
            if states is not None and driver.unchanged_since(states):
                mine = dict(self._by_host.get(name))
                domains = {d: DomainInfo(name=d, power=p, managed=True) for d, p in states.items()}
                if domains.keys() <= mine.keys():
                    return domains, mine
        for _ in range(3):
            known = frozenset(self._by_host.get(name))
            domains = {d.name: d for d in await driver.list_domains(known)}
            mine = dict(self._by_host.get(name))
            if not any(d in known and d not in mine for d in domains):
                break
        return domains, mine

    async def _reconcile_host(self, name: str, driver: HypervisorDriver,
                              early: Awaitable[DomainStates | None] | None = None) -> list[str]:
        report: list[str] = []
        try:
            domains, mine = await self._listing(name, driver, early)
        except HypervisorError as e:
            return [f"host {name}: unreachable ({e}); its instances were left as recorded"]
        for iid, inst in mine.items():
            dom = domains.get(iid)
            want_run = inst.state in ("pending", "running")
            if inst.state in TRANSITIONAL:
                self.converge(iid)
            elif inst.state == "terminated":
                if dom is not None:
                    report.append(f"{iid}: terminated but its domain was still on {name}; removing it")
                    self.converge(iid, ensure=True)
            elif dom is None:
                report.append(f"{iid}: {inst.state} but no domain on {name}; defining it again")
                self.converge(iid, ensure=True)
            elif want_run and dom.power != Power.RUNNING:
                report.append(f"{iid}: running but its domain is {dom.power} on {name}; starting it")
                self.converge(iid, ensure=True)
            elif inst.state == "stopped" and dom.power == Power.RUNNING:
                report.append(f"{iid}: stopped but its domain runs on {name}; stopping it")
                with self.store.txn() as tx:
                    tx.put(replace(inst, state="stopping"))
                await self.store.sync()
                self.converge(iid)
        for dname, dom in domains.items():
            if dom.managed and dname not in mine and dom.controller != self.controller_id:
                # Another controller's, or one from before controllers had ids: never ours
                # to destroy; the admin can remove it (virsh undefine) if it is unwanted.
                report.append(f"{dname}: domain on {name} belongs to another controller "
                              f"({dom.controller or 'unknown'}); left alone")
            elif dom.managed and dname not in mine:
                report.append(f"{dname}: domain on {name} belongs to no acknowledged instance; removing it")
                self._spawn(self._remove_orphan(driver, dname))
        return report

    async def _remove_orphan(self, driver: HypervisorDriver, name: str) -> None:
        try:
            await driver.undefine(name)
        except HypervisorError as e:
            log.error("could not remove orphan domain %s on %s: %s", name, driver.host, e)

    async def expire_terminated(self) -> int:
        """Forget terminated instances once they have been visible for the configured time."""
        cutoff = time.time() - self.config.terminated_visible_s
        old = [i for i in self.table.values()
               if i.state == "terminated" and (i.terminated_at or 0) <= cutoff]
        if not old:
            return 0
        with self.store.txn() as tx:
            for inst in old:
                tx.delete(inst)
                self.tags.remove_all(tx, inst.id)
                res = self.reservations.get(inst.reservation_id)
                if res is not None:
                    left = [x for x in res.instance_ids if x != inst.id]
                    if any(self.table.get(x) is not None for x in left):
                        tx.put(replace(res, instance_ids=left))
                    else:
                        tx.delete(res)
        await self.store.sync()
        return len(old)

    async def idle(self) -> None:
        """Wait until no hypervisor work is in flight (tests and shutdown)."""
        await self.work.idle()


def private_dns(inst: Instance, region: str) -> str:
    """EC2's private host name: ip-10-0-0-5.<region>.compute.internal."""
    if not inst.private_ip:
        return inst.id
    return f"ip-{inst.private_ip.replace('.', '-')}.{region}.compute.internal"


def _reason(who: str) -> str:
    return f"{who} ({time.strftime('%Y-%m-%d %H:%M:%S GMT', time.gmtime())})"


_POSITIONS: dict[type, tuple[dict[str, int], Callable[[Any], tuple[Any, ...]]]] = {}


def _replaced(row: Instance, updates: dict[str, Any]) -> Instance:
    """`dataclasses.replace(row, **updates)` without its `fields()` walk on every call (each
    launch's and each state change's `_set_state`): same row, same TypeError for a name that is
    not a field. An instance row changed in fields its `__post_init__` leaves alone (a state
    change's) is copied slot by slot (`_copy_instance`) and the changed fields set through their
    descriptors; any other row or change: its values go by position, read in one C call (by
    keyword, each of an instance's 31 names was matched among the parameters again)."""
    if type(row) is Instance and _COPY_SAFE.issuperset(updates):
        new = _copy_instance(row)
        for name, value in updates.items():
            if _getattr(new, name) is not value:   # (a state change's reasons: mostly unchanged)
                _setattr(new, name, value)
        return new
    got = _POSITIONS.get(type(row))
    if got is None:
        names = tuple(f.name for f in dataclasses.fields(row) if f.init)
        got = _POSITIONS[type(row)] = ({n: k for k, n in enumerate(names)}, attrgetter(*names))
    at, read = got
    values = list(read(row))
    for name, value in updates.items():
        k = at.get(name)
        if k is None:
            raise TypeError(f"not fields of {type(row).__name__}: {sorted(set(updates) - set(at))}")
        values[k] = value
    return type(row)(*values)


_getattr = getattr
_setattr = object.__setattr__   # (through the field's descriptor: a rare field's, a derived one's)


def slot_copier(cls: type) -> Callable[[Any], Any]:
    """A function copying a row of `cls` (a class with slots and no `__dict__`) slot by slot: each
    slot's stored value as it is (a derived field's marker, the rare fields' shared tuple), no
    `__init__`, no `__post_init__`. Reading every field and making the row again read an
    instance's derived MAC and UUID through Python descriptors, compared them again on the way
    back in, and ran its `__post_init__`: ~15 us a state change."""
    members = []
    for k in reversed(cls.__mro__):
        slots = k.__dict__.get("__slots__", ())
        for n in (slots,) if isinstance(slots, str) else slots:
            if n in ("__dict__", "__weakref__"):
                raise TypeError(f"{cls.__name__}: slot_copier takes rows without __dict__")
            d = cls.__dict__[n] if n in cls.__dict__ else next(b.__dict__[n] for b in cls.__mro__ if n in b.__dict__)
            members.append(getattr(d, "_slot", d))   # (a derived field wraps its slot's member)
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = ["def copy(row):", "    new = _new(_cls)"]
    for k, m in enumerate(members):
        env[f"_g{k}"], env[f"_s{k}"] = m.__get__, m.__set__
        lines.append(f"    _s{k}(new, _g{k}(row))")
    lines.append("    return new")
    exec("\n".join(lines), env)   # noqa: S102  (straight-line: one C call a slot each way)
    copy: Callable[[Any], Any] = env["copy"]
    return copy


_copy_instance = slot_copier(Instance)
# Fields an instance's `__post_init__` normalises (a copy would skip that), and its id (its derived
# MAC and UUID follow from it): a change of any of them makes the row again.
_COPY_SAFE = frozenset(f.name for f in dataclasses.fields(Instance) if f.init) - {
    "id", "group_ids", "vlan_nics", "ephemeral"}
