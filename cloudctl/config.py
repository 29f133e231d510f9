"""The controller's configuration: one YAML file validated by pydantic.

A bad file stops start-up with one line naming the key and the problem, because an admin
reading a traceback to find a typo in a YAML file is the experience we want to avoid.
"""
from __future__ import annotations

import bisect
import ipaddress
import os
import shutil
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import yaml_child
from .drivers.hypervisor.registry import driver_problem

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "cloudctl.yaml"


class ConfigError(Exception):
    """A configuration problem, already phrased as one line for the admin."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    # A client that sends nothing, or stops halfway through a request's headers or body, is
    # disconnected after this (see api/listener.py).
    client_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Open connections at a time; past it a new one gets 503 at once and is closed unread.
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1000


class Tls(_Strict):
    """TLS on a listener (api/tls.py): its certificate and key, and how client certificates are asked for.

    `client_ca`: a PEM file or a directory of PEM files (IGTF style: `*.0` certificates, `*.r0`
    CRLs) whose certificates are the CAs client certificates must chain to; any CRL found there,
    or in `crl` (a file or directory), is checked for the client's certificate (OpenSSL's
    leaf check: with CRLs, every CA that issues clients needs a current one). `client_cert`:
    `optional` (the default with a `client_ca`) asks for a certificate and refuses the
    handshake if one is given that does not verify; `required` refuses a client without one."""

    cert: Path                  # PEM: the server certificate, then any intermediates
    key: Path                   # PEM, unencrypted (readable only by cloudctl)
    client_ca: Path | None = None
    crl: Path | None = None
    client_cert: Literal["none", "optional", "required"] | None = None   # default: optional with client_ca

    @model_validator(mode="after")
    def _client(self) -> "Tls":
        if self.client_cert in ("optional", "required") and self.client_ca is None:
            raise ValueError(f"client_cert: {self.client_cert} needs client_ca (the CAs clients' certificates "
                             "chain to)")
        if self.crl is not None and self.client_ca is None:
            raise ValueError("crl needs client_ca (CRLs are checked for client certificates)")
        return self

    @property
    def verify_clients(self) -> str:
        return self.client_cert or ("optional" if self.client_ca is not None else "none")


class TlsListen(Listen):
    # This listener's TLS; none: the top-level `tls` (shared by the EC2, admin, XML-RPC and
    # marketplace listeners) if given, else plain HTTP. `false`: plain HTTP whatever `tls` says.
    tls: Tls | Literal[False] | None = None


class X509Login(_Strict):
    """Client certificates verified by a TLS proxy in front of cloudctl (econe's set-up): the
    proxy passes the certificate or its subject in a header, believed only from these addresses."""

    trusted_proxies: list[str] = []          # addresses or CIDRs of the proxies
    cert_header: str = "X-SSL-Client-Cert"   # PEM, URL-escaped as nginx's $ssl_client_escaped_cert
    dn_header: str = "SSL_CLIENT_S_DN"       # the subject: RFC 2253 or OpenSSL's /C=../CN=.. form

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as e:
                raise ValueError(f"trusted_proxies: {e}") from None
        return v


class Ec2Listen(TlsListen):
    # A large answer (DescribeInstances over many instances) is written in slices of this many
    # list elements, one slice per turn of the event loop and one answer's slice at a time, so
    # it never holds the loop for long. 0: each answer in one go (for comparison in bench/).
    answer_slice_items: Annotated[int, Field(ge=0)] = 20
    # An identical signed request repeated within this many seconds is an honest client's
    # retry (clients sign with a one-second clock, so keep it >= 1); later, it is a replay.
    replay_grace_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    # The EC2 endpoint as clients reach it (econe's :ssl_server:), e.g. https://cloud.example.org
    # behind a TLS proxy: what DescribeRegions answers and CloudFormation's signal URLs start with.
    # Default: http(s)://listen:port, https when this listener serves TLS itself.
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _public_url(v)


def _public_url(v: str | None) -> str | None:
    if v is not None and (not v.startswith(("http://", "https://")) or "?" in v or "#" in v
                          or not v.split("://", 1)[1].strip("/")):
        raise ValueError(f"public_url {v!r} must be an http:// or https:// URL (scheme, host, optional port "
                         "and path; no query)")
    return v.rstrip("/") if v is not None else None


class AdminListen(TlsListen):
    # An image upload (PUT /v0/images) is streamed to disk and may be this large; every other
    # admin body is JSON and capped at 64 KiB (api/admin.py).
    max_image_gib: Annotated[float, Field(gt=0)] = 100


class MetadataListen(Listen):
    require_token: bool = False     # EC2's HttpTokens=required: IMDSv2 only


class Checkpoint(_Strict):
    interval_s: Annotated[float, Field(gt=0)] = 300
    max_journal_records: Annotated[int, Field(gt=0)] = 100_000


class Overcommit(_Strict):
    cpu: Annotated[float, Field(gt=0)] = 1.0
    memory: Annotated[float, Field(gt=0)] = 1.0


FailurePolicy = Literal["none", "restart"]


class FenceIpmi(_Strict):
    """Fence by the host's BMC: `chassis power off`, then `power status` must read off."""

    kind: Literal["ipmi"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 623
    user: str
    password: str
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0   # the whole fence: off and confirmed


class FenceCommand(_Strict):
    """Fence by a program (a PDU or cloud API script): run as `argv... HOST`, never through a
    shell; exit status 0 is its word that the host is off."""

    kind: Literal["command"]
    argv: Annotated[list[str], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0


FenceAgent = Annotated[FenceIpmi | FenceCommand, Field(discriminator="kind")]


class Host(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    uri: str
    zone: str
    node_xml: Path | None = None
    cpu_overcommit: Annotated[float, Field(gt=0)] | None = None
    memory_overcommit: Annotated[float, Field(gt=0)] | None = None
    # The host sees the instance and volume stores at the controller's paths (NFS, a cluster
    # file system): only then can its instances boot elsewhere, or others boot here, after a failure.
    shared_storage: bool = False
    failure_policy: FailurePolicy | None = None   # default: monitor.failure_policy
    fence: FenceAgent | None = None               # powers the host off before its instances move
    driver: str | None = None                     # drivers/hypervisor/registry.py; None: by URI scheme
    # GiB of the host's disk for instance-store (ephemeral) disks; a host whose free part cannot
    # hold an instance's ephemeral disks is not chosen for it. None: not limited.
    disk_gib: Annotated[int, Field(ge=0)] | None = None

    @property
    def libvirt_uri(self) -> str:
        """The test driver takes its node description as an absolute path in the URI."""
        if self.node_xml is not None:
            return "test://" + str(self.node_xml)
        return self.uri


class Monitor(_Strict):
    interval_s: Annotated[float, Field(gt=0)] = 10.0   # per host, jittered by ±10 %
    grace_s: Annotated[float, Field(ge=0)] = 30.0      # failing this long turns a host to `error`
    timeout_s: Annotated[float, Field(gt=0)] = 30.0    # one poll taking longer counts as a failure
    # What happens to the running instances of a host in `error`: "none" (they wait for it), or
    # "restart" on another shared-storage host of the zone once the host is fenced (by its fence
    # agent, or the admin's `host fence`). The default for hosts and instance types that set none.
    failure_policy: FailurePolicy = "none"
    fence_retry_s: Annotated[float, Field(gt=0)] = 10.0       # after a failed fence; doubled per failure
    fence_retry_max_s: Annotated[float, Field(gt=0)] = 300.0


class InstanceType(_Strict):
    vcpus: Annotated[int, Field(ge=1, le=1024)]
    memory_mib: Annotated[int, Field(ge=16)]
    disk_gib: Annotated[int, Field(ge=1)] = 8
    # Instance-store (ephemeral) disks: each instance gets `ephemeral0` of this many GiB (0: the
    # type has none), and may ask for ephemeral1.. up to `ephemeral_disks` in all.
    ephemeral_gib: Annotated[int, Field(ge=0, le=16384)] = 0
    ephemeral_disks: Annotated[int, Field(ge=1, le=24)] = 1
    template: Path | None = None
    failure_policy: FailurePolicy | None = None   # overrides the host's and the global one


class NetworkConfig(_Strict):
    """One virtual network: a subnet of the default VPC in one zone (as econe's virtual networks)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    zone: str
    cidr: str
    gateway: str | None = None          # default: the subnet's first address
    dns: list[str] = []
    first: str | None = None            # lease range; default: .4 up to the last-but-one address
    last: str | None = None
    bridge: str | None = None           # host bridge the guests' NICs join; none: qemu user-mode NIC
    bridge_type: Literal["linux", "openvswitch"] = "linux"
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None   # OVS access tag
    ovs_db: str | None = None           # ovs-vsctl's --db (default: the system's OVS database)
    default: bool = False               # the zone's default subnet (else the zone's first network)
    # Instances launched here get a public address from the elastic-IP pool (econe-style), held until
    # they terminate, unless the launch's network interface says AssociatePublicIpAddress=false.
    map_public_ip_on_launch: bool = False

    @model_validator(mode="after")
    def _addresses(self) -> "NetworkConfig":
        try:
            net = ipaddress.IPv4Network(self.cidr)
        except ValueError as e:
            raise ValueError(f"cidr: {e}") from None
        if net.prefixlen > 28:
            raise ValueError("cidr must be /28 or larger")
        for d in self.dns:
            try:
                ipaddress.IPv4Address(d)
            except ValueError as e:
                raise ValueError(f"dns: {e}") from None
        for what in ("gateway", "first", "last"):
            v = getattr(self, what)
            if v is None:
                continue
            try:
                ip = ipaddress.IPv4Address(v)
            except ValueError as e:
                raise ValueError(f"{what}: {e}") from None
            if ip not in net:
                raise ValueError(f"{what} {ip} is outside {net}")
        if self.first and self.last and ipaddress.IPv4Address(self.first) > ipaddress.IPv4Address(self.last):
            raise ValueError("first must not be above last")
        if self.vlan is not None and self.bridge_type != "openvswitch":
            raise ValueError("vlan needs bridge_type: openvswitch (this cloud tags VLANs on OVS ports)")
        if self.ovs_db is not None and self.bridge_type != "openvswitch":
            raise ValueError("ovs_db needs bridge_type: openvswitch")
        if self.bridge_type == "openvswitch" and not self.bridge:
            raise ValueError("bridge_type openvswitch needs the OVS bridge's name in bridge")
        return self


class Limits(_Strict):
    """Per-user quotas (EC2's limit errors when exceeded; none: unlimited, as OpenNebula's
    default quotas). Instances and vCPUs count every instance that is not terminated."""

    instances: Annotated[int, Field(ge=0)] | None = None
    vcpus: Annotated[int, Field(ge=0)] | None = None
    volumes: Annotated[int, Field(ge=0)] | None = None
    volume_gib: Annotated[int, Field(ge=0)] | None = None
    key_pairs: Annotated[int, Field(ge=0)] | None = None


class AutoScaling(_Strict):
    """The AutoScaling reconciler: how often every group is checked (changes through the API and
    instance events wake it at once), and the backoff after a failed launch (doubled per failure)."""

    tick_s: Annotated[float, Field(gt=0)] = 10.0
    backoff_s: Annotated[float, Field(gt=0)] = 10.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0
    max_groups: Annotated[int, Field(ge=0)] = 200                 # per account (DescribeAccountLimits)
    max_launch_configurations: Annotated[int, Field(ge=0)] = 200


class SeedImage(_Strict):
    name: str
    file: Path
    description: str = ""


def parse_vlan_ranges(text: str) -> list[int]:
    """`"100-199,250"` → the VLAN ids, each in 1..4094."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not (lo + hi).isascii() or not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"VLAN range {part.strip()!r} must look like 100-199 or 250")
        a, b = int(lo), int(hi or lo)
        if not 1 <= a <= b <= 4094:
            raise ValueError(f"VLAN range {part.strip()!r} must lie within 1-4094, low end first")
        out.update(range(a, b + 1))
    return sorted(out)


class FinishedOperations(_Strict):
    """How long finished (done/error) switch operations stay queryable at GET /hil/v0/networking_action/<id>.

    Pending operations are always kept, and so is the newest operation of each port (what a
    client polling after its connect or detach waits for)."""
    max_count: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    max_age_days: Annotated[float, Field(gt=0, le=3650)] = 30


class Baremetal(_Strict):
    """Bare-metal nodes isolated by switch VLANs (the HIL API on the admin endpoint)."""
    auth: Literal["database", "null"] = "database"   # null: every caller is admin (tests only)
    vlans: str = "1000-1999"     # the pool networks get their VLAN from
    attempts: Annotated[int, Field(ge=1, le=20)] = 4      # per operation, on connection errors
    backoff_s: Annotated[float, Field(gt=0)] = 0.5        # doubled per attempt
    command_timeout_s: Annotated[float, Field(gt=0)] = 30    # a BMC's (ipmitool) commands
    # A switch's answer to one command (or its login prompt): past it the operation fails saying
    # what was expected and what came, rather than waiting on a switch that will not answer.
    switch_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5
    audit_on_start: Literal["off", "report", "repair"] = "report"
    # Headnodes (a project's VMs on its networks): their NICs join this Open vSwitch bridge,
    # trunked to the switches, with the network's VLAN as the access tag.
    headnode_bridge: str | None = None
    headnode_ovs_db: str | None = None           # ovs-vsctl's --db (default: the system's)
    finished_operations: FinishedOperations = FinishedOperations()
    # Where HIL's REST API is mounted on the admin endpoint: HIL's `/v0/...` paths follow it.
    hil_base: Annotated[str, Field(pattern=r"^/[a-z0-9][a-z0-9_-]{0,31}$")] = "/hil"
    console_log_bytes: Annotated[int, Field(ge=4096)] = 1 << 20   # per node: its last 0.5-1 MiB of output
    console_check_s: Annotated[float, Field(gt=0)] = 15.0    # how often the BMC is asked if SOL is still up
    console_backoff_s: Annotated[float, Field(gt=0)] = 1.0   # before reopening a lost session, doubled...
    console_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0   # ...up to this

    @field_validator("vlans")
    @classmethod
    def _vlans(cls, v: str) -> str:
        parse_vlan_ranges(v)
        return v

    @field_validator("hil_base")
    @classmethod
    def _hil_base(cls, v: str) -> str:
        if v == "/v0":
            raise ValueError("must not be /v0: the admin endpoint's own calls are there")
        return v

class LoginThrottle(_Strict):
    """Backoff after failed logins on the bare-metal API (HTTP Basic), XML-RPC sessions and EC2
    signatures, each API counted apart (see cloudctl/core/throttle.py for the policy)."""
    pair_free_failures: Annotated[int, Field(ge=1)] = 10     # per (user, address); then refused
    source_free_failures: Annotated[int, Field(ge=1)] = 50   # per address, any user; then refused
    name_free_failures: Annotated[int, Field(ge=1)] = 20     # per user, any address; then delayed, never refused
    backoff_s: Annotated[float, Field(gt=0)] = 1.0           # the first backoff, doubled per further failure...
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0     # ...up to this
    name_delay_max_s: Annotated[float, Field(ge=0, le=60)] = 2.0   # the longest delay for a user under attack
    refusal_pace_s: Annotated[float, Field(ge=0, le=10)] = 1.0   # refusals answered after this (or the backoff left)
    forget_s: Annotated[float, Field(gt=0)] = 900.0          # a key's failures forgotten after this long without one
    max_tracked: Annotated[int, Field(ge=100)] = 10_000      # keys per API and kind; least recently seen dropped first
    password_workers: Annotated[int, Field(ge=1, le=16)] = 1   # threads hashing passwords (scrypt), apart from others
    password_queue: Annotated[int, Field(ge=0)] = 16         # checks waiting for them; past this: "try later" (503)

    @model_validator(mode="after")
    def _order(self) -> "LoginThrottle":
        if self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_max_s must be at least backoff_s")
        if self.forget_s < self.backoff_max_s:
            raise ValueError("forget_s must be at least backoff_max_s")
        return self


class ElasticIps(_Strict):
    """Public addresses users allocate and associate with instances (econe's Elastic IPs).

    `pool` entries are a CIDR (its network and broadcast addresses left out below /31), one
    address, or a range `first-last`. The scripts do the host's NAT: on associate
    `associate_script ELASTIC_IP PRIVATE_IP NETWORK_TEMPLATE_BASE64`, on disassociate
    `disassociate_script ELASTIC_IP`; without them association is bookkeeping only.
    """

    pool: list[str] = []
    associate_script: Path | None = None
    disassociate_script: Path | None = None
    script_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_addresses_per_user: Annotated[int, Field(ge=0)] = 5     # AWS's default quota

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: list[str]) -> list[str]:
        seen: set[int] = set()
        for entry in v:
            addrs = pool_entry(entry)
            dup = seen.intersection(addrs)
            if dup:
                raise ValueError(f"pool entry {entry!r} repeats {ipaddress.IPv4Address(min(dup))}")
            seen.update(addrs)
            if len(seen) > MAX_POOL:
                raise ValueError(f"the pool holds more than {MAX_POOL} addresses")
        return v

    def addresses(self) -> AddressPool:
        """Every pool address, in order."""
        return AddressPool(pool_entry(e) for e in self.pool)


MAX_POOL = 65536


class AddressPool(Sequence[str]):
    """The public pool as sorted integer ranges, read as a sequence of dotted addresses. A list of
    strings and a set of them cost ~100 B per address: 6 MiB for a pool of MAX_POOL, held for the
    controller's life whether or not the addresses are ever used; ranges cost nothing per address."""

    __slots__ = ("_ranges", "_starts", "_offsets", "_len")

    def __init__(self, ranges: Iterable[range]) -> None:
        self._ranges = tuple(sorted((r for r in ranges if len(r)), key=lambda r: r.start))
        self._starts = [r.start for r in self._ranges]
        offs, n = [], 0
        for r in self._ranges:
            offs.append(n)
            n += len(r)
        self._offsets, self._len = offs, n

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("pool index out of range")
        k = bisect.bisect_right(self._offsets, i) - 1
        return socket.inet_ntoa((self._ranges[k].start + i - self._offsets[k]).to_bytes(4, "big"))

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        try:
            packed = socket.inet_aton(ip)
        except OSError:
            return False
        if socket.inet_ntoa(packed) != ip:   # inet_aton also takes "10.1", "010.0.0.1", "0x0a.1.2.3"
            return False
        n = int.from_bytes(packed, "big")
        k = bisect.bisect_right(self._starts, n) - 1
        return k >= 0 and n in self._ranges[k]


def pool_entry(entry: str) -> range:
    """The addresses (as integers) one pool entry names; ValueError with a readable message."""
    try:
        if "/" in entry:
            net = ipaddress.IPv4Network(entry.strip(), strict=True)
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if net.prefixlen < 31:
                lo, hi = lo + 1, hi - 1
        elif "-" in entry:
            a, _, b = entry.partition("-")
            lo, hi = int(ipaddress.IPv4Address(a.strip())), int(ipaddress.IPv4Address(b.strip()))
            if hi < lo:
                raise ValueError(f"pool range {entry!r} ends before it starts")
        else:
            lo = hi = int(ipaddress.IPv4Address(entry.strip()))
    except ipaddress.AddressValueError as e:
        raise ValueError(f"pool entry {entry!r}: {e}") from None
    except ipaddress.NetmaskValueError as e:
        raise ValueError(f"pool entry {entry!r}: {e}") from None
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith("pool") else f"pool entry {entry!r}: {msg}") from None
    if hi - lo + 1 > MAX_POOL:
        raise ValueError(f"pool entry {entry!r} holds more than {MAX_POOL} addresses")
    return range(lo, hi + 1)


class Publish(_Strict):
    """This cloud as an endorser: the list it signs and serves on the marketplace listener."""

    cert: Path                   # the endorser's certificate (PEM); its DN and issuer become hv:dn/hv:ca
    key: Path                    # its private key (PEM, unencrypted, readable only by cloudctl)
    list_id: str | None = None   # dc:identifier; default derived from the certificate's subject
    title: str = "cloudctl images"
    description: str = "Images endorsed by this cloudctl"
    creator: str = ""            # dc:creator of the endorser
    email: str = ""
    validity_days: Annotated[float, Field(gt=0)] = 28
    resign_before_days: Annotated[float, Field(gt=0)] = 7


class Marketplace(TlsListen):
    """The public, read-only marketplace listener (subscribers hold no admin token)."""

    # How subscribers reach this listener; default http(s)://listen:port (https when it serves TLS).
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _public_url(v)
    publish: Publish | None = None
    poll_tick_s: Annotated[float, Field(gt=0)] = 5.0     # how often due subscriptions are looked at
    download_retries: Annotated[int, Field(ge=1)] = 5   # per image and list version, as vmcatcher


class Elb(_Strict):
    """Classic Elastic Load Balancing: one proxy (HAProxy) per load balancer.

    A load balancer whose subnet has a `bridge` takes a lease from that subnet and its proxy runs
    in a network namespace on the bridge; on subnets without a bridge (`test:///` clouds) it
    listens on an address of `loopback_pool` in the controller's own namespace instead. Give each
    controller on one machine its own pool (tests pick a random 127.x.y.0/24)."""

    haproxy: Path = Path("/usr/sbin/haproxy")
    run_dir: Path | None = None          # the proxies' configs, sockets, pid files; default state_dir/elb
    loopback_pool: str = "127.77.0.0/24"   # addresses for proxies on subnets without a bridge
    refresh_s: Annotated[float, Field(gt=0, le=3600)] = 2.0   # health/stats read and proxies checked this often
    stats_page: bool = False             # serve each proxy's HAProxy statistics page (admin only: see docs)
    max_load_balancers_per_user: Annotated[int, Field(ge=0)] = 20   # AWS's default quota
    # Stop and remove every proxy when the controller stops (tests); by default they keep serving
    # through a controller restart, as guests keep running, and are adopted again at start.
    remove_proxies_on_stop: bool = False

    @field_validator("loopback_pool")
    @classmethod
    def _loopback(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"not an IPv4 network: {e}") from None
        if not net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) or net.prefixlen > 30:
            raise ValueError(f"{v} must be a network of /30 or larger inside 127.0.0.0/8")
        return v


class Console(_Strict):
    """The web console under /console on the admin listener (docs/console.md); off unless enabled."""
    enabled: bool = False
    session_idle_s: Annotated[float, Field(gt=0)] = 1800       # a session unused this long is ended
    session_max_s: Annotated[float, Field(gt=0)] = 12 * 3600   # ...and any session after this long
    max_sessions: Annotated[int, Field(ge=1)] = 10_000          # the oldest are ended beyond this
    page_size: Annotated[int, Field(ge=5, le=1000)] = 50        # rows per page of instance lists


class Config(_Strict):
    region: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    state_dir: Path
    image_store: Path
    cache_dir: Path | None = None    # derived files (the trimmed EC2 model); default state_dir/cache
    volume_store: Path | None = None  # volume files, snapshots under snapshots/; default state_dir/volumes
    # The key sealing the switch and BMC passwords in the journal and checkpoints; default
    # <state_dir>.secrets.key beside the state directory, so a copy of that directory is not enough.
    secrets_key_file: Path | None = None
    ec2: Ec2Listen = Ec2Listen(port=4567)
    admin: AdminListen = AdminListen(port=4568)
    metadata: MetadataListen | None = None   # the instance metadata service; off when absent
    xmlrpc: TlsListen | None = None  # OpenNebula-style XML-RPC (/RPC2, usually port 2633); off when absent
    tls: Tls | None = None           # shared by the EC2, admin, XML-RPC and marketplace listeners
    x509: X509Login = X509Login()    # client certificates from a TLS proxy (api/client_certs.py)
    # HIL's API also at the root of a port of its own (`/v0/...`, as HIL serves it): HIL's own
    # client joins `/v0/...` to its endpoint's host and drops any base path; off when absent
    hil: Listen | None = None
    monitor: Monitor = Monitor()
    terminated_visible_s: Annotated[float, Field(ge=0)] = 3600
    checkpoint: Checkpoint = Checkpoint()
    overcommit: Overcommit = Overcommit()
    subnets: dict[str, str] = {}          # shorthand: zone -> CIDR, one plain network per zone
    vpc_cidr: str = "10.128.0.0/9"      # the default VPC; every network's CIDR lies inside it
    networks: list[NetworkConfig] = []
    hosts: Annotated[list[Host], Field(min_length=1)]
    domain_template: Path
    instance_types: Annotated[dict[str, InstanceType], Field(min_length=1)]
    images: list[SeedImage] = []
    stop_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    instance_dir: Path | None = None     # per-instance disks, config drives, console logs
    kernel_cmdline: str = "console=ttyS0 panic=-1"   # for images booted from a kernel image
    limits: Limits = Limits()
    autoscaling: AutoScaling = AutoScaling()
    user_image_urls: bool = False   # may users RegisterImage from an http(s) URL the controller fetches?
    user_image_urls_local: bool = False   # ...even at loopback/link-local addresses? (labs and tests only)
    baremetal: Baremetal = Baremetal()
    marketplace: Marketplace | None = None   # publish/subscribe signed image lists; off when absent
    elastic_ips: ElasticIps = ElasticIps()
    login_throttle: LoginThrottle = LoginThrottle()
    elb: Elb = Elb()                 # classic Elastic Load Balancing (HAProxy per load balancer)
    console: Console = Console()     # the web console on the admin listener; off unless enabled
    # Users whose EC2 requests get the administrator's views (Eucalyptus's `verbose` zone listing).
    admin_users: list[str] = []

    @field_validator("instance_types")
    @classmethod
    def _type_names(cls, v: dict[str, InstanceType]) -> dict[str, InstanceType]:
        for name in v:
            # AWS-style `family.size` names: Terraform parses them into family and size.
            if "." not in name or not name.replace(".", "").replace("-", "").isalnum():
                raise ValueError(f"instance type name {name!r} must look like 'family.size' (e.g. m1.small)")
        return v

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, v: dict[str, str]) -> dict[str, str]:
        for zone, cidr in v.items():
            try:
                net = ipaddress.ip_network(cidr)
            except ValueError as e:
                raise ValueError(f"subnet for zone {zone!r}: {e}") from None
            if net.version != 4 or net.prefixlen > 28:
                raise ValueError(f"subnet for zone {zone!r} must be an IPv4 network of /28 or larger")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Config":
        names = [h.name for h in self.hosts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"host names must be unique, repeated: {', '.join(sorted(dup))}")
        self._failure_policies()
        for zone in self.subnets:
            if zone not in self.zones:
                raise ValueError(f"subnets names zone {zone!r}, which no host is in")
        if self.subnets and self.networks:
            raise ValueError("networks: give either networks or the subnets shorthand, not both")
        try:
            vpc = ipaddress.IPv4Network(self.vpc_cidr)
        except ValueError as e:
            raise ValueError(f"vpc_cidr: {e}") from None
        seen: list[tuple[str, ipaddress.IPv4Network]] = []
        for n in self.networks:
            if n.zone not in self.zones:
                raise ValueError(f"networks: {n.name!r} is in zone {n.zone!r}, which no host is in")
            net = ipaddress.IPv4Network(n.cidr)
            if not net.subnet_of(vpc):
                raise ValueError(f"networks: {n.name!r} ({net}) is outside vpc_cidr {vpc}")
            for other, onet in seen:
                if other == n.name:
                    raise ValueError(f"networks: names must be unique, repeated: {n.name}")
                if net.overlaps(onet):
                    raise ValueError(f"networks: {other!r} and {n.name!r} overlap")
            seen.append((n.name, net))
        pool = set(parse_vlan_ranges(self.baremetal.vlans))
        for n in self.networks:
            if n.vlan is not None and n.vlan in pool:
                raise ValueError(f"networks: {n.name!r} uses VLAN {n.vlan}, which is in baremetal.vlans "
                                 f"(the bare-metal pool): the two would share a VLAN")
        if self.networks:
            bare = [z for z in self.zones if not any(n.zone == z for n in self.networks)]
            if bare:
                raise ValueError(f"networks: zone {bare[0]!r} has hosts but no network")
        for entry in self.elastic_ips.pool:
            r = pool_entry(entry)
            for n in self.network_list():
                net = ipaddress.IPv4Network(n.cidr)
                if int(net.network_address) <= r[-1] and r[0] <= int(net.broadcast_address):
                    raise ValueError(f"elastic_ips.pool entry {entry!r} overlaps network {n.name!r} ({net})")
        lb_pool = ipaddress.IPv4Network(self.elb.loopback_pool)
        for n in self.network_list():
            if lb_pool.overlaps(ipaddress.IPv4Network(n.cidr)):
                raise ValueError(f"elb.loopback_pool {lb_pool} overlaps network {n.name!r} ({n.cidr})")
        return self

    def tls_of(self, name: str) -> Tls | None:
        """The TLS a listener (ec2, admin, xmlrpc, marketplace) serves: its own, else the shared one."""
        cfg = getattr(self, name)
        own = getattr(cfg, "tls", False) if cfg is not None else False
        if own is False:
            return None
        return own if own is not None else self.tls

    def public_url(self, name: str) -> str:
        """How clients reach a listener: its `public_url`, else http(s)://listen:port."""
        cfg = getattr(self, name)
        given: str | None = getattr(cfg, "public_url", None)
        if given:
            return given
        scheme = "https" if self.tls_of(name) is not None else "http"
        return f"{scheme}://{cfg.listen}:{cfg.port}"

    def _failure_policies(self) -> None:
        """Refuse a `restart` policy that could never restart anything."""
        def peers(h: Host) -> bool:
            return any(o.zone == h.zone and o.name != h.name and o.shared_storage for o in self.hosts)
        for h in self.hosts:
            if h.failure_policy != "restart":
                continue
            if not h.shared_storage:
                raise ValueError(f"hosts: {h.name!r} has failure_policy restart but not shared_storage: "
                                 f"its instances' disks cannot be reached from another host")
            if not peers(h):
                raise ValueError(f"hosts: {h.name!r} has failure_policy restart but no other host of zone "
                                 f"{h.zone!r} has shared_storage to restart its instances on")
        wanted = [f"instance_types.{n}" for n, t in self.instance_types.items() if t.failure_policy == "restart"]
        if self.monitor.failure_policy == "restart":
            wanted.append("monitor")
        if wanted and not any(h.shared_storage and peers(h) for h in self.hosts):
            raise ValueError(f"{wanted[0]}: failure_policy restart, but no host could ever restart an "
                             f"instance (that needs two hosts of a zone with shared_storage)")

    def failure_policy(self, host: Host, type_name: str) -> str:
        """The effective policy of an instance of `type_name` on `host`: the instance type's if set,
        else the host's, else the global one; always `none` on a host without shared storage."""
        if not host.shared_storage:
            return "none"
        t = self.instance_types.get(type_name)
        return (t.failure_policy if t is not None and t.failure_policy else None) \
            or host.failure_policy or self.monitor.failure_policy

    def network_list(self) -> list[NetworkConfig]:
        """The configured networks, or one plain network per zone from the shorthand/defaults."""
        if self.networks:
            return list(self.networks)
        vpc = ipaddress.IPv4Network(self.vpc_cidr)
        out = []
        for i, zone in enumerate(self.zones):
            cidr = self.subnets.get(zone) or str(list(vpc.subnets(new_prefix=max(vpc.prefixlen, 16)))[i])
            out.append(NetworkConfig(name=f"{zone}-default", zone=zone, cidr=cidr))
        return out

    @property
    def zones(self) -> list[str]:
        seen: dict[str, None] = {}
        for h in self.hosts:
            seen.setdefault(h.zone, None)
        return list(seen)

    def template_for(self, type_name: str) -> Path:
        return self.instance_types[type_name].template or self.domain_template


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def _resolve(base: Path, p: Path) -> Path:
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (base / p).resolve()


def default_key_file(state_dir: Path) -> Path:
    """Beside the state directory, not in it: a backup or copy of the state directory alone then
    holds the sealed passwords without the key that opens them."""
    return state_dir.with_name(state_dir.name + ".secrets.key")


def load_config(path: Path | str | None = None) -> Config:
    """Read, validate and resolve a config file; raise ConfigError with one line on any problem."""
    path = Path(path or os.environ.get("CLOUDCTL_CONFIG") or DEFAULT_CONFIG).resolve()
    try:
        raw = yaml_child.safe_load(path.read_text())   # (PyYAML stays out of the controller's memory)
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read: {e.strerror}") from None
    except yaml_child.YamlError as e:
        where = f" line {e.line}" if e.line is not None else ""
        raise ConfigError(f"config {path}{where}: not valid YAML: {e.problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"config {path}: {_format_error(e)}") from None

    base = path.parent
    hosts = []
    for i, h in enumerate(cfg.hosts):
        node = _resolve(base, h.node_xml) if h.node_xml else None
        if node is not None and not node.is_file():
            raise ConfigError(f"config {path}: hosts.{i}.node_xml: no such file {node}")
        if node is None and h.uri.startswith("test:") and h.uri.rstrip("/") == "test:":
            raise ConfigError(f"config {path}: hosts.{i}: a test:/// host needs node_xml")
        if h.driver is not None and (why := driver_problem(h.driver, h.uri)):
            raise ConfigError(f"config {path}: hosts.{i}.driver: {why}")
        update: dict[str, object] = {"node_xml": node}
        if isinstance(h.fence, FenceCommand):
            prog = h.fence.argv[0]
            exe = _resolve(base, Path(prog)) if "/" in prog else shutil.which(prog)
            if exe is None or not Path(exe).is_file() or not os.access(exe, os.X_OK):
                raise ConfigError(f"config {path}: hosts.{i}.fence.argv: {prog} is not an executable file")
            update["fence"] = h.fence.model_copy(update={"argv": [str(exe), *h.fence.argv[1:]]})
        hosts.append(h.model_copy(update=update))
    types = {}
    for name, t in cfg.instance_types.items():
        tpl = _resolve(base, t.template) if t.template else None
        if tpl is not None and not tpl.is_file():
            raise ConfigError(f"config {path}: instance_types.{name}.template: no such file {tpl}")
        types[name] = t.model_copy(update={"template": tpl})
    template = _resolve(base, cfg.domain_template)
    if not template.is_file():
        raise ConfigError(f"config {path}: domain_template: no such file {template}")
    eips = cfg.elastic_ips
    scripts: dict[str, Path | None] = {}
    for key in ("associate_script", "disassociate_script"):
        p = getattr(eips, key)
        if p is not None:
            p = _resolve(base, p)
            if not p.is_file() or not os.access(p, os.X_OK):
                raise ConfigError(f"config {path}: elastic_ips.{key}: {p} is not an executable file")
        scripts[key] = p
    images = []
    for i, im in enumerate(cfg.images):
        f = _resolve(base, im.file)
        if not f.is_file():
            raise ConfigError(f"config {path}: images.{i}.file: no such file {f}")
        images.append(im.model_copy(update={"file": f}))
    market = cfg.marketplace
    if market is not None and market.publish is not None:
        pub = market.publish
        cert, key = _resolve(base, pub.cert), _resolve(base, pub.key)
        for what, f in (("cert", cert), ("key", key)):
            if not f.is_file():
                raise ConfigError(f"config {path}: marketplace.publish.{what}: no such file {f}")
        market = market.model_copy(update={"publish": pub.model_copy(update={"cert": cert, "key": key})})
    tls_update: dict[str, object] = {}
    if cfg.tls is not None:
        tls_update["tls"] = _tls_files(path, base, "tls", cfg.tls)
    for name in ("ec2", "admin", "xmlrpc", "marketplace"):
        lc = market if name == "marketplace" else getattr(cfg, name)
        if lc is not None and isinstance(lc.tls, Tls):
            lc = lc.model_copy(update={"tls": _tls_files(path, base, f"{name}.tls", lc.tls)})
            if name == "marketplace":
                market = lc
            else:
                tls_update[name] = lc
    return cfg.model_copy(update={
        **tls_update,
        "marketplace": market,
        "state_dir": _resolve(base, cfg.state_dir),
        "secrets_key_file": (_resolve(base, cfg.secrets_key_file) if cfg.secrets_key_file
                             else default_key_file(_resolve(base, cfg.state_dir))),
        "image_store": _resolve(base, cfg.image_store),
        "cache_dir": _resolve(base, cfg.cache_dir) if cfg.cache_dir else _resolve(base, cfg.state_dir) / "cache",
        "instance_dir": (_resolve(base, cfg.instance_dir) if cfg.instance_dir
                         else _resolve(base, cfg.state_dir) / "instances"),
        "volume_store": (_resolve(base, cfg.volume_store) if cfg.volume_store
                         else _resolve(base, cfg.state_dir) / "volumes"),
        "hosts": hosts,
        "instance_types": types,
        "domain_template": template,
        "images": images,
        "elastic_ips": eips.model_copy(update=scripts),
        "elb": cfg.elb.model_copy(update={"run_dir": (_resolve(base, cfg.elb.run_dir) if cfg.elb.run_dir
                                                      else _resolve(base, cfg.state_dir) / "elb")}),
    })


def _tls_files(path: Path, base: Path, where: str, tls: Tls) -> Tls:
    """A TLS section with its paths resolved; one line for a file (or CA/CRL directory) that is missing."""
    update: dict[str, object] = {}
    for key in ("cert", "key", "client_ca", "crl"):
        p = getattr(tls, key)
        if p is None:
            continue
        p = _resolve(base, p)
        if key in ("cert", "key") and not p.is_file():
            raise ConfigError(f"config {path}: {where}.{key}: no such file {p}")
        if not p.exists():
            raise ConfigError(f"config {path}: {where}.{key}: no such file or directory {p}")
        update[key] = p
    return tls.model_copy(update=update)


def with_overrides(cfg: Config, **changes: object) -> Config:
    """A copy with top-level fields replaced (tests and `serve --port` use it)."""
    return cfg.model_copy(update=changes)
