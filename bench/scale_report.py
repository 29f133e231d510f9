"""The scale bench's verdict against issue 14's goals, its table, its headline figures and its curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _get(d: Any, *path: Any) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _stages(res: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted(((int(k), v) for k, v in (res.get("stages") or {}).items()), key=lambda kv: kv[0])


def per_instance_kib(res: dict[str, Any], st: dict[str, Any]) -> float | None:
    base, rss, n = _get(res, "start", "rss_mib_after_first_call"), st.get("rss_mib"), st.get("instances")
    return round((rss - base) * 1024 / n, 2) if base is not None and rss is not None and n else None


def verdict(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: what was measured, where, the limit, and PASS/FAIL (n/a when not measured).
    The goals are set at 50,000 instances; a run that stopped lower says at which size it judged."""
    st = _stages(res)
    rows: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, limit: str, ok: bool | None, where: str = "") -> None:
        rows.append({"goal": name, "value": value, "limit": limit, "where": where,
                     "result": "n/a" if ok is None or value is None else "PASS" if ok else "FAIL"})

    if not st:
        return rows
    (n0, first), (n, last) = st[0], st[-1]
    at = f"@{n:,}"
    mean = _get(last, "run_instances", "sequential", "mean_ms")
    rate = round(1000 / mean, 1) if mean else None
    goal("RunInstances server-side sequential, calls/s (1000 / mean handler ms)", rate, ">= 1000",
         rate is not None and rate >= 1000, at)
    c = _get(last, "run_instances", "concurrent_32", "calls_per_s")
    h = _get(last, "run_instances", "concurrent_32", "hello_calls_per_s")
    ceiling = f"; this client against the bare hello {h}/s ({c / h:.2f} of it)" if c and h else ""
    goal("RunInstances with 32 concurrent clients, calls/s (client wall clock)", c, ">= 3000",
         c is not None and c >= 3000, at + ceiling)
    p99n = _get(last, "run_instances", "sequential", "p99_ms")
    p99_1 = _get(first, "run_instances", "sequential", "p99_ms")
    r = round(p99n / p99_1, 2) if p99n and p99_1 else None
    goal(f"RunInstances p99 @{n:,} / p99 @{n0:,}", r, "<= 2", r is not None and r <= 2, f"{p99n} / {p99_1} ms")
    kib = per_instance_kib(res, last)
    goal("controller memory per instance, KiB (RSS growth from the empty controller)", kib, "<= 2",
         kib is not None and kib <= 2, at)
    rss = last.get("rss_mib")
    goal("controller RSS, MiB", rss, "<= 250 at 50k", rss is not None and rss <= 250, at)
    base = _get(res, "start", "rss_mib")
    goal("base RSS at start, MiB", base, "<= 70", base is not None and base <= 70)
    tag = _get(last, "describe", "tag_filter", "p50_ms")
    goal("DescribeInstances tag filter, server-side p50 ms", tag, "<= 5", tag is not None and tag <= 5, at)
    page = _get(last, "describe", "page_1000", "client", "p50_ms")
    goal("DescribeInstances 1,000-instance page, p50 ms (client, loopback)", page, "<= 120",
         page is not None and page <= 120, at)
    start = _get(res, "restart", "ready_s")
    recs = _get(res, "restart", "journal", "records")
    goal(f"start-up with {recs or 0:,} journal records + reconcile, s", start, "<= 15 (1M records)",
         start is not None and start <= 15, at)
    ck = _get(last, "checkpoint", "stall_ms_max")
    goal("longest loop stall during a checkpoint, ms", ck, "<= 20", ck is not None and ck <= 20, at)
    pr = _get(last, "poll_round", "stall_ms")
    goal(f"longest loop stall during a poll round ({_get(last, 'poll_round', 'hosts_polled')} hosts), ms", pr,
         "< 20", pr is not None and pr < 20, at)
    return rows


def render(res: dict[str, Any]) -> str:
    out = ["", "size      RSS MiB  KiB/inst (marginal)  run p50/p99 ms  run/s seq  x32/s   by-id p50/p99   "
           "tag p50/p99   page p50 ms (client)  ckpt ms / stall (own, GC)  poll stall ms (own, GC)"]
    prev: tuple[int, float] | None = None
    for n, s in _stages(res):
        marginal = round((s["rss_mib"] - prev[1]) * 1024 / (s["instances"] - prev[0]), 2) \
            if prev and s.get("rss_mib") and s.get("instances", 0) > prev[0] else "-"
        prev = (s.get("instances", n), s.get("rss_mib", 0.0))
        seq, cc = _get(s, "run_instances", "sequential") or {}, _get(s, "run_instances", "concurrent_32") or {}
        d = s.get("describe") or {}
        out.append(
            f"{n:>6,}  {s.get('rss_mib', '-'):>8}  {per_instance_kib(res, s) or '-':>8} ({marginal:>6})  "
            f"{seq.get('p50_ms', '-')}/{seq.get('p99_ms', '-'):<8}  {seq.get('calls_per_s', '-'):>9}  "
            f"{cc.get('calls_per_s', '-'):>6}  {_get(d, 'by_id', 'p50_ms')}/{_get(d, 'by_id', 'p99_ms')}  "
            f"{_get(d, 'tag_filter', 'p50_ms')}/{_get(d, 'tag_filter', 'p99_ms')}  "
            f"{_get(d, 'page_1000', 'p50_ms')} ({_get(d, 'page_1000', 'client', 'p50_ms')})  "
            f"{_get(s, 'checkpoint', 'ms_median')} / {_get(s, 'checkpoint', 'stall_ms_max')} "
            f"({_get(s, 'checkpoint', 'own_stall_ms_max')}, gc {_get(s, 'checkpoint', 'gc_pause_max_ms')})  "
            f"{_get(s, 'poll_round', 'stall_ms')} ({_get(s, 'poll_round', 'own_stall_ms')}, "
            f"gc {_get(s, 'poll_round', 'gc_pause_max_ms')})")
    rs = res.get("restart")
    if rs:
        out.append(f"restart: ready in {rs.get('ready_s')} s with {_get(rs, 'journal', 'records'):,} journal records "
                   f"({_get(rs, 'journal', 'bytes', ) / 2**20:.0f} MiB); phases {rs.get('phases_s')}; "
                   f"RSS {rs.get('rss_mib')} MiB; reconcile findings {rs.get('reconcile_findings')}")
    out.append("")
    out.append("goal                                                                   value      limit        "
               "result")
    for g in res.get("verdict") or []:
        out.append(f"{g['goal'][:70]:<70} {str(g['value']):>9}  {g['limit']:<12} {g['result']}  {g['where']}")
    m = res.get("meta", {})
    out.append(f"\n{m.get('machine')}, commit {m.get('commit')}{'+changes' if m.get('dirty') else ''}, "
               f"load {m.get('loadavg_start', [0])[0]:.2f} -> {m.get('loadavg_end', [0])[0]:.2f}, "
               f"runtime {m.get('runtime_s')} s, simulated hosts at nice {m.get('hosts_nice', 0)}"
               + (f"\nERROR: {res['error']}" if res.get("error") else ""))
    return "\n".join(out)


def headline(res: dict[str, Any]) -> dict[str, float]:
    """Flat figures for bench/results/history.jsonl, compared run to run."""
    out: dict[str, float] = {}
    for n, s in _stages(res):
        k = f"@{n}"
        for name, path in (("rss_mib", ("rss_mib",)),
                           ("run_seq_p50_ms", ("run_instances", "sequential", "p50_ms")),
                           ("run_seq_p99_ms", ("run_instances", "sequential", "p99_ms")),
                           ("run_x32_per_s", ("run_instances", "concurrent_32", "calls_per_s")),
                           ("hello_x32_per_s", ("run_instances", "concurrent_32", "hello_calls_per_s")),
                           ("by_id_p50_ms", ("describe", "by_id", "p50_ms")),
                           ("tag_p50_ms", ("describe", "tag_filter", "p50_ms")),
                           ("page_client_p50_ms", ("describe", "page_1000", "client", "p50_ms")),
                           ("checkpoint_ms", ("checkpoint", "ms_median")),
                           ("checkpoint_stall_ms", ("checkpoint", "stall_ms_max")),
                           ("poll_stall_ms", ("poll_round", "stall_ms"))):
            v = _get(s, *path)
            if isinstance(v, (int, float)):
                out[f"{name} {k}"] = v
    for name, path in (("base_rss_mib", ("start", "rss_mib")), ("restart_ready_s", ("restart", "ready_s"))):
        v = _get(res, *path)
        if isinstance(v, (int, float)):
            out[name] = v
    return out


PANELS = (
    ("controller RSS (MiB)", [("RSS", ("rss_mib",))]),
    ("RunInstances server-side (ms)", [("p50", ("run_instances", "sequential", "p50_ms")),
                                       ("p99", ("run_instances", "sequential", "p99_ms"))]),
    ("RunInstances calls/s", [("1 client", ("run_instances", "sequential", "calls_per_s")),
                              ("32 clients", ("run_instances", "concurrent_32", "calls_per_s")),
                              ("32 clients, bare hello", ("run_instances", "concurrent_32", "hello_calls_per_s"))]),
    ("DescribeInstances by id (ms)", [("p50", ("describe", "by_id", "p50_ms")),
                                      ("p99", ("describe", "by_id", "p99_ms"))]),
    ("DescribeInstances tag filter (ms)", [("p50", ("describe", "tag_filter", "p50_ms")),
                                           ("p99", ("describe", "tag_filter", "p99_ms"))]),
    ("1,000-instance page (ms)", [("client p50", ("describe", "page_1000", "client", "p50_ms")),
                                  ("client p99", ("describe", "page_1000", "client", "p99_ms"))]),
    ("checkpoint (ms)", [("duration", ("checkpoint", "ms_median")), ("loop stall", ("checkpoint", "stall_ms_max")),
                         ("own stall", ("checkpoint", "own_stall_ms_max")),
                         ("longest GC pause", ("checkpoint", "gc_pause_max_ms"))]),
    ("poll round over all hosts", [("loop stall ms", ("poll_round", "stall_ms")),
                                   ("own stall ms", ("poll_round", "own_stall_ms")),
                                   ("poll max ms", ("poll_round", "poll_ms_max")),
                                   ("longest GC pause ms", ("poll_round", "gc_pause_max_ms"))]),
)


def plot(res: dict[str, Any], path: Path) -> Path | None:
    """One panel per metric, x = instances; None when matplotlib is missing (the JSON has it all)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    st = _stages(res)
    if not st:
        return None
    xs = [s.get("instances", n) for n, s in st]
    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    for ax, (title, series) in zip(axes.flat, PANELS):
        for label, p in series:
            ys = [_get(s, *p) for _, s in st]
            pts = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("instances")
        ax.grid(True, alpha=.3)
        ax.legend(fontsize=8)
    ax = axes.flat[-1]
    rs = res.get("restart") or {}
    ph = rs.get("phases_s") or {}
    # Each phase's wall clock and its process CPU; the per-thread, GC and end-time figures stay in the JSON.
    bars = {"ready": rs.get("ready_s")}
    for k in ph:
        name = k.removesuffix("_s")
        if k.endswith("_s") and not name.endswith(("_cpu", "_gc", "_end_at")):
            bars[name] = ph[k]
            bars[f"{name} (cpu)"] = ph.get(f"{name}_cpu_s")
    bars = {k: v for k, v in bars.items() if isinstance(v, (int, float))}
    if bars:
        ax.barh(list(bars), list(bars.values()))
    ax.set_title(f"restart @{xs[-1]:,} + {_get(rs, 'journal', 'records') or 0:,} journal records (s)")
    m = res.get("meta", {})
    fig.suptitle(f"cloudctl scale bench: {res['meta'].get('hosts')} hosts, {m.get('machine')}, "
                 f"commit {m.get('commit')}, load {m.get('loadavg_start', [0])[0]:.1f}, {m.get('started_utc')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
