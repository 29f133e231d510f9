"""`cloudctl serve` with the bench's own probes: exact server-side timings, read over the admin API.

    python bench/served.py serve --config FILE       (started by bench/scale.py, never by hand)

(bench/served.py is the entry: it imports this module, so that its code is read from its .pyc.)

The EC2 endpoint already times every request for its Prometheus histogram (`Ec2Api._count`: from
the handler's start, after aiohttp read the headers, to the answer's first slices being rendered,
so journal fsync included, the socket write and the rest of a streamed answer not). The histogram's
buckets (0.5, 1, 2.5, 5 ms...) are too coarse for a p50/p99, so this wrapper keeps the same
durations as samples, and times the start-up phases (state load + journal replay, reconcile,
the whole open). Nothing in cloudctl is changed: the hooks wrap its methods from outside, and
they are looked up by name so that a renamed method costs a missing figure, not a failed run.

Admin routes added: GET /v0/bench/samples?action=A (and clear them; "autoscaling-tick": the
AutoScaling reconciler's ticks), GET /v0/bench/startup, GET /v0/bench/gc (the cycle collector's
longest pauses per generation since the last call), GET /v0/bench/cpu (the loop thread's and the
process's CPU seconds so far), GET /v0/bench/heap (where the RSS is: smaps by kind, glibc's mallinfo2,
pymalloc's arenas, thread count). With
CLOUDCTL_BENCH_FREEZE_AFTER_CHECKPOINT=1, gc.freeze() after every checkpoint (an experiment);
with CLOUDCTL_BENCH_SWITCH_INTERVAL=S, sys.setswitchinterval(S) for the process (an experiment);
for bench/profile_hot.py: POST /v0/bench/profile[?clock=cpu] (cProfile on the loop thread), GET
/v0/bench/profile?top=N&calls=K (stop; the top functions by own and by cumulative time, per call
of the K requests made meanwhile), and with CLOUDCTL_BENCH_TRACEMALLOC=1 (tracing from the first
import, which slows the server ~2x) POST /v0/bench/memory (the baseline) and GET /v0/bench/memory
(what was allocated since and is still live, by file and by line; with
CLOUDCTL_BENCH_TRACEMALLOC_FRAMES=N also by the N frames that allocated it: what keeps it).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import io
import os
import sys
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

# CLOUDCTL_BENCH_REPO: another checkout's cloudctl under these probes (bench/restart.py --repo: A/B).
sys.path.insert(0, os.environ.get("CLOUDCTL_BENCH_REPO") or str(Path(__file__).resolve().parent.parent))

try:   # what `cloudctl serve` does before aiohttp builds its client context (an older checkout: nothing)
    from cloudctl.trust_anchors import from_directory as _anchors_from_directory
except ImportError:
    _anchors_from_directory = contextlib.nullcontext
try:   # and aiohttp's client sessions imported at their first use, as `cloudctl serve` does
    from cloudctl.deferred_client import defer as _defer_client
except ImportError:
    def _defer_client() -> bool:
        return False
with _anchors_from_directory():
    _defer_client()
    from aiohttp import web  # noqa: E402

SAMPLES: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=200_000))
STARTUP: dict[str, float] = {}
T_IMPORT = time.perf_counter()   # (each phase's end is also given from here: what overlaps what)


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


ENDED_CPU: dict[str, float] = defaultdict(float)   # kind of thread -> CPU seconds of those that ended


def _kind(name: str) -> str:
    return name.rstrip("0123456789").rstrip("_-")


def _count_ended_threads() -> None:
    """Each Python thread's CPU added to ENDED_CPU as it ends (an idle pool's threads end after a
    while: the hosts' connection threads had ended by the time the start-up's figures were read)."""
    run = threading.Thread.run

    def counted_run(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            ENDED_CPU[_kind(self.name)] += time.thread_time()

    threading.Thread.run = counted_run  # type: ignore[method-assign]


def _threads_cpu() -> dict[str, float]:
    """CPU seconds of each kind of thread of this process so far, by the thread's name less its
    number (`libvirt_3` -> `libvirt`; threads that ended are counted, as `_count_ended_threads` saw
    them end)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float, ENDED_CPU)
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:   # (ended meanwhile)
            continue
        name = names.get(int(task.name)) or f"native:{(task / 'comm').read_text().strip()}"
        out[_kind(name)] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _gc_s() -> float:
    """The cycle collector's seconds so far (GC's totals, until /v0/bench/gc resets them)."""
    return sum(GC["total_ms"]) / 1000


def _note(name: str, t0: float, c0: float, th0: float | None = None, g0: float | None = None) -> None:
    """The first call's figures (the start-up one): wall seconds, the process's CPU seconds meanwhile
    (all threads: the other phases running beside it too) and, for a call on one thread, its own;
    the cycle collector's seconds meanwhile (any thread's collections)."""
    if name in STARTUP:
        return
    now = time.perf_counter()
    if g0 is not None:
        STARTUP[name.removesuffix("_s") + "_gc_s"] = _gc_s() - g0
    STARTUP[name] = now - t0
    STARTUP[name.removesuffix("_s") + "_cpu_s"] = _process_cpu() - c0
    STARTUP[name.removesuffix("_s") + "_end_at_s"] = now - T_IMPORT
    if th0 is not None:
        STARTUP[name.removesuffix("_s") + "_thread_cpu_s"] = time.thread_time() - th0


def _run_delay() -> float:
    """Seconds this thread has waited for a CPU while runnable (the kernel's run-queue delay)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _timed_sync(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        # (Also the thread's wait for a CPU, `*_runq_s`: its wall clock less its CPU and that wait
        # is what it slept, on the GIL or on a read.)
        first = name not in STARTUP
        t0, c0, th0, g0, q0 = time.perf_counter(), _process_cpu(), time.thread_time(), _gc_s(), _run_delay()
        try:
            return fn(*a, **kw)
        finally:
            _note(name, t0, c0, th0, g0)
            if first:
                STARTUP[name.removesuffix("_s") + "_runq_s"] = _run_delay() - q0
    return wrapper


def _timed_async(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*a: Any, **kw: Any) -> Any:
        # (The loop thread's CPU meanwhile, as `*_thread_cpu_s`: the rest of the process's is the
        # other threads', e.g. the hosts' libvirt calls during the reconcile: `*_threads_<kind>_cpu_s`;
        # the process's CPU from its spawn to the call, `*_start_at_cpu_s`: what came before it.)
        first = name not in STARTUP
        if first:
            STARTUP[name.removesuffix("_s") + "_start_at_cpu_s"] = _process_cpu()
        k0 = _threads_cpu() if first else {}
        t0, c0, th0, g0 = time.perf_counter(), _process_cpu(), time.thread_time(), _gc_s()
        try:
            return await fn(*a, **kw)
        finally:
            _note(name, t0, c0, th0, g0)
            if first:
                for kind, cpu in _threads_cpu().items():
                    if cpu - k0.get(kind, 0.0) >= 0.01:
                        STARTUP[f"{name.removesuffix('_s')}_threads_{kind}_cpu_s"] = cpu - k0.get(kind, 0.0)
    return wrapper


PROFILE: dict[str, Any] = {}
GC: dict[str, Any] = {"t0": 0.0, "max_ms": [0.0, 0.0, 0.0], "count": [0, 0, 0], "total_ms": [0.0, 0.0, 0.0]}


def _gc_observe(phase: str, info: dict[str, int]) -> None:
    """The cycle collector's pauses by generation: a full collection holds the GIL throughout."""
    if phase == "start":
        GC["t0"] = time.perf_counter()
        return
    g, ms = info["generation"], (time.perf_counter() - GC["t0"]) * 1000
    GC["max_ms"][g] = max(GC["max_ms"][g], ms)
    GC["count"][g] += 1
    GC["total_ms"][g] += ms


async def gc_pauses(request: web.Request) -> web.Response:
    """GET /v0/bench/gc: the pauses since the last call, by generation (then reset)."""
    out = {k: [round(x, 2) for x in GC[k]] if k != "count" else list(GC[k]) for k in ("max_ms", "count", "total_ms")}
    out["tracked_objects"] = len(gc.get_objects()) if request.query.get("objects") else None
    GC.update(max_ms=[0.0, 0.0, 0.0], count=[0, 0, 0], total_ms=[0.0, 0.0, 0.0])
    return web.json_response(out)


async def profile_start(request: web.Request) -> web.Response:
    # clock=cpu: the loop thread's own CPU time (time.thread_time), so neither the waits for the
    # GIL or a lock nor this shared machine's preemption count; clock=wall (default): what it took.
    import cProfile  # (here: pstats and its imports are ~0.9 MiB of the base RSS the bench reports)
    prof = cProfile.Profile(time.thread_time) if request.query.get("clock") == "cpu" else cProfile.Profile()
    PROFILE["p"] = prof
    prof.enable()
    return web.json_response({"profiling": True})


async def profile_stop(request: web.Request) -> web.Response:
    import pstats
    prof = PROFILE.pop("p")
    prof.disable()
    if request.query.get("dump"):   # the raw stats too, for pstats' callers/callees views
        prof.dump_stats(request.query["dump"])
    top, calls = int(request.query.get("top", "30")), int(request.query.get("calls", "1"))
    out = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats(key)
        rows = []
        for func in st.fcn_list[:top]:   # type: ignore[attr-defined]
            cc, nc, tt, ct, _ = st.stats[func]   # type: ignore[attr-defined]
            rows.append({"function": f"{_short(func[0])}:{func[1]}:{func[2]}",
                         "calls_per_request": round(nc / calls, 2), "own_us_per_request": round(tt / calls * 1e6, 1),
                         "cum_us_per_request": round(ct / calls * 1e6, 1)})
        out[key] = rows
    out["total_us_per_request"] = round(sum(v[2] for v in pstats.Stats(prof).stats.values())  # type: ignore[attr-defined]
                                        / calls * 1e6, 1)
    return web.json_response(out)


async def cpu(request: web.Request) -> web.Response:
    """GET /v0/bench/cpu: the loop thread's CPU seconds (this handler runs on it) and the process's;
    ?threads=1: also each kind of thread's since the process's spawn (those that ended included)."""
    t = os.times()
    out: dict[str, Any] = {"loop": time.thread_time(), "process": t.user + t.system}
    if request.query.get("threads"):
        out["threads"] = {k: round(v, 3) for k, v in sorted(_threads_cpu().items())}
    return web.json_response(out)


async def launches(request: web.Request) -> web.Response:
    """GET /v0/bench/launches (CLOUDCTL_BENCH_LAUNCHES=1): each EC2 request since the last call, with
    the loop's CPU in it and what overlapped it (bench/launch_probe.py)."""
    import launch_probe
    return web.json_response(launch_probe.report())


def _short(path: str) -> str:
    for mark in ("/cloudctl/", "/site-packages/", "/lib/python3"):
        if mark in path:
            return path.split(mark, 1)[1] if mark != "/cloudctl/" else "cloudctl/" + path.split(mark, 1)[1]
    return path


def _pymalloc() -> dict[str, int]:
    """sys._debugmallocstats' summary (it writes to the C stderr): pymalloc's arenas and what fills them."""
    import tempfile
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out: dict[str, int] = {}
    for ln in text.splitlines():
        if "=" not in ln or ln.lstrip().startswith(("class", "-")) or " free " in ln:
            continue
        name, _, val = ln.rpartition("=")
        words = name.replace("#", "").split()
        name = " ".join(words[1:] if words and words[0].replace(",", "").isdigit() else words)
        try:
            out[name] = int(val.strip().replace(",", ""))
        except ValueError:
            pass
    return out


def _mallinfo() -> dict[str, int]:
    """glibc's mallinfo2 (all arenas): the C heap's size, what is in use and what is free inside it."""
    import ctypes

    class MI2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MI2
    except (OSError, AttributeError):
        return {}
    m = libc.mallinfo2()
    return {n: int(getattr(m, n)) for n, _ in MI2._fields_}


async def heap(request: web.Request) -> web.Response:
    """GET /v0/bench/heap: where the RSS is (smaps), glibc's heap (mallinfo2), pymalloc's arenas
    (sys._debugmallocstats: empty while tracemalloc traces), tracemalloc's total if tracing; ?types=N: the N
    commonest object types the collector tracks. Anonymous mappings of 8 or 16 MiB are counted as thread
    stacks (pthread's default size); the rest of "anon" is pymalloc's arenas and glibc's other arenas.
    Blocks the loop a few ms and sends fd 2 to a file meanwhile: a probe for benches only."""
    out: dict[str, Any] = {}
    with open("/proc/self/smaps_rollup") as f:
        for ln in f:
            parts = ln.split()
            if len(parts) == 3 and parts[2] == "kB":
                out.setdefault("smaps_kib", {})[parts[0].rstrip(":")] = int(parts[1])
    anon = {"heap": 0, "anon": 0, "stack": 0, "file": 0, "thread_stacks": 0}
    with open("/proc/self/smaps") as f:
        name = ""
        for ln in f:
            head = ln.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, _, hi = head[0].partition("-")
                size = int(hi, 16) - int(lo, 16)
                name = "heap" if ln.rstrip().endswith("[heap]") else "stack" if "[stack" in ln else \
                    "file" if len(head) > 5 and not head[5].startswith("[anon") else \
                    "thread_stacks" if size in (8 << 20, 16 << 20) else "anon"
            elif head and head[0] == "Rss:":
                anon[name] = anon.get(name, 0) + int(head[1])
    out["rss_by_kind_kib"] = anon
    with open("/proc/self/status") as f:
        out["threads"] = next(int(ln.split()[1]) for ln in f if ln.startswith("Threads:"))
    out["mallinfo2"] = _mallinfo()
    out["pymalloc"] = _pymalloc()
    out["allocated_blocks"] = sys.getallocatedblocks()
    if "tracemalloc" in sys.modules and sys.modules["tracemalloc"].is_tracing():
        out["traced_bytes"] = sys.modules["tracemalloc"].get_traced_memory()[0]
    top = int(request.query.get("types", "0"))
    if top:
        counts: dict[str, int] = defaultdict(int)
        for o in gc.get_objects():
            counts[type(o).__name__] += 1
        out["types"] = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return web.json_response(out)


async def memory_base(request: web.Request) -> web.Response:
    import tracemalloc  # (here, not at the top: it imports `pickle`, which `cloudctl serve` does not hold)
    PROFILE["mem"] = tracemalloc.take_snapshot()
    return web.json_response({"traced_mib": round(tracemalloc.get_traced_memory()[0] / 2**20, 1)})


async def memory_diff(request: web.Request) -> web.Response:
    import tracemalloc
    now = tracemalloc.take_snapshot()
    out: dict[str, Any] = {"traced_mib": round(tracemalloc.get_traced_memory()[0] / 2**20, 1)}
    for key in ("filename", "lineno"):
        stats = now.compare_to(PROFILE["mem"], key)
        top = stats[:int(request.query.get("top", "25"))]
        out[key] = [{"where": _short(str(st.traceback[0].filename))
                     + (f":{st.traceback[0].lineno}" if key == "lineno" else ""),
                     "bytes": st.size_diff, "blocks": st.count_diff} for st in top]
    out["total_bytes"] = sum(st.size_diff for st in now.compare_to(PROFILE["mem"], "filename"))
    if tracemalloc.get_traceback_limit() > 1:
        out["traceback"] = [{"bytes": st.size_diff, "blocks": st.count_diff,
                             "frames": [f"{_short(f.filename)}:{f.lineno}" for f in st.traceback]}
                            for st in now.compare_to(PROFILE["mem"], "traceback")[:60]]
    return web.json_response(out)


def _profiled_sync(path: str, fn: Any) -> Any:
    """The first call under cProfile with its thread's CPU clock, the stats written to `path`."""
    import cProfile  # (here, not at the top: the bench's base RSS would count it)

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        if os.path.exists(path):
            return fn(*a, **kw)
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        try:
            return fn(*a, **kw)
        finally:
            prof.disable()
            prof.dump_stats(path)
    return wrapper


def _profiled_async(path: str, fn: Any) -> Any:
    """The first call's loop-thread work under cProfile (CPU clock), the stats written to `path`."""
    import cProfile

    @functools.wraps(fn)
    async def wrapper(*a: Any, **kw: Any) -> Any:
        if os.path.exists(path):
            return await fn(*a, **kw)
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        try:
            return await fn(*a, **kw)
        finally:
            prof.disable()
            prof.dump_stats(path)
    return wrapper


def _time_ticks(reconciler: Any) -> None:
    """The AutoScaling reconciler's ticks as samples "autoscaling-tick" (bench/autoscaling.py)."""
    if getattr(reconciler, "tick", None) is None or getattr(reconciler.tick, "_timed", False):
        return
    tick = reconciler.tick

    async def timed_tick(self: Any) -> None:
        t0 = time.perf_counter()
        try:
            await tick(self)
        finally:
            SAMPLES["autoscaling-tick"].append(time.perf_counter() - t0)

    timed_tick._timed = True  # type: ignore[attr-defined]
    reconciler.tick = timed_tick


def _time_autoscaling_ticks(cloud: Any) -> None:
    """Time the reconciler's ticks once the cloud builds its AutoScaling service (at its first use):
    importing the package here would add it to the base RSS the bench measures, which `cloudctl serve`
    does not load at start. (A checkout whose Cloud builds it at start: hooked now.)"""
    prop = cloud.__dict__.get("autoscaling")
    if not isinstance(prop, property) or prop.fget is None:
        try:
            from cloudctl.core.autoscaling.reconciler import Reconciler
        except ImportError:
            return
        _time_ticks(Reconciler)
        return
    build = prop.fget

    def autoscaling(self: Any) -> Any:
        service = build(self)   # (its reconciler's task, if started, has not run yet: the hook comes first)
        from cloudctl.core.autoscaling.reconciler import Reconciler
        _time_ticks(Reconciler)
        return service

    cloud.autoscaling = property(autoscaling, doc=prop.__doc__)


def install() -> None:
    """Wrap the methods whose durations the scale bench reports."""
    from cloudctl.api.admin import AdminApi
    from cloudctl.api.ec2.app import Ec2Api
    from cloudctl.core.cloud import Cloud
    from cloudctl.core.compute import Compute
    from cloudctl.store import checkpoint as ckpt
    from cloudctl.store.store import Store

    count = Ec2Api._count

    def _count(self: Any, *args: Any) -> None:   # ([service,] action, outcome, t0)
        action, outcome, t0 = args[-3:]
        if outcome == "ok":
            SAMPLES[action].append(time.perf_counter() - t0)
        count(self, *args)

    Ec2Api._count = _count  # type: ignore[method-assign]
    if os.environ.get("CLOUDCTL_BENCH_FREEZE_AFTER_CHECKPOINT") and hasattr(Store, "checkpoint"):
        # An experiment, not a change to cloudctl: what moving everything alive after a checkpoint
        # out of the cycle collector's sight (gc.freeze, as start-up does once) does to the stalls.
        checkpoint = Store.checkpoint

        async def frozen_checkpoint(self: Any) -> None:
            await checkpoint(self)
            gc.freeze()

        Store.checkpoint = frozen_checkpoint  # type: ignore[method-assign]
    if prof := os.environ.get("CLOUDCTL_BENCH_PROFILE"):   # (bench/restart.py --profile)
        Store._load = _profiled_sync(prof + ".load", Store._load)  # type: ignore[method-assign]
        Cloud.open = classmethod(_profiled_async(prof + ".open", Cloud.open.__func__))  # type: ignore[method-assign]
    if hasattr(Store, "_load"):
        Store._load = _timed_sync("state_load_s", Store._load)  # type: ignore[method-assign]
    if hasattr(Store, "_write_first_checkpoint"):   # the checkpoint of the state as loaded, after the load
        Store._write_first_checkpoint = _timed_async(  # type: ignore[method-assign]
            "first_checkpoint_s", Store._write_first_checkpoint)
    if hasattr(ckpt, "write_checkpoint"):   # (on a worker thread: its own CPU)
        ckpt.write_checkpoint = _timed_sync("checkpoint_write_s", ckpt.write_checkpoint)  # type: ignore[attr-defined]
    if hasattr(Compute, "reconcile"):
        Compute.reconcile = _timed_async("reconcile_s", Compute.reconcile)  # type: ignore[method-assign]
    if hasattr(Cloud, "open"):
        Cloud.open = classmethod(_timed_async("cloud_open_s", Cloud.open.__func__))  # type: ignore[method-assign]
    if hasattr(Cloud, "_start"):   # (hosts connected, before they were connected during the load) images, reconcile
        Cloud._start = _timed_async("hosts_and_reconcile_s", Cloud._start)  # type: ignore[method-assign]
    from cloudctl.core import cloud as cloud_module
    if hasattr(cloud_module, "_connect_hosts"):   # the hosts connected, while the state loads
        cloud_module._connect_hosts = _timed_async("hosts_connect_s", cloud_module._connect_hosts)  # type: ignore[attr-defined]

    _time_autoscaling_ticks(Cloud)

    app = AdminApi.app

    def admin_app(self: Any) -> web.Application:
        a = app(self)

        async def samples(request: web.Request) -> web.Response:
            xs = SAMPLES.pop(request.query.get("action", ""), deque())
            return web.json_response(list(xs))

        async def startup(request: web.Request) -> web.Response:
            return web.json_response(STARTUP)

        a.router.add_get("/v0/bench/samples", samples)
        a.router.add_get("/v0/bench/startup", startup)
        a.router.add_post("/v0/bench/profile", profile_start)
        a.router.add_get("/v0/bench/profile", profile_stop)
        a.router.add_get("/v0/bench/gc", gc_pauses)
        a.router.add_get("/v0/bench/cpu", cpu)
        a.router.add_post("/v0/bench/memory", memory_base)
        a.router.add_get("/v0/bench/memory", memory_diff)
        a.router.add_get("/v0/bench/heap", heap)
        if os.environ.get("CLOUDCTL_BENCH_LAUNCHES"):
            a.router.add_get("/v0/bench/launches", launches)
        return a

    AdminApi.app = admin_app  # type: ignore[method-assign]


def main() -> None:
    """`cloudctl serve` under the probes (bench/served.py's entry)."""
    # What `cloudctl serve` does first (its re-exec with GLIBC_TUNABLES), here before the probes and
    # tracemalloc are set up twice; serve's own call is then a no-op. (A checkout from before it: none.)
    from cloudctl import malloc as _malloc
    getattr(_malloc, "exec_with_tunables", lambda: None)()
    if os.environ.get("CLOUDCTL_BENCH_TRACEMALLOC"):
        import tracemalloc
        tracemalloc.start(int(os.environ.get("CLOUDCTL_BENCH_TRACEMALLOC_FRAMES", "1")))
    _count_ended_threads()
    install()
    gc.callbacks.append(_gc_observe)
    if os.environ.get("CLOUDCTL_BENCH_SWITCH_INTERVAL"):
        # An experiment, not a change to cloudctl: the GIL's slices for the whole process (the loop
        # waits up to one slice for the GIL behind a worker thread running Python: a poll's stats).
        sys.setswitchinterval(float(os.environ["CLOUDCTL_BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("CLOUDCTL_BENCH_LAUNCHES"):
        sys.path.insert(1, str(Path(__file__).resolve().parent))
        import launch_probe
        launch_probe.install()
    from cloudctl.cli import main as cli_main
    sys.argv[0] = "cloudctl"
    cli_main()


if __name__ == "__main__":
    main()
