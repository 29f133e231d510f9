"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

A user signs in, launches two instances on test:/// and watches them turn running on a page that
is never reloaded (the rows come over Server-Sent Events); tags one, terminates it; an operator
watches the event log update live, and disables a host and sees the capacity change. Screenshots
of the main pages go to the test's output directory (printed).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from support.server import Server

pytestmark = pytest.mark.slow   # a browser and a server: ~35 s

CHROMIUM = os.environ.get("CLOUDCTL_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 60_000   # a loaded machine; the waits end as soon as the page shows the state


def _browser_or_skip() -> Any:
    """Playwright's sync API; in CI (where `make install` installs chromium) a missing browser fails."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (pip, test extras)")
        sync_playwright = None
    if missing:
        why = "the console's browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def console(server_with: Any) -> Server:
    return server_with(console={"enabled": True})


def _marker(page: Any) -> None:
    """Mark the page's window: if it is still there later, the page was not reloaded."""
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page: Any) -> bool:
    return page.evaluate("window.__notReloaded === true")


def test_user_and_operator_in_chromium(console: Server, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect
    expect.set_options(timeout=TIMEOUT_MS)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nconsole screenshots in {shots} (set CLOUDCTL_CONSOLE_SHOTS=DIR to keep a copy)")
    alice = console.create_user("alice-browser")
    base = console.admin_url + "/console"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            user = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            ops = browser.new_context(viewport={"width": 1280, "height": 800})

            # The operator signs in and keeps the event log open.
            log = ops.new_page()
            log.goto(base + "/")
            expect(log).to_have_url(re.compile(r"/console/login$"))
            log.screenshot(path=str(shots / "login.png"))
            log.fill("#operator-login input[name=token]", console.token)
            log.click("#operator-login button[type=submit]")
            expect(log).to_have_url(re.compile(r"/console/ops/hosts$"))
            log.goto(base + "/ops/events")
            _marker(log)

            # The user signs in (a wrong secret first: refused) and keeps the instances page open.
            watch = user.new_page()
            watch.goto(base + "/login")
            watch.fill("#user-login input[name=access_key_id]", alice["AccessKeyId"])
            watch.fill("#user-login input[name=secret_access_key]", "not-the-secret")
            watch.click("#user-login button[type=submit]")
            expect(watch.locator("[role=alert]")).to_contain_text("not accepted")
            watch.fill("#user-login input[name=access_key_id]", alice["AccessKeyId"])
            watch.fill("#user-login input[name=secret_access_key]", alice["SecretAccessKey"])
            watch.click("#user-login button[type=submit]")
            expect(watch).to_have_url(re.compile(r"/console/instances$"))
            expect(watch.locator("#instance-table")).to_contain_text("No instances")
            _marker(watch)

            # Launch two from a second tab.
            act = user.new_page()
            act.goto(base + "/instances/new")
            act.fill("#launch-form input[name=name]", "web")
            act.fill("#launch-form input[name=count]", "2")
            act.fill("#launch-form textarea[name=user_data]", "#!/bin/sh\necho <hello> & bye\n")
            act.screenshot(path=str(shots / "launch.png"))
            act.click("#launch")
            expect(act.locator(".flash")).to_contain_text("launched")
            ids = re.findall(r"i-[0-9a-f]+", act.locator(".flash").inner_text())
            assert len(ids) == 2, ids

            # Both appear and turn running on the page that was never reloaded.
            for iid in ids:
                expect(watch.locator(f"tr[data-instance={iid}] td.state")).to_have_text("running")
            assert _not_reloaded(watch)
            watch.screenshot(path=str(shots / "instances.png"))

            # Tag one (markup in the value is shown as text), then terminate it.
            victim, other = ids
            act.goto(f"{base}/instances/{victim}")
            expect(act.locator(".user-data")).to_have_text("#!/bin/sh\necho <hello> & bye\n")
            act.fill("#tag-form input[name=key]", "role")
            act.fill("#tag-form input[name=value]", "<b>db</b>")
            act.click("#tag-form button[type=submit]")
            expect(act.locator("#tags")).to_contain_text("<b>db</b>")
            assert act.locator("#tags b").count() == 0
            act.screenshot(path=str(shots / "instance.png"))
            act.click("#do-terminate")
            expect(act.locator("#instance-state")).to_have_text(re.compile("shutting-down|terminated"))
            expect(watch.locator(f"tr[data-instance={victim}] td.state")).to_have_text("terminated")
            expect(watch.locator(f"tr[data-instance={other}] td.state")).to_have_text("running")
            assert _not_reloaded(watch)

            # The operator's event log showed it live.
            row = log.locator("#events tr", has_text=victim).filter(has_text="-> terminated")
            expect(row.first).to_be_visible()
            expect(log.locator("#events tr", has_text=other).filter(has_text="-> running").first).to_be_visible()
            assert _not_reloaded(log)
            log.screenshot(path=str(shots / "events.png"))

            # Disabling a host leaves its zone no room; enabling it gives the room back.
            hosts = ops.new_page()
            hosts.goto(base + "/ops/hosts")
            zone = hosts.locator("tr[data-host=host-a] td").nth(1).inner_text()
            room = hosts.locator(f"#capacity tr[data-type='t3.nano'][data-zone='{zone}'] td.available")
            before = int(room.inner_text())
            assert before > 0
            hosts.click("#disable-host-a")
            expect(hosts.locator("tr[data-host=host-a] td.admin")).to_have_text("disabled")
            expect(room).to_have_text("0")
            hosts.screenshot(path=str(shots / "hosts.png"), full_page=True)
            hosts.click("#enable-host-a")
            expect(hosts.locator("tr[data-host=host-a] td.admin")).to_have_text("enabled")
            expect(room).to_have_text(str(before))

            for name in ("metrics", "users"):
                hosts.goto(f"{base}/ops/{name}")
                hosts.screenshot(path=str(shots / f"{name}.png"))

            # A key pair's private key is offered once, as a download.
            act.goto(base + "/keypairs")
            act.fill("#keypair-form input[name=name]", "browser-key")
            with act.expect_download() as dl:
                act.click("#keypair-form button[type=submit]")
            pem = Path(dl.value.path()).read_text()
            assert "PRIVATE KEY" in pem
            act.goto(base + "/keypairs")
            expect(act.locator("table.list")).to_contain_text("browser-key")
            act.screenshot(path=str(shots / "keypairs.png"))

            # Signing out ends the session: the open page's next request goes to the sign-in page.
            act.click("#sign-out")
            expect(act).to_have_url(re.compile(r"/console/login$"))
            watch.goto(base + "/instances")
            expect(watch).to_have_url(re.compile(r"/console/login$"))
        finally:
            browser.close()
    if os.environ.get("CLOUDCTL_CONSOLE_SHOTS"):   # a directory to keep them in (tmp_path may be removed)
        shutil.copytree(shots, os.environ["CLOUDCTL_CONSOLE_SHOTS"], dirs_exist_ok=True)
