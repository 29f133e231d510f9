"""The bare-metal API's edge check (api/hil.py `_body`) on hostile bodies: its cost per call on the
event loop, beside `json.loads` alone (all the old code did before calling the core).

Usage:  .venv/bin/python bench/hil_bodies.py [--calls 200]   (in-process, a few seconds)

Each body is just under the admin listener's 64 KiB cap: thousands of unknown keys, a long list of
wrong items, a large OBM object, a switch with thousands of options, 30,000 levels of nesting, and
a valid 60 KB body. Target: the check costs about what parsing the body costs (pydantic building
one error per bad item or unknown key would cost several times more, unauthenticated).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudctl.api import hil_models as M  # noqa: E402
from cloudctl.api.hil import _body, _Invalid  # noqa: E402

BODIES: dict[str, tuple[type, bytes]] = {
    "unknown keys": (M.CreateHeadnode, b"{" + b",".join(b'"k%d": 1' % i for i in range(6000)) + b"}"),
    "wrong list items": (M.CreateNetwork, b'{"access": [' + b",".join([b"1"] * 30000) + b"]}"),
    "large obm": (M.RegisterNode, b'{"obm": {' + b",".join(b'"k%d": [1]' % i for i in range(5000)) + b"}}"),
    "switch options": (M.RegisterSwitch, b'{"type": "ovs", ' + b",".join(b'"k%d": 1' % i for i in range(6000)) + b"}"),
    "deep nesting": (M.CreateHeadnode, b"[" * 30000 + b"]" * 30000),
    "valid 60 KB": (M.CreateHeadnode, b'{"project": "p1", "base_img": "x", "user_data": "' + b"x" * 60000 + b'"}'),
}


class _Request:
    """What `_body` reads of a request whose body the listener's guard already read."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.body_exists = raw, True

    async def read(self) -> bytes:
        return self.raw


async def main(calls: int) -> None:
    print(f"{'body':18s} {'bytes':>6s}  {'edge check':>10s}  {'json.loads':>10s}   (ms per call, {calls} calls)")
    for name, (model, raw) in BODIES.items():
        t = time.perf_counter()
        for _ in range(calls):
            try:
                await _body(_Request(raw), model)   # type: ignore[arg-type]
            except _Invalid:
                pass
        edge = (time.perf_counter() - t) / calls * 1e3
        t = time.perf_counter()
        for _ in range(calls):
            try:
                json.loads(raw)
            except (ValueError, RecursionError):
                pass
        plain = (time.perf_counter() - t) / calls * 1e3
        print(f"{name:18s} {len(raw):6d}  {edge:10.2f}  {plain:10.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    asyncio.run(main(ap.parse_args().calls))
