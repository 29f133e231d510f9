"""The entry of `cloudctl serve` under the bench's probes (bench/served_probes.py): what bench/procs.py runs.

    python bench/served.py serve --config FILE       (started by bench/scale.py, never by hand)

Kept to these lines because a script is compiled from its source at every start, never read from a
cached .pyc: compiling the probes' ~500 lines at the start of the served process left ~1.2 MiB of
glibc's heap fragmented at ready, which the bench counted in the controller's base RSS (`cloudctl
serve` itself runs its `__main__` from a .pyc; docs/scaling.md, perf-base8). The probes are a module,
imported here (its .pyc written at the first run, read from then on, and by serve's re-exec).
"""
from __future__ import annotations

import served_probes  # (this script's folder is first on sys.path)

if __name__ == "__main__":
    served_probes.main()
