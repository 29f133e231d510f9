"""aiohttp's HTTP client is loaded at its first use, not with the server (cloudctl/lazy_aiohttp.py,
issue 14: base RSS), and every way of reaching aiohttp's names still answers as aiohttp itself does.
Each case runs in a fresh interpreter: this test process imported aiohttp long ago."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter on this checkout; it prints one JSON document."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_the_server_starts_without_the_client_and_loads_it_at_first_use() -> None:
    got = run("""
        import json, sys
        import cloudctl.server, cloudctl.drivers.fetcher, cloudctl.api.admin_elb, cloudctl.drivers.obm.obmd
        before = "aiohttp.client" in sys.modules
        import aiohttp
        from aiohttp import web
        still = "aiohttp.client" in sys.modules
        timeout = aiohttp.ClientTimeout(total=3)        # what the fetcher asks first
        print(json.dumps({"before": before, "after_web": still, "version": aiohttp.__version__,
                          "loaded": "aiohttp.client" in sys.modules, "total": timeout.total,
                          "session": aiohttp.ClientSession.__module__, "web": web.Application.__module__}))
    """)
    assert got == {"before": False, "after_web": False, "version": got["version"], "loaded": True, "total": 3,
                   "session": "aiohttp.client", "web": "aiohttp.web_app"}
    import aiohttp
    assert got["version"] == aiohttp.__version__


def test_every_way_of_naming_the_client_answers_as_aiohttp_does() -> None:
    got = run("""
        import json, sys
        import cloudctl
        from aiohttp import ClientError, ClientSession          # from-import of a name
        import aiohttp
        import aiohttp.client_exceptions
        names = set(aiohttp.__all__)
        star = {}
        exec("from aiohttp import *", star)
        try:
            aiohttp.NoSuchName
            missing = "no error"
        except AttributeError as e:
            missing = str(e)
        print(json.dumps({"same": ClientError is aiohttp.client_exceptions.ClientError,
                          "session_in_all": "ClientSession" in names, "star": "ClientSession" in star,
                          "missing": missing, "hasattr_file": hasattr(aiohttp, "__file__")}))
    """)
    assert got == {"same": True, "session_in_all": True, "star": True, "missing": aiohttp_says(),
                   "hasattr_file": True}


def test_a_missing_name_asked_first_fails_as_aiohttp_does() -> None:
    got = run("""
        import json
        import cloudctl
        import aiohttp
        try:
            aiohttp.NoSuchName                                    # the first name asked: loads the client
            missing = "no error"
        except AttributeError as e:
            missing = str(e)
        print(json.dumps({"missing": missing, "session": aiohttp.ClientSession.__name__}))
    """)
    assert got == {"missing": aiohttp_says(), "session": "ClientSession"}


def aiohttp_says() -> str:
    """aiohttp's own words for a missing name, imported without cloudctl."""
    return str(run("""
        import json
        import aiohttp
        try:
            aiohttp.NoSuchName
        except AttributeError as e:
            print(json.dumps({"said": str(e)}))
    """)["said"])


def test_nothing_is_deferred_once_aiohttp_is_imported() -> None:
    got = run("""
        import json, sys
        import aiohttp
        real = sys.modules["aiohttp"]
        from cloudctl.lazy_aiohttp import defer_client
        print(json.dumps({"installed": defer_client(), "same": sys.modules["aiohttp"] is real}))
    """)
    assert got == {"installed": False, "same": True}
