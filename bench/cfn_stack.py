"""A 200-resource CloudFormation stack through a served controller (bench/served.py, libvirt's test:///):
seconds to CREATE_COMPLETE and to DELETE_COMPLETE, the event loop's longest stall during each, and
the same template's ValidateTemplate time.

    .venv/bin/python bench/cfn_stack.py [--resources 200] [--validate-repeat 10] [--json out.json] [--keep]

The template is bench/cfn_template.py's: a third security groups, a third ingress rules (a Ref and a
GetAtt to a group each, each on a port of its own), a third instances (in a group, Fn::Base64/Fn::Join
user data), sent as compact JSON in TemplateBody (under its 51,200 bytes). The stack is polled with DescribeStacks every
0.2 s; the stall is the server's loop monitor (wall-clock, and "own": less the loop thread's waits
for a CPU on a shared machine), reset just before CreateStack and read at CREATE_COMPLETE, then
again for the delete. ValidateTemplate: best and median of `--validate-repeat` calls, wall-clock at
the client. Issue 17's budget: an event-loop stall < 20 ms.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cfn_template  # noqa: E402

import procs  # noqa: E402

REGION = "cloudctl-1"
BUDGET_MS = 20.0


def _clients(c: procs.Cloudctl) -> tuple[Any, Any]:
    user = c.admin("POST", "/v0/users", {"name": "bench"})
    kw = {"endpoint_url": c.ec2_url, "region_name": REGION, "aws_access_key_id": user["AccessKeyId"],
          "aws_secret_access_key": user["SecretAccessKey"], "config": BotoConfig(retries={"max_attempts": 1})}
    return boto3.client("cloudformation", **kw), boto3.client("ec2", **kw)


def document(n: int) -> dict[str, Any]:
    """bench/cfn_template.py's template, each rule on a port of its own (there, two rules of one
    group may be the same rule: fine for parsing, a duplicate for a real group)."""
    doc = cfn_template.document(n)
    for i, (name, r) in enumerate(sorted(doc["Resources"].items())):
        if r["Type"] == "AWS::EC2::SecurityGroupIngress":
            r["Properties"]["FromPort"] = r["Properties"]["ToPort"] = 1024 + i
    return doc


def _until_settled(cfn: Any, sid: str, timeout: float) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status = str(cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"])
        if not status.endswith("_IN_PROGRESS"):
            return status
        time.sleep(0.2)
    raise RuntimeError(f"stack {sid} still in progress after {timeout:.0f} s")


def run(tmp: Path, resources: int, repeat: int) -> dict[str, Any]:
    c = procs.start_cloudctl(tmp, probed=True, overrides={"monitor": {"interval_s": 10, "grace_s": 30,
                                                                      "timeout_s": 30}})
    try:
        cfn, ec2 = _clients(c)
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["cloudctl-blank"]}])["Images"][0]["ImageId"]
        body = json.dumps(document(resources), separators=(",", ":"))
        params = [{"ParameterKey": "ImageId", "ParameterValue": image},
                  {"ParameterKey": "InstanceType", "ParameterValue": "t3.nano"}]
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            cfn.validate_template(TemplateBody=body)
            times.append((time.perf_counter() - t0) * 1000)
        c.reset_lags()
        t0 = time.monotonic()
        sid = cfn.create_stack(StackName="bench", TemplateBody=body, Parameters=params)["StackId"]
        created = _until_settled(cfn, sid, 1800)
        create_s = time.monotonic() - t0
        create_stall = c.reset_lags()
        if created != "CREATE_COMPLETE":
            events = [e for page in cfn.get_paginator("describe_stack_events").paginate(StackName=sid)
                      for e in page["StackEvents"]]
            reasons = [(e["LogicalResourceId"], e.get("ResourceStatusReason")) for e in events
                       if e["ResourceStatus"] == "CREATE_FAILED"]
            raise RuntimeError(f"stack ended {created}: {reasons[:5]}")
        made = len(cfn.describe_stack_resources(StackName=sid)["StackResources"])
        t0 = time.monotonic()
        cfn.delete_stack(StackName=sid)
        deleted = _until_settled(cfn, sid, 1800)
        delete_s = time.monotonic() - t0
        delete_stall = c.reset_lags()
        return {"resources": made, "body_bytes": len(body), "validate_ms_best": round(min(times), 1),
                "validate_ms_p50": round(statistics.median(times), 1), "create_s": round(create_s, 2),
                "create_stall_ms": create_stall[0], "create_stall_own_ms": create_stall[1],
                "delete_status": deleted, "delete_s": round(delete_s, 2),
                "delete_stall_ms": delete_stall[0], "delete_stall_own_ms": delete_stall[1]}
    finally:
        c.proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resources", type=int, default=200)
    ap.add_argument("--validate-repeat", type=int, default=10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cfn-"))
    try:
        r = run(tmp, args.resources, args.validate_repeat)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"template: {r['resources']} resources, {r['body_bytes']} bytes of JSON")
    print(f"  ValidateTemplate: best {r['validate_ms_best']} ms, p50 {r['validate_ms_p50']} ms (client wall-clock)")
    print(f"  CreateStack -> CREATE_COMPLETE: {r['create_s']} s; longest loop stall {r['create_stall_ms']} ms "
          f"(own {r['create_stall_own_ms']} ms)")
    print(f"  DeleteStack -> {r['delete_status']}: {r['delete_s']} s; longest loop stall {r['delete_stall_ms']} ms "
          f"(own {r['delete_stall_own_ms']} ms)")
    worst, own = max(r["create_stall_ms"], r["delete_stall_ms"]), max(r["create_stall_own_ms"],
                                                                          r["delete_stall_own_ms"])
    verdict = "within" if worst < BUDGET_MS else ("within (own time)" if own < BUDGET_MS else "OVER")
    print(f"verdict: longest stall {worst} ms (own {own} ms) - {verdict} the {BUDGET_MS:g} ms budget")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
