"""A state directory shaped like the scale bench's, written directly: no hosts, no server, seconds.

    .venv/bin/python bench/synth_state.py DIR [--instances 50000]
    .venv/bin/python bench/replay.py DIR --add-records 1000000      # start-up's load, timed
    .venv/bin/python bench/store_stalls.py DIR                       # loop stalls of checkpoints, polls

What `bench/scale.py` fills a cloud with, as rows (bench/scale.py's docstring): instances launched 50 at
a time by 10 users (half of them the first one's), each with 3 tags (Name per launch, env of 3 values,
team of 40), a root volume, a private address lease and a public launch address; per 50 instances a
reservation and a security group of two rules; per 20 a data volume and an elastic IP; 10,000 events
(the event log's cap). The rows are the real row types with values of the real shapes (ids, UUIDs,
MACs), so the checkpoint's size and the load's work per row are the bench's; what the served fill's
timings add (its fill takes ~12 min at 50k) is not here. Written as checkpoint generation 1.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudctl.store import checkpoint as ckpt  # noqa: E402
from cloudctl.store.records import (  # noqa: E402
    Address,
    Event,
    Instance,
    Lease,
    Reservation,
    Row,
    SecurityGroup,
    SecurityGroupRule,
    Tag,
    User,
    Volume,
)

USERS, BATCH, ZONES, HOSTS = 10, 50, ("cloudctl-1a", "cloudctl-1b", "cloudctl-1c", "cloudctl-1d"), 200


def rows(n: int, seed: int = 1) -> dict[str, list[Row]]:
    rng = random.Random(seed)

    def hexid(prefix: str, k: int = 17) -> str:
        return f"{prefix}-{rng.getrandbits(4 * k):0{k}x}"

    def uuid() -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    out: dict[str, list[Row]] = {t.table: [] for t in (User, Instance, Reservation, Tag, Lease, Volume, Address,
                                                         SecurityGroup, SecurityGroupRule, Event)}
    accounts = [f"{100000000000 + i}" for i in range(USERS)]
    for i, a in enumerate(accounts):
        out["users"].append(User(name=f"scale{i}", access_key=f"AKIA{rng.getrandbits(64):016X}",
                                 secret_key=f"{rng.getrandbits(160):040x}", account_id=a, created=1.7e9))
    now = 1.7e9
    group = ""
    reservation: list[str] = []
    res_id = prev_owner = ""
    for i in range(n):
        batch = i // BATCH
        owner = accounts[0] if batch % 2 == 0 else accounts[1 + (batch // 2) % (USERS - 1)]
        zone = ZONES[batch % len(ZONES)]
        if i % BATCH == 0:
            if reservation:
                out["reservations"].append(Reservation(id=res_id, owner=prev_owner, instance_ids=tuple(reservation)))
            res_id, reservation, prev_owner = hexid("r"), [], owner
            group = hexid("sg")
            out["security_groups"].append(SecurityGroup(id=group, owner=owner, vpc_id="vpc-0cloudctl000000",
                                                        name=f"g{batch}", description="scale", created=now))
            for port, cidr in ((22, "10.0.0.0/8"), (443, "0.0.0.0/0")):
                out["security_group_rules"].append(SecurityGroupRule(
                    id=hexid("sgr"), group_id=group, owner=owner, egress=False, protocol="tcp", from_port=port,
                    to_port=port, cidr=cidr))
        iid = hexid("i")
        reservation.append(iid)
        ip = f"10.{128 + ZONES.index(zone)}.{(i // 250) % 250}.{4 + i % 250}"
        pub = f"198.18.{i // 250}.{1 + i % 250}"   # (in the scale bench's pool, 198.18.0.0/16: up to 50k)
        vol = hexid("vol")
        out["instances"].append(Instance(
            id=iid, owner=owner, reservation_id=res_id, image_id="ami-0cloudctl0blank00", instance_type="t3.nano",
            host=f"host-{(i * 7) % HOSTS:03d}", zone=zone, state="running", launch_time=now + i, launch_index=i % BATCH,
            private_ip=ip, mac=f"02:{rng.getrandbits(40):010x}", uuid=uuid(), subnet_id=f"subnet-{zone}",
            group_ids=(group,), ever_ran=True, root_device="/dev/sda1"))
        for k, v in (("Name", f"b-{batch}"), ("env", ("prod", "staging", "dev")[batch % 3]),
                     ("team", f"team-{batch % 40}")):
            out["tags"].append(Tag(resource_id=iid, resource_type="instance", owner=owner, tag_key=k, value=v))
        out["leases"].append(Lease(ip=ip, zone=zone, instance_id=iid, subnet_id=f"subnet-{zone}"))
        out["volumes"].append(Volume(id=vol, owner=owner, zone=zone, size=8, volume_type="gp2", state="in-use",
                                     created=now + i, instance_id=iid, device="/dev/sda1", target="vda",
                                     attach_state="attached", attach_time=now + i, delete_on_termination=True,
                                     image_id="ami-0cloudctl0blank00"))
        out["addresses"].append(Address(public_ip=pub, allocation_id=hexid("eipalloc"), owner=owner, allocated=now,
                                        association_id=hexid("eipassoc"), instance_id=iid, private_ip=ip,
                                        associated_at=now, launch=True))
        if i % 20 == 0:
            out["volumes"].append(Volume(id=hexid("vol"), owner=owner, zone=zone, size=1, volume_type="gp3",
                                         state="in-use", created=now, instance_id=iid, device="/dev/sdf",
                                         target="vdb", attach_state="attached", attach_time=now))
            eip = f"198.18.{200 + (i // 20) // 250}.{1 + (i // 20) % 250}"
            out["addresses"].append(Address(public_ip=eip, allocation_id=hexid("eipalloc"), owner=owner,
                                            allocated=now))
    if reservation:
        out["reservations"].append(Reservation(id=res_id, owner=prev_owner, instance_ids=tuple(reservation)))
    for e in range(min(10_000, n)):
        inst = out["instances"][-1 - e]
        out["events"].append(Event(id=f"{e + 1:012d}", time=now + e, kind="instance.state", subject=inst.id,
                                   message="pending -> running", data={"owner": inst.owner, "host": inst.host,
                                                                       "state": "running"}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path)
    ap.add_argument("--instances", type=int, default=50_000)
    a = ap.parse_args()
    a.state.mkdir(parents=True, exist_ok=True)
    if any(a.state.iterdir()):
        print(f"{a.state} is not empty", file=sys.stderr)
        return 2
    os.chmod(a.state, 0o700)
    t0 = time.perf_counter()
    tables = rows(a.instances)
    ckpt.write_checkpoint(a.state, 1, tables)
    size = ckpt.checkpoint_path(a.state, 1).stat().st_size
    print(f"{sum(len(r) for r in tables.values())} rows ({a.instances} instances), {size / 2**20:.0f} MiB, "
          f"{time.perf_counter() - t0:.1f} s: " + ", ".join(f"{len(r)} {t}" for t, r in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
