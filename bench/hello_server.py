"""A bare aiohttp + uvloop handler returning a fixed ~2 KB EC2-style XML body.

It is the ceiling for one Python process on this box: cloudctl does everything this does
(parse HTTP, read the body, write a response) plus SigV4, EC2 parsing, lookup and rendering,
so "cloudctl req/s / hello req/s" says how much of the budget cloudctl's own work takes.
"""
from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

_ITEM = ("<item><instanceId>i-0123456789abcdef0</instanceId><imageId>ami-0123456789abcdef0</imageId>"
         "<instanceState><code>16</code><name>running</name></instanceState>"
         "<privateDnsName>ip-10-128-0-1.cloudctl-1.compute.internal</privateDnsName>"
         "<instanceType>t3.nano</instanceType><launchTime>2026-11-22T10:00:00.000Z</launchTime>"
         "<placement><availabilityZone>cloudctl-1a</availabilityZone><tenancy>default</tenancy></placement>"
         "<privateIpAddress>10.128.0.1</privateIpAddress><architecture>x86_64</architecture>"
         "<rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>"
         "<tagSet><item><key>Name</key><value>x</value></item></tagSet></item>")


def _body(size: int = 2048) -> bytes:
    """A DescribeInstancesResponse padded to exactly `size` bytes, so the byte count matches the anchors."""
    head = ('<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>00000000-0000-0000-0000-000000000000'
            '</requestId><reservationSet><item><reservationId>r-0123456789abcdef0</reservationId>'
            '<ownerId>000000000000</ownerId><groupSet/><instancesSet>')
    tail = "</instancesSet></item></reservationSet></DescribeInstancesResponse>"
    core = head + _ITEM + tail
    pad = max(0, size - len(core) - len("<!--  -->"))
    return (core + "<!-- " + "x" * pad + " -->").encode()


BODY = _body()


async def handle(request: web.Request) -> web.Response:
    # Read the body like any real Query-API handler must, so POST replays are comparable.
    await request.read()
    return web.Response(body=BODY, content_type="text/xml", charset="utf-8")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    try:
        uvloop.run(main(ap.parse_args().port))
    except KeyboardInterrupt:
        pass
