"""Property-based fuzzing of the query-protocol services on the Query endpoint (STS, IAM, and
whatever `api/query/services.py` lists later), driven by botocore's models.

For every implemented action of every service, and a sample of the service's operations cloudctl
does not serve, hypothesis draws an input from the operation's shape (`query_shapes.py`),
botocore's QuerySerializer writes it (then a field is sometimes mangled), and it is sent signed
for that service. Properties: never a 5xx, every answer is that service's document (an
`<XxxResponse>` or a query-protocol `<ErrorResponse>` with Type, Code and Message, never EC2's
`<Response>`), and a refused request leaves the state digest unchanged.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import botocore.session
import pytest
from botocore.serialize import QuerySerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.api.query.services import SPECS

from query_shapes import struct
from rawquery import SignedQuery, StateProbe
from support import REGION, Server, write_config

_FUZZ_EXAMPLES = os.environ.get("CLOUDCTL_FUZZ_EXAMPLES")
EXAMPLES: dict[str, Any] = {"max_examples": int(_FUZZ_EXAMPLES), "derandomize": False} if _FUZZ_EXAMPLES else {}
_SESSION = botocore.session.get_session()
MODEL = {spec.name: spec.model or spec.name for spec in SPECS}   # signing name -> botocore's name


def _cases() -> list[tuple[str, str]]:
    cases = []
    for spec in SPECS:
        names = _SESSION.get_service_model(MODEL[spec.name]).operation_names
        others = [n for n in names if n not in spec.registry.actions]
        cases += [(spec.name, a) for a in sorted(spec.registry.actions)]
        cases += [(spec.name, a) for a in others[::max(1, len(others) // 4)]]   # a few it does not serve
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[tuple[Server, dict[str, Any]]]:
    s = Server(write_config(tmp_path_factory.mktemp("fuzz-query"), model_cache)).start()
    user = s.create_user("fuzz")
    s.create_user("victim")
    yield s, user
    s.stop()


def _mangle(fields: dict[str, str], how: int) -> dict[str, str]:
    """Sometimes break what botocore wrote: an unknown field, a dropped one, a bad index or value."""
    keys = [k for k in fields if k not in ("Action", "Version")]
    if how == 1:
        fields["Bogus.member.1"] = "x"
    elif how == 2 and keys:
        del fields[keys[0]]
    elif how == 3 and keys:
        fields[keys[-1] + ".member.x"] = fields.pop(keys[-1])
    elif how == 4 and keys:
        fields[keys[0]] = "\u00e9" * 3 + "<&>"
    return fields


def _check_document(service: str, action: str, status: int, body: bytes) -> str:
    root = ElementTree.fromstring(body)
    ns = re.match(r"\{[^}]*\}", root.tag)
    prefix = ns.group(0) if ns else ""
    if status == 200:
        assert root.tag == f"{prefix}{action}Response", body[:300]
        assert root.findtext(f"{prefix}ResponseMetadata/{prefix}RequestId"), body[:300]
        return "ok"
    assert root.tag == f"{prefix}ErrorResponse", f"{service} {action}: not {service}'s error shape: {body[:300]!r}"
    fields = {c.tag.removeprefix(prefix): c.text for c in root.find(f"{prefix}Error") or []}
    assert fields.get("Type") in ("Sender", "Receiver") and fields.get("Code") and fields.get("Message"), body
    assert root.findtext(f"{prefix}RequestId"), body[:300]
    return fields["Code"] or ""


def test_every_service_action_is_fuzzed() -> None:
    served = {(s.name, a) for s in SPECS for a in s.registry.actions}
    assert served <= set(CASES)
    assert {("sts", "GetCallerIdentity"), ("iam", "GetUser"), ("autoscaling", "CreateAutoScalingGroup"),
            ("elasticloadbalancing", "CreateLoadBalancer")} <= served


@pytest.mark.parametrize("service, action", CASES)
def test_fuzz_query_action(env: tuple[Server, dict[str, Any]], service: str, action: str) -> None:
    server, user = env
    botomodel = _SESSION.get_service_model(MODEL[service])
    operation = botomodel.operation_model(action)
    client = SignedQuery(server.endpoint, user, REGION, service, botomodel.api_version)
    probe = StateProbe(server.admin_url, server.token)
    before = probe.settle()
    inputs = struct(operation.input_shape, 2) if operation.input_shape else st.just({})

    @settings(**EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(params=inputs, how=st.integers(0, 6), get=st.booleans())
    def run(params: dict[str, Any], how: int, get: bool) -> None:
        body = QuerySerializer().serialize_to_request(params, operation)["body"]
        fields = _mangle({k: str(v) for k, v in body.items() if k not in ("Action", "Version")}, how)
        pairs = list(fields.items())
        status, answer = client.send(action, pairs, "GET" if get and len(str(pairs)) < 2000 else "POST")
        assert status < 500, (status, answer[:300])
        outcome = _check_document(service, action, status, answer)
        if action not in {a for s in SPECS if s.name == service for a in s.registry.actions}:
            assert outcome == "InvalidAction", answer[:300]
        assert probe.state() == before, f"{service} {action} ({outcome}) changed the state"

    try:
        run()
    finally:
        client.close()
