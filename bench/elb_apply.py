"""How long an ELB change takes to reach the HAProxy serving it, measured as a client sees it.

A served cloudctl on `test:///` whose networks are loopback addresses (as tests/elbsupport.py
sets up), two instances with an HTTP server each on their address, one load balancer. Each round
changes the load balancer through the API (alternately deregistering and registering the second
instance, then adding and deleting a listener) and times from the API's answer until traffic
through the proxy shows the change. Prints median and max per kind of change.

    .venv/bin/python bench/elb_apply.py [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from elbsupport import Backend, answers, elb_client, elb_config, launch, public_image, refuses  # noqa: E402
from support import Server, write_config  # noqa: E402


def _until(check, timeout: float = 30.0) -> float:   # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("the change never reached the proxy")
        time.sleep(0.002)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        srv = Server(write_config(Path(d), Path(d) / "model-cache", **elb_config())).start()
        webs: list[Backend] = []
        try:
            user = srv.create_user("bench")
            elb, ec2 = elb_client(srv, user), srv.client(user)
            insts = launch(ec2, public_image(ec2), 2)
            ids = [i["InstanceId"] for i in insts]
            webs = [Backend(i["PrivateIpAddress"], 8080, i["InstanceId"]) for i in insts]
            listener = {"Protocol": "HTTP", "LoadBalancerPort": 8000, "InstanceProtocol": "HTTP", "InstancePort": 8080}
            dns = elb.create_load_balancer(LoadBalancerName="bench", Listeners=[listener],
                                           AvailabilityZones=["cloudctl-1a"])["DNSName"]
            elb.configure_health_check(LoadBalancerName="bench", HealthCheck={
                "Target": "HTTP:8080/", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2})
            elb.register_instances_with_load_balancer(LoadBalancerName="bench", Instances=[{"InstanceId": ids[0]}])
            _until(lambda: answers(dns, 8000, 1) == [ids[0]], 60)
            reg: list[float] = []
            lis: list[float] = []
            for _ in range(args.rounds):
                elb.register_instances_with_load_balancer(LoadBalancerName="bench", Instances=[{"InstanceId": ids[1]}])
                reg.append(_until(lambda: ids[1] in answers(dns, 8000, 4)))
                elb.deregister_instances_from_load_balancer(LoadBalancerName="bench",
                                                            Instances=[{"InstanceId": ids[1]}])
                reg.append(_until(lambda: set(answers(dns, 8000, 4)) == {ids[0]}))
                elb.create_load_balancer_listeners(LoadBalancerName="bench", Listeners=[{**listener,
                                                                                         "LoadBalancerPort": 8001}])
                lis.append(_until(lambda: answers(dns, 8001, 1) == [ids[0]]))
                elb.delete_load_balancer_listeners(LoadBalancerName="bench", LoadBalancerPorts=[8001])
                lis.append(_until(lambda: refuses(dns, 8001)))
            for what, xs in (("registration change", reg), ("listener change", lis)):
                print(f"{what:>20}: n={len(xs)} median {statistics.median(xs) * 1000:.0f} ms, "
                      f"max {max(xs) * 1000:.0f} ms")
            elb.delete_load_balancer(LoadBalancerName="bench")
        finally:
            for w in webs:
                w.close()
            srv.stop()


if __name__ == "__main__":
    main()
