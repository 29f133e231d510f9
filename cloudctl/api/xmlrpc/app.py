"""The XML-RPC endpoint (`/RPC2`): OpenNebula's calling convention over cloudctl's core.

Every method takes the session string first and answers `[success, result-or-error,
error-code]`, with OpenNebula's codes, as pyone expects. The session is `user:secret`:
`user` is a cloudctl user name (or its access key id) and `secret` its secret access key —
the same credential the EC2 API takes, so one user sees one set of instances through both
APIs. `oneadmin:<admin token>` is the cloud's administrator (hosts, all users); it owns no
instances. A user marked EC2-only (`cloudctl user set NAME --ec2-only`, econe's `public` driver)
gets no session: OpenNebula's authentication error, as for a wrong secret.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import inspect
import ipaddress
import logging
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ...core.cloud import Cloud
from ...core.context import Caller
from ...core.errors import CloudError, ErrorKind
from ...core.images import CLOUD_OWNER
from ...core.launch import LaunchSpec
from ...core.monitor import host_view
from ...core.query import Filter, Query
from ...core.sizing import closest_type
from ...core.throttle import Throttle, Throttled
from ...core.vm_templates import VmTemplates
from ...core.volumes import VolumeRequest
from ...slim import dataclass
from ...store.journal import JournalError
from ...store.records import Instance, User
from ..listener import BodyRefused, plain_refusal
from ..refusals import RefusalLog, clip
from . import documents as doc
from . import wire
from .template import Template, TemplateError, parse, scalar, to_text, vectors

log = logging.getLogger("cloudctl.xmlrpc")

VERSION = "6.10.0"   # the OpenNebula API level this subset follows
# OpenNebula's error codes (include/RequestManager... ErrorCode)
AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION, XML_RPC_API, INTERNAL = (
    0x0100, 0x0200, 0x0400, 0x0800, 0x1000, 0x2000)
# OpenNebula's code for each kind of refusal; the rest (invalid, conflict) are XML_RPC_API.
_KIND_CODES = {ErrorKind.NOT_FOUND: NO_EXISTS, ErrorKind.AUTH: AUTHORIZATION, ErrorKind.WRONG_STATE: ACTION,
               ErrorKind.CAPACITY: ACTION, ErrorKind.LIMIT: ACTION, ErrorKind.UNAVAILABLE: INTERNAL}
CLOUD_APP_KEY: web.AppKey["OneApi"] = web.AppKey("one_api")
REFUSALS_APP_KEY: web.AppKey[RefusalLog] = web.AppKey("one_refusals")


class OneError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Session:
    user: User | None     # None: oneadmin
    uid: int

    @property
    def name(self) -> str:
        return self.user.name if self.user else doc.ONEADMIN

    def caller(self) -> Caller:
        if self.user is None:
            raise OneError(AUTHORIZATION, "[one] oneadmin owns no VMs in cloudctl; use a user's session")
        return Caller(self.user)

    def admin(self) -> None:
        if self.user is not None:
            raise OneError(AUTHORIZATION, f"[one] User [{self.uid}] : Not authorized to perform this "
                                          f"operation (administrators only)")


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise OneError(XML_RPC_API, f"[one] {what} must be an integer")
    return v


class OneApi:
    """The methods; each returns the result part of the answer or raises OneError/CloudError."""

    def __init__(self, cloud: Cloud, admin_token: str, port: int) -> None:
        self.cloud = cloud
        self.admin_token = admin_token
        self.port = port
        self.observe: Callable[[str, str, float], None] | None = None   # method, outcome, seconds
        self.logins = Throttle(cloud.config.login_throttle)   # failed sessions, per address and user name
        self._templates: VmTemplates | None = None
        self._parsed: dict[str, Template | None] = {}   # instance -> its template, parsed
        self._cpu_seen: dict[str, tuple[float, int, float]] = {}   # instance -> (poll time, CPU ns, CPU %)

    @property
    def templates(self) -> VmTemplates:
        """Saved templates (made on first use: the store's tables exist by then)."""
        if self._templates is None:
            self._templates = VmTemplates(self.cloud.store)
        return self._templates

    # -- session, numbering ----------------------------------------------------------------
    async def session(self, raw: Any, source: str = "") -> Session:
        """The session string's user; `source` (the caller's address) keys the failed-login backoff."""
        if not isinstance(raw, str) or ":" not in raw:
            raise OneError(AUTHENTICATION, "[one] Session string must be user:secret")
        name, secret = raw.split(":", 1)
        try:
            await self.logins.admit(name, source)
        except Throttled as e:
            raise OneError(AUTHENTICATION, f"[one] Too many failed logins, retry in {math.ceil(e.retry_after_s)} s."
                           ) from None
        if name == doc.ONEADMIN:
            if hmac.compare_digest(secret.encode(), self.admin_token.encode()):
                self.logins.succeeded(name, source)
                return Session(None, 0)
            self.logins.failed(name, source)
            raise OneError(AUTHENTICATION, "[one] User couldn't be authenticated, aborting call.")
        users = self.cloud.users
        user = users.table.get(name) or users.by_access_key(name)
        if user is None or not hmac.compare_digest(secret.encode(), user.secret_key.encode()):
            self.logins.failed(name, source)
            raise OneError(AUTHENTICATION, "[one] User couldn't be authenticated, aborting call.")
        self.logins.succeeded(name, source)
        if user.ec2_only:
            # econe's `public` driver: such users exist for the EC2 interface only, and OpenNebula's
            # core answers their session as it answers a wrong password.
            log.info("XML-RPC session refused for %s from %s: the user is EC2-only", user.name, source or "?")
            raise OneError(AUTHENTICATION, "[one] User couldn't be authenticated, aborting call.")
        uid = (await self.cloud.numeric_ids.ensure("user", [user.name]))[user.name]
        return Session(user, uid)

    async def _owners(self) -> dict[str, doc.Owner]:
        """Account id -> (uid, name) for every user, and the cloud's own images to oneadmin."""
        users = self.cloud.users.list()
        nums = await self.cloud.numeric_ids.ensure("user", [u.name for u in users])
        out = {u.account_id: doc.Owner(nums[u.name], u.name) for u in users}
        out[CLOUD_OWNER] = doc.Owner(0, doc.ONEADMIN)
        return out

    def _resolve(self, kind: str, num: Any, what: str) -> str:
        rid = self.cloud.numeric_ids.resolve(kind, _int(num, f"{what} id"))
        if rid is None:
            raise OneError(NO_EXISTS, f"[one.{kind}.info] Error getting {what} [{num}].")
        return rid

    def _instances(self, s: Session) -> list[Instance]:
        if s.user is None:
            return list(self.cloud.compute.table.values())
        groups, _ = self.cloud.compute.describe(Caller(s.user), Query())
        return [i for _, insts in groups for i in insts]

    def _host_nums(self) -> dict[str, int]:
        return {h.name: n for n, h in enumerate(self.cloud.config.hosts)}

    async def _vm_elements(self, insts: list[Instance]) -> list[ET.Element]:
        cloud = self.cloud
        nums = await cloud.numeric_ids.ensure("vm", [i.id for i in insts])
        images = await cloud.numeric_ids.ensure("image", sorted({i.image_id for i in insts}))
        nets = await cloud.numeric_ids.ensure("vnet", list(cloud.network.subnets))
        owners = await self._owners()
        hosts = self._host_nums()
        wanted = {i.id for i in insts}
        vols: dict[str, list[Any]] = {}
        for v in cloud.volumes.table.values():
            if v.instance_id in wanted and v.target and v.target != "vda":
                vols.setdefault(v.instance_id, []).append(v)
        disk_nums = await cloud.numeric_ids.ensure("disk", [v.id for vs in vols.values() for v in vs])
        out = []
        for i in insts:
            disks = sorted((doc.AttachedDisk(disk_nums[v.id] + 1, v.id, v.target, v.size) for v in vols.get(i.id, [])),
                           key=lambda d: d.disk_id)
            out.append(doc.vm(i, nums[i.id], owners.get(i.owner, doc.Owner(-1, i.owner)),
                              cloud.config.instance_types.get(i.instance_type), hosts.get(i.host, -1),
                              images.get(i.image_id), nets.get(self._subnet_id(i) or ""),
                              self._impaired(i), dict(cloud.tags.of(i.id)), self._given(i.id), disks))
        return out

    def _impaired(self, i: Instance) -> bool:
        return self.cloud.monitor.state_of(i.host) == "error"

    def _given(self, instance_id: str) -> Template | None:
        """The template the VM was allocated with, if through this API. Parsed once per VM and
        kept (it never changes): a pool of thousands of VMs is not thousands of parses."""
        if instance_id in self._parsed:
            return self._parsed[instance_id]
        body = self.templates.of_instance(instance_id)
        if body is None:
            return None
        try:
            t: Template | None = parse(body)
        except TemplateError:
            t = None
        if len(self._parsed) >= 200_000:
            self._parsed.clear()
        self._parsed[instance_id] = t
        return t

    def _subnet_id(self, i: Instance) -> str | None:
        s = self.cloud.network.of(i)
        return s.id if s is not None else None

    def _own_instance(self, s: Session, num: Any) -> Instance:
        iid = self._resolve("vm", num, "VM")
        inst = self.cloud.compute.table.get(iid)
        if inst is None or (s.user is not None and inst.owner != s.user.account_id):
            raise OneError(NO_EXISTS, f"[one.vm.info] Error getting virtual machine [{num}].")
        return inst

    # -- system, users ---------------------------------------------------------------------
    async def system_version(self, s: Session) -> str:
        return VERSION

    async def system_config(self, s: Session) -> str:
        return doc.system_config(self.port, math.ceil(self.cloud.config.monitor.interval_s))

    async def user_info(self, s: Session, uid: Any = -1, decrypt: Any = False) -> str:
        uid = _int(uid, "user id")
        if uid in (-1, s.uid):
            return ET.tostring(doc.user(s.user, s.uid, s.name), encoding="unicode")
        s.admin()
        if uid == 0:
            return ET.tostring(doc.user(None, 0, doc.ONEADMIN), encoding="unicode")
        name = self._resolve("user", uid, "user")
        u = self.cloud.users.table.get(name)
        if u is None:
            raise OneError(NO_EXISTS, f"[one.user.info] Error getting user [{uid}].")
        return ET.tostring(doc.user(u, uid, u.name), encoding="unicode")

    async def userpool_info(self, s: Session) -> str:
        if s.user is not None:
            return doc.pool("USER_POOL", [doc.user(s.user, s.uid, s.name)])
        users = self.cloud.users.list()
        nums = await self.cloud.numeric_ids.ensure("user", [u.name for u in users])
        return doc.pool("USER_POOL", [doc.user(None, 0, doc.ONEADMIN)]
                        + [doc.user(u, nums[u.name], u.name) for u in users])

    # -- VMs -------------------------------------------------------------------------------
    async def vm_allocate(self, s: Session, template: Any, hold: Any = False) -> int:
        caller = s.caller()
        if not isinstance(template, str):
            raise OneError(XML_RPC_API, "[one.vm.allocate] the template must be a string")
        if hold:
            raise OneError(ACTION, "[one.vm.allocate] on-hold VMs are not supported")
        return await self._allocate(caller, _parsed(template, "one.vm.allocate", "virtual machine"))

    async def _allocate(self, caller: Caller, t: Template, method: str = "one.vm.allocate") -> int:
        """Run the VM `t` describes and keep `t` to show back in `one.vm.info`."""
        spec = await self._launch_spec(caller, t, method)
        _, launched = await self.cloud.compute.run(caller, spec)
        iid = launched[0].id
        await self.templates.keep_for_instance(iid, to_text(t))
        return (await self.cloud.numeric_ids.ensure("vm", [iid]))[iid]

    async def _launch_spec(self, caller: Caller, t: dict[str, Any], method: str = "one.vm.allocate") -> LaunchSpec:
        """An OpenNebula VM template as a launch of one instance."""
        try:
            cpu = float(scalar(t, "VCPU") or scalar(t, "CPU") or 1)
            memory = int(scalar(t, "MEMORY") or 0)
        except ValueError:
            raise OneError(XML_RPC_API, f"[{method}] CPU and MEMORY must be numbers") from None
        types = self.cloud.config.instance_types
        type_name = (scalar(t, "INSTANCE_TYPE") or
                     closest_type(types, math.ceil(cpu), memory or min(x.memory_mib for x in types.values())))
        disks = vectors(t, "DISK")
        if not disks or not (disks[0].get("IMAGE_ID") or disks[0].get("IMAGE")):
            # OpenNebula allocates a VM without disks; cloudctl boots every VM from an image, so it
            # refuses, as OpenNebula refuses an allocation it cannot make (INTERNAL, allocate_error).
            raise OneError(INTERNAL, f"[{method}] Error allocating a new virtual machine. cloudctl boots a VM "
                                     f"from an image: the template needs DISK = [ IMAGE_ID = ... ] (or IMAGE = name)")
        d = disks[0]
        if d.get("IMAGE_ID"):
            try:
                image_num = int(d["IMAGE_ID"])
            except ValueError:
                raise OneError(XML_RPC_API, "[one.vm.allocate] IMAGE_ID must be an integer") from None
            image_id = self._resolve("image", image_num, "image")
        else:
            found, _ = self.cloud.images.describe(caller, Query(filters=(Filter("name", (d["IMAGE"],)),)))
            if not found:
                raise OneError(NO_EXISTS, f"[one.vm.allocate] image {d['IMAGE']!r} does not exist")
            image_id = found[0].id
        subnet_id = private_ip = None
        nics = vectors(t, "NIC")
        if len(nics) > 1:
            raise OneError(ACTION, "[one.vm.allocate] cloudctl VMs have one NIC")
        if nics and (nics[0].get("NETWORK_ID") or nics[0].get("NETWORK")):
            nic = nics[0]
            if nic.get("NETWORK_ID"):
                subnet_id = self._resolve("vnet", _num(nic["NETWORK_ID"], "NETWORK_ID"), "virtual network")
            else:
                subnet = self.cloud.network.by_name(nic["NETWORK"])
                if subnet is None:
                    raise OneError(NO_EXISTS, f"[one.vm.allocate] virtual network {nic['NETWORK']!r} does not exist")
                subnet_id = subnet.id
            private_ip = nic.get("IP") or None
        name = scalar(t, "NAME")
        return LaunchSpec(image_id=image_id, instance_type=type_name, subnet_id=subnet_id, private_ip=private_ip,
                          user_data=_user_data((vectors(t, "CONTEXT") or [{}])[0]),
                          instance_tags=(("Name", name),) if name else ())

    async def vm_info(self, s: Session, num: Any, decrypt: Any = False) -> str:
        inst = self._own_instance(s, num)
        return doc.vm_doc((await self._vm_elements([inst]))[0])

    async def vmpool_info(self, s: Session, flt: Any = -2, start: Any = -1, end: Any = -1, state: Any = -1,
                          kv_filter: Any = "") -> str:
        flt, start, end, state = (_int(flt, "filter"), _int(start, "start"), _int(end, "end"),
                                  _int(state, "state"))
        insts = self._instances(s)
        if flt >= 0:
            owners = await self._owners()
            insts = [i for i in insts if owners.get(i.owner, doc.Owner(-1, "")).uid == flt]
        if state == -1:
            insts = [i for i in insts if i.state != "terminated"]
        elif state >= 0:
            insts = [i for i in insts if doc.VM_STATES.get(i.state, (-9, 0))[0] == state]
        els = await self._vm_elements(insts)
        els = [e for e in els if (start < 0 or int(e.findtext("ID", "0")) >= start)
               and (end < 0 or int(e.findtext("ID", "0")) <= end)]
        els.sort(key=lambda e: int(e.findtext("ID", "0")))
        return doc.pool("VM_POOL", els)

    async def vm_action(self, s: Session, action: Any, num: Any) -> int:
        caller = s.caller()
        if not isinstance(action, str):
            raise OneError(XML_RPC_API, "[one.vm.action] the action must be a string")
        inst = self._own_instance(s, num)
        rule = ACTIONS.get(action)
        if rule is None:
            raise OneError(ACTION, f'[one.vm.action] Invalid action "{clip(action)}"')
        state, lcm = doc.vm_state(inst, self._impaired(inst))
        if not rule.allowed(state, lcm):
            raise OneError(ACTION, f'[one.vm.action] Error performing action "{action}": Could not {rule.verb} '
                                   f'VM {num}, wrong state {doc.state_name(state, lcm)}.')
        compute = self.cloud.compute
        ids = [inst.id]
        if rule.run == "terminate":
            await compute.terminate(caller, ids)
        elif rule.run == "stop":
            if inst.state != "stopped":   # undeploy of a powered-off VM: already off
                await compute.stop(caller, ids, force=action.endswith("-hard"))
        elif rule.run == "start":
            await compute.start(caller, ids)
        elif rule.run == "reboot":
            await compute.reboot(caller, ids)
        else:
            raise OneError(ACTION, f'[one.vm.action] Error performing action "{action}": not supported by cloudctl')
        return _int(num, "VM id")

    async def vm_monitoring(self, s: Session, num: Any) -> str:
        """The last poll of the VM's host: CPU from the change since the poll seen before it."""
        inst = self._own_instance(s, num)
        n = _int(num, "VM id")
        health = self.cloud.monitor.hosts.get(inst.host) if inst.state == "running" else None
        poll = health.last if health is not None else None
        stats = poll.domains.get(inst.id) if poll is not None else None
        if stats is None or health is None or health.last_seen is None:
            return doc.monitoring(n, [])
        seen = health.last_seen
        cpu = 0.0
        prev = self._cpu_seen.get(inst.id)
        if prev is not None and seen > prev[0] and stats.cpu_time_ns >= prev[1]:
            cpu = 100.0 * (stats.cpu_time_ns - prev[1]) / 1e9 / (seen - prev[0])
        elif prev is not None and seen == prev[0]:
            cpu = prev[2]
        self._cpu_seen[inst.id] = (seen, stats.cpu_time_ns, cpu)
        if len(self._cpu_seen) > 100_000:
            self._cpu_seen.clear()
        itype = self.cloud.config.instance_types.get(inst.instance_type)
        memory = stats.memory_bytes // 1024 or (itype.memory_mib * 1024 if itype else 0)
        return doc.monitoring(n, [doc.Sample(int(seen), cpu, memory, stats.block_read_bytes,
                                             stats.block_write_bytes, stats.net_rx_bytes, stats.net_tx_bytes)])

    async def vm_attach(self, s: Session, num: Any, disk_template: Any) -> int:
        """Attach a cloudctl volume: `DISK = [ VOLUME_ID = "vol-..." ]`, or a new one of
        `DISK = [ SIZE = MiB ]` (rounded up to GiB); `TARGET = "vdc"` picks the guest disk."""
        caller = s.caller()
        inst = self._own_instance(s, num)
        if not isinstance(disk_template, str):
            raise OneError(XML_RPC_API, "[one.vm.attach] the disk template must be a string")
        t = _parsed(disk_template, "one.vm.attach", "disk")
        disks = vectors(t, "DISK")
        if len(disks) != 1:
            raise OneError(ACTION, "[one.vm.attach] VM disk attach: the template must have one DISK vector")
        d = disks[0]
        state, lcm = doc.vm_state(inst, self._impaired(inst))
        if not ((state, lcm) == (3, 3) or state == 8):
            raise OneError(ACTION, f"[one.vm.attach] Could not attach a new disk to VM {num}, wrong state "
                                   f"{doc.state_name(state, lcm)}.")
        used = {v.target for v in self.cloud.volumes.table.values() if v.instance_id == inst.id}
        target = d.get("TARGET") or next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used), "")
        if not target:
            raise OneError(ACTION, f"[one.vm.attach] VM {num} has no free disk target")
        if d.get("VOLUME_ID"):
            vid = d["VOLUME_ID"]
        elif d.get("SIZE"):
            try:
                gib = max(1, -(-int(d["SIZE"]) // 1024))
            except ValueError:
                raise OneError(XML_RPC_API, "[one.vm.attach] SIZE must be an integer (MiB)") from None
            vid = (await self.cloud.volumes.create(caller, VolumeRequest(zone=inst.zone, size=gib))).id
            await self._made(vid)
        else:
            raise OneError(ACTION, "[one.vm.attach] the DISK needs VOLUME_ID (a cloudctl volume) or SIZE (MiB)")
        await self.cloud.volumes.attach(caller, vid, inst.id, f"/dev/{target}")
        return _int(num, "VM id")

    async def _made(self, vid: str, timeout_s: float = 120.0) -> None:
        """Wait (off the loop's way) until a new volume's file exists: OpenNebula's attach of a
        volatile disk is one call, cloudctl's is create, then attach."""
        deadline = time.monotonic() + timeout_s
        while (v := self.cloud.volumes.table.get(vid)) is not None and v.state == "creating":
            if time.monotonic() > deadline:
                raise OneError(ACTION, f"[one.vm.attach] volume {vid} is still being created; attach it by "
                                       f"VOLUME_ID once it is available")
            await asyncio.sleep(0.05)
        if v is None or v.state != "available":
            raise OneError(INTERNAL, f"[one.vm.attach] volume {vid} could not be created "
                                     f"({v.state_message if v else 'deleted'})")

    async def vm_detach(self, s: Session, num: Any, disk_id: Any) -> int:
        caller = s.caller()
        inst = self._own_instance(s, num)
        disk_id = _int(disk_id, "disk id")
        vid = self.cloud.numeric_ids.resolve("disk", disk_id - 1) if disk_id > 0 else None
        vol = self.cloud.volumes.table.get(vid) if vid else None
        if vol is None or vol.instance_id != inst.id:
            raise OneError(ACTION, f"[one.vm.detach] Could not detach disk with DISK_ID {disk_id}, "
                                   f"it does not exist.")
        state, lcm = doc.vm_state(inst, self._impaired(inst))
        if not ((state, lcm) == (3, 3) or state == 8):
            raise OneError(ACTION, f"[one.vm.detach] Could not detach disk from VM {num}, wrong state "
                                   f"{doc.state_name(state, lcm)}.")
        await self.cloud.volumes.detach(caller, vol.id, inst.id)
        return _int(num, "VM id")

    # -- templates -------------------------------------------------------------------------
    async def template_allocate(self, s: Session, body: Any) -> int:
        caller = s.caller()
        if not isinstance(body, str):
            raise OneError(XML_RPC_API, "[one.template.allocate] the template must be a string")
        t = _parsed(body, "one.template.allocate", "virtual machine template")
        row = await self.templates.create(caller.user.account_id, scalar(t, "NAME") or "", to_text(t))
        return (await self.cloud.numeric_ids.ensure("template", [row.id]))[row.id]

    def _template(self, s: Session, num: Any, method: str) -> Any:
        tid = self.cloud.numeric_ids.resolve("template", _int(num, "template id"))
        try:
            return self.templates.get(s.user.account_id if s.user else None, tid or "")
        except CloudError:
            raise OneError(NO_EXISTS, f"[{method}] Error getting template [{num}].") from None

    async def _template_els(self, rows: list[Any]) -> list[ET.Element]:
        nums = await self.cloud.numeric_ids.ensure("template", [r.id for r in rows])
        owners = await self._owners()
        # OpenNebula names an unnamed template after its number
        return [doc.vm_template(nums[r.id], owners.get(r.owner, doc.Owner(-1, r.owner)),
                                r.name or f"template-{nums[r.id]}", r.created, parse(r.body)) for r in rows]

    async def template_info(self, s: Session, num: Any, extended: Any = False, decrypt: Any = False) -> str:
        [el] = await self._template_els([self._template(s, num, "one.template.info")])
        return ET.tostring(el, encoding="unicode")

    async def templatepool_info(self, s: Session, flt: Any = -2, start: Any = -1, end: Any = -1) -> str:
        flt, start, end = _int(flt, "filter"), _int(start, "start"), _int(end, "end")
        rows = self.templates.owned(s.user.account_id if s.user else None)
        els = await self._template_els(rows)
        if flt >= 0:   # one user's (OpenNebula: -1 mine and my group's, -2 all, -3 mine: here all are one)
            els = [e for e in els if int(e.findtext("UID", "-1")) == flt]
        els = [e for e in els if (start < 0 or int(e.findtext("ID", "0")) >= start)
               and (end < 0 or int(e.findtext("ID", "0")) <= end)]
        els.sort(key=lambda e: int(e.findtext("ID", "0")))
        return doc.pool("VMTEMPLATE_POOL", els)

    async def template_instantiate(self, s: Session, num: Any, name: Any = "", hold: Any = False,
                                   extra: Any = "", persistent: Any = False) -> int:
        """A VM from the template, `extra` (a template) replacing attributes of the same name."""
        caller = s.caller()
        row = self._template(s, num, "one.template.instantiate")
        if hold:
            raise OneError(ACTION, "[one.template.instantiate] on-hold VMs are not supported")
        t = parse(row.body)
        if isinstance(extra, str) and extra.strip():
            t.update(_parsed(extra, "one.template.instantiate", "virtual machine"))
        if isinstance(name, str) and name:
            t["NAME"] = [name]
        return await self._allocate(caller, t, "one.template.instantiate")

    async def template_delete(self, s: Session, num: Any, delete_images: Any = False) -> int:
        row = self._template(s, num, "one.template.delete")
        await self.templates.delete(s.user.account_id if s.user else None, row.id)
        return _int(num, "template id")

    # -- hosts, images, networks -----------------------------------------------------------
    def _host_el(self, name: str, num: int, vm_nums: dict[str, int]) -> ET.Element:
        m = self.cloud.monitor
        v = host_view(m.hosts[name], m, self.cloud.scheduler)
        figures = doc.HostFigures(
            name=name, state=str(v["state"]), zone=str(v["zone"]), vcpus=int(v["vcpus"]),  # type: ignore[call-overload]
            used_vcpus=int(v["used_vcpus"]), memory_mib=int(v["memory_mib"]),  # type: ignore[call-overload]
            used_memory_mib=int(v["used_memory_mib"]), instances=int(v["instances"]),  # type: ignore[call-overload]
            free_memory_mib=v["free_memory_mib"], last_seen=v["last_seen"])  # type: ignore[arg-type]
        on_host = [vm_nums[i] for i in self.cloud.compute.on_host(name) if i in vm_nums]
        return doc.host(figures, num, sorted(on_host))

    async def hostpool_info(self, s: Session) -> str:
        s.admin()
        vm_nums = await self.cloud.numeric_ids.ensure("vm", [i.id for i in self.cloud.compute.table.values()])
        return doc.pool("HOST_POOL", [self._host_el(n, num, vm_nums) for n, num in self._host_nums().items()])

    async def host_info(self, s: Session, num: Any, decrypt: Any = False) -> str:
        s.admin()
        num = _int(num, "host id")
        names = {v: k for k, v in self._host_nums().items()}
        if num not in names:
            raise OneError(NO_EXISTS, f"[one.host.info] Error getting host [{num}].")
        vm_nums = await self.cloud.numeric_ids.ensure("vm", list(self.cloud.compute.on_host(names[num])))
        return ET.tostring(self._host_el(names[num], num, vm_nums), encoding="unicode")

    async def _image_els(self, s: Session, only: str | None = None) -> list[ET.Element]:
        cloud = self.cloud
        if s.user is None:
            images = list(cloud.images.table.values())
        elif only is not None:
            images = [cloud.images.visible(Caller(s.user), only, None)]
        else:
            images, _ = cloud.images.describe(Caller(s.user), Query())
        nums = await cloud.numeric_ids.ensure("image", [i.id for i in images])
        owners = await self._owners()
        using: dict[str, int] = {}
        for i in cloud.compute.table.values():
            if i.state != "terminated":
                using[i.image_id] = using.get(i.image_id, 0) + 1
        els = [doc.image(im, nums[im.id], owners.get(im.owner, doc.Owner(-1, im.owner)), using.get(im.id, 0))
               for im in images]
        return sorted(els, key=lambda e: int(e.findtext("ID", "0")))

    async def imagepool_info(self, s: Session, flt: Any = -2, start: Any = -1, end: Any = -1) -> str:
        start, end = _int(start, "start"), _int(end, "end")
        els = [e for e in await self._image_els(s) if (start < 0 or int(e.findtext("ID", "0")) >= start)
               and (end < 0 or int(e.findtext("ID", "0")) <= end)]
        return doc.pool("IMAGE_POOL", els)

    async def image_info(self, s: Session, num: Any, decrypt: Any = False) -> str:
        image_id = self._resolve("image", num, "image")
        try:
            [el] = await self._image_els(s, image_id)
        except CloudError:
            raise OneError(NO_EXISTS, f"[one.image.info] Error getting image [{num}].") from None
        return ET.tostring(el, encoding="unicode")

    def _vnet_el(self, subnet_id: str, num: int) -> ET.Element:
        net = self.cloud.network
        s = net.subnets[subnet_id]
        return doc.vnet(doc.VnetFigures(
            name=s.name, cidr=str(s.net), first_ip=str(ipaddress.IPv4Address(s.first)), size=s.size,
            used=s.size - net.available(s) - (1 if s.first <= int(s.gateway) <= s.last else 0),
            zone=s.zone, gateway=str(s.gateway), bridge=s.bridge or "", vlan=s.vlan, subnet_id=s.id), num)

    async def vnpool_info(self, s: Session, flt: Any = -2, start: Any = -1, end: Any = -1) -> str:
        nums = await self.cloud.numeric_ids.ensure("vnet", list(self.cloud.network.subnets))
        return doc.pool("VNET_POOL", [self._vnet_el(sid, n) for sid, n in sorted(nums.items(), key=lambda kv: kv[1])])

    async def vn_info(self, s: Session, num: Any, decrypt: Any = False) -> str:
        subnet_id = self._resolve("vnet", num, "virtual network")
        if subnet_id not in self.cloud.network.subnets:   # a network removed from the config
            raise OneError(NO_EXISTS, f"[one.vn.info] Error getting virtual network [{num}].")
        return ET.tostring(self._vnet_el(subnet_id, _int(num, "id")), encoding="unicode")


@dataclass(frozen=True, slots=True)
class _Rule:
    """Where an action is allowed, in OpenNebula's VM state machine (DispatchManager), and what runs it."""

    verb: str                                   # as OpenNebula's "Could not <verb> VM" message says
    run: str                                    # terminate | stop | start | reboot | "" (not in cloudctl)
    active_lcm: frozenset[int] = frozenset()    # LCM states of ACTIVE (3) where it is allowed
    states: frozenset[int] = frozenset()        # other VM states where it is allowed

    def allowed(self, state: int, lcm: int) -> bool:
        return lcm in self.active_lcm if state == 3 else state in self.states


_RUNNING_OR_UNKNOWN = frozenset({3, doc.UNKNOWN})
_ALL_LCM = frozenset(range(0, 64))
_OFF = frozenset({1, 2, 4, 5, 8, 9})   # PENDING, HOLD, STOPPED, SUSPENDED, POWEROFF, UNDEPLOYED
ACTIONS = {
    "terminate": _Rule("terminate", "terminate", _RUNNING_OR_UNKNOWN, _OFF),
    "terminate-hard": _Rule("terminate", "terminate", _ALL_LCM, _OFF),
    "delete": _Rule("terminate", "terminate", _ALL_LCM, _OFF),          # OpenNebula 4's name
    "poweroff": _Rule("power off", "stop", _RUNNING_OR_UNKNOWN),
    "poweroff-hard": _Rule("power off", "stop", _RUNNING_OR_UNKNOWN),
    "stop": _Rule("stop", "stop", _RUNNING_OR_UNKNOWN),
    "undeploy": _Rule("undeploy", "stop", _RUNNING_OR_UNKNOWN, frozenset({8})),
    "undeploy-hard": _Rule("undeploy", "stop", _RUNNING_OR_UNKNOWN, frozenset({8})),
    "resume": _Rule("resume", "start", frozenset(), frozenset({4, 5, 8, 9})),
    "reboot": _Rule("reboot", "reboot", _RUNNING_OR_UNKNOWN),
    "reboot-hard": _Rule("reboot", "reboot", _RUNNING_OR_UNKNOWN),
    "hold": _Rule("hold", "", frozenset(), frozenset({1})),
    "release": _Rule("release", "", frozenset(), frozenset({2})),
    "suspend": _Rule("suspend", "", frozenset({3})),
    "resched": _Rule("reschedule", "", _RUNNING_OR_UNKNOWN, frozenset({8})),
    "unresched": _Rule("unreschedule", "", _RUNNING_OR_UNKNOWN, frozenset({8})),
}


def _parsed(text: str, method: str, what: str) -> Template:
    """A template, or OpenNebula's answer to one it cannot parse (INTERNAL, as its allocate_error)."""
    try:
        return parse(text)
    except TemplateError as e:
        raise OneError(INTERNAL, f"[{method}] Error allocating a new {what}. Parse error: {e}") from None


def _num(v: str, what: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise OneError(XML_RPC_API, f"[one.vm.allocate] {what} must be an integer") from None


def _user_data(ctx: dict[str, str]) -> str | None:
    """CONTEXT's user data as RunInstances' base64 UserData (USER_DATA, START_SCRIPT[_BASE64])."""
    if ctx.get("USER_DATA"):
        if ctx.get("USER_DATA_ENCODING", "").lower() == "base64":
            return _checked_b64(ctx["USER_DATA"])
        return base64.b64encode(ctx["USER_DATA"].encode()).decode()
    if ctx.get("START_SCRIPT_BASE64"):
        return _checked_b64(ctx["START_SCRIPT_BASE64"])
    if ctx.get("START_SCRIPT"):
        return base64.b64encode(ctx["START_SCRIPT"].encode()).decode()
    return None


def _checked_b64(v: str) -> str:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise OneError(XML_RPC_API, "[one.vm.allocate] CONTEXT user data is not valid base64") from None
    return v


def _error_code(e: CloudError) -> int:
    return _KIND_CODES.get(e.kind, XML_RPC_API)


# method name -> OneApi attribute
METHODS = {
    "one.system.version": "system_version", "one.system.config": "system_config",
    "one.user.info": "user_info", "one.userpool.info": "userpool_info",
    "one.vm.allocate": "vm_allocate", "one.vm.info": "vm_info", "one.vmpool.info": "vmpool_info",
    "one.vm.action": "vm_action", "one.vm.monitoring": "vm_monitoring", "one.vm.attach": "vm_attach",
    "one.vm.detach": "vm_detach", "one.template.allocate": "template_allocate", "one.template.info": "template_info",
    "one.template.instantiate": "template_instantiate", "one.template.delete": "template_delete",
    "one.templatepool.info": "templatepool_info", "one.hostpool.info": "hostpool_info", "one.host.info": "host_info",
    "one.imagepool.info": "imagepool_info", "one.image.info": "image_info",
    "one.vnpool.info": "vnpool_info", "one.vn.info": "vn_info",
}


_CODE_NAMES = {AUTHENTICATION: "AUTHENTICATION", AUTHORIZATION: "AUTHORIZATION", NO_EXISTS: "NO_EXISTS",
               ACTION: "ACTION", XML_RPC_API: "XML_RPC_API", INTERNAL: "INTERNAL"}


Refuse = Callable[[str, str], None]   # reason, detail: one refusal for the log and the metrics


def _unlogged(reason: str, detail: str) -> None:
    pass


async def call(api: OneApi, method: str, params: list[Any], refused: Refuse = _unlogged,
               source: str = "") -> list[Any]:
    """Run one method and wrap its outcome in OpenNebula's [success, value, code] triple.

    `params` are the call's <value> elements: the session (the first) is checked before the others
    are converted, so a caller without credentials cannot make the controller convert large values.
    """
    t0 = time.perf_counter()
    answer = await _call(api, method, params, refused, source)
    if api.observe is not None:
        api.observe(method, "ok" if answer[0] else _CODE_NAMES.get(answer[2], str(answer[2])),
                    time.perf_counter() - t0)
    return answer


async def _call(api: OneApi, method: str, params: list[Any], refused: Refuse, source: str) -> list[Any]:
    fn: Callable[..., Awaitable[Any]] = getattr(api, METHODS[method])
    try:
        try:
            if not params:
                raise OneError(AUTHENTICATION, "[one] the session string is missing")
            session = await api.session(wire.string(params[0]), source)
        except OneError:
            refused("bad_session", f"method {method}")
            raise
        try:
            inspect.signature(fn).bind(session, *params[1:])
        except TypeError:
            refused("wrong_arity", f"method {method}, {len(params)} parameters")
            raise OneError(XML_RPC_API, f"[{method}] wrong number of parameters") from None
        args = [wire.value(p) for p in params[1:]]
        return [True, await fn(session, *args), 0]
    except OneError as e:
        return [False, str(e), e.code]
    except wire.Refused as e:
        refused(e.reason, f"method {method}: {e.detail}")
        return [False, f"[{method}] {e.message}", XML_RPC_API]
    except CloudError as e:
        return [False, f"[{method}] {e.message}", _error_code(e)]
    except JournalError:
        return [False, f"[{method}] the controller cannot write its journal (disk full or read-only?); "
                       f"nothing was changed, retry later", INTERNAL]
    except Exception:
        log.exception("%s failed", method)
        return [False, f"[{method}] internal error", INTERNAL]


async def handle(request: web.Request) -> web.Response:
    """POST /RPC2: read the call within wire's limits, refuse what is not a call of ours with a
    fault (one rate-limited log line, no traceback), answer the rest with the method's triple."""
    refusals = request.app[REFUSALS_APP_KEY]
    try:
        mc = await wire.read_call(request)
        if mc.method not in METHODS:
            raise wire.Refused("unknown_method", wire.METHOD_NOT_FOUND,
                               f"Method {clip(mc.method)} not found", f"method {clip(mc.method)}")
    except wire.Refused as e:
        refusals.refused(request.remote, e.reason, e.detail)
        return web.Response(body=wire.fault(e.code, e.message), content_type="text/xml", charset="utf-8")
    answer = await call(request.app[CLOUD_APP_KEY], mc.method, mc.params,
                        lambda reason, detail: refusals.refused(request.remote, reason, detail),
                        request.remote or "")
    return web.Response(body=wire.answer(answer), content_type="text/xml", charset="utf-8")


def refuse_body(request: web.Request, e: BodyRefused) -> web.StreamResponse:
    """A body the listener refused (see api/listener.py): too large is a fault, as pyone reports
    it; too slow is plain HTTP 408, a transport failure. Either is one rate-limited log line."""
    refusals = request.app[REFUSALS_APP_KEY]
    if e.status == 413:
        refusals.refused(request.remote, "oversize", clip(e.message))
        return web.Response(body=wire.fault(wire.INVALID_REQUEST, wire.OVERSIZE), content_type="text/xml",
                            charset="utf-8")
    refusals.refused(request.remote, "disconnected" if e.code == BodyRefused.LOST else "slow_body")
    return plain_refusal(request, e)


def xmlrpc_app(cloud: Cloud, admin_token: str, port: int) -> web.Application:
    app = web.Application(client_max_size=wire.MAX_BODY_BYTES)
    app[CLOUD_APP_KEY] = OneApi(cloud, admin_token, port)
    app[REFUSALS_APP_KEY] = RefusalLog("xmlrpc")
    app.router.add_post("/RPC2", handle)
    app.on_cleanup.append(_flush_refusals)
    return app


async def _flush_refusals(app: web.Application) -> None:
    app[REFUSALS_APP_KEY].flush()   # the summaries of the windows still open, before the log ends
