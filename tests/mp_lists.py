"""A list server for marketplace tests: serves a signed list and image bytes the test controls
(with Range support, and optional truncation of the first transfers), over real HTTP."""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudctl.core.marketplace import imagelist, smime
from cloudctl.core.marketplace.trust import slash_dn

from mp_pki import Identity


class ListServer:
    def __init__(self) -> None:
        self.list_body = b""
        self.images: dict[str, bytes] = {}
        self.truncate_first: dict[str, int] = {}    # name -> how many transfers to cut short
        self.ranges: list[str] = []                  # Range headers received
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/list":
                    return self._send(200, outer.list_body)
                name = self.path.removeprefix("/img/")
                data = outer.images.get(name)
                if data is None:
                    return self._send(404, b"nope")
                rng = self.headers.get("Range")
                start = 0
                if rng:
                    outer.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.truncate_first.get(name, 0) > 0:
                    outer.truncate_first[name] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(0.5)   # let the client take in the first half before the cut
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def image_entry(server: ListServer, name: str, data: bytes, identifier: str | None = None,
                sha512: str | None = None, size: int | None = None, **extra: Any) -> dict[str, Any]:
    server.images[name] = data
    return {"hv:image": {
        "dc:identifier": identifier or str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "dc:title": name,
        "dc:description": f"test image {name}", "hv:uri": f"{server.url}/img/{name}",
        "hv:size": size if size is not None else len(data),
        "sl:checksum:sha512": sha512 or hashlib.sha512(data).hexdigest(), "hv:version": "1",
        "hv:hypervisor": "kvm", "sl:arch": "x86_64", "sl:os": "Linux", "sl:osversion": "", "sl:comments": "",
        **extra}}


def list_doc(identifier: str, version: str, endorser: Identity, images: list[dict[str, Any]],
             created: float | None = None, expires: float | None = None) -> dict[str, Any]:
    now = time.time()
    return {
        "dc:identifier": identifier, "dc:title": "test list", "dc:description": "", "dc:source": "test",
        "dc:date:created": imagelist.fmt_time(created if created is not None else now - 60),
        "dc:date:expires": imagelist.fmt_time(expires if expires is not None else now + 7 * 86400),
        "hv:uri": "http://example.invalid/list", "hv:version": version,
        "hv:endorser": {"hv:x509": {"dc:creator": "t", "hv:email": "t@example.org",
                                    "hv:dn": slash_dn(endorser.cert.subject), "hv:ca": slash_dn(endorser.cert.issuer)}},
        "hv:images": images,
    }


def signed(doc: dict[str, Any], signer: Identity) -> bytes:
    return smime.sign(imagelist.dump(doc), signer.cert, signer.key)
