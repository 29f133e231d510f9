"""The store's CPU per row, without a server: rows made from their JSON (loading a checkpoint or
replaying a journal), encoded (a checkpoint, on its worker thread), and changed (`replace`, what
every state change does). Process CPU time, the best of several runs, so another job on the box
moves it less than it moves the HTTP bench.

    .venv/bin/python bench/store_rows.py                  # this checkout
    PYTHONPATH=DIR .venv/bin/python bench/store_rows.py   # another one's cloudctl (before/after)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from cloudctl.store.checkpoint import encode_row
from cloudctl.store.records import BmHeadnode, Event, Instance, Row


def population(n: int) -> list[Row]:
    """`n` instances, two events each (with data, as state changes record them), n/10 headnodes."""
    rows: list[Row] = []
    for i in range(n):
        iid = f"i-{i:017x}"
        rows.append(Instance(id=iid, owner="123456789012", reservation_id=f"r-{i:017x}", image_id="ami-1",
                             instance_type="t3.nano", host="host-a", zone="zone-a", state="running",
                             launch_time=1.0, group_ids=("sg-1",), private_ip=f"10.0.{i // 250}.{i % 250}"))
        for k, state in enumerate(("pending", "running")):
            rows.append(Event(id=f"{2 * i + k:012d}", time=1.0, kind="instance.state", subject=iid,
                              message=state, data={"owner": "123456789012", "host": "host-a", "state": state}))
        if i % 10 == 0:
            rows.append(BmHeadnode(name=f"hn{i}", project="p", image_id="ami-1", created=1.0,
                                   hnics={"eth0": {"mac": "52:54:00:00:00:01", "network": "n1"},
                                          "eth1": {"mac": "52:54:00:00:00:02", "network": None}}))
    return rows


def best(fn: Callable[[], Any], reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="instances (rows: about 3.1 × n)")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    rows = population(args.n)
    encoded = [(type(r), json.loads(encode_row(r))) for r in rows]
    events = [r for r in rows if isinstance(r, Event)]
    figures = {
        "load (from_dict)": best(lambda: [t.from_dict(d) for t, d in encoded], args.reps),
        "encode (checkpoint)": best(lambda: [encode_row(r) for r in rows], args.reps),
        "replace (events)": best(lambda: [dataclasses.replace(e, message="x") for e in events], args.reps),
    }
    print(f"{len(rows)} rows ({args.n} instances), best of {args.reps}, CPU µs per row:")
    for name, s in figures.items():
        per = len(events) if name.startswith("replace") else len(rows)
        print(f"  {name:22} {s * 1e6 / per:7.2f}   ({s * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
