"""A user's image URL cannot reach the controller's loopback through a redirect either (the lab
half of test_image_urls.py: the redirecting server runs in a network namespace, as root)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a network namespace (root)")
def test_redirect_to_loopback_refused(new_server: Any, tmp_path: Path) -> None:
    """A server elsewhere (a namespace) answers with a redirect to the controller's loopback."""
    ns, host_if = f"ccurl{os.getpid() % 100000}", f"ccu{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
                       check=True)
        subprocess.run(["ip", "addr", "add", "10.254.77.1/24", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.254.77.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        script = ("import http.server\n"
                  "class H(http.server.BaseHTTPRequestHandler):\n"
                  "    def do_GET(self):\n"
                  "        self.send_response(302); self.send_header('Location', 'http://127.0.0.1:9/x')\n"
                  "        self.end_headers()\n"
                  "http.server.HTTPServer(('10.254.77.2', 8080), H).serve_forever()\n")
        web = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script])
        try:
            srv = new_server(user_image_urls=True)
            ec2 = srv.client(srv.create_user("u"))
            image_id = ec2.register_image(Name="redirected", ImageLocation="http://10.254.77.2:8080/disk.img")[
                "ImageId"]
            deadline = time.monotonic() + 30
            while (im := ec2.describe_images(ImageIds=[image_id])["Images"][0])["State"] == "pending":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert im["State"] == "failed" and "loopback or link-local" in im["Description"]
        finally:
            web.kill()
            web.wait()
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)
