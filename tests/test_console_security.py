"""The web console against hostile use, with a plain HTTP client: CSRF, other users' resources,
markup in user-chosen text, signed-out sessions, sign-in guessing, and who may open which page."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from cloudctl.config import Console

from support.clients import boto_client
from support.server import Server

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def srv(server_with: Any) -> Server:
    # A short free budget and a long backoff: the fourth wrong secret for a key starts a backoff
    # that outlasts the test (no timing in the assertions).
    return server_with(console={"enabled": True},
                       login_throttle={"pair_free_failures": 2, "backoff_s": 60, "backoff_max_s": 120,
                                       "forget_s": 600, "refusal_pace_s": 0})


@pytest.fixture(scope="module")
def users(srv: Server) -> dict[str, dict[str, str]]:
    return {n: srv.create_user(n) for n in ("alice", "bob", "carol", "dave")}


@pytest.fixture(scope="module")
def image(srv: Server, users: dict[str, dict[str, str]]) -> str:
    ec2 = srv.client(users["alice"])
    return ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


def _base(srv: Server) -> str:
    return srv.admin_url + "/console"


async def _login_form(http: aiohttp.ClientSession, srv: Server) -> str:
    async with http.get(_base(srv) + "/login") as r:
        assert r.status == 200
        m = _CSRF.search(await r.text())
        assert m
        return m.group(1)


async def sign_in(http: aiohttp.ClientSession, srv: Server, user: dict[str, str] | None) -> str:
    """Sign in as `user` (None: the operator); the session's CSRF token."""
    csrf = await _login_form(http, srv)
    form = {"csrf": csrf, "kind": "operator", "token": srv.token} if user is None else {
        "csrf": csrf, "kind": "user", "access_key_id": user["AccessKeyId"],
        "secret_access_key": user["SecretAccessKey"]}
    async with http.post(_base(srv) + "/login", data=form, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with http.get(_base(srv) + "/") as r:
        assert r.status == 200
        m = _CSRF.search(await r.text())
        assert m
        return m.group(1)


def _digest(srv: Server) -> str:
    req = urllib.request.Request(srv.admin_url + "/v0/state/digest", headers={"Authorization": f"Bearer {srv.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["digest"]


def _launch(srv: Server, user: dict[str, str], image: str, name: str = "x", user_data: str = "") -> str:
    ec2 = srv.client(user)
    kw: dict[str, Any] = {"UserData": user_data} if user_data else {}
    res = ec2.run_instances(ImageId=image, InstanceType="t3.nano", MinCount=1, MaxCount=1,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
                            **kw)
    return res["Instances"][0]["InstanceId"]


def test_off_unless_enabled(server_with: Any) -> None:
    """With `console: {enabled: false}` nothing is served under /console (the admin token is asked
    for, as on every admin path); and the config model's default is off."""
    off = server_with(console={"enabled": False})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(off.admin_url + "/console/login", timeout=30)
    assert e.value.code == 401
    assert "web console" not in off.log_path.read_text()
    assert Console().enabled is False


async def test_session_cookie_flags(http: aiohttp.ClientSession, srv: Server, users: Any) -> None:
    csrf = await _login_form(http, srv)
    form = {"csrf": csrf, "kind": "user", "access_key_id": users["alice"]["AccessKeyId"],
            "secret_access_key": users["alice"]["SecretAccessKey"]}
    async with http.post(_base(srv) + "/login", data=form, allow_redirects=False) as r:
        assert r.status == 303
        cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("cloudctl_console="))
    flags = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")}
    assert "httponly" in flags and flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/console"
    assert "max-age" not in flags and "expires" not in flags   # ends with the browser; expires server-side
    assert "secure" not in flags   # plain HTTP here; set when the listener is on TLS (request.secure)


async def test_post_without_csrf_is_refused(http: aiohttp.ClientSession, srv: Server, users: Any, image: str) -> None:
    csrf = await sign_in(http, srv, users["alice"])
    before = _digest(srv)
    launch = {"image_id": image, "instance_type": "t3.nano", "count": "1"}
    for form in (launch, {**launch, "csrf": ""}, {**launch, "csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}):
        async with http.post(_base(srv) + "/instances", data=form, allow_redirects=False) as r:
            assert r.status == 403
            assert "security token" in await r.text()
    async with http.post(_base(srv) + "/logout", data={}, allow_redirects=False) as r:
        assert r.status == 403
    assert _digest(srv) == before   # nothing launched
    async with http.get(_base(srv) + "/instances", allow_redirects=False) as r:
        assert r.status == 200   # and the refused sign-out left the session alone
    # The same form with the token is accepted (the refusals above were the token's doing).
    async with http.post(_base(srv) + "/instances", data={**launch, "csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/instances"
    assert _digest(srv) != before


async def test_sign_in_form_needs_its_token(http: aiohttp.ClientSession, srv: Server, users: Any) -> None:
    await _login_form(http, srv)   # the cookie is set, but the form does not carry its value
    form = {"kind": "user", "access_key_id": users["alice"]["AccessKeyId"],
            "secret_access_key": users["alice"]["SecretAccessKey"]}
    async with http.post(_base(srv) + "/login", data=form, allow_redirects=False) as r:
        assert r.status == 403


async def test_other_users_instance_is_a_404(http: aiohttp.ClientSession, srv: Server, users: Any,
                                              image: str) -> None:
    theirs = _launch(srv, users["bob"], image, "bobs")
    csrf = await sign_in(http, srv, users["alice"])
    for path in (f"/instances/{theirs}", f"/instances/{theirs}/console", "/instances/i-0000000000000000f",
                 "/instances/not-an-id", "/security-groups/sg-0123456789abcdef0"):
        async with http.get(_base(srv) + path) as r:
            assert r.status == 404, path
            assert "Not found" in await r.text()
    async with http.get(_base(srv) + "/instances") as r:
        assert theirs not in await r.text()
    # A change to it is refused by the core, as through EC2, and changes nothing.
    before = _digest(srv)
    for action in ("terminate", "stop", "reboot"):
        async with http.post(f"{_base(srv)}/instances/{theirs}/{action}", data={"csrf": csrf}) as r:
            assert r.status == 200 and "InvalidInstanceID.NotFound" in await r.text()
    async with http.post(f"{_base(srv)}/instances/{theirs}/tags", data={"csrf": csrf, "key": "k", "value": "v"}) as r:
        assert "NotFound" in await r.text()
    assert _digest(srv) == before
    state = srv.client(users["bob"]).describe_instances(InstanceIds=[theirs])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("pending", "running") and len(state["Tags"]) == 1


async def test_markup_is_escaped_everywhere(http: aiohttp.ClientSession, srv: Server, users: Any,
                                            image: str) -> None:
    carol = users["carol"]
    iid = _launch(srv, carol, image, SCRIPT, user_data=SCRIPT)
    ec2 = srv.client(carol)
    ec2.create_tags(Resources=[iid], Tags=[{"Key": SCRIPT, "Value": SCRIPT}])
    csrf = await sign_in(http, srv, carol)
    # (the key pair's name through the console's own form; its answer is the private key)
    async with http.post(_base(srv) + "/keypairs", data={"csrf": csrf, "name": "k<script>"}) as r:
        assert r.headers["Content-Disposition"] == 'attachment; filename="k_script_.pem"'
    pages = ["/instances", f"/instances/{iid}", "/instances/table", "/keypairs",
             "/instances/new"]
    for path in pages:
        async with http.get(_base(srv) + path) as r:
            body = await r.text()
            assert r.status == 200, path
            assert "<script>alert" not in body and "<script>x" not in body, path
            assert "&lt;script&gt;" in body, path
    async with http.get(f"{_base(srv)}/instances/{iid}") as r:
        body = await r.text()
        assert body.count(ESCAPED) >= 4   # Name, tag key, tag value, user data
    # A console error page repeats what was asked for: escaped too.
    async with http.get(f"{_base(srv)}/instances/{SCRIPT}") as r:
        assert r.status == 404 and "<script>alert" not in await r.text()
    # The operator's pages show user names and events.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ops:
        await sign_in(ops, srv, None)
        for path in ("/ops/events", "/ops/users", "/ops/hosts"):
            async with ops.get(_base(srv) + path) as r:
                assert r.status == 200 and "<script>alert" not in await r.text()
    # Every page forbids inline script, should anything slip through.
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]


async def test_signed_out_session_is_refused(http: aiohttp.ClientSession, srv: Server, users: Any) -> None:
    csrf = await sign_in(http, srv, users["alice"])
    sid = next(c.value for c in http.cookie_jar if c.key == "cloudctl_console")
    async with http.post(_base(srv) + "/logout", data={"csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/login"
    # The old cookie, sent again as if copied before the sign-out:
    async with aiohttp.ClientSession() as other:
        hdr = {"Cookie": f"cloudctl_console={sid}"}
        async with other.get(_base(srv) + "/instances", headers=hdr, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/login"
        async with other.post(_base(srv) + "/instances", headers=hdr, data={"csrf": csrf, "image_id": "x"},
                              allow_redirects=False) as r:
            assert r.status == 401
        async with other.get(_base(srv) + "/instances/live", headers={**hdr, "Accept": "text/event-stream"},
                             allow_redirects=False) as r:
            assert r.status == 401
        # the live page's own refresh (htmx) is told to take the whole page to the sign-in
        async with other.get(_base(srv) + "/instances/table", headers={**hdr, "HX-Request": "true"},
                             allow_redirects=False) as r:
            assert r.status == 401 and r.headers["HX-Redirect"] == "/console/login"


async def test_live_stream_ends_with_the_session(http: aiohttp.ClientSession, srv: Server, users: Any,
                                                 image: str) -> None:
    csrf = await sign_in(http, srv, users["dave"])
    async with http.get(_base(srv) + "/instances/live") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry:")
        _launch(srv, users["dave"], image)
        assert await stream.content.readuntil(b"\n\n") == b"event: changed\ndata: \n\n"
        async with aiohttp.ClientSession(cookie_jar=http.cookie_jar) as same:
            async with same.post(_base(srv) + "/logout", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
        _launch(srv, users["dave"], image)   # the next change finds the session gone: the stream ends
        async with asyncio.timeout(120):   # (a guard against a hang, not a measure)
            rest = await stream.content.read()
        assert stream.content.at_eof()
        assert set(rest.split(b"\n\n")) <= {b"event: changed\ndata: ", b""}


async def test_pages_are_for_their_audience(http: aiohttp.ClientSession, srv: Server, users: Any) -> None:
    csrf = await sign_in(http, srv, users["alice"])
    for path in ("/ops/hosts", "/ops/events", "/ops/users", "/ops/metrics", "/ops/events/live"):
        async with http.get(_base(srv) + path) as r:
            assert r.status == 404, path
    async with http.post(_base(srv) + "/ops/hosts/host-a/disable", data={"csrf": csrf}) as r:
        assert r.status == 404
    assert all(h["admin"] == "enabled" for h in srv.admin("GET", "/v0/hosts"))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ops:
        await sign_in(ops, srv, None)
        for path in ("/instances", "/keypairs", "/instances/new"):
            async with ops.get(_base(srv) + path) as r:
                assert r.status == 404, path
        for path in ("/ops/hosts", "/ops/events", "/ops/users", "/ops/metrics", "/ops/baremetal", "/ops/marketplace",
                     "/ops/hosts/host-a/fence"):
            async with ops.get(_base(srv) + path) as r:
                assert r.status == 200, path
        async with ops.get(_base(srv) + "/ops/hosts/no-such-host/fence") as r:
            assert r.status == 404
        # A fence of a host that is up is refused by the core, and the page says why.
        ops_csrf = _CSRF.search(await (await ops.get(_base(srv) + "/ops/hosts")).text())
        assert ops_csrf
        async with ops.post(_base(srv) + "/ops/hosts/host-a/fence", data={"csrf": ops_csrf.group(1)}) as r:
            assert "IncorrectState" in await r.text()
    # Neither session opens the admin API (it takes the token, not a cookie).
    async with http.get(srv.admin_url + "/v0/users") as r:
        assert r.status == 401


async def test_service_pages_show_the_callers_own(http: aiohttp.ClientSession, srv: Server, users: Any,
                                                 image: str) -> None:
    """AutoScaling groups, load balancers (with instance health) and stacks (with events): a user's
    own are listed, another user's are not, and another user's stack by name is a 404 page."""
    alice = users["alice"]
    asg = boto_client(srv, alice, "autoscaling")
    asg.create_launch_configuration(LaunchConfigurationName="console-lc", ImageId=image, InstanceType="t3.nano")
    asg.create_auto_scaling_group(AutoScalingGroupName="console-asg", LaunchConfigurationName="console-lc",
                                  MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=["cloudctl-1a"])
    elb = boto_client(srv, alice, "elb")
    elb.create_load_balancer(LoadBalancerName="console-lb", AvailabilityZones=["cloudctl-1a"], Listeners=[
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080}])
    iid = _launch(srv, alice, image, "behind-lb")
    elb.register_instances_with_load_balancer(LoadBalancerName="console-lb", Instances=[{"InstanceId": iid}])
    template = {"Resources": {"Group": {"Type": "AWS::EC2::SecurityGroup",
                                        "Properties": {"GroupDescription": "console stack"}}}}
    boto_client(srv, alice, "cloudformation").create_stack(StackName="console-stack",
                                                           TemplateBody=json.dumps(template))
    try:
        await sign_in(http, srv, alice)
        for path, shown in (("/scaling-groups", "console-asg"), ("/load-balancers", iid), ("/stacks", "console-stack"),
                            ("/stacks/console-stack", "AWS::EC2::SecurityGroup")):
            async with http.get(_base(srv) + path) as r:
                assert r.status == 200 and shown in await r.text(), path
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            await sign_in(other, srv, users["carol"])
            for path, hidden in (("/scaling-groups", "console-asg"), ("/load-balancers", "console-lb"),
                                 ("/stacks", "console-stack")):
                async with other.get(_base(srv) + path) as r:
                    assert r.status == 200 and hidden not in await r.text(), path
            async with other.get(_base(srv) + "/stacks/console-stack") as r:
                assert r.status == 404
    finally:
        elb.delete_load_balancer(LoadBalancerName="console-lb")


async def test_launch_form_sends_user_data_as_typed(http: aiohttp.ClientSession, srv: Server, users: Any,
                                                   image: str) -> None:
    """The console base64-encodes the text typed; the instance gets exactly those bytes (EC2 says so)."""
    csrf = await sign_in(http, srv, users["alice"])
    typed = "#!/bin/sh\necho <hi> & 'bye'\n"
    form = {"csrf": csrf, "image_id": image, "instance_type": "t3.nano", "count": "1", "user_data": typed}
    async with http.post(_base(srv) + "/instances", data=form) as r:
        m = re.search(r"launched (i-[0-9a-f]+)", await r.text())
    assert m
    got = srv.client(users["alice"]).describe_instance_attribute(InstanceId=m.group(1), Attribute="userData")
    assert base64.b64decode(got["UserData"]["Value"]).decode() == typed


async def test_open_live_streams_do_not_hold_up_a_stop(new_server: Any) -> None:
    """SIGTERM with a browser's live stream open: the stream ends and the controller exits by itself
    (the test server's stop waits 30 s before SIGKILL; aiohttp would wait 60 s for the handler)."""
    s = new_server(console={"enabled": True})
    user = s.create_user("eve")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, s, user)
        async with http.get(_base(s) + "/instances/live") as stream:
            assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry:")
            await asyncio.to_thread(s.stop)
            assert s.proc is not None and s.proc.returncode == 0
            assert await stream.content.read() == b""


async def test_sign_in_attempts_are_rate_limited(http: aiohttp.ClientSession, srv: Server, users: Any) -> None:
    """Wrong secrets for one key: refused (401) until its free failures are spent, then throttled
    (429, Retry-After) without being checked, the right secret too; another key is unaffected."""
    key = users["bob"]["AccessKeyId"]
    csrf = await _login_form(http, srv)
    statuses = []
    for secret in ["wrong"] * 3 + [users["bob"]["SecretAccessKey"]]:
        form = {"csrf": csrf, "kind": "user", "access_key_id": key, "secret_access_key": secret}
        async with http.post(_base(srv) + "/login", data=form, allow_redirects=False) as r:
            statuses.append(r.status)
            retry = r.headers.get("Retry-After")
    assert statuses == [401, 401, 401, 429]
    assert retry is not None and int(retry) > 0
    assert not any(c.key == "cloudctl_console" for c in http.cookie_jar)
    # The EC2 API shares the budget: the same key's signed requests are throttled too.
    with pytest.raises(Exception, match="RequestLimitExceeded"):
        srv.client(users["bob"]).describe_instances()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await sign_in(other, srv, users["alice"])


async def test_operator_sign_in_is_rate_limited(http: aiohttp.ClientSession, srv: Server) -> None:
    csrf = await _login_form(http, srv)
    statuses = []
    for token in ["wrong"] * 3 + [srv.token]:
        async with http.post(_base(srv) + "/login", data={"csrf": csrf, "kind": "operator", "token": token},
                             allow_redirects=False) as r:
            statuses.append(r.status)
    assert statuses == [401, 401, 401, 429]


def test_on_tls_the_cookies_are_secure(tmp_path: Any, model_cache: Any) -> None:
    """With the admin listener on TLS, the console's cookies carry Secure and the banner gives https."""
    import ssl

    from support.server import write_config
    from tls_pki import Pki, TlsServer
    pki = Pki(tmp_path / "pki")
    tls = {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path)}
    s = TlsServer(write_config(tmp_path, model_cache, console={"enabled": True}, admin={"tls": tls}))
    s.start()
    try:
        user = s.create_user("tls-user")
        ctx = ssl.create_default_context(cafile=tls["cert"])
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        assert f"web console    {s.admin_url}/console/" in s.log_path.read_text()

        async def flow() -> list[str]:
            conn = aiohttp.TCPConnector(ssl=ctx)
            async with aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                async with http.get(s.admin_url + "/console/login") as r:
                    pre = r.headers.getall("Set-Cookie")
                    m = _CSRF.search(await r.text())
                assert m
                form = {"csrf": m.group(1), "kind": "user", "access_key_id": user["AccessKeyId"],
                        "secret_access_key": user["SecretAccessKey"]}
                async with http.post(s.admin_url + "/console/login", data=form, allow_redirects=False) as r:
                    assert r.status == 303
                    return pre + [c for c in r.headers.getall("Set-Cookie") if c.startswith("cloudctl_console=")]

        cookies = asyncio.run(flow())
        assert s.admin_url.startswith("https://") and len(cookies) == 2
        assert all("; Secure" in c for c in cookies), cookies
    finally:
        s.stop()
