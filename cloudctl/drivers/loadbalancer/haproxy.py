"""The load-balancer data plane on HAProxy: one master-worker HAProxy per load balancer.

Each balancer owns `run_dir/<name>/`: `haproxy.cfg` (see `haproxy_config`), `haproxy.pid` (the
master's PID), `master.sock` (the master CLI: `show proc`, `reload`), `stats.sock` (the current
worker's runtime API), `server-state` (backend states carried over a reload), `counters.json`
(totals of the workers before the current one), `placement.json` (where it was started) and
`haproxy.log` (the master's output: start-up and reload errors). The proxy runs with that folder
as its working directory and names its sockets relative to it, so a deep `run_dir` never meets
the 108-byte socket limit. With a bridge it runs in its namespace (`netns`) by `ip netns exec`.

The master runs in the foreground of a session of its own, started off the loop (`_spawn`): it
outlives the controller, and `running()` adopts it again from the pid file, its command line and
its master socket. A change is validated with `haproxy -c` first (a bad config leaves the running
proxy alone), then reloaded through the master CLI: the new worker takes the listening sockets
over from the old one (no refused connection), the old one finishes its connections and exits,
bounded by `hard-stop-after`. A reload that fails (a port taken) leaves the old worker serving
and the old config in place, and raises with HAProxy's alert.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from cloudctl.drivers.loadbalancer import nft
from cloudctl.drivers.loadbalancer.base import (
    BackendState,
    BalancerSpec,
    BalancerStats,
    LoadBalancerDriver,
    LoadBalancerError,
)
from cloudctl.drivers.loadbalancer.haproxy_config import (
    HEALTH_BACKEND,
    STATE_FILE,
    STATS_PAGE_SOCKET,
    STATS_SOCKET,
    render,
    server_state,
)
from cloudctl.drivers.loadbalancer.netns import Netns

from ...slim import dataclass

log = logging.getLogger("cloudctl.loadbalancer")

CONFIG, NEW_CONFIG, OLD_CONFIG = "haproxy.cfg", "haproxy.cfg.new", "haproxy.cfg.old"
PID_FILE, MASTER_SOCKET, LOG_FILE, COUNTERS = "haproxy.pid", "master.sock", "haproxy.log", "counters.json"
PLACEMENT = "placement.json"     # where the running proxy was started: a change needs a new process
_WAIT_S = 15.0            # for a started or reloaded proxy to show its new worker
_STOP_S = 10.0            # for a stopped proxy's processes to exit before they are killed
_LOG_KEPT = 4000          # characters of HAProxy's output kept in an error


@dataclass(frozen=True, slots=True)
class Procs:
    """The master CLI's `show proc`: the master and its workers by reload generation."""

    master: int
    reloads: int                  # how many reloads the master went through
    failed: int                   # how many of those failed (the master then keeps the old worker)
    current: tuple[int, ...]      # the workers of the latest generation (one)
    old: tuple[int, ...]          # workers of earlier generations still finishing connections


class HaproxyDriver(LoadBalancerDriver):
    def __init__(self, run_dir: Path, haproxy: str = "haproxy", ovs_db: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.haproxy = haproxy
        self.ovs_db = ovs_db              # Open vSwitch's database, when not the system's
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the contract ----------------------------------------------------------------------

    async def apply(self, spec: BalancerSpec) -> None:
        text = render(spec)                         # a bad spec raises before anything is touched
        async with self._lock(spec.name):
            folder = self.run_dir / spec.name
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            await self._validate(folder, text)
            pid = await _settled_pid(folder)
            if pid is not None and await self._master(folder) is None:
                log.warning("load balancer %s: HAProxy master %d does not answer; restarting it", spec.name, pid)
                await self._stop(folder, pid)
                pid = None
            if pid is not None and await asyncio.to_thread(_placed, folder) != _placement(spec):
                await self._stop(folder, pid)       # another namespace or address: a new proxy
                pid = None
            if pid is not None:
                if spec.placement.bridge is not None:
                    await self._plumb(spec, folder)
                await self._reload(spec, folder, pid)
            else:
                await self._start(spec, folder)

    async def remove(self, name: str) -> None:
        async with self._lock(name):
            folder = self.run_dir / name
            pid = await _settled_pid(folder)
            if pid is not None:
                await self._stop(folder, pid)
            ns = Netns.of(name, self.ovs_db)
            if await ns.exists() or os.path.exists(f"/sys/class/net/{ns.veth}"):
                await ns.remove()
            if folder.is_dir():
                await asyncio.to_thread(shutil.rmtree, folder, True)

    async def stats(self, name: str) -> BalancerStats:
        folder = self.run_dir / name
        rows = _csv(await self._ask(folder / STATS_SOCKET, "show stat"))
        seen = time.time()
        base = await asyncio.to_thread(_read_counters, folder)
        requests, errors = _totals(rows)
        backends: dict[str, BackendState] = {}
        for r in rows:
            if r.get("pxname") != HEALTH_BACKEND or r.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            status = r.get("status", "")
            check = (r.get("check_status") or "").removeprefix("* ").strip()
            code = (r.get("check_code") or "").strip()
            lastchg = _int(r.get("lastchg"))
            backends[r["svname"]] = BackendState(
                up=status.startswith("UP"),
                checked=check not in ("", "INI", "UNK"),
                last_change=seen - lastchg,
                detail=f"{check} {code}".strip() if check not in ("", "INI", "UNK") else "",
            )
        # Healthy as ELB counts it: HAProxy assumes a new server up until its first check.
        healthy = sum(1 for b in backends.values() if b.up and b.checked)
        return BalancerStats(requests=base[0] + requests, backend_errors=base[1] + errors,
                             healthy=healthy, unhealthy=len(backends) - healthy, seen_at=seen,
                             backends=backends)

    async def running(self) -> set[str]:
        if not self.run_dir.is_dir():
            return set()
        folders = await asyncio.to_thread(lambda: [p for p in self.run_dir.iterdir() if p.is_dir()])

        async def master(folder: Path) -> int | None:
            async with self._lock(folder.name):     # never in the middle of this driver's reload
                return await self._master(folder)
        alive = await asyncio.gather(*(master(f) for f in folders))
        return {f.name for f, pid in zip(folders, alive) if pid is not None}

    # -- beyond the contract ----------------------------------------------------------------

    async def processes(self, name: str) -> Procs:
        """The proxy's process tree as its master reports it (for supervision and tests)."""
        return _procs(await self._ask(self.run_dir / name / MASTER_SOCKET, "show proc"))

    def stats_page_socket(self, name: str) -> Path:
        """The unix socket serving the statistics page (HTTP) when the spec asked for it: never on
        the network, so the controller decides who sees it."""
        return self.run_dir / name / STATS_PAGE_SOCKET

    # -- starting, reloading, stopping ------------------------------------------------------

    async def _plumb(self, spec: BalancerSpec, folder: Path) -> Netns:
        """The proxy's namespace on its bridge, its ingress filtered (before the proxy listens)."""
        ns = Netns.of(spec.name, self.ovs_db)
        await ns.ensure(spec.placement)
        await nft.apply(ns, spec.ingress, folder)
        return ns

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _validate(self, folder: Path, text: str) -> None:
        await asyncio.to_thread((folder / NEW_CONFIG).write_text, text)
        rc, out = await _exec([self.haproxy, "-c", "-q", "-f", str(folder / NEW_CONFIG)], folder)
        if rc != 0:
            await asyncio.to_thread((folder / NEW_CONFIG).unlink, True)
            raise LoadBalancerError(f"HAProxy refused the configuration: {_tail(out)}")

    async def _start(self, spec: BalancerSpec, folder: Path) -> None:
        def prepare() -> None:
            if (folder / PID_FILE).exists():          # a dead master's: its workers may linger
                os.replace(folder / PID_FILE, folder / (PID_FILE + ".last"))
            # The counters stay: a restarted proxy's totals go on from the last reload's.
            for f in (MASTER_SOCKET, STATS_SOCKET, STATS_PAGE_SOCKET, LOG_FILE):
                (folder / f).unlink(missing_ok=True)
            _write(folder / STATE_FILE, server_state(spec, None))    # every backend down until checked
            os.replace(folder / NEW_CONFIG, folder / CONFIG)
            (folder / PLACEMENT).write_text(_placement(spec))
        await asyncio.to_thread(prepare)
        await self._reap_stale(folder)
        prefix: list[str] = []
        if spec.placement.bridge is not None:
            prefix = (await self._plumb(spec, folder)).exec_prefix()
        argv = [*prefix, self.haproxy, "-W", "-f", str(folder / CONFIG), "-p", PID_FILE,
                "-S", f"unix@{MASTER_SOCKET}"]
        master = await _spawn(argv, folder, folder / LOG_FILE)
        deadline = time.monotonic() + _WAIT_S
        while True:
            if not _alive(master):
                text = await asyncio.to_thread(_read_alerts, folder / LOG_FILE)
                raise LoadBalancerError(f"HAProxy did not start: {text or 'it exited'}")
            with contextlib.suppress(LoadBalancerError):
                procs = await self.processes(spec.name)
                if procs.current and procs.master == master:
                    break
            if time.monotonic() > deadline:
                await self._stop(folder, master)
                raise LoadBalancerError(f"HAProxy started no worker in {_WAIT_S:g} s")
            await asyncio.sleep(0.02)
        log.info("load balancer %s: HAProxy master %d, worker %s", spec.name, procs.master, procs.current)

    async def _reload(self, spec: BalancerSpec, folder: Path, pid: int) -> None:
        before = await self.processes(folder.name)
        counted = await self._save_state(spec, folder)
        await asyncio.to_thread(_swap, folder, NEW_CONFIG)
        # The master appends to the log (O_APPEND): emptied, it holds only this reload's words.
        await asyncio.to_thread(os.truncate, folder / LOG_FILE, 0)
        await self._signal_reload(folder, pid)
        try:
            await self._await_worker(folder, before)
        except LoadBalancerError as e:
            # The master kept the old worker; put the old config back so its next reload (a
            # restart of the controller, the next change) does not meet the same failure.
            await asyncio.to_thread(_restore, folder)
            raise LoadBalancerError(f"HAProxy could not reload: {e}") from None
        # The old worker's totals join the base only now (after a failed reload it goes on
        # counting), read again from it where it still runs: it answered more since the snapshot.
        counted = await self._final_counts(folder, before, counted)
        await asyncio.to_thread(_write, folder / COUNTERS, json.dumps(counted))

    async def _signal_reload(self, folder: Path, pid: int) -> None:
        try:
            async with _unix(folder / MASTER_SOCKET) as (reader, writer):
                writer.write(b"reload\n")
                writer.write_eof()                   # the master CLI answers once the client is done
                await writer.drain()
                await asyncio.wait_for(reader.read(), _WAIT_S)
        except (OSError, asyncio.TimeoutError):
            os.kill(pid, signal.SIGUSR2)            # the master's own reload signal

    async def _await_worker(self, folder: Path, before: Procs | None) -> Procs:
        """Wait until the master shows a worker of a generation newer than `before`."""
        deadline = time.monotonic() + _WAIT_S
        last = ""
        while time.monotonic() < deadline:
            try:
                p = await self.processes(folder.name)
            except LoadBalancerError as e:
                last = str(e)
            else:
                if before is None and p.current:
                    return p
                if before is not None and p.reloads > before.reloads:
                    if p.failed > before.failed or not p.current or set(p.current) & set(before.current):
                        text = await asyncio.to_thread(_read_alerts, folder / LOG_FILE)
                        raise LoadBalancerError(f"the new worker did not start{': ' + text if text else ''}")
                    return p
            await asyncio.sleep(0.02)
        raise LoadBalancerError(f"no worker after {_WAIT_S:g} s{': ' + last if last else ''}")

    async def _save_state(self, spec: BalancerSpec, folder: Path) -> list[int]:
        """Carry the backends' check states over the reload (the new worker starts its servers
        from the file, not all up) and return the counters' base for after it (they restart at 0)."""
        try:
            state: str | None = await self._ask(folder / STATS_SOCKET, "show servers state")
            rows = _csv(await self._ask(folder / STATS_SOCKET, "show stat"))
        except LoadBalancerError as e:
            log.warning("%s: no state carried over the reload: %s", folder.name, e)
            state, rows = None, []

        def write() -> list[int]:
            _write(folder / STATE_FILE, server_state(spec, state))
            base = _read_counters(folder)
            req, err = _totals(rows)
            return [base[0] + req, base[1] + err]
        return await asyncio.to_thread(write)

    async def _final_counts(self, folder: Path, before: Procs, snapshot: list[int]) -> list[int]:
        base = await asyncio.to_thread(_read_counters, folder)
        req = err = 0
        for pid in before.current:
            try:    # the master CLI passes `@!<pid> command` to that worker, old ones included
                r, e = _totals(_csv(await self._ask(folder / MASTER_SOCKET, f"@!{pid} show stat")))
            except LoadBalancerError:
                return snapshot               # gone already: the snapshot is all it served
            req, err = req + r, err + e
        return [max(snapshot[0], base[0] + req), max(snapshot[1], base[1] + err)]

    async def _stop(self, folder: Path, pid: int) -> None:
        config = str(folder / CONFIG)
        workers: set[int] = set(_children(pid))
        with contextlib.suppress(LoadBalancerError):
            p = await self.processes(folder.name)
            workers |= set(p.current) | set(p.old)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)              # the master stops its workers
        deadline = time.monotonic() + _STOP_S
        pids = {pid, *workers}
        while time.monotonic() < deadline and any(_is_haproxy(p, config) for p in pids):
            await asyncio.sleep(0.05)
        for p in pids:
            if _is_haproxy(p, config):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        started = _STARTED.pop(pid, None)
        if started is not None:   # our own child: reaped, not left a zombie until the controller exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(started.wait, _STOP_S)

    async def _reap_stale(self, folder: Path) -> None:
        """Before a start: stop what a dead master of this folder left (workers hold the ports)."""
        try:
            old = int((folder / (PID_FILE + ".last")).read_text())
        except (OSError, ValueError):
            return
        for _ in range(int(_STOP_S / 0.05)):
            left = await asyncio.to_thread(_leftovers, old, str(folder / CONFIG))
            if not left:
                return
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            await asyncio.sleep(0.05)

    async def _master(self, folder: Path) -> int | None:
        """The master's PID if it is alive, is the HAProxy of this folder and answers its socket.
        A master re-executing itself for a reload rewrites its pid file and refuses connections
        for a moment: an alive one is asked again for up to a second before it counts as gone."""
        for _ in range(10):
            pid = _recorded_pid(folder)
            if pid is None and (folder / PID_FILE).exists():
                await asyncio.sleep(0.1)             # being rewritten
                continue
            if pid is None or not _is_haproxy(pid, str(folder / CONFIG)):
                return None
            try:
                procs = await self.processes(folder.name)
            except LoadBalancerError:
                await asyncio.sleep(0.1)
                continue
            return pid if procs.master == pid else None
        return None

    async def _ask(self, sock: Path, command: str) -> str:
        try:
            async with _unix(sock) as (reader, writer):
                writer.write(command.encode() + b"\n")
                writer.write_eof()                   # the master CLI answers once the client is done
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), 10)
        except (OSError, asyncio.TimeoutError) as e:
            raise LoadBalancerError(f"{sock.name}: {e.__class__.__name__} {e}") from None
        return data.decode(errors="replace")


# -- helpers ---------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def _unix(sock: Path) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to a unix socket by a path of any length: through the folder's descriptor."""
    fd = os.open(sock.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(f"/proc/self/fd/{fd}/{sock.name}"), 5)
    finally:
        os.close(fd)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# Masters this controller started, by PID, until `_stop` reaps them.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


async def _spawn(argv: list[str], cwd: Path, log_file: Path) -> int:
    """Start the master leading a session of its own, and return its PID.

    Started by `subprocess.Popen` on a worker thread, not as an asyncio child: the loop would
    kill an asyncio child when its transport is closed or collected, and the proxy must outlive
    the controller. (Nor through a shell's `&` with a pipe for its PID: under uvloop the read of
    that pipe never ended.) The Popen object is kept in `_STARTED` so that `_stop` reaps the
    master it ended (dropped, it stayed a zombie until the next Popen); a new controller adopts a
    running master from its pid file. Its output goes to `log_file`, where a reload's errors land
    too (a daemonized master closes its output)."""
    def start() -> int:
        for pid, proc in list(_STARTED.items()):   # masters that ended on their own
            if proc.poll() is not None:
                _STARTED.pop(pid, None)
        with open(log_file, "ab", buffering=0) as log_:
            os.chmod(log_file, 0o600)
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_, stderr=log_,
                                    start_new_session=True, close_fds=True)
        _STARTED[proc.pid] = proc
        return proc.pid
    try:
        return await asyncio.to_thread(start)
    except OSError as e:
        raise LoadBalancerError(f"could not start {argv[0]}: {e.strerror}") from None


async def _exec(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command in `cwd` off the loop; its exit status and output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise LoadBalancerError(f"{argv[0]}: {e.strerror}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise LoadBalancerError(f"{' '.join(argv)}: timed out") from None
    return proc.returncode or 0, out.decode(errors="replace")


def _procs(text: str) -> Procs:
    master, reloads, failed = 0, 0, 0
    workers: list[tuple[int, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
            continue
        if parts[1] == "master":
            master, reloads = int(parts[0]), int(parts[2])
            if "[failed:" in line:
                failed = int(line.split("[failed:")[1].split("]")[0])
        elif parts[1] == "worker":
            workers.append((int(parts[0]), int(parts[2])))
    if not master:
        raise LoadBalancerError(f"the master CLI did not answer `show proc`: {text[:200]!r}")
    return Procs(master, reloads, failed, tuple(p for p, r in workers if r == 0),
                 tuple(p for p, r in workers if r > 0))


def _csv(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        raise LoadBalancerError(f"unexpected `show stat` answer: {text[:200]!r}")
    return list(csv.DictReader([lines[0][2:], *lines[1:]]))


def _totals(rows: list[dict[str, str]]) -> tuple[int, int]:
    """Requests over the listeners' frontends (HTTP requests, TCP sessions) and the backend
    errors (failed connects and bad answers) over the listeners' backends."""
    requests = errors = 0
    for r in rows:
        px, sv = r.get("pxname"), r.get("svname")
        if px in (HEALTH_BACKEND, "stats"):
            continue
        if sv == "FRONTEND":
            requests += _int(r.get("req_tot")) if r.get("mode") == "http" else _int(r.get("stot"))
        elif sv == "BACKEND":
            errors += _int(r.get("econ")) + _int(r.get("eresp"))
    return requests, errors


def _int(v: str | None) -> int:
    try:
        return int(v) if v else 0
    except ValueError:
        return 0


def _read_counters(folder: Path) -> tuple[int, int]:
    try:
        req, err = json.loads((folder / COUNTERS).read_text())
        return int(req), int(err)
    except (OSError, ValueError, TypeError):
        return 0, 0


def _placement(spec: BalancerSpec) -> str:
    return json.dumps(dataclasses.asdict(spec.placement), sort_keys=True)


def _placed(folder: Path) -> str | None:
    try:
        return (folder / PLACEMENT).read_text()
    except OSError:
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _swap(folder: Path, new: str) -> None:
    if (folder / CONFIG).exists():
        os.replace(folder / CONFIG, folder / OLD_CONFIG)
    os.replace(folder / new, folder / CONFIG)


def _restore(folder: Path) -> None:
    if (folder / OLD_CONFIG).exists():
        os.replace(folder / OLD_CONFIG, folder / CONFIG)


def _recorded_pid(folder: Path) -> int | None:
    try:
        return int((folder / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def _settled_pid(folder: Path) -> int | None:
    """`_haproxy_pid`, waiting out a pid file being rewritten by a re-executing master."""
    for _ in range(10):
        if _recorded_pid(folder) is not None or not (folder / PID_FILE).exists():
            break
        await asyncio.sleep(0.1)
    return _haproxy_pid(folder)


def _haproxy_pid(folder: Path) -> int | None:
    """The recorded master PID, if that process is alive and is HAProxy run on this folder's config."""
    pid = _recorded_pid(folder)
    return pid if pid is not None and _is_haproxy(pid, str(folder / CONFIG)) else None


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits for a parent that may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def _is_haproxy(pid: int, config: str | None = None) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(b")", 1)[-1].split()[0] == b"Z":           # exited, not yet reaped
        return False
    if not argv or not argv[0] or os.path.basename(argv[0].decode(errors="replace")) != "haproxy" \
            and b"haproxy" not in argv[0]:
        return False
    return config is None or config.encode() in argv


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _read_alerts(path: Path) -> str:
    """HAProxy's [ALERT] lines from its log (all of it if it has none)."""
    try:
        text = path.read_text(errors="replace").replace("\0", "")
    except OSError:
        return ""
    alerts = [ln.split(":", 1)[-1].strip() if ln.startswith("[ALERT]") else ln
              for ln in text.splitlines() if ln.startswith("[ALERT]")]
    return _tail("\n".join(alerts) if alerts else text)


def _leftovers(master: int, config: str) -> list[int]:
    """Processes of the group the master led (its workers) still running on this config: what a
    master killed outright leaves behind while the workers notice."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == master and _is_haproxy(int(entry), config):
            found.append(int(entry))
    return found


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines)[-_LOG_KEPT:]
