"""`GET /metrics`: scraped with prometheus-client's own parser from a served controller."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support import wait_state


def _scrape(srv: Any) -> dict[str, Any]:
    # No Authorization header: a Prometheus scraper without the admin token must get through.
    with urllib.request.urlopen(srv.admin_url + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fam: Any, sample: str, **labels: str) -> float:
    return sum(s.value for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_families_and_counters_move(new_server: Any) -> None:
    srv = new_server(monitor={"interval_s": 0.2})
    ec2 = srv.client(srv.create_user("m"))
    before = _scrape(srv)
    for name in ("cloudctl_api_requests", "cloudctl_api_request_duration_seconds", "cloudctl_host_info",
                 "cloudctl_host_state", "cloudctl_host_vcpus", "cloudctl_host_memory_bytes",
                 "cloudctl_host_memory_used_bytes", "cloudctl_instances", "cloudctl_journal_fsync_duration_seconds",
                 "cloudctl_checkpoint_duration_seconds", "cloudctl_host_poll_duration_seconds",
                 "cloudctl_event_loop_lag_seconds", "cloudctl_instance_info", "cloudctl_instance_cpu_seconds"):
        assert name in before, name
    assert before["cloudctl_api_requests"].type == "counter"
    assert _value(before["cloudctl_host_state"], "cloudctl_host_state", host="host-a", state="on") == 1

    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                            InstanceType="t3.small")["Instances"][0]["InstanceId"]
    wait_state(ec2, [iid], "running")
    try:
        ec2.describe_instances(InstanceIds=["i-00000000000000000"])
    except ec2.exceptions.ClientError:
        pass
    srv.admin("POST", "/v0/checkpoint")
    time.sleep(0.5)   # let a poll or two see the new domain
    after = _scrape(srv)
    req = after["cloudctl_api_requests"]
    assert _value(req, "cloudctl_api_requests_total", action="RunInstances", code="ok") == 1
    assert _value(req, "cloudctl_api_requests_total", action="DescribeInstances",
                  code="InvalidInstanceID.NotFound") == 1
    assert _value(after["cloudctl_api_request_duration_seconds"], "cloudctl_api_request_duration_seconds_count",
                  action="RunInstances") == 1
    assert _value(after["cloudctl_instances"], "cloudctl_instances", state="running") == 1
    used = sum(_value(after["cloudctl_host_vcpus_used"], "cloudctl_host_vcpus_used", host=h)
               for h in ("host-a", "host-b"))
    assert used == 2   # t3.small
    fsyncs = "cloudctl_journal_fsync_duration_seconds_count"
    assert _value(after["cloudctl_journal_fsync_duration_seconds"], fsyncs) > \
        _value(before["cloudctl_journal_fsync_duration_seconds"], fsyncs)
    assert _value(after["cloudctl_checkpoint_duration_seconds"], "cloudctl_checkpoint_duration_seconds_count") == 1
    polls = "cloudctl_host_poll_duration_seconds_count"
    assert _value(after["cloudctl_host_poll_duration_seconds"], polls) > \
        _value(before["cloudctl_host_poll_duration_seconds"], polls)
    assert _value(after["cloudctl_instance_info"], "cloudctl_instance_info", instance=iid) == 1
    assert _value(after["cloudctl_event_loop_lag_seconds"], "cloudctl_event_loop_lag_seconds_count") > 0
    # The rest of the admin API still wants the token.
    try:
        urllib.request.urlopen(srv.admin_url + "/v0/hosts", timeout=10)
        raise AssertionError("admin API answered without a token")
    except urllib.error.HTTPError as e:
        assert e.code == 401
