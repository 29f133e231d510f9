"""OpenNebula-shaped XML documents (VM, HOST, IMAGE, USER, VNET and their pools).

Only the wire shape lives here: the caller passes rows and the numbers already assigned to
them. Element names and state numbers are OpenNebula's (its XSD schemas, as pyone's bindings
parse them); everything is built with ElementTree so every value is escaped.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

from ...config import InstanceType
from ...slim import dataclass
from ...store.records import Image, Instance, User
from .template import Template, to_xml

# EC2 state -> (VM STATE, LCM_STATE). ACTIVE=3; LCM: BOOT=2, RUNNING=3, SHUTDOWN=12,
# UNKNOWN=16, SHUTDOWN_POWEROFF=18. POWEROFF=8, DONE=6.
VM_STATES = {"pending": (3, 2), "running": (3, 3), "stopping": (3, 18), "stopped": (8, 0),
             "shutting-down": (3, 12), "terminated": (6, 0)}
UNKNOWN = 16
# cloudctl host state -> OpenNebula HOST STATE (INIT=0, MONITORED=2, ERROR=3, DISABLED=4, OFFLINE=8)
HOST_STATES = {"init": 0, "on": 2, "error": 3, "disabled": 4, "offline": 8}
# EC2 image type -> OpenNebula IMAGE TYPE (OS=0, KERNEL=3, RAMDISK=4); state READY=1, INIT=0, ERROR=5
IMAGE_TYPES = {"machine": 0, "kernel": 3, "ramdisk": 4}
IMAGE_STATES = {"available": 1, "pending": 0, "failed": 5}

ONEADMIN = "oneadmin"


def _add(parent: ET.Element, tag: str, value: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if value is not None:
        el.text = str(value)
    return el


def _tostring(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def _permissions(parent: ET.Element, public: bool = False) -> None:
    p = _add(parent, "PERMISSIONS")
    for who in ("OWNER", "GROUP", "OTHER"):
        for right in ("U", "M", "A"):
            on = (who == "OWNER" and right in "UM") or (public and right == "U")
            _add(p, f"{who}_{right}", 1 if on else 0)


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    name: str


# What cloudctl writes itself in a VM's TEMPLATE; the rest of the template given at allocate is kept.
_OWN_ATTRIBUTES = frozenset({"CPU", "VCPU", "MEMORY", "VMID", "DISK", "NIC", "INSTANCE_TYPE", "EC2_INSTANCE_ID"})
# OpenNebula's names for the states, as its "wrong state" messages print them (ACTIVE: the LCM state).
STATE_NAMES = {0: "INIT", 1: "PENDING", 2: "HOLD", 3: "ACTIVE", 4: "STOPPED", 5: "SUSPENDED", 6: "DONE",
               8: "POWEROFF", 9: "UNDEPLOYED"}
LCM_NAMES = {0: "LCM_INIT", 1: "PROLOG", 2: "BOOT", 3: "RUNNING", 12: "SHUTDOWN", 16: "UNKNOWN",
             18: "SHUTDOWN_POWEROFF"}


@dataclass(frozen=True, slots=True)
class AttachedDisk:
    disk_id: int
    volume_id: str
    target: str      # vdb, ...
    size_gib: int


def vm_state(inst: Instance, impaired: bool) -> tuple[int, int]:
    """OpenNebula's (STATE, LCM_STATE) for an instance."""
    state, lcm = VM_STATES.get(inst.state, (3, 0))
    if impaired and inst.state == "running":
        lcm = UNKNOWN   # as OpenNebula shows the VMs of a host in ERROR
    return state, lcm


def state_name(state: int, lcm: int) -> str:
    return LCM_NAMES.get(lcm, str(lcm)) if state == 3 else STATE_NAMES.get(state, str(state))


def vm(inst: Instance, num: int, owner: Owner, itype: InstanceType | None, host_num: int,
       image_num: int | None, vnet_num: int | None, impaired: bool, tags: dict[str, str],
       given: Template | None = None, disks: Iterable[AttachedDisk] = ()) -> ET.Element:
    """`given`: the template the VM was allocated with (its CONTEXT, GRAPHICS, OS, ... are shown back)."""
    state, lcm = vm_state(inst, impaired)
    given = given or {}
    root = ET.Element("VM")
    _add(root, "ID", num)
    _add(root, "UID", owner.uid)
    _add(root, "GID", 1)
    _add(root, "UNAME", owner.name)
    _add(root, "GNAME", "users")
    _add(root, "NAME", tags.get("Name") or inst.id)
    _permissions(root)
    _add(root, "LAST_POLL", 0)
    _add(root, "STATE", state)
    _add(root, "LCM_STATE", lcm)
    _add(root, "PREV_STATE", state)
    _add(root, "PREV_LCM_STATE", lcm)
    _add(root, "RESCHED", 0)
    _add(root, "STIME", int(inst.launch_time))
    _add(root, "ETIME", int(inst.terminated_at or 0))
    _add(root, "DEPLOY_ID", inst.id)
    _add(root, "MONITORING")
    t = _add(root, "TEMPLATE")
    if itype is not None:
        _add(t, "CPU", itype.vcpus)
        _add(t, "VCPU", itype.vcpus)
        _add(t, "MEMORY", itype.memory_mib)
    to_xml(given, t, skip=_OWN_ATTRIBUTES)
    _add(t, "VMID", num)
    _add(t, "INSTANCE_TYPE", inst.instance_type)
    _add(t, "EC2_INSTANCE_ID", inst.id)
    given_disk = next((d for d in given.get("DISK", []) if isinstance(d, dict)), {})
    disk = _add(t, "DISK")
    for k, v in given_disk.items():
        if k not in ("DISK_ID", "IMAGE_ID", "EC2_IMAGE_ID"):
            _add(disk, k, v)
    _add(disk, "DISK_ID", 0)
    if image_num is not None:
        _add(disk, "IMAGE_ID", image_num)
    _add(disk, "EC2_IMAGE_ID", inst.image_id)
    for d in disks:
        extra = _add(t, "DISK")
        _add(extra, "DISK_ID", d.disk_id)
        _add(extra, "TARGET", d.target)
        _add(extra, "SIZE", d.size_gib * 1024)   # MiB, as OpenNebula counts disk sizes
        _add(extra, "EC2_VOLUME_ID", d.volume_id)
    given_nic = next((n for n in given.get("NIC", []) if isinstance(n, dict)), {})
    nic = _add(t, "NIC")
    for k, v in given_nic.items():
        if k not in ("NIC_ID", "IP", "MAC", "NETWORK_ID"):
            _add(nic, k, v)
    _add(nic, "NIC_ID", 0)
    if inst.private_ip:
        _add(nic, "IP", inst.private_ip)
    _add(nic, "MAC", inst.mac)
    if vnet_num is not None:
        _add(nic, "NETWORK_ID", vnet_num)
    ut = _add(root, "USER_TEMPLATE")
    for k, v in sorted(tags.items()):
        if k.replace("_", "").isalnum() and k[:1].isalpha():
            _add(ut, k.upper(), v)
    if inst.state_reason_message:
        _add(ut, "ERROR", inst.state_reason_message)
    hist = _add(root, "HISTORY_RECORDS")
    h = _add(hist, "HISTORY")
    _add(h, "OID", num)
    _add(h, "SEQ", 0)
    _add(h, "HOSTNAME", inst.host)
    _add(h, "HID", host_num)
    _add(h, "CID", 0)
    _add(h, "DS_ID", 0)
    _add(h, "VM_MAD", "kvm")
    _add(h, "TM_MAD", "local")
    _add(h, "ACTION", 0)
    return root


def vm_doc(el: ET.Element) -> str:
    return _tostring(el)


def pool(tag: str, items: Iterable[ET.Element]) -> str:
    root = ET.Element(tag)
    root.extend(items)
    return _tostring(root)


@dataclass(frozen=True, slots=True)
class HostFigures:
    name: str
    state: str
    zone: str
    vcpus: int
    used_vcpus: int
    memory_mib: int
    used_memory_mib: int
    instances: int
    free_memory_mib: int | None
    last_seen: float | None


def host(f: HostFigures, num: int, vm_nums: Iterable[int]) -> ET.Element:
    root = ET.Element("HOST")
    _add(root, "ID", num)
    _add(root, "NAME", f.name)
    _add(root, "STATE", HOST_STATES.get(f.state, 3))
    _add(root, "PREV_STATE", HOST_STATES.get(f.state, 3))
    _add(root, "IM_MAD", "kvm")
    _add(root, "VM_MAD", "kvm")
    _add(root, "CLUSTER_ID", 0)
    _add(root, "CLUSTER", "default")
    share = _add(root, "HOST_SHARE")
    kib = 1024
    # OpenNebula counts CPU in percent of one core and memory in KiB.
    _add(share, "MEM_USAGE", f.used_memory_mib * kib)
    _add(share, "CPU_USAGE", f.used_vcpus * 100)
    _add(share, "TOTAL_MEM", f.memory_mib * kib)
    _add(share, "TOTAL_CPU", f.vcpus * 100)
    _add(share, "MAX_MEM", f.memory_mib * kib)
    _add(share, "MAX_CPU", f.vcpus * 100)
    _add(share, "RUNNING_VMS", f.instances)
    vms = _add(root, "VMS")
    for n in vm_nums:
        _add(vms, "ID", n)
    t = _add(root, "TEMPLATE")
    _add(t, "HOSTNAME", f.name)
    _add(t, "ZONE", f.zone)
    if f.free_memory_mib is not None:
        _add(t, "FREEMEMORY", f.free_memory_mib * kib)
    _add(t, "LAST_MONITORED", int(f.last_seen or 0))
    return root


def image(im: Image, num: int, owner: Owner, running_vms: int) -> ET.Element:
    root = ET.Element("IMAGE")
    _add(root, "ID", num)
    _add(root, "UID", owner.uid)
    _add(root, "GID", 0 if owner.uid == 0 else 1)
    _add(root, "UNAME", owner.name)
    _add(root, "GNAME", "oneadmin" if owner.uid == 0 else "users")
    _add(root, "NAME", im.name)
    _permissions(root, public=im.public)
    _add(root, "TYPE", IMAGE_TYPES.get(im.image_type, 0))
    _add(root, "DISK_TYPE", 0)
    _add(root, "PERSISTENT", 0)
    _add(root, "REGTIME", int(im.created))
    _add(root, "SOURCE", im.id)
    _add(root, "PATH", "")
    _add(root, "FORMAT", im.disk_format)
    _add(root, "FS", "")
    _add(root, "SIZE", max(1, -(-im.size // (1024 * 1024))))   # MiB, rounded up
    _add(root, "STATE", IMAGE_STATES.get(im.state, 5))
    _add(root, "PREV_STATE", IMAGE_STATES.get(im.state, 5))
    _add(root, "RUNNING_VMS", running_vms)
    _add(root, "CLONING_OPS", 0)
    _add(root, "CLONING_ID", -1)
    _add(root, "TARGET_SNAPSHOT", -1)
    _add(root, "DATASTORE_ID", 1)
    _add(root, "DATASTORE", "default")
    _add(root, "VMS")
    _add(root, "CLONES")
    _add(root, "APP_CLONES")
    t = _add(root, "TEMPLATE")
    if im.description:
        _add(t, "DESCRIPTION", im.description)
    _add(t, "EC2_IMAGE_ID", im.id)
    _add(root, "SNAPSHOTS")
    return root


def user(u: User | None, num: int, name: str) -> ET.Element:
    root = ET.Element("USER")
    _add(root, "ID", num)
    _add(root, "GID", 0 if u is None else 1)
    groups = _add(root, "GROUPS")
    _add(groups, "ID", 0 if u is None else 1)
    _add(root, "GNAME", "oneadmin" if u is None else "users")
    _add(root, "NAME", name)
    _add(root, "PASSWORD", "")   # never sent: OpenNebula sends a hash, we send nothing
    _add(root, "AUTH_DRIVER", "public" if u is not None and u.ec2_only else "core")   # (public: EC2-only)
    _add(root, "ENABLED", 1)
    _add(root, "LOGIN_TOKEN")
    t = _add(root, "TEMPLATE")
    if u is not None:
        _add(t, "EC2_ACCESS_KEY_ID", u.access_key)
        _add(t, "EC2_ACCOUNT_ID", u.account_id)
    return root


@dataclass(frozen=True, slots=True)
class VnetFigures:
    name: str
    cidr: str
    first_ip: str
    size: int
    used: int
    zone: str
    gateway: str
    bridge: str
    vlan: int | None
    subnet_id: str


def vnet(f: VnetFigures, num: int) -> ET.Element:
    root = ET.Element("VNET")
    _add(root, "ID", num)
    _add(root, "UID", 0)
    _add(root, "GID", 0)
    _add(root, "UNAME", ONEADMIN)
    _add(root, "GNAME", "oneadmin")
    _add(root, "NAME", f.name)
    _permissions(root, public=True)
    clusters = _add(root, "CLUSTERS")
    _add(clusters, "ID", 0)
    _add(root, "BRIDGE", f.bridge)
    _add(root, "STATE", 1)
    _add(root, "PREV_STATE", 1)
    _add(root, "PARENT_NETWORK_ID", "")
    _add(root, "VN_MAD", "802.1Q" if f.vlan is not None else "bridge")
    if f.vlan is not None:
        _add(root, "VLAN_ID", f.vlan)
    _add(root, "USED_LEASES", f.used)
    t = _add(root, "TEMPLATE")
    _add(t, "NETWORK_ADDRESS", f.cidr.split("/")[0])
    _add(t, "NETWORK_MASK", f.cidr)
    _add(t, "GATEWAY", f.gateway)
    _add(t, "ZONE", f.zone)
    _add(t, "EC2_SUBNET_ID", f.subnet_id)
    ars = _add(root, "AR_POOL")
    ar = _add(ars, "AR")
    _add(ar, "AR_ID", 0)
    _add(ar, "IP", f.first_ip)
    _add(ar, "SIZE", f.size)
    _add(ar, "TYPE", "IP4")
    _add(ar, "USED_LEASES", f.used)
    return root


def system_config(port: int, monitor_interval_s: int) -> str:
    root = ET.Element("OPENNEBULA_CONFIGURATION")
    _add(root, "PORT", port)
    _add(root, "DEFAULT_AUTH", "core")
    _add(root, "MONITORING_INTERVAL_HOST", monitor_interval_s)
    _add(root, "IM_MAD")
    _add(root, "VM_MAD")
    return _tostring(root)


def vm_template(num: int, owner: Owner, name: str, created: float, given: Template) -> ET.Element:
    """A saved template as `one.template.info` answers it (VMTEMPLATE)."""
    root = ET.Element("VMTEMPLATE")
    _add(root, "ID", num)
    _add(root, "UID", owner.uid)
    _add(root, "GID", 1)
    _add(root, "UNAME", owner.name)
    _add(root, "GNAME", "users")
    _add(root, "NAME", name)
    _permissions(root)
    _add(root, "REGTIME", int(created))
    t = _add(root, "TEMPLATE")
    to_xml(given, t)
    return root


@dataclass(frozen=True, slots=True)
class Sample:
    """One monitoring sample of a VM (OpenNebula's units: CPU in percent of one core, sizes in KiB or bytes)."""

    timestamp: int
    cpu_percent: float
    memory_kib: int
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int


def monitoring(num: int, samples: Iterable[Sample]) -> str:
    """`one.vm.monitoring`'s MONITORING_DATA: one MONITORING per sample, oldest first."""
    root = ET.Element("MONITORING_DATA")
    for s in samples:
        m = _add(root, "MONITORING")
        _add(m, "TIMESTAMP", s.timestamp)
        _add(m, "ID", num)
        _add(m, "CPU", f"{s.cpu_percent:.2f}")
        _add(m, "MEMORY", s.memory_kib)
        _add(m, "DISKRDBYTES", s.disk_read_bytes)
        _add(m, "DISKWRBYTES", s.disk_write_bytes)
        _add(m, "NETRX", s.net_rx_bytes)
        _add(m, "NETTX", s.net_tx_bytes)
    return _tostring(root)
