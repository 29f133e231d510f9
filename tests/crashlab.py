"""Crash trials: mixed concurrent load through boto3 and the admin API, a SIGKILL at a random
moment, then the state on disk is loaded as the next start would load it and checked.

Each operation records what was acknowledged; after the kill, every acknowledged change must be
on disk and nothing may be half-present. Operations are small classes in `OPS`, so a new kind
of resource joins the trials with one class.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloudctl.store import records
from cloudctl.store.store import Store


@dataclass
class Acked:
    """What the clients were told succeeded (and what they merely tried)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    instances: dict[str, tuple[str, list[str]]] = field(default_factory=dict)   # token -> (reservation, ids)
    tried_tokens: list[str] = field(default_factory=list)
    key_pairs: set[tuple[str, str]] = field(default_factory=set)                # (account, name)
    volumes: dict[str, str] = field(default_factory=dict)                       # volume id -> token
    tags: set[tuple[str, str, str]] = field(default_factory=set)                # (resource, key, value)
    terminated: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    rules: set[tuple[str, str]] = field(default_factory=set)                    # (group id, CIDR)
    addresses: dict[str, str | None] = field(default_factory=dict)              # allocation -> instance
    # An association displaces the instance's previous address: associations are made one at a
    # time, so what a client was told always names the instance's latest one.
    associating: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, value: Any) -> None:
        with self.lock:
            target = getattr(self, what)
            if isinstance(target, dict):
                target.update(value)
            else:
                target.add(value)

    def some_instance(self, rng: random.Random) -> str | None:
        with self.lock:
            ids = [i for _, ids in self.instances.values() for i in ids if i not in self.terminated]
        return rng.choice(ids) if ids else None


class Op:
    weight = 1

    def do(self, ctx: "Worker") -> None:
        raise NotImplementedError


class RunOp(Op):
    weight = 4

    def do(self, ctx: "Worker") -> None:
        token = f"{ctx.name}-{ctx.seq()}"
        with ctx.acked.lock:
            ctx.acked.tried_tokens.append(token)
        r = ctx.ec2.run_instances(ImageId=ctx.image, MinCount=1, MaxCount=2, InstanceType="t3.nano",
                                  ClientToken=token, TagSpecifications=[
                                      {"ResourceType": "instance", "Tags": [{"Key": "token", "Value": token}]}])
        ctx.acked.add("instances", {token: (r["ReservationId"], [i["InstanceId"] for i in r["Instances"]])})


class KeyPairOp(Op):
    def do(self, ctx: "Worker") -> None:
        name = f"{ctx.name}-kp-{ctx.seq()}"
        ctx.ec2.create_key_pair(KeyName=name)
        ctx.acked.add("key_pairs", (ctx.account, name))


class VolumeOp(Op):
    def do(self, ctx: "Worker") -> None:
        token = f"{ctx.name}-vol-{ctx.seq()}"
        v = ctx.ec2.create_volume(AvailabilityZone="cloudctl-1a", Size=1, ClientToken=token)
        ctx.acked.add("volumes", {v["VolumeId"]: token})


class TagOp(Op):
    weight = 2

    def do(self, ctx: "Worker") -> None:
        iid = ctx.acked.some_instance(ctx.rng)
        if iid is None:
            return
        key, value = f"k{ctx.seq()}", ctx.name
        ctx.ec2.create_tags(Resources=[iid], Tags=[{"Key": key, "Value": value}])
        ctx.acked.add("tags", (iid, key, value))


class TerminateOp(Op):
    def do(self, ctx: "Worker") -> None:
        iid = ctx.acked.some_instance(ctx.rng)
        if iid is None:
            return
        ctx.ec2.terminate_instances(InstanceIds=[iid])
        ctx.acked.add("terminated", iid)


class AdminUserOp(Op):
    def do(self, ctx: "Worker") -> None:
        name = f"{ctx.name}-user-{ctx.seq()}"
        ctx.server.create_user(name)
        ctx.acked.add("users", name)


class RuleOp(Op):
    """A security group with one ingress rule per call (a CIDR of its own)."""

    def do(self, ctx: "Worker") -> None:
        if ctx.group is None:
            ctx.group = ctx.ec2.create_security_group(GroupName=f"{ctx.name}-sg",
                                                      Description="crash trials")["GroupId"]
        cidr = f"10.{ctx.rng.randrange(256)}.{ctx.rng.randrange(256)}.0/24"
        ctx.ec2.authorize_security_group_ingress(GroupId=ctx.group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr}]}])
        ctx.acked.add("rules", (ctx.group, cidr))


class AddressOp(Op):
    """An Elastic IP, associated with one of the acknowledged instances when there is one."""

    def do(self, ctx: "Worker") -> None:
        alloc = ctx.ec2.allocate_address(Domain="vpc")["AllocationId"]
        ctx.acked.add("addresses", {alloc: None})
        iid = ctx.acked.some_instance(ctx.rng)
        if iid is not None:
            with ctx.acked.associating:
                with ctx.acked.lock:   # an instance holds one address: the one it had may go
                    for other, held in ctx.acked.addresses.items():
                        if held == iid:
                            ctx.acked.addresses[other] = None
                ctx.ec2.associate_address(AllocationId=alloc, InstanceId=iid)
                ctx.acked.add("addresses", {alloc: iid})


OPS: list[Op] = [RunOp(), KeyPairOp(), VolumeOp(), TagOp(), TerminateOp(), AdminUserOp(), RuleOp(), AddressOp()]


class Worker(threading.Thread):
    """One client: picks operations at random until stopped or the server is gone."""

    def __init__(self, name: str, server: Any, user: dict[str, str], image: str, acked: Acked,
                 stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.name, self.server, self.image, self.acked, self.stop = name, server, image, acked, stop
        self.ec2 = server.client(user)
        self.account = user["AccountId"]
        self.rng = random.Random(seed)
        self._n = 0
        self.done = 0
        self.group: str | None = None

    def seq(self) -> int:
        self._n += 1
        return self._n

    def run(self) -> None:
        ops = [op for op in OPS for _ in range(op.weight)]
        while not self.stop.is_set():
            try:
                self.rng.choice(ops).do(self)
                self.done += 1
            except ClientError:   # refused (a quota, a race between workers): changed nothing
                continue
            except Exception:     # the server died under us: what was acknowledged is recorded
                return


def load_state(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The state as the next start will see it: newest good checkpoint plus journals."""
    store = Store(state_dir)
    store._load()
    return {name: dict(t.rows) for name, t in store.tables.items()}


def check(state: dict[str, dict[str, Any]], acked: Acked) -> list[str]:
    """Every acknowledged change present; nothing half-present. Returns the problems found."""
    bad: list[str] = []
    inst: dict[str, records.Instance] = state["instances"]
    leases: dict[str, records.Lease] = state["leases"]
    tags: dict[str, records.Tag] = state["tags"]
    for token, (rid, ids) in acked.instances.items():
        if rid not in state["reservations"]:
            bad.append(f"reservation {rid} (token {token}) lost")
        for iid in ids:
            if iid not in inst:
                bad.append(f"instance {iid} (token {token}) lost")
            elif f"{iid}\x1ftoken" not in tags:
                bad.append(f"instance {iid} lost its launch tag")
    for iid in acked.terminated:
        if iid in inst and inst[iid].state not in ("shutting-down", "terminated"):
            bad.append(f"terminate of {iid} acknowledged but it is {inst[iid].state}")
    names = {(k.owner, k.name) for k in state["keypairs"].values()}
    bad += [f"key pair {n} lost" for n in acked.key_pairs - names]
    bad += [f"volume {v} lost" for v in acked.volumes if v not in state["volumes"]]
    bad += [f"tag {k}={v} on {r} lost" for r, k, v in acked.tags
            if r in inst and tags.get(f"{r}\x1f{k}") is None]
    users = {u.name for u in state["users"].values()}
    bad += [f"user {u} lost" for u in acked.users - users]
    rules = {(r.group_id, r.cidr) for r in state["security_group_rules"].values() if not r.egress}
    bad += [f"rule {c} of {g} lost" for g, c in acked.rules - rules]
    by_alloc = {a.allocation_id: a for a in state["addresses"].values()}
    for alloc, iid in acked.addresses.items():
        a = by_alloc.get(alloc)
        if a is None:
            bad.append(f"address {alloc} lost")
        elif iid is not None and a.instance_id != iid and iid not in acked.terminated \
                and inst.get(iid) is not None and inst[iid].state not in ("shutting-down", "terminated"):
            bad.append(f"association of {alloc} with {iid} lost")
    # nothing half-present
    for iid, i in inst.items():
        if i.state != "terminated":
            lease = leases.get(i.private_ip or "")
            if lease is None or lease.instance_id != iid:
                bad.append(f"instance {iid} ({i.state}) has no lease of its own")
        if i.reservation_id not in state["reservations"]:
            bad.append(f"instance {iid} has no reservation")
    for ip, lease in leases.items():
        owner = inst.get(lease.instance_id)
        if owner is None or owner.state == "terminated" or owner.private_ip != ip:
            bad.append(f"lease {ip} belongs to no live instance ({lease.instance_id})")
    ips = [a.public_ip for a in state["addresses"].values()]
    if len(ips) != len(set(ips)):
        bad.append("an elastic IP is held twice")
    for a in state["addresses"].values():
        if a.instance_id is not None and (a.instance_id not in inst or inst[a.instance_id].state == "terminated"):
            bad.append(f"address {a.public_ip} associated with a gone instance {a.instance_id}")
    for t in tags.values():
        table = {"instance": inst, "volume": state["volumes"], "key-pair": state["keypairs"]}.get(t.resource_type)
        if table is not None and t.resource_id not in table:
            bad.append(f"tag {t.tag_key} on missing {t.resource_type} {t.resource_id}")
    return bad


def trial(server: Any, user: dict[str, str], image: str, acked: Acked, rng: random.Random,
          workers: int = 4) -> tuple[int, float]:
    """Load, kill at a random moment; returns (operations acknowledged, seconds of load)."""
    stop = threading.Event()
    threads = [Worker(f"w{rng.randrange(1 << 30):x}", server, user, image, acked, stop, rng.randrange(1 << 30))
               for _ in range(workers)]
    for t in threads:
        t.start()
    delay = rng.uniform(0.3, 2.0)
    time.sleep(delay)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return sum(t.done for t in threads), delay
