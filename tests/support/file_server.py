"""A plain HTTP server of a folder's files, on a free loopback port in a thread of the test: where
image imports and the deferred aiohttp client fetch from (a real server, not a stub)."""
from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """The files under `root` over HTTP while the block runs; yields the base URL (no slash)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
