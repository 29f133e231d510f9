"""A launch's placement alone: the scheduler's room and pick for a launch of one into a zone.

Usage:  valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/placement.py N
        (once with N=0 and once with N=1000: the difference / 1000 is the instructions per launch)

200 hosts in 4 zones, as bench/scale.py places them; the figure that grows with the hosts of a zone,
not with the instances (docs/scaling.md, "What in a launch grows").
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cloudctl.config import InstanceType, load_config  # noqa: E402
from cloudctl.core.scheduler import Scheduler  # noqa: E402
from cloudctl.store.store import Store  # noqa: E402

from support import DEFAULT_CONFIG  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    sched = Scheduler(Store(Path("/nonexistent")), load_config(DEFAULT_CONFIG))
    for i in range(200):
        sched.add_host(f"h{i:03d}", f"z{i % 4}", 64, 262144, 1.0, 1.0)
        sched.hosts[f"h{i:03d}"].used_vcpus = i % 7
    t = InstanceType(vcpus=2, memory_mib=512)
    for _ in range(n):   # (compute.run: the zone's room, then one pick per instance)
        try:
            sched.room("z1", t, 0, cap=1)
        except TypeError:   # (a tree from before the room's cap)
            sched.room("z1", t, 0)
        sched.pick("z1", t, disk=0)


if __name__ == "__main__":
    main()
