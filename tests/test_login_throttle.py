"""Password guessing against a served controller: the bare-metal API's HTTP Basic, XML-RPC
sessions and EC2 signatures back off per address and per (user, address), refuse without
checking while they do, cost the same for unknown users, and never lock out the same user
from another address. Each test speaks from its own loopback addresses (127.0.0.0/8 is all
local), so the tests share one server without sharing backoff state."""
from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from cloudctl.config import LoginThrottle
from cloudctl.core.baremetal.auth import DUMMY_HASH, check_password, hash_password
from cloudctl.core.throttle import _NO_SOURCE, Throttle, Throttled

from hil_client import Hil
from support import REGION, Server, Servers, write_config
from test_auth_attacks import error_code

# Short backoffs, so a test can wait one out; a small hashing wait list, so it can fill it.
THROTTLE = {"pair_free_failures": 3, "source_free_failures": 8, "name_free_failures": 5, "backoff_s": 2.0,
            "backoff_max_s": 4.0, "name_delay_max_s": 0.5, "refusal_pace_s": 0.1, "forget_s": 60.0,
            "max_tracked": 100, "password_workers": 1, "password_queue": 2}
PASSWORD = "right-password-1"


@pytest.fixture(scope="module")
def srv(server_with: Servers) -> Server:
    s = server_with(login_throttle=THROTTLE, xmlrpc={}, baremetal={"audit_on_start": "off"})
    s.one_port = s.ports["xmlrpc"]   # type: ignore[attr-defined]
    return s


def _conn(srv: Server, source: str, port: int | None = None) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port or int(srv.admin_url.rsplit(":", 1)[1]), timeout=60,
                                      source_address=(source, 0))


def hil_login(srv: Server, source: str, user: str, password: str) -> tuple[int, dict[str, str], Any]:
    """GET /hil/v0/projects with HTTP Basic from `source`: status, headers, JSON body."""
    c = _conn(srv, source)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        c.request("GET", "/hil/v0/projects", headers={"Authorization": f"Basic {auth}"})
        r = c.getresponse()
        raw = r.read()
        return r.status, dict(r.getheaders()), json.loads(raw) if raw else None
    finally:
        c.close()


def metric(srv: Server, sample: str, **labels: str) -> float:
    with urllib.request.urlopen(srv.admin_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def checks(srv: Server) -> float:
    return metric(srv, "cloudctl_password_checks_total")


def hil_user(srv: Server, name: str) -> None:
    Hil(srv.admin_url, token=srv.token).ok("PUT", f"/auth/basic/user/{name}", {"password": PASSWORD,
                                                                               "is_admin": True})


@pytest.mark.slow
def test_wrong_passwords_then_the_right_one_is_refused_until_the_backoff_passes(srv: Server) -> None:
    hil_user(srv, "hu1")
    src = "127.0.1.1"
    assert hil_login(srv, src, "hu1", PASSWORD)[0] == 200
    for _ in range(THROTTLE["pair_free_failures"] + 1):
        status, _, err = hil_login(srv, src, "hu1", "wrong-password")
        assert (status, err["type"]) == (401, "AuthorizationError")
    before = checks(srv)
    for _ in range(3):   # the right password, while the pair backs off: refused, and never hashed
        status, headers, err = hil_login(srv, src, "hu1", PASSWORD)
        assert (status, err["type"]) == (429, "TooManyFailuresError"), err
        assert 1 <= int(headers["Retry-After"]) <= THROTTLE["backoff_max_s"]
    assert hil_login(srv, src, "hu1", "another-guess")[0] == 429
    assert checks(srv) == before
    assert metric(srv, "cloudctl_login_refusals_total", api="hil") >= 4
    time.sleep(int(headers["Retry-After"]) + 0.2)
    assert hil_login(srv, src, "hu1", PASSWORD)[0] == 200


def test_the_same_user_from_another_address_is_not_locked_out(srv: Server) -> None:
    hil_user(srv, "hu2")
    for source, n in (("127.0.2.1", 4), ("127.0.2.2", 3), ("127.0.2.3", 1)):   # a guesser on three addresses
        for _ in range(n):
            status, _, err = hil_login(srv, source, "hu2", "wrong-password")
            assert status == 401, (source, status, err)
        if source == "127.0.2.1":
            assert hil_login(srv, source, "hu2", PASSWORD)[0] == 429     # that pair backs off
    delays = metric(srv, "cloudctl_login_delays_total", api="hil")
    status, _, projects = hil_login(srv, "127.0.2.9", "hu2", PASSWORD)  # the user, elsewhere
    assert (status, projects) == (200, [])
    # ...delayed, because the name itself backs off (a distributed guesser is slowed, not the lock)
    assert metric(srv, "cloudctl_login_delays_total", api="hil") == delays + 1


def test_an_address_guessing_many_names_is_refused(srv: Server) -> None:
    hil_user(srv, "hu3")
    src = "127.0.3.1"
    for i in range(THROTTLE["source_free_failures"] + 1):
        assert hil_login(srv, src, f"guess-{i}", "wrong-password")[0] == 401
    status, _, err = hil_login(srv, src, "hu3", PASSWORD)
    assert (status, err["type"]) == (429, "TooManyFailuresError")
    assert hil_login(srv, "127.0.3.2", "hu3", PASSWORD)[0] == 200


def test_an_unknown_users_miss_runs_the_same_password_check(srv: Server) -> None:
    hil_user(srv, "hu4")
    answers, cost = [], []
    for i, user in enumerate(("hu4", "no-such-user")):
        before = checks(srv)
        status, headers, err = hil_login(srv, f"127.0.4.{i + 1}", user, "wrong-password")
        cost.append(checks(srv) - before)
        answers.append((status, headers.get("WWW-Authenticate"), err))
    assert answers[0] == answers[1] == (401, 'Basic realm="cloudctl"',
                                        {"type": "AuthorizationError", "msg": "wrong user name or password"})
    assert cost == [1, 1]   # one scrypt each: the unknown user's against the dummy hash


def test_the_dummy_hash_is_a_real_scrypt_hash_nothing_matches() -> None:
    kind, salt, digest = DUMMY_HASH.split("$")
    real = hash_password("x" * 8).split("$")
    assert (kind, len(salt), len(digest)) == (real[0], len(real[1]), len(real[2]))   # same parameters
    assert not check_password("", DUMMY_HASH) and not check_password("password", DUMMY_HASH)


def test_a_crowd_of_password_checks_beyond_the_wait_list_is_told_to_try_later(srv: Server) -> None:
    n = 24   # distinct addresses and names: no backoff, only the hashing threads' capacity
    conns = [_conn(srv, f"127.0.5.{i + 1}") for i in range(n)]
    for c in conns:
        c.connect()
    before_checks, before_refused = checks(srv), metric(srv, "cloudctl_password_checks_refused_total")
    results: list[tuple[int, str | None, Any]] = [(0, None, None)] * n
    go = threading.Barrier(n)

    def one(i: int) -> None:
        auth = base64.b64encode(f"crowd-{i}:wrong-password".encode()).decode()
        go.wait()
        conns[i].request("GET", "/hil/v0/projects", headers={"Authorization": f"Basic {auth}"})
        r = conns[i].getresponse()
        results[i] = (r.status, r.getheader("Retry-After"), json.loads(r.read()))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    busy = [r for r in results if r[0] == 503]
    assert busy, results
    assert all(r[1] == "1" and r[2]["type"] == "BusyError" for r in busy)
    assert all(r[0] in (401, 503) for r in results)
    assert checks(srv) - before_checks == n - len(busy)   # the refused ones never reached scrypt
    assert metric(srv, "cloudctl_password_checks_refused_total") - before_refused == len(busy)


class _From(xmlrpc.client.Transport):
    """xmlrpc.client (pyone's transport) speaking from a chosen loopback address."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        self._connection = (host, http.client.HTTPConnection(host, source_address=(self.source, 0)))
        return self._connection[1]


def one_call(srv: Server, source: str, session: str) -> list[Any]:
    proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{srv.one_port}/RPC2",   # type: ignore[attr-defined]
                                      transport=_From(source))
    return proxy.one.user.info(session, -1)   # type: ignore[no-any-return]


def test_xmlrpc_sessions_back_off_and_other_addresses_still_log_in(srv: Server) -> None:
    user = srv.create_user("xu1")
    right = f"xu1:{user['SecretAccessKey']}"
    for _ in range(THROTTLE["pair_free_failures"] + 1):
        ok, msg, code = one_call(srv, "127.0.6.1", "xu1:wrong")
        assert (ok, code) == (False, 0x100) and "couldn't be authenticated" in msg
    ok, msg, code = one_call(srv, "127.0.6.1", right)
    assert (ok, code) == (False, 0x100) and "Too many failed logins" in msg
    ok, body, code = one_call(srv, "127.0.6.2", right)
    assert ok and code == 0 and "<NAME>xu1</NAME>" in body
    assert metric(srv, "cloudctl_login_refusals_total", api="xmlrpc") >= 1


def ec2_call(srv: Server, source: str, akid: str, secret: str) -> tuple[int, dict[str, str], str]:
    req = AWSRequest(method="POST", url=srv.endpoint + "/", data="Action=DescribeKeyPairs&Version=2016-11-15",
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(akid, secret), "ec2", REGION).add_auth(req)
    p = req.prepare()
    c = _conn(srv, source, int(srv.endpoint.rsplit(":", 1)[1]))
    try:
        c.request("POST", "/", body=p.body, headers=dict(p.headers.items()))
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def test_ec2_signature_failures_back_off_and_other_addresses_still_get_in(srv: Server) -> None:
    user = srv.create_user("eu1")
    akid, secret = user["AccessKeyId"], user["SecretAccessKey"]
    for _ in range(THROTTLE["pair_free_failures"] + 1):
        status, _, text = ec2_call(srv, "127.0.7.1", akid, "x" * 40)
        assert (status, error_code(text)) == (401, "AuthFailure")
    status, headers, text = ec2_call(srv, "127.0.7.1", akid, secret)
    assert (status, error_code(text)) == (503, "RequestLimitExceeded")   # botocore retries this code
    assert 1 <= int(headers["Retry-After"]) <= THROTTLE["backoff_max_s"]
    assert ec2_call(srv, "127.0.7.2", akid, secret)[0] == 200
    time.sleep(int(headers["Retry-After"]) + 0.2)
    assert ec2_call(srv, "127.0.7.1", akid, secret)[0] == 200


def test_throttle_memory_is_bounded_and_backoff_doubles_to_its_cap() -> None:
    cfg = LoginThrottle(**{**THROTTLE, "pair_free_failures": 1, "backoff_s": 1.0})
    now = [1000.0]
    t = Throttle(cfg, clock=lambda: now[0])

    def miss(name: str, source: str) -> None:
        t.enter(name, source)
        t.failed(name, source)

    for i in range(5000):   # a spray of random names and addresses
        miss(f"name-{i}", f"10.0.{i // 250}.{i % 250}")
    assert t.tracked() <= 3 * cfg.max_tracked
    miss("u", "192.0.2.1")   # the free one
    waits = []
    for _ in range(5):
        miss("u", "192.0.2.1")
        with pytest.raises(Throttled) as e:
            t.enter("u", "192.0.2.1")
        waits.append(e.value.retry_after_s)
        now[0] += e.value.retry_after_s
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    now[0] += cfg.forget_s + 1   # forgotten after a quiet while
    assert t.enter("u", "192.0.2.1") == 0.0


def test_concurrent_attempts_cannot_all_slip_in_when_a_backoff_ends() -> None:
    cfg = LoginThrottle(**THROTTLE)
    now = [0.0]
    t = Throttle(cfg, clock=lambda: now[0])
    for _ in range(cfg.pair_free_failures + 1):   # at its limit: one more failure starts the backoff
        t.enter("u", "192.0.2.1")
        t.failed("u", "192.0.2.1")
    with pytest.raises(Throttled) as e:
        t.enter("u", "192.0.2.1")
    now[0] += e.value.retry_after_s   # the backoff ends with 16 guessers waiting on it
    admitted = 0
    for _ in range(16):   # all at once, none answered yet
        try:
            t.enter("u", "192.0.2.1")
            admitted += 1
        except Throttled:
            pass
    assert admitted == 1   # the one in flight decides: its failure starts the next backoff
    t.failed("u", "192.0.2.1")
    with pytest.raises(Throttled):
        t.enter("u", "192.0.2.1")


def test_attempts_in_flight_are_not_failures() -> None:
    """An honest client with many requests in flight (more than the free failures) is admitted
    for every one of them; only failures back off."""
    cfg = LoginThrottle(**THROTTLE)
    t = Throttle(cfg, clock=lambda: 0.0)
    for _ in range(4 * cfg.source_free_failures):
        assert t.enter("u", "192.0.2.1") == 0.0
    for _ in range(4 * cfg.source_free_failures):
        t.succeeded("u", "192.0.2.1")
    assert t.enter("u", "192.0.2.1") == 0.0 and t.refused == 0


def _state(t: Throttle) -> list[Any]:
    return [[(key, k.failures, k.last_failure, k.until, k.trusted_until, k.pending) for key, k in table.rows.items()]
            for table in (t.pairs, t.sources, t.names)] + [t.refused, t.delayed, t.failures]


@pytest.mark.parametrize("sources, start", [(3, 0.0), (9, 0.0), (9, 100.0)])
def test_a_check_made_at_once_leaves_the_state_enter_and_succeeded_leave(sources: int, start: float) -> None:
    """`at_once` + `passed` (the EC2 endpoint's synchronous path) against `enter` + `succeeded`,
    over random histories of failures, successes and time: admitted by both or neither, the
    same tables (entries, order, fields) after; None whenever `enter` refuses or delays. (More
    sources than the cap: the source table full; a clock past `forget_s` from the start.)"""
    import random
    cfg = LoginThrottle.model_construct(**{**THROTTLE, "max_tracked": 6, "forget_s": 30.0})   # (a small cap: evictions)
    for seed in range(40):
        rng = random.Random(seed)
        now = [start]
        quick, slow = Throttle(cfg, clock=lambda: now[0]), Throttle(cfg, clock=lambda: now[0])
        for _ in range(120):
            name, source = rng.choice("abc"), f"192.0.2.{rng.randrange(sources)}"
            step = rng.random()
            now[0] += rng.choice([0.0, 0.5, 3.0, 40.0]) if step < 0.3 else 0.0
            if step < 0.55:   # a failure, on both
                for t in (quick, slow):
                    try:
                        t.enter(name, source)
                    except Throttled:
                        continue
                    t.failed(name, source)
            else:             # a success, at once on one, the usual way on the other
                admitted = quick.at_once(name, source)
                try:
                    delay = slow.enter(name, source)
                except Throttled:
                    delay = None
                if delay != 0.0:
                    assert admitted is None
                    if delay is not None:
                        slow.void(name, source)
                        quick.enter(name, source)   # (the caller's fall back: the same delay, void)
                        quick.void(name, source)
                    else:
                        quick.refused += 1   # (the fall back's enter refuses: counted there)
                    continue
                assert admitted is not None
                quick.passed(admitted)
                slow.succeeded(name, source)
            assert _state(quick) == _state(slow)


def test_a_trusted_pair_from_a_clean_source_passes_in_one_step() -> None:
    """The usual signed request (its pair trusted, its source without failures, the source's
    table not full): `at_once` finds it admitted from the pair's entry alone, and `passed`
    leaves the source table as `enter` + `succeeded` do (nothing kept for a clean source)."""
    cfg = LoginThrottle.model_construct(**{**THROTTLE, "forget_s": 30.0})
    now = [100.0]
    t = Throttle(cfg, clock=lambda: now[0])
    t.enter("u", "192.0.2.1")
    t.succeeded("u", "192.0.2.1")
    assert not t.sources.rows and list(t.pairs.rows) == [("u", "192.0.2.1")]
    now[0] += 1
    admitted = t.at_once("u", "192.0.2.1")
    assert admitted is not None and admitted[2] is _NO_SOURCE
    t.passed(admitted)
    assert not t.sources.rows and t.pairs.rows[("u", "192.0.2.1")].trusted_until == now[0] + 30.0


def test_many_concurrent_honest_ec2_calls_from_one_address_all_succeed(srv: Server) -> None:
    """32 correctly signed calls in flight at once from one address (wrk, a busy SDK client):
    none is taken for a failed login (each used to be counted as a failure until answered)."""
    user = srv.create_user("eu-busy")
    statuses: list[int] = []

    def client() -> None:
        for _ in range(5):
            statuses.append(ec2_call(srv, "127.0.7.9", user["AccessKeyId"], user["SecretAccessKey"])[0])
    threads = [threading.Thread(target=client) for _ in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert statuses == [200] * 160


@pytest.mark.parametrize("section, message", [
    ({"backoff_s": 10, "backoff_max_s": 5}, "login_throttle: backoff_max_s must be at least backoff_s"),
    ({"backoff_max_s": 600, "forget_s": 60}, "login_throttle: forget_s must be at least backoff_max_s"),
    ({"password_workers": 0}, "login_throttle.password_workers: Input should be greater than or equal to 1"),
])
def test_bad_throttle_settings_stop_the_start_in_one_line(tmp_path: Path, model_cache: Path,
                                                         section: dict[str, Any], message: str) -> None:
    from cloudctl.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=message) as e:
        load_config(write_config(tmp_path, model_cache, login_throttle=section))
    assert "\n" not in str(e.value)
