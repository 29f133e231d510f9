"""Load balancers across controller crashes: the proxies keep serving while the controller is
down, are adopted (not restarted) when it comes back, are started again when they die, orphans
are removed; and a SIGKILL at a random moment loses no acknowledged ELB change."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from cloudctl.drivers.loadbalancer.base import Backend as LbBackend
from cloudctl.drivers.loadbalancer.base import BalancerSpec, HealthCheck, Listener, Placement
from cloudctl.drivers.loadbalancer.haproxy import HaproxyDriver

from elbsupport import Backend, answers, elb_client, elb_config, launch, public_image, refuses, wait_health
from support import Server, wait_until

LISTENER = {"Protocol": "HTTP", "LoadBalancerPort": 8000, "InstanceProtocol": "HTTP", "InstancePort": 8080}
FAST_CHECK = {"Target": "HTTP:8080/", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2}


def _master(srv: Server) -> tuple[Path, int]:
    """The one proxy's folder and its master's PID (from its pid file)."""
    folders = [p for p in (srv.state_dir / "elb").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0], int((folders[0] / "haproxy.pid").read_text().split()[0])


def _pid(folder: Path) -> int | None:
    """The master's PID in the pid file, None while it is being replaced."""
    try:
        return int((folder / "haproxy.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _in_step(srv: Server, lb_id: str) -> dict[str, Any] | None:
    """The admin's row of the load balancer once its proxy runs its current spec."""
    rows = {r["id"]: r for r in srv.admin("GET", "/v0/load-balancers")["load_balancers"]}
    row = rows.get(lb_id)
    return row if row is not None and row["proxy"] == "in step" else None


def _pool(srv: Server) -> str:
    return str(yaml.safe_load(srv.config_path.read_text())["elb"]["loopback_pool"])


def test_proxies_outlive_a_crash_are_adopted_restarted_and_orphans_removed(new_server: Any) -> None:
    srv = new_server(**elb_config(stats_page=True))
    user = srv.create_user("alice")
    elb, ec2 = elb_client(srv, user), srv.client(user)
    inst = launch(ec2, public_image(ec2), 1)[0]
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    web = Backend(ip, 8080, iid)
    driver = HaproxyDriver(srv.state_dir / "elb", "/usr/sbin/haproxy")
    orphan = "elb-0000000000orphan"
    try:
        dns = elb.create_load_balancer(LoadBalancerName="keep", Listeners=[LISTENER],
                                       AvailabilityZones=["cloudctl-1a"])["DNSName"]
        elb.register_instances_with_load_balancer(LoadBalancerName="keep", Instances=[{"InstanceId": iid}])
        elb.configure_health_check(LoadBalancerName="keep", HealthCheck=FAST_CHECK)
        wait_health(elb, "keep", {iid: "InService"})
        folder, master = _master(srv)

        srv.kill()
        assert answers(dns, 8000, 3) == [iid] * 3          # the data plane serves on without its controller
        # A proxy no load balancer asks for, as a crash between a delete's commit and its proxy's end leaves.
        orphan_addr = _pool(srv).rsplit(".", 1)[0] + ".250"
        asyncio.run(driver.apply(BalancerSpec(
            name=orphan, placement=Placement(address=orphan_addr),
            listeners=(Listener(port=8000, protocol="HTTP", backend_port=8080, backend_protocol="HTTP"),),
            backends=(LbBackend(name=iid, address=ip),), health_check=HealthCheck("TCP:8080", 5, 2, 2, 2))))
        wait_until(lambda: answers(orphan_addr, 8000, 1) == [iid], 60, "the orphan serving")

        srv.start()
        wait_until(lambda: refuses(orphan_addr, 8000) and not (folder.parent / orphan).exists(), 30,
                   "the orphan proxy removed")
        assert _master(srv) == (folder, master)             # adopted: the same master, reloaded
        assert answers(dns, 8000, 3) == [iid] * 3
        wait_health(elb, "keep", {iid: "InService"})
        lb = wait_until(lambda: _in_step(srv, folder.name), 30, "the adopted proxy reloaded")
        assert (lb["name"], lb["user"], lb["address"], lb["ports"], lb["instances"]) == \
            ("keep", "alice", dns, [8000], 1)
        req = urllib.request.Request(f"{srv.admin_url}/v0/load-balancers/{folder.name}/stats",
                                     headers={"Authorization": f"Bearer {srv.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            page = r.read().decode()
        assert "Statistics Report" in page and "health" in page   # HAProxy's own page, admin only

        os.kill(master, signal.SIGKILL)                     # the proxy dies: supervision starts it again
        wait_until(lambda: _pid(folder) not in (None, master) and answers(dns, 8000, 1) == [iid], 60,
                   "the proxy started again")
        with urllib.request.urlopen(srv.admin_url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "cloudctl_elb_orphans_removed_total 1.0" in text
        assert "cloudctl_elb_proxy_restarts_total 1.0" in text, [x for x in text.splitlines() if "elb" in x]

        elb.delete_load_balancer(LoadBalancerName="keep")
        wait_until(lambda: refuses(dns, 8000) and not folder.exists(), 30, "the proxy removed with its load balancer")
    finally:
        web.close()
        asyncio.run(driver.remove(orphan))


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_elb_change(new_server: Any) -> None:
    srv = new_server(**elb_config(max_load_balancers_per_user=200))
    user = srv.create_user("alice")
    ec2 = srv.client(user)
    insts = [i["InstanceId"] for i in launch(ec2, public_image(ec2), 2)]
    acked: dict[str, dict[str, Any]] = {}
    rng = random.Random()
    for trial in range(3):
        elb = elb_client(srv, user)
        died = threading.Event()

        def load() -> None:
            i = 0
            while not died.is_set():
                name = f"t{trial}-{i}"
                i += 1
                try:
                    elb.create_load_balancer(LoadBalancerName=name, Listeners=[LISTENER],
                                             AvailabilityZones=["cloudctl-1a"])
                    acked[name] = {"instances": set(), "tags": {}, "ports": {8000}}
                    elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[
                        {"InstanceId": rng.choice(insts)}])
                    got = elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]
                    acked[name]["instances"] = {x["InstanceId"] for x in got["Instances"]}
                    elb.add_tags(LoadBalancerNames=[name], Tags=[{"Key": "n", "Value": str(i)}])
                    acked[name]["tags"] = {"n": str(i)}
                    elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[{**LISTENER,
                                                                                          "LoadBalancerPort": 8001}])
                    acked[name]["ports"] = {8000, 8001}
                except (ClientError, BotoCoreError, OSError):
                    return   # the controller died under the request: its outcome is unknown

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(rng.uniform(0.5, 2.0))
        srv.kill()
        died.set()
        worker.join(60)
        srv.start()
        elb = elb_client(srv, user)
        found = {d["LoadBalancerName"]: d for d in elb.describe_load_balancers()["LoadBalancerDescriptions"]}
        tags = {}
        names = sorted(found)
        for k in range(0, len(names), 20):
            tags |= {t["LoadBalancerName"]: {x["Key"]: x["Value"] for x in t["Tags"]}
                     for t in elb.describe_tags(LoadBalancerNames=names[k:k + 20])["TagDescriptions"]}
        for name, want in acked.items():
            assert name in found, f"trial {trial}: acknowledged load balancer {name} lost"
            d = found[name]
            assert want["instances"] <= {x["InstanceId"] for x in d["Instances"]}, (trial, name, d)
            assert want["tags"].items() <= tags[name].items(), (trial, name, tags[name])
            assert want["ports"] <= {x["Listener"]["LoadBalancerPort"] for x in d["ListenerDescriptions"]}, d
        # every load balancer's proxy runs again after the restart
        wait_until(lambda: all(not refuses(d["DNSName"], 8000) for d in found.values()), 60,
                   f"trial {trial}: the proxies of {len(found)} load balancers serving")
    assert len(acked) >= 3, acked   # the trials did acknowledge changes before their crashes
    elb = elb_client(srv, user)
    for d in elb.describe_load_balancers()["LoadBalancerDescriptions"]:
        elb.delete_load_balancer(LoadBalancerName=d["LoadBalancerName"])
