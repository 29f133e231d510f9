"""SIGKILL at random moments under mixed concurrent load: after each crash the state on disk
holds every acknowledged change and nothing half-made; the restarted server answers ClientToken
retries with the original reservations. CLOUDCTL_CRASH_TRIALS sets the count (`make stress`: 20)."""
from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from crashlab import Acked, check, load_state, trial

TRIALS = int(os.environ.get("CLOUDCTL_CRASH_TRIALS", "3"))


def hypervisors_match(srv: Any, ec2: Any, trial: int, timeout: float = 60) -> None:
    """After reconcile, the hosts hold one domain per instance that should have one."""
    deadline = time.monotonic() + timeout
    while True:
        states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        settled = not {"pending", "stopping", "shutting-down"} & set(states)
        want = sum(1 for st in states if st in ("running", "stopped"))
        hosts = srv.admin("GET", "/v0/hosts")
        have = sum(h["domains"] or 0 for h in hosts)
        report = srv.admin("GET", "/v0/reconcile")
        if settled and have == want and all(h["polls"] for h in hosts):
            assert not [line for line in report if "another controller" in line], report
            return
        assert time.monotonic() < deadline, (f"trial {trial}: hosts hold {have} domains for {want} instances "
                                             f"(settled: {settled}); reconcile said {report[:5]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_crash_trials(new_server: Any, capsys: Any) -> None:
    # Instances pile up across the trials, each holding a public address from the pool (the
    # default subnets map them on launch): more of them than the default config's /24.
    srv = new_server(monitor={"interval_s": 0.5, "grace_s": 5, "timeout_s": 5},
                     elastic_ips={"pool": ["198.18.0.0/20"], "max_addresses_per_user": 5})
    user = srv.create_user("crash")
    image = srv.client(user).describe_images()["Images"][0]["ImageId"]
    acked = Acked()
    rng = random.Random(int(os.environ.get("CLOUDCTL_CRASH_SEED", "0")) or None)
    total = 0
    for n in range(TRIALS):
        done, after = trial(srv, user, image, acked, rng)
        total += done
        problems = check(load_state(srv.state_dir), acked)
        assert not problems, f"trial {n + 1} (killed after {after:.2f} s): " + "; ".join(problems[:10])
        srv.start()
        ec2 = srv.client(user)
        hypervisors_match(srv, ec2, n + 1)
        # retried ClientTokens give back the original reservation; untried ones launch anew
        sample = rng.sample(acked.tried_tokens, min(20, len(acked.tried_tokens)))
        for token in sample:
            r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=2, InstanceType="t3.nano",
                                  ClientToken=token, TagSpecifications=[
                                      {"ResourceType": "instance", "Tags": [{"Key": "token", "Value": token}]}])
            if token in acked.instances:
                assert r["ReservationId"] == acked.instances[token][0], token
            else:
                acked.instances[token] = (r["ReservationId"], [i["InstanceId"] for i in r["Instances"]])
    assert total >= 10 * TRIALS, "the load should have been acknowledged many times before the crashes"
    with capsys.disabled():
        print(f"\ncrash trials: {TRIALS}, operations acknowledged {total}, instances {len(acked.instances)}, "
              f"key pairs {len(acked.key_pairs)}, volumes {len(acked.volumes)}, tags {len(acked.tags)}, "
              f"terminations {len(acked.terminated)}, users {len(acked.users)}, rules {len(acked.rules)}, "
              f"addresses {len(acked.addresses)}")
