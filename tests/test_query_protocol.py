"""The query protocol (api/query/protocol.py) against botocore itself, for every operation of the
query services cloudctl serves or will (STS, IAM, AutoScaling, ELB, CloudFormation): what botocore's
QuerySerializer writes, `parse` reads back as the same input; what `serialize` writes, botocore's
QueryParser reads back as the same output; errors parse as botocore's ClientError fields."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel, Shape
from botocore.parsers import QueryParser
from botocore.serialize import QuerySerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2.model import load_model
from cloudctl.api.ec2.protocol import ParamError
from cloudctl.api.query.protocol import QueryProtocol

SERVICES = ("sts", "iam", "autoscaling", "elb", "cloudformation")
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


def _value(shape: Shape, depth: int) -> st.SearchStrategy[Any]:
    kind = shape.type_name
    if kind == "structure":
        return _struct(shape, depth)
    if kind == "list":
        if depth <= 0:
            return st.just([])
        return st.lists(_value(shape.member, depth - 1), max_size=2)
    if kind == "map":
        # (an empty map writes nothing at all: at least one entry)
        return st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), _value(shape.value, depth - 1),
                               min_size=1, max_size=2)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(-(2 ** 31), 2 ** 31 - 1)
    if kind == "long":
        return st.integers(-(2 ** 63), 2 ** 63 - 1)
    if kind in ("float", "double"):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind == "timestamp":
        return st.integers(0, 4_000_000_000).map(lambda s: datetime.fromtimestamp(s, timezone.utc))
    if kind == "blob":
        return st.binary(max_size=8)
    return _TEXT


def _struct(shape: Shape, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    required = set(shape.required_members)
    members = {n: m for n, m in shape.members.items() if depth > 0 or n in required
               or m.type_name not in ("structure", "list", "map")}
    fixed = {n: _value(m, depth - 1) for n, m in members.items() if n in required}
    optional = {n: _value(m, depth - 1) for n, m in members.items() if n not in required}
    drawn = st.fixed_dictionaries(fixed, optional=optional)
    # (an empty structure writes nothing, so a required one would be missing: at least one member)
    return drawn.filter(lambda d: _strip(d) != {}) if members else drawn


def _strip(value: Any) -> Any:
    """What survives a trip through the wire: empty structures write nothing."""
    if isinstance(value, dict):
        out = {k: _strip(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v != {} or k in ("__map__",)}
    if isinstance(value, list):
        return [_strip(v) for v in value if _strip(v) != {}]
    return value


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, QueryProtocol]]:
    cache = tmp_path_factory.mktemp("query-models")
    session = botocore.session.get_session()
    out = {}
    for name in SERVICES:
        botomodel = session.get_service_model(name)
        model = load_model(botomodel.operation_names, Path(cache), name)
        out[name] = (botomodel, QueryProtocol(model, name))
    return out


def _ops() -> list[tuple[str, str]]:
    session = botocore.session.get_session()
    return [(s, op) for s in SERVICES for op in session.get_service_model(s).operation_names]


OPS = _ops()


@pytest.mark.parametrize("service", SERVICES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_requests_round_trip(services: dict[str, Any], service: str, data: st.DataObject) -> None:
    botomodel, protocol = services[service]
    op = data.draw(st.sampled_from(botomodel.operation_names))
    operation: OperationModel = botomodel.operation_model(op)
    params = data.draw(_struct(operation.input_shape, 3)) if operation.input_shape else {}
    body = QuerySerializer().serialize_to_request(params, operation)["body"]
    fields = {k: str(v) for k, v in body.items() if k not in ("Action", "Version")}
    assert _strip(protocol.parse(op, fields)) == _strip(params)


@pytest.mark.parametrize("service", SERVICES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_answers_round_trip(services: dict[str, Any], service: str, data: st.DataObject) -> None:
    botomodel, protocol = services[service]
    op = data.draw(st.sampled_from(botomodel.operation_names))
    operation: OperationModel = botomodel.operation_model(op)
    result = data.draw(_struct(operation.output_shape, 3)) if operation.output_shape else {}
    body = protocol.serialize(op, result, "req-1")
    parsed = QueryParser().parse({"body": body, "headers": {}, "status_code": 200}, operation.output_shape)
    assert parsed.pop("ResponseMetadata")["RequestId"] == "req-1"
    assert _strip(parsed) == _strip(result)


def test_error_document_reads_as_botocore_client_error(services: dict[str, Any]) -> None:
    _botomodel, protocol = services["sts"]
    body = protocol.error("SignatureDoesNotMatch", "no & <match>", "rid-9", 403)
    parsed = QueryParser().parse({"body": body, "headers": {}, "status_code": 403}, None)
    assert parsed["Error"] == {"Type": "Sender", "Code": "SignatureDoesNotMatch", "Message": "no & <match>"}
    assert parsed["ResponseMetadata"]["RequestId"] == "rid-9"
    assert b"<Type>Receiver</Type>" in protocol.error("InternalFailure", "x", "r", 500)


@pytest.mark.parametrize("fields, code, words", [
    ({"RoleArn": "a", "RoleSessionName": "s", "Extra": "1"}, "UnknownParameter", "Extra"),
    ({"RoleArn": "a"}, "MissingParameter", "RoleSessionName"),
    ({"RoleArn": "a", "RoleSessionName": "s", "DurationSeconds": "ten"}, "InvalidParameterValue", "DurationSeconds"),
    ({"RoleArn": "a", "RoleSessionName": "s", "PolicyArns.1.arn": "x"}, "UnknownParameter", "PolicyArns.1"),
    ({"RoleArn": "a", "RoleSessionName": "s", "PolicyArns.member.x.arn": "x"}, "UnknownParameter", "PolicyArns"),
    ({"RoleArn": "a", "RoleSessionName": "s", "PolicyArns.member.1": "x"}, "UnknownParameter", "PolicyArns.member.1"),
    ({"RoleArn": "a", "RoleSessionName": "s", "RoleArn.x": "x"}, "UnknownParameter", "RoleArn.x"),
])
def test_malformed_fields_are_refused(services: dict[str, Any], fields: dict[str, str], code: str,
                                      words: str) -> None:
    _botomodel, protocol = services["sts"]
    with pytest.raises(ParamError) as e:
        protocol.parse("AssumeRole", fields)
    assert e.value.code == code and words in e.value.message
