"""HAProxy's configuration for one `BalancerSpec`: pure text, no processes.

Layout (names are what operators grep for and what `stats()` reads back):

- `global`: master-worker; the stats socket at admin level (the runtime API, and the listeners'
  file descriptors handed to the next worker on a reload); `hard-stop-after`, so an old worker
  never outlives the draining budget however long its clients keep connections, and
  `mworker-max-reloads`, so a burst of reloads leaves at most that many generations; the server-state
  file, so a reload keeps each backend's up/down state instead of assuming every server up.
- `backend health`: one server per backend with the spec's check (interval, timeout, rise, fall),
  never given traffic. Every listener's servers `track` it, so one check per backend decides for
  every listener, as ELB's single HealthCheck does.
- per listener `frontend <proto>-<port>` and `backend <proto>-<port>`: HTTP in `mode http`,
  everything else (TCP, and HTTPS/SSL as pass-through, already TCP in the spec) in `mode tcp`.
"""
from __future__ import annotations

import ipaddress
import re

from cloudctl.drivers.loadbalancer.base import BalancerSpec, HealthCheck, Listener, LoadBalancerError

from ...slim import dataclass

STATS_SOCKET = "stats.sock"          # relative to the balancer's folder (the proxy's cwd)
STATS_PAGE_SOCKET = "stats-page.sock"
STATE_FILE = "server-state"
HEALTH_BACKEND = "health"
MAX_OLD_GENERATIONS = 10

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")          # balancer and backend names
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")      # an HTTP cookie name (RFC 7230 token)
_PATH = re.compile(r"^/[\x21-\x7e]{0,1023}$")                    # no spaces, quotes or controls
_TARGET = re.compile(r"^(HTTP|HTTPS|TCP|SSL):(\d{1,5})(.*)$")


@dataclass(frozen=True, slots=True)
class Check:
    """An ELB health-check target as HAProxy sees it: HTTP checks a path, everything else connects."""

    port: int
    http_path: str | None


def parse_target(target: str) -> Check:
    m = _TARGET.match(target)
    if not m:
        raise LoadBalancerError(f"health check target {target!r}: expected PROTOCOL:PORT[/path]")
    proto, port, rest = m.group(1), int(m.group(2)), m.group(3)
    _port(port, "health check port")
    if proto in ("HTTP", "HTTPS"):
        path = rest or "/"
        if not _PATH.match(path):
            raise LoadBalancerError(f"health check path {path!r}: must start with / and hold no spaces")
        # HTTPS targets are checked as TCP: the proxy holds no certificates (pass-through).
        return Check(port, path if proto == "HTTP" else None)
    if rest:
        raise LoadBalancerError(f"health check target {target!r}: a {proto} target takes no path")
    return Check(port, None)


def section_name(listener: Listener) -> str:
    return f"{listener.protocol.lower()}-{listener.port}"


def validate(spec: BalancerSpec) -> None:
    """Refuse what would break (or inject into) the generated text, with a message naming it."""
    if not _NAME.match(spec.name):
        raise LoadBalancerError(f"balancer name {spec.name!r}: letters, digits, '.', '_' and '-' only")
    _address(spec.placement.address, "placement address")
    if spec.placement.gateway is not None:
        _address(spec.placement.gateway, "gateway")
    if not 0 <= spec.placement.prefix <= 32:
        raise LoadBalancerError(f"prefix {spec.placement.prefix}: 0..32")
    seen_ports: set[int] = set()
    for ls in spec.listeners:
        _port(ls.port, "listener port")
        _port(ls.backend_port, "backend port")
        if ls.port in seen_ports:
            raise LoadBalancerError(f"listener port {ls.port} given twice")
        seen_ports.add(ls.port)
        if ls.protocol not in ("HTTP", "TCP") or ls.backend_protocol not in ("HTTP", "TCP"):
            raise LoadBalancerError(f"listener {ls.port}: protocols are HTTP or TCP (HTTPS/SSL pass through as TCP)")
        sticky = [c for c in (ls.cookie, ls.app_cookie) if c is not None]
        if sticky and ls.protocol != "HTTP":
            raise LoadBalancerError(f"listener {ls.port}: cookie stickiness needs an HTTP listener")
        if len(sticky) > 1:
            raise LoadBalancerError(f"listener {ls.port}: one stickiness policy at a time")
        for c in sticky:
            if not _TOKEN.match(c):
                raise LoadBalancerError(f"cookie name {c!r}: not an HTTP token")
        if ls.cookie_ttl is not None and ls.cookie_ttl <= 0:
            raise LoadBalancerError(f"cookie expiration {ls.cookie_ttl}: must be positive")
    names: set[str] = set()
    for b in spec.backends:
        if not _NAME.match(b.name):
            raise LoadBalancerError(f"backend name {b.name!r}: letters, digits, '.', '_' and '-' only")
        if b.name in names:
            raise LoadBalancerError(f"backend {b.name} given twice")
        names.add(b.name)
        _address(b.address, f"backend {b.name} address")
    hc = spec.health_check
    parse_target(hc.target)
    for what, v in (("interval", hc.interval), ("timeout", hc.timeout),
                    ("healthy threshold", hc.healthy_threshold), ("unhealthy threshold", hc.unhealthy_threshold)):
        if v < 1:
            raise LoadBalancerError(f"health check {what} {v}: must be at least 1")
    if spec.idle_timeout < 1:
        raise LoadBalancerError(f"idle timeout {spec.idle_timeout}: must be at least 1 s")
    if spec.draining_timeout is not None and spec.draining_timeout < 0:
        raise LoadBalancerError(f"draining timeout {spec.draining_timeout}: must not be negative")


def hard_stop_after(spec: BalancerSpec) -> int:
    """Seconds an old worker may keep finishing its connections after a reload: the draining
    budget when draining is on, else the idle timeout (a connection idle that long is closed anyway)."""
    if spec.draining_timeout is not None:
        return max(1, spec.draining_timeout)
    return spec.idle_timeout


def render(spec: BalancerSpec) -> str:
    validate(spec)
    out: list[str] = []
    w = out.append
    w(f"# generated by cloudctl for load balancer {spec.name}; edits are overwritten")
    w("global")
    w("    master-worker")
    w(f"    stats socket unix@{STATS_SOCKET} mode 600 level admin expose-fd listeners")
    w("    stats timeout 30s")
    w(f"    hard-stop-after {hard_stop_after(spec)}s")
    w(f"    mworker-max-reloads {MAX_OLD_GENERATIONS}")   # and however fast the reloads come, this many at most
    w(f"    server-state-file ./{STATE_FILE}")
    w("")
    w("defaults")
    w("    load-server-state-from-file global")
    w("    option redispatch")          # a connect failure to a backend not yet marked down is retried elsewhere
    w("    retries 3")
    w("    timeout connect 5s")
    w(f"    timeout client {spec.idle_timeout}s")
    w(f"    timeout server {spec.idle_timeout}s")
    w(f"    timeout http-keep-alive {spec.idle_timeout}s")
    w("    timeout http-request 30s")
    w(f"    timeout tunnel {spec.idle_timeout}s")
    w("")
    _health(w, spec.health_check, spec)
    for ls in spec.listeners:
        _listener(w, ls, spec)
    if spec.stats:
        w("frontend stats")
        w("    mode http")
        w(f"    bind unix@{STATS_PAGE_SOCKET} mode 600")
        w("    stats enable")
        w("    stats uri /")
        w("    stats refresh 10s")
        w("    stats show-legends")
        w("")
    return "\n".join(out) + "\n"


def _health(w, hc: HealthCheck, spec: BalancerSpec) -> None:  # type: ignore[no-untyped-def]
    check = parse_target(hc.target)
    w(f"backend {HEALTH_BACKEND}")
    w("    mode tcp")
    w(f"    timeout check {hc.timeout}s")
    if check.http_path is not None:
        w(f"    option httpchk GET {check.http_path}")
        w("    http-check expect status 200")     # ELB: only 200 is healthy
    opts = f"check port {check.port} inter {hc.interval}s rise {hc.healthy_threshold} fall {hc.unhealthy_threshold}"
    for b in spec.backends:
        w(f"    server {b.name} {b.address}:{check.port} {opts}")
    w("")


def _listener(w, ls: Listener, spec: BalancerSpec) -> None:  # type: ignore[no-untyped-def]
    name = section_name(ls)
    mode = "http" if ls.protocol == "HTTP" else "tcp"
    addr = spec.placement.address
    w(f"frontend {name}")
    w(f"    mode {mode}")
    w(f"    bind {addr}:{ls.port}")
    if mode == "http":
        w("    option idle-close-on-response")     # on reload, keep-alive clients are closed after an answer
        w("    option forwardfor")                  # ELB's X-Forwarded-* headers
        w("    http-request set-header X-Forwarded-Port %[dst_port]")
        w("    http-request set-header X-Forwarded-Proto http")
    w(f"    default_backend {name}")
    w("")
    w(f"backend {name}")
    w(f"    mode {mode}")
    w("    balance roundrobin")
    cookie = ""
    if ls.cookie is not None:
        # maxlife: the proxy ignores an older cookie; Max-Age: the browser drops it (as ELB's expiry).
        life = f" maxlife {ls.cookie_ttl}s attr Max-Age={ls.cookie_ttl}" if ls.cookie_ttl else ""
        w(f"    cookie {ls.cookie} insert indirect nocache{life}")
    elif ls.app_cookie is not None:
        # HAProxy's successor to appsession: learn the application's cookie from answers, stick on it.
        w("    stick-table type string len 128 size 100k expire 1h")
        w(f"    stick on req.cook({ls.app_cookie})")
        w(f"    stick store-response res.cook({ls.app_cookie})")
    for b in spec.backends:
        if ls.cookie is not None:
            cookie = f" cookie {b.name}"
        w(f"    server {b.name} {b.address}:{ls.backend_port} track {HEALTH_BACKEND}/{b.name}{cookie}")
    w("")


def _port(p: int, what: str) -> None:
    if not 1 <= p <= 65535:
        raise LoadBalancerError(f"{what} {p}: 1..65535")


def _address(a: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(a)
    except ValueError:
        raise LoadBalancerError(f"{what} {a!r}: not an IPv4 address") from None


_STATE_HEADER = ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                 "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
                 "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
                 "srv_check_port srv_check_addr srv_agent_addr srv_agent_port")


def server_state(spec: BalancerSpec, current: str | None) -> str:
    """The server-state file the next worker starts from (format 1, as `show servers state`).

    Backends the running proxy already checks keep their state, if they are still at the same
    address and ports; every other backend starts DOWN with its check not yet run, so it gets
    no traffic until it passed `healthy_threshold` checks (ELB's "registration in progress";
    HAProxy by itself would assume a new server up). Tracking servers follow `health` at load.
    """
    check = parse_target(spec.health_check.target)
    ports: dict[str, int] = {HEALTH_BACKEND: check.port}
    ports.update({section_name(ls): ls.backend_port for ls in spec.listeners})
    address = {b.name: b.address for b in spec.backends}
    kept: list[str] = []
    known: set[str] = set()
    for line in (current or "").splitlines():
        f = line.split()
        if len(f) < 25 or line.startswith("#"):
            continue
        px, srv, addr, port = f[1], f[3], f[4], f[18]
        if px in ports and address.get(srv) == addr and port == str(ports[px]):
            kept.append(line)
            if px == HEALTH_BACKEND:
                known.add(srv)
    for b in spec.backends:
        if b.name not in known:
            # op_state 0 (stopped), admin 0, weights 1, changed 0 s ago, check status 1 (INI),
            # result 0, health 0 (needs `rise` successes), check state 6 (configured, enabled).
            kept.append(f"0 {HEALTH_BACKEND} 0 {b.name} {b.address} 0 0 1 1 0 1 0 0 6 0 0 0 - {check.port} - 0 "
                        f"{check.port} - - 0")
    return "\n".join(["1", _STATE_HEADER, *kept]) + "\n"
