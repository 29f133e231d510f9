"""A bench's history on this machine: each run appends one line, and is compared with the last one.

`bench/results/history.jsonl` holds one JSON object per run: which bench and mode, the machine
(host name, CPU model, cores), the commit (and whether the tree had changes), the date, the load
average, and the run's headline figures (a flat {metric: number} dict). The file stays on the
machine (bench/results/ is git-ignored but for its README): figures from different machines do not
compare, and every branch appending to one committed file would conflict at each merge.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HISTORY = Path(__file__).resolve().parent / "results" / "history.jsonl"
# Metrics where a higher number is better; every other metric is a time or a size (lower is better).
HIGHER_IS_BETTER = ("per_s", "ratio", "rps", "share_ok")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> str:
    """Host name, CPU model and core count: runs compare only with runs of the same machine."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{socket.gethostname()} / {model or platform.machine()} / {os.cpu_count()} cores"


def meta(**extra: Any) -> dict[str, Any]:
    return {"started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "commit": _git("rev-parse", "--short=12", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "loadavg_start": list(os.getloadavg()), **extra}


def _previous(bench: str, mode: str, where: str) -> dict[str, Any] | None:
    if not HISTORY.exists():
        return None
    last = None
    for ln in HISTORY.read_text().splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if e.get("bench") == bench and e.get("mode") == mode and e.get("machine") == where:
            last = e
    return last


def compare(prev: dict[str, Any] | None, figures: dict[str, float]) -> list[str]:
    """Lines 'metric: before → now (±x %)', flagged when more than 10 % worse."""
    if prev is None:
        return ["no earlier run of this bench on this machine: nothing to compare"]
    old = prev.get("figures", {})
    lines = [f"change since {prev.get('date')} (commit {prev.get('commit')}{'+changes' if prev.get('dirty') else ''}, "
             f"load {prev.get('loadavg', ['?'])[0]}):"]
    for k, v in figures.items():
        o = old.get(k)
        if not isinstance(v, (int, float)) or not isinstance(o, (int, float)) or not o:
            lines.append(f"  {k}: {v} (no earlier figure)")
            continue
        change = (v - o) / abs(o)
        better = change > 0 if any(h in k for h in HIGHER_IS_BETTER) else change < 0
        flag = "" if abs(change) < 0.10 else ("  better" if better else "  WORSE")
        lines.append(f"  {k}: {o:g} -> {v:g} ({change:+.0%}){flag}")
    return lines


def record(bench: str, run_meta: dict[str, Any], figures: dict[str, float], mode: str | None = None) -> str:
    """Append this run to the history and return the comparison with the previous one, as text."""
    mode = mode or ("quick" if run_meta.get("quick") else "full")
    where = run_meta.get("machine") or machine()
    prev = _previous(bench, mode, where)
    entry = {"bench": bench, "mode": mode, "machine": where, "commit": run_meta.get("commit") or _git(
        "rev-parse", "--short=12", "HEAD"), "dirty": run_meta.get("dirty"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in (run_meta.get("loadavg_start") or os.getloadavg())],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "figures": figures}
    HISTORY.parent.mkdir(exist_ok=True)
    with open(HISTORY, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return "\n".join(compare(prev, figures) + [f"(appended to {HISTORY.relative_to(REPO)})"])
