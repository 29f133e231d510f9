"""Start-up's first step alone: load a state directory (checkpoint + journal replay), timed.

    .venv/bin/python bench/replay.py STATE_DIR [--repo CHECKOUT] [--add-records N] [--no-gc]

Loads STATE_DIR with `Store._load` of the cloudctl in CHECKOUT (default: this one) in a fresh
process, and prints the seconds (wall and CPU), the rows loaded, the process's peak RSS and its
RSS after the load: the before/after of a change to the journal or checkpoint readers
(`git archive <commit> | tar -x -C /tmp/before` gives the other checkout). The directory is only
read (a torn tail would be cut, as at start-up); `--add-records N` first appends a journal of N
one-row records to it (bench/scale_state.py), as the scale bench does before its restart. Take
the state of a `bench/scale.py --keep` run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_state  # noqa: E402

PROBE = """
import gc, json, resource, sys, time, logging
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "1":
    gc.disable()
from pathlib import Path
from cloudctl.store.store import Store
logging.basicConfig(level=logging.WARNING)
t0 = time.perf_counter()
s = Store(Path(sys.argv[2]))
getattr(s, "_load_quietly", s._load)()   # as Store.open loads: the collector off, where the checkout does that
ru = resource.getrusage(resource.RUSAGE_SELF)
rss = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmRSS:"))
print(json.dumps({"load_s": round(time.perf_counter() - t0, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                  "gc": sys.argv[3] != "1",
                  "rows": sum(len(t) for t in s.tables.values()),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_after_mib": round(rss / 1024, 1)}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--add-records", type=int, default=0)
    ap.add_argument("--no-gc", action="store_true", help="the cycle collector off during the load (a fix's gain)")
    a = ap.parse_args()
    if a.add_records:
        info = scale_state.write_journal(a.state, scale_state.latest_rows(a.state), a.add_records)
        print(json.dumps({"added": info}), flush=True)
    out = subprocess.run([sys.executable, "-c", PROBE, str(a.repo.resolve()), str(a.state),
                          "1" if a.no_gc else "0"],
                         capture_output=True, text=True, check=True)
    print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
