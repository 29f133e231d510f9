"""What the instance metadata service tells an instance about itself, as plain Python data.

The caller is identified by its source address alone (as on EC2: the service is reachable
only from the instance's own network, unrouted and un-NATed), so the one lookup that matters
is private address → live instance, kept as an index on the instances table. Terminated
instances have given their address back and are never found.

The tree served under every version is built per request from the current rows: it is a
few dozen small strings, cheaper to build than to keep in step with every change. This
module says which paths exist and what they hold; `api/metadata.py` turns that into HTTP.

IMDSv2 session tokens are stateless: the token carries its expiry and an HMAC over (instance
id, expiry) under a secret made when the process starts. A restart therefore invalidates all
tokens, which clients handle (they fetch a new one on 401), and no token storage is needed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Union

from ..config import InstanceType
from ..slim import dataclass
from ..store.records import Instance
from ..store.store import Store
from .addresses import Addresses, public_dns
from .images import ROOT_DEVICE_NAME, Images
from .instance_store import disks as ephemeral_disks
from .keypairs import KeyPairs
from .network import LiveByPrivateIp, Networks, interface_id

if TYPE_CHECKING:
    from .cloud import Cloud

TOKEN_TTL_MIN = 1
TOKEN_TTL_MAX = 21600          # six hours, as EC2
IDENTITY_VERSION = "2017-09-30"
# Listed at "/"; any other YYYY-MM-DD (and "1.0") is served as "latest" too, so cloud-init's
# pinned versions (2009-04-04, 2018-09-24, 2021-03-23, ...) all work.
VERSIONS = ("1.0", "2007-01-19", "2008-02-01", "2009-04-04", "2011-01-01", "2012-01-12", "2016-09-02",
            "2018-09-24", "2021-03-23", "latest")
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Leaf = Union[str, bytes, dict[str, Any]]   # text, raw bytes (user data), a JSON document
Node = Union["Dir", Leaf]


@dataclass(slots=True)
class Dir:
    """A listing node. `labels` gives a child's whole line in this node's listing, when it is not
    just its name: EC2 lists the key `public-keys/0/` as `0=keyname`, while the path stays
    `public-keys/0`."""

    entries: dict[str, Node]
    labels: dict[str, str] = field(default_factory=dict)

    def walk(self, parts: list[str]) -> Node | None:
        node: Node = self
        for p in parts:
            if not isinstance(node, Dir):
                return None
            nxt = node.entries.get(p)
            if nxt is None:
                return None
            node = nxt
        return node


def known_version(version: str) -> bool:
    return version in VERSIONS or _DATED.match(version) is not None


class InstanceMetadata:
    def __init__(self, store: Store, region: str, images: Images, keypairs: KeyPairs, network: Networks,
                 addresses: Addresses, services_domain: str = "amazonaws.com",
                 types: dict[str, InstanceType] | None = None) -> None:
        self.region = region
        self.types = types or {}   # an instance's type gives its ephemeral disks' presence
        self.addresses = addresses
        self.images = images
        self.keypairs = keypairs
        self.network = network
        self.services_domain = services_domain
        self._by_ip = LiveByPrivateIp(store)
        self._secret = secrets.token_bytes(32)

    @classmethod
    def for_cloud(cls, cloud: "Cloud") -> "InstanceMetadata":
        """Wired from a cloud's services (another one than the cloud's own has its own token secret)."""
        return cls(cloud.store, cloud.config.region, cloud.images, cloud.keypairs, cloud.network,
                   addresses=cloud.addresses, types=cloud.config.instance_types)

    # -- who is asking -------------------------------------------------------------------------
    def by_private_ip(self, ip: str) -> Instance | None:
        """The live instance holding `ip`; IPv4-mapped IPv6 (a dual-stack listener) is unwrapped."""
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        group = self._by_ip.get(ip)
        # Leases keep addresses unique, so there is at most one; never trust that blindly.
        return next(iter(group.values())) if len(group) == 1 else None

    # -- what it is told -----------------------------------------------------------------------
    def hostname(self, inst: Instance) -> str:
        """The same private DNS name DescribeInstances reports."""
        ip = inst.private_ip or "0.0.0.0"
        return f"ip-{ip.replace('.', '-')}.{self.region}.compute.internal"

    def user_data(self, inst: Instance) -> bytes | None:
        if not inst.user_data:
            return None
        try:
            return base64.b64decode(inst.user_data)
        except (binascii.Error, ValueError):   # validated at launch; an old row must not crash us
            return None

    def public_key(self, inst: Instance) -> tuple[str, str] | None:
        """(name, OpenSSH line) of the launch key pair, if it still exists (not kept per instance)."""
        if not inst.key_name:
            return None
        kp = self.keypairs.by_name(inst.owner, inst.key_name)
        if kp is None:
            return None
        return kp.name, f"{kp.public_key.strip()} {kp.name}"

    def identity_document(self, inst: Instance) -> dict[str, Any]:
        image = self.images.table.get(inst.image_id)
        return {
            "accountId": inst.owner,
            "architecture": image.architecture if image else "x86_64",
            "availabilityZone": inst.zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": inst.image_id,
            "instanceId": inst.id,
            "instanceType": inst.instance_type,
            "kernelId": None,
            "pendingTime": datetime.fromtimestamp(inst.launch_time, tz=timezone.utc),
            "privateIp": inst.private_ip,
            "ramdiskId": None,
            "region": self.region,
            "version": IDENTITY_VERSION,
        }

    def meta_data(self, inst: Instance) -> Dir:
        host = self.hostname(inst)
        md: dict[str, Node] = {
            "ami-id": inst.image_id,
            "ami-launch-index": str(inst.launch_index),
            "ami-manifest-path": "(unknown)",
            "block-device-mapping": self.block_device_mapping(inst),
            "hostname": host,
            "instance-action": "none",
            "instance-id": inst.id,
            "instance-type": inst.instance_type,
            "local-hostname": host,
            "local-ipv4": inst.private_ip or "",
            "mac": inst.mac or "",
            "placement": Dir({"availability-zone": inst.zone, "region": self.region}),
            "reservation-id": inst.reservation_id,
            "security-groups": "",
            "services": Dir({"domain": self.services_domain, "partition": "aws"}),
        }
        # "public-ipv4"/"public-hostname" only while an elastic IP is associated (absent = 404, as EC2)
        eip = self.addresses.of_instance(inst.id)
        if eip is not None:
            md["public-ipv4"] = eip.public_ip
            md["public-hostname"] = public_dns(eip.public_ip, self.region)
        key = self.public_key(inst)
        if key is not None:
            md["public-keys"] = Dir({"0": Dir({"openssh-key": key[1]})}, labels={"0": f"0={key[0]}"})
        if inst.mac and inst.private_ip:
            subnet = self.network.of(inst)
            nic: dict[str, Node] = {
                "device-number": "0",
                "local-hostname": host,
                "local-ipv4s": inst.private_ip,
                "mac": inst.mac,
                "vpc-id": self.network.vpc_id,
                "vpc-ipv4-cidr-block": str(self.network.vpc_cidr),
                "interface-id": interface_id(inst.id),
            }
            if subnet is not None:
                nic["subnet-ipv4-cidr-block"] = str(subnet.net)
                nic["subnet-id"] = subnet.id
            if eip is not None:
                nic["public-ipv4s"] = eip.public_ip
                nic["ipv4-associations"] = Dir({eip.public_ip: inst.private_ip})
            md["network"] = Dir({"interfaces": Dir({"macs": Dir({inst.mac: Dir(nic)})})})
        return Dir(md)

    def block_device_mapping(self, inst: Instance) -> Dir:
        """EC2's answer: `ami` the root device without /dev/, `root` with it, `ephemeralN` the
        instance-store devices without /dev/ (`sdb`, which the virtio guest sees as /dev/vdb)."""
        root = inst.root_device or ROOT_DEVICE_NAME
        out: dict[str, Node] = {"ami": root.removeprefix("/dev/")}
        for name, device in ephemeral_disks(inst, self.types.get(inst.instance_type)):
            out[name] = device.removeprefix("/dev/")
        out["root"] = root
        return Dir(out)

    def tree(self, inst: Instance) -> Dir:
        """Everything under one version prefix (`/latest/...`)."""
        top: dict[str, Node] = {
            "dynamic": Dir({"instance-identity": Dir({"document": self.identity_document(inst)})}),
            "meta-data": self.meta_data(inst),
        }
        ud = self.user_data(inst)
        if ud is not None:
            top["user-data"] = ud
        return Dir(top)

    # -- IMDSv2 session tokens -----------------------------------------------------------------
    def mint_token(self, inst: Instance, ttl: int, now: float | None = None) -> str:
        """A token for `inst` valid `ttl` seconds; the caller has checked the TTL range."""
        expiry = int((time.time() if now is None else now) + ttl)
        mac = self._mac(inst.id, expiry)
        return base64.urlsafe_b64encode(expiry.to_bytes(8, "big") + mac).decode().rstrip("=")

    def token_valid(self, token: str, inst: Instance, now: float | None = None) -> bool:
        """True only for an unexpired token minted by this process for this very instance."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 8 + 32:
            return False
        expiry = int.from_bytes(raw[:8], "big")
        if not hmac.compare_digest(raw[8:], self._mac(inst.id, expiry)):
            return False
        return (time.time() if now is None else now) < expiry

    def _mac(self, instance_id: str, expiry: int) -> bytes:
        return hmac.new(self._secret, f"{instance_id}\x1f{expiry}".encode(), hashlib.sha256).digest()


def token_ttl(value: str | None) -> int | None:
    """The requested token lifetime if it is a whole number of seconds in EC2's range, else None."""
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    ttl = int(value)
    return ttl if TOKEN_TTL_MIN <= ttl <= TOKEN_TTL_MAX else None
