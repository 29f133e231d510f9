"""Crash and restart: what was acknowledged survives a SIGKILL; bad configs stop start-up cleanly."""
from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from support import ROOT, wait_state, wait_until


def all_instances(ec2: Any) -> dict[str, dict[str, Any]]:
    return {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


@pytest.mark.slow
def test_acknowledged_changes_survive_kill(new_server: Any) -> None:
    srv = new_server()
    user = srv.create_user("dora")
    ec2 = srv.client(user)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
    ec2.create_key_pair(KeyName="k1")
    run = ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3, KeyName="k1", ClientToken="tok-1",
                            TagSpecifications=[{"ResourceType": "instance",
                                                "Tags": [{"Key": "Name", "Value": "keep"}]}])
    ids = [i["InstanceId"] for i in run["Instances"]]
    wait_state(ec2, ids, "running")
    ec2.stop_instances(InstanceIds=[ids[0]])
    wait_state(ec2, [ids[0]], "stopped")
    ec2.terminate_instances(InstanceIds=[ids[1]])
    wait_state(ec2, [ids[1]], "terminated")
    ec2.create_tags(Resources=[ids[2]], Tags=[{"Key": "extra", "Value": "yes"}])
    before = all_instances(ec2)

    srv.kill()
    srv.start()
    ec2 = srv.client(user)   # the same credentials still work: users survived too
    after = all_instances(ec2)
    assert set(after) == set(before)
    for iid in ids:
        assert iid == ids[1] or after[iid]["PrivateIpAddress"] == before[iid]["PrivateIpAddress"]
        assert after[iid]["Tags"] == before[iid]["Tags"]
    assert wait_state(ec2, [ids[0]], "stopped")[0]["State"]["Name"] == "stopped"
    assert after[ids[1]]["State"]["Name"] == "terminated"
    assert wait_state(ec2, [ids[2]], "running")[0]["State"]["Name"] == "running"
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k1"]
    again = ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3, KeyName="k1", ClientToken="tok-1",
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "Name", "Value": "keep"}]}])
    assert again["ReservationId"] == run["ReservationId"]
    # The test driver forgets its domains on restart: reconcile defined them again, and said so.
    report = srv.admin("GET", "/v0/reconcile")
    assert any(ids[2] in line and "defining it again" in line for line in report)
    ec2.start_instances(InstanceIds=[ids[0]])
    assert wait_state(ec2, [ids[0]], "running")[0]["State"]["Name"] == "running"


def test_kill_under_concurrent_load(new_server: Any) -> None:
    srv = new_server()
    user = srv.create_user("erin")
    image = srv.client(user).describe_images()["Images"][0]["ImageId"]
    acked: dict[str, list[str]] = {}
    attempted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(n: int) -> None:
        ec2 = srv.client(user)
        i = 0
        while not stop.is_set():
            token = f"w{n}-{i}"
            i += 1
            with lock:
                attempted.append(token)
            try:
                r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=2, ClientToken=token,
                                      TagSpecifications=[{"ResourceType": "instance",
                                                          "Tags": [{"Key": "token", "Value": token}]}])
            except (ClientError, BotoConnectionError, EndpointConnectionError, Exception):
                return
            with lock:
                acked[token] = [x["InstanceId"] for x in r["Instances"]]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 10, 60, "ten launches acknowledged before the crash")
    srv.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 10, "the load should have been acknowledged many times before the crash"

    srv.start()
    ec2 = srv.client(user)
    found = all_instances(ec2)
    for token, ids in acked.items():
        for iid in ids:
            assert iid in found, f"acknowledged instance {iid} (token {token}) lost"
            assert {"Key": "token", "Value": token} in found[iid]["Tags"]
    # Nothing half-present: every instance has its lease and its tag, and addresses are unique.
    ips = [i["PrivateIpAddress"] for i in found.values()]
    assert all(ips) and len(set(ips)) == len(ips)
    assert all(any(t["Key"] == "token" for t in i.get("Tags", [])) for i in found.values())
    # Retrying every token gives back the original reservation where one was made.
    for token in attempted[:60]:
        r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=2, ClientToken=token,
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "token", "Value": token}]}])
        if token in acked:
            assert [x["InstanceId"] for x in r["Instances"]] == acked[token]


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "config" / "cloudctl.yaml").read_text())
    cfg["hosts"][0]["zone"] = None
    cfg["state_dir"] = str(tmp_path / "state")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "cloudctl", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "hosts.0.zone" in lines[0]
    bad.write_text("hosts: [unclosed\n")
    out = subprocess.run([sys.executable, "-m", "cloudctl", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert "not valid YAML" in out.stderr


def test_journal_is_durable_before_the_answer(new_server: Any) -> None:
    """An acknowledged change is in the journal file itself, not only in memory."""
    srv = new_server()
    user = srv.create_user("fay")
    ec2 = srv.client(user)
    name = f"key-{uuid.uuid4().hex[:8]}"
    ec2.create_key_pair(KeyName=name)
    journals = sorted(srv.state_dir.glob("journal.*"))
    assert any(name.encode() in p.read_bytes() for p in journals)
