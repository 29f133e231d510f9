"""The CloudFormation template language's cost, in-process: what ValidateTemplate and a stack operation
spend on the event loop before any resource is touched.

    .venv/bin/python bench/cfn_template.py [--resources 200] [--repeat 20]

A template of `--resources` resources (a third each: security groups, ingress rules referencing a
group, instances referencing a group with Fn::Sub/Fn::Base64 user data), as JSON and as YAML with
short forms; reported: body size, milliseconds (best of `--repeat`) to parse (load + validate), bind
(parameters, conditions, dependencies), compute the levels, and resolve every resource's properties.
Issue 17's budget: an event-loop stall < 20 ms.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from cloudctl.core.cloudformation.template import Pseudo, Template

TYPES = {"AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::Instance"}


class Resolver:
    def ref(self, logical: str) -> str:
        return "phys-" + logical

    def get_att(self, logical: str, attribute: str) -> Any:
        return f"{logical}.{attribute}"

    def import_value(self, name: str) -> str:
        return name


def document(n: int) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    groups = max(1, n // 3)
    for i in range(groups):
        resources[f"Group{i}"] = {"Type": "AWS::EC2::SecurityGroup",
                                  "Properties": {"GroupDescription": {"Fn::Sub": "${AWS::StackName} group " + str(i)}}}
    for i in range(n - groups):
        g = f"Group{i % groups}"
        if i % 2:
            resources[f"Rule{i}"] = {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
                "GroupName": {"Ref": g}, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                "SourceSecurityGroupId": {"Fn::GetAtt": [g, "GroupId"]}}}
        else:
            resources[f"Vm{i}"] = {"Type": "AWS::EC2::Instance", "Properties": {
                "ImageId": {"Ref": "ImageId"}, "InstanceType": {"Ref": "InstanceType"},
                "SecurityGroups": [{"Ref": g}],
                "UserData": {"Fn::Base64": {"Fn::Join": ["", ["#!/bin/sh\n", "echo ", {"Ref": "AWS::StackName"},
                                                                 " ", str(i), "\n"]]}}}}
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Parameters": {"ImageId": {"Type": "AWS::EC2::Image::Id"},
                           "InstanceType": {"Type": "String", "Default": "m1.small"}},
            "Resources": resources}


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resources", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    doc = document(a.resources)
    pseudo = Pseudo("eu-1", "123456789012", "bench", "arn:aws:cloudformation:eu-1:123456789012:stack/bench/1")
    for kind, body in (("json", json.dumps(doc)), ("yaml", yaml.safe_dump(doc, sort_keys=False))):
        ms_parse, t = best(lambda: Template.parse(body, TYPES, max_bytes=1_000_000), a.repeat)
        ms_bind, b = best(lambda: t.bind({"ImageId": "ami-0123456789abcdef0"}, pseudo), a.repeat)
        ms_levels, levels = best(b.levels, a.repeat)
        ms_props, _ = best(lambda: [b.properties(r, Resolver()) for r in b.resources], a.repeat)
        print(json.dumps({"format": kind, "resources": a.resources, "bytes": len(body.encode()),
                          "levels": len(levels), "parse_ms": round(ms_parse, 2), "bind_ms": round(ms_bind, 2),
                          "levels_ms": round(ms_levels, 2), "properties_ms": round(ms_props, 2)}))


if __name__ == "__main__":
    main()
