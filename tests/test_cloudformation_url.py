"""TemplateURL: fetched under the rules of users' image URLs (allowed by `user_image_urls`; the
controller's loopback and link-local neighbours refused unless `user_image_urls_local`)."""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from asg_support import client, digest, settled
from support import Servers, wait_until

BODY = json.dumps({"Resources": {"G": {"Type": "AWS::EC2::SecurityGroup",
                                       "Properties": {"GroupDescription": "from a url"}}}})


class _Serve(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:   # noqa: N802 (http.server's name)
        body = BODY.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/t.json"
    httpd.shutdown()
    httpd.server_close()


def test_template_url_allowed_and_fetched(new_server: Servers, url: str) -> None:
    srv = new_server(user_image_urls=True, user_image_urls_local=True)
    cfn = client(srv, srv.create_user("url"), "cloudformation")
    assert [p for p in cfn.validate_template(TemplateURL=url)["Parameters"]] == []
    sid = cfn.create_stack(StackName="fromurl", TemplateURL=url)["StackId"]
    wait_until(lambda: cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE" or None,
               timeout=60)
    assert cfn.get_template(StackName="fromurl")["TemplateBody"] == json.loads(BODY)


def test_template_url_refused_at_loopback_or_when_disabled(new_server: Servers, url: str) -> None:
    for config in ({"user_image_urls": True}, {}):
        srv = new_server(**config)
        cfn = client(srv, srv.create_user("url"), "cloudformation")
        before = settled(srv)
        with pytest.raises(ClientError) as e:
            cfn.create_stack(StackName="fromurl", TemplateURL=url)
        assert e.value.response["Error"]["Code"] == "ValidationError"
        assert ("loopback" in e.value.response["Error"]["Message"]) == bool(config)
        assert digest(srv) == before
        srv.stop()
