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


def test_the_per_host_poll_histogram_writes_what_prometheus_clients_histogram_writes(monkeypatch: Any) -> None:
    """The poll histogram keeps plain numbers per host instead of a labelled child each (issue 14):
    the scrape's text must stay the library's, byte for byte, whatever the observations (on a
    bound, between bounds, over the last one, zero), the hosts' order, with and without `_created`."""
    import prometheus_client.metrics as client
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from cloudctl.api import metrics_format as fmt
    from cloudctl.api.metrics import _FAST
    from cloudctl.api.metrics_plain import PlainHistogram

    polls = [("h2", 0.0), ("h1", 0.001), ("h2", 0.0031), ("h1", 7.5), ("h3", 5.0), ("h1", 0.0004), ("h2", 0.01)]
    for created in (True, False):
        monkeypatch.setattr(client, "_use_created", created)
        monkeypatch.setattr(fmt, "created_series", created)
        monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
        theirs, ours = CollectorRegistry(auto_describe=False), fmt.Registry()
        hist = Histogram("cloudctl_host_poll_duration_seconds", "one monitoring poll of one host", ["host"],
                         buckets=_FAST, registry=theirs)
        mine = PlainHistogram("cloudctl_host_poll_duration_seconds", "one monitoring poll of one host", ["host"],
                              _FAST)
        ours.register(mine)
        assert fmt.text(ours.collect()) == generate_latest(theirs)   # (no host polled yet: HELP and TYPE)
        for host, seconds in polls:
            hist.labels(host).observe(seconds)
            mine.observe(mine.child(host), seconds)
        text = fmt.text(ours.collect())
        assert text == generate_latest(theirs)
        assert (b'_created{host="h2"}' in text) is created
        assert b'cloudctl_host_poll_duration_seconds_bucket{host="h1",le="+Inf"} 3.0' in text


def test_the_request_counter_and_histogram_write_what_prometheus_clients_write(monkeypatch: Any) -> None:
    """The per-request series keep plain numbers per label set instead of the library's locked
    children (issue 14): the scrape's text must stay the library's, byte for byte, whatever the
    requests (latencies on a bound, between bounds, over the last one, zero; label sets in any
    order), with and without `_created`; and `Metrics.request` must count as the library did."""
    import prometheus_client.metrics as client
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from cloudctl.api import metrics_format as fmt
    from cloudctl.api.metrics import _FAST, Metrics
    from cloudctl.api.metrics_plain import PlainCounter, PlainHistogram

    calls = [("ec2", "DescribeInstances", "ok", 0.0), ("ec2", "RunInstances", "ok", 0.001),
             ("sts", "GetCallerIdentity", "AuthFailure", 0.0031), ("ec2", "DescribeInstances", "ok", 7.5),
             ("ec2", "DescribeInstances", "InvalidInstanceID.NotFound", 5.0), ("ec2", "RunInstances", "ok", 0.0004)]
    for created in (True, False):
        monkeypatch.setattr(client, "_use_created", created)
        monkeypatch.setattr(fmt, "created_series", created)
        monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
        theirs, ours = CollectorRegistry(auto_describe=False), fmt.Registry()
        doc = "API requests by API, action and outcome (ok or the error code)"
        lib_count = Counter("cloudctl_api_requests", doc, ["api", "action", "code"], registry=theirs)
        lib_hist = Histogram("cloudctl_api_request_duration_seconds", "API request handling time",
                             ["api", "action"], buckets=_FAST, registry=theirs)
        count = PlainCounter("cloudctl_api_requests", doc, ["api", "action", "code"])
        hist = PlainHistogram("cloudctl_api_request_duration_seconds", "API request handling time",
                              ["api", "action"], _FAST)
        ours.register(count)
        ours.register(hist)
        assert fmt.text(ours.collect()) == generate_latest(theirs)   # (no request yet: HELP and TYPE)
        # Metrics.request's own arithmetic, on a Metrics whose series are these two
        m = Metrics.__new__(Metrics)
        m.known, m._children, m.requests, m.latency = {"DescribeInstances", "RunInstances"}, {}, count, hist
        for api, action, code, seconds in calls:
            lib_count.labels(api, action if action in m.known else "other", code).inc()
            lib_hist.labels(api, action if action in m.known else "other").observe(seconds)
            m.request(api, action, code, seconds)
        text = fmt.text(ours.collect())
        assert text == generate_latest(theirs)
        assert (b'cloudctl_api_requests_created{action="RunInstances"' in text) is created
        assert b'cloudctl_api_requests_total{action="DescribeInstances",api="ec2",code="ok"} 2.0' in text
        assert b'cloudctl_api_request_duration_seconds_bucket{action="other",api="sts",le="0.005"} 1.0' in text
