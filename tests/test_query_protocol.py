"""The query protocol (api/query/protocol.py) against botocore itself, for every operation of the
query services cloudctl serves or will (STS, IAM, AutoScaling, ELB, CloudFormation): what botocore's
QuerySerializer writes, `parse` reads back as the same input; what `serialize` writes, botocore's
QueryParser reads back as the same output; errors parse as botocore's ClientError fields."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel
from botocore.parsers import QueryParser
from botocore.serialize import QuerySerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.api.ec2.model import load_model
from cloudctl.api.ec2.protocol import LazyList, ParamError
from cloudctl.api.query.protocol import QueryProtocol

from query_shapes import strip, struct

SERVICES = ("sts", "iam", "autoscaling", "elb", "cloudformation")
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
    params = data.draw(struct(operation.input_shape, 3)) if operation.input_shape else {}
    body = QuerySerializer().serialize_to_request(params, operation)["body"]
    fields = {k: str(v) for k, v in body.items() if k not in ("Action", "Version")}
    assert strip(protocol.parse(op, fields)) == strip(params)


@pytest.mark.parametrize("service", SERVICES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_answers_round_trip(services: dict[str, Any], service: str, data: st.DataObject) -> None:
    botomodel, protocol = services[service]
    op = data.draw(st.sampled_from(botomodel.operation_names))
    operation: OperationModel = botomodel.operation_model(op)
    result = data.draw(struct(operation.output_shape, 3)) if operation.output_shape else {}
    body = protocol.serialize(op, result, "req-1")
    parsed = QueryParser().parse({"body": body, "headers": {}, "status_code": 200}, operation.output_shape)
    assert parsed.pop("ResponseMetadata")["RequestId"] == "req-1"
    assert strip(parsed) == strip(result)


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
    ({"RoleArn": "a", "RoleSessionName": "s", "Tags" + ".member.1" * 500: "x"}, "UnknownParameter", "Tags"),
])
def test_malformed_fields_are_refused(services: dict[str, Any], fields: dict[str, str], code: str,
                                      words: str) -> None:
    _botomodel, protocol = services["sts"]
    with pytest.raises(ParamError) as e:
        protocol.parse("AssumeRole", fields)
    assert e.value.code == code and words in e.value.message


def test_long_answers_are_written_in_slices(services: dict[str, Any]) -> None:
    botomodel, protocol = services["iam"]
    made: list[int] = []

    def users() -> Any:
        for i in range(5):
            made.append(i)
            yield {"Path": "/", "UserName": f"u{i}", "UserId": f"AIDA{i}", "Arn": f"arn:aws:iam::1:user/u{i}",
                   "CreateDate": "2026-01-01T00:00:00.000Z"}

    result = {"Users": LazyList(users(), 5), "IsTruncated": False}
    pieces = protocol.serialize_iter("ListUsers", result, "r", slice_items=2)
    first = next(pieces)
    assert made == [0, 1] and not protocol.is_last("ListUsers", first)   # (the rest not made yet)
    rest = list(pieces)
    assert len(rest) == 2 and protocol.is_last("ListUsers", rest[-1])
    assert not any(protocol.is_last("ListUsers", p) for p in [first, *rest[:-1]])
    whole = first + b"".join(rest)
    parsed = QueryParser().parse({"body": whole, "headers": {}, "status_code": 200},
                                 botomodel.operation_model("ListUsers").output_shape)
    assert [u["UserName"] for u in parsed["Users"]] == ["u0", "u1", "u2", "u3", "u4"]
    assert parsed["IsTruncated"] is False
