"""STS and IAM on the EC2 listener: dispatched by the signature's credential scope, answered in
each service's own format, read by real clients (the AWS CLI, boto3, botocore's parsers)."""
from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from typing import Any
from xml.etree import ElementTree

import pytest
from botocore.auth import SigV2Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from cloudctl.api.query.services import SPECS

from support import REGION, Servers, aws_ok, boto_client

STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


def client(server: Any, service: str, user: dict[str, str], secret: str | None = None) -> Any:
    return boto_client(server, user, service, secret=secret)


def aws(server: Any, user: dict[str, str], *args: str) -> Any:
    return aws_ok(server, user, *args)


def post(server: Any, service: str, user: dict[str, str], body: str, *, secret: str | None = None,
         sigv2: bool = False) -> tuple[int, bytes]:
    """POST a form body signed by botocore for `service` (optionally with a wrong secret)."""
    host = server.endpoint.removeprefix("http://")
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host}
    creds = Credentials(user["AccessKeyId"], secret or user["SecretAccessKey"])
    if sigv2:
        req = AWSRequest(method="POST", url=server.endpoint + "/",
                         data=dict(p.split("=", 1) for p in body.split("&")), headers=headers)
        SigV2Auth(creds).add_auth(req)
    else:
        req = AWSRequest(method="POST", url=server.endpoint + "/", data=body.encode(), headers=headers)
        SigV4Auth(creds, service, REGION).add_auth(req)
    return exchange(req.prepare())


def exchange(prepared: Any) -> tuple[int, bytes]:
    data = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    request = urllib.request.Request(prepared.url, data=data, method=prepared.method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def query_error(body: bytes) -> dict[str, str]:
    """The query protocol's <ErrorResponse>, each field as text (fails on EC2's <Response>)."""
    root = ElementTree.fromstring(body)
    assert root.tag.endswith("ErrorResponse"), body
    ns = root.tag[:-len("ErrorResponse")]
    error = root.find(f"{ns}Error")
    assert error is not None, body
    fields = {child.tag.removeprefix(ns): child.text or "" for child in error}
    fields["RequestId"] = root.findtext(f"{ns}RequestId") or ""
    return fields


def ec2_error(body: bytes) -> dict[str, str]:
    root = ElementTree.fromstring(body)
    assert root.tag == "Response", body
    return {"Code": root.findtext("Errors/Error/Code") or "", "Message": root.findtext("Errors/Error/Message") or ""}


def test_aws_cli_get_caller_identity_names_the_user(server: Any, alice: dict[str, str]) -> None:
    ident = aws(server, alice, "sts", "get-caller-identity")
    ec2 = client(server, "ec2", alice)
    group = ec2.create_security_group(GroupName="whoami", Description="owner id")["GroupId"]
    owner = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["OwnerId"]
    assert ident["Account"] == owner
    assert ident["Arn"] == f"arn:aws:iam::{owner}:user/alice"
    assert re.fullmatch(r"AIDA[A-Z2-7]{17}", ident["UserId"])
    assert aws(server, alice, "sts", "get-caller-identity") == ident   # stable
    assert aws(server, alice, "iam", "get-user")["User"]["Arn"] == ident["Arn"]


def test_boto3_sts_and_iam_and_ec2_share_the_endpoint(server: Any, alice: dict[str, str],
                                                      bob: dict[str, str]) -> None:
    sts, iam, ec2 = (client(server, s, alice) for s in ("sts", "iam", "ec2"))
    me = sts.get_caller_identity()
    assert me["Arn"].endswith(":user/alice") and me["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert re.fullmatch(r"[0-9a-f-]{36}", me["ResponseMetadata"]["RequestId"])
    assert ec2.describe_regions()["Regions"][0]["RegionName"] == REGION
    user = iam.get_user()["User"]
    assert (user["UserName"], user["Arn"], user["UserId"], user["Path"]) == ("alice", me["Arn"], me["UserId"], "/")
    assert user["CreateDate"].year >= 2024
    assert iam.get_user(UserName="alice")["User"] == user
    assert iam.list_account_aliases()["AccountAliases"] == []
    other = client(server, "sts", bob).get_caller_identity()
    assert other["Account"] != me["Account"] and other["UserId"] != me["UserId"]


@pytest.mark.parametrize("name", ["bob", "no-such-user"])
def test_iam_get_user_of_another_user_is_no_such_entity(server: Any, alice: dict[str, str], bob: dict[str, str],
                                                        name: str) -> None:
    # alice's account holds alice alone: bob (another account) and a name nobody has look alike.
    with pytest.raises(ClientError) as e:
        client(server, "iam", alice).get_user(UserName=name)
    err = e.value.response
    assert err["Error"]["Code"] == "NoSuchEntity"
    assert err["Error"]["Message"] == f"The user with name {name} cannot be found."
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_bad_signature_for_sts_is_refused_in_sts_shape(server: Any, alice: dict[str, str]) -> None:
    status, body = post(server, "sts", alice, "Action=GetCallerIdentity&Version=2011-06-15", secret="x" * 40)
    assert status == 403
    err = query_error(body)
    assert (err["Type"], err["Code"]) == ("Sender", "SignatureDoesNotMatch")
    assert body.startswith(b'<?xml') and STS_NS[1:-1].encode() in body
    with pytest.raises(ClientError) as e:   # and botocore's query parser reads it
        client(server, "sts", alice, secret="y" * 40).get_caller_identity()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:   # an unknown key: the same answer, nothing learned
        client(server, "iam", {"AccessKeyId": "AKIANOSUCHKEY0000000", "SecretAccessKey": "z" * 40}).get_user()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_presigned_sts_request_answers_until_it_expires(server: Any, alice: dict[str, str]) -> None:
    # A presigned GetCallerIdentity is reused as an identity token within its expiry (as
    # aws-iam-authenticator does with AWS's STS): a read-only action, so replays are harmless. Past
    # X-Amz-Expires the same URL is refused, in STS's shape.
    req = AWSRequest(method="GET", url=server.endpoint + "/?Action=GetCallerIdentity&Version=2011-06-15",
                     headers={"Host": server.endpoint.removeprefix("http://")})
    SigV4QueryAuth(Credentials(alice["AccessKeyId"], alice["SecretAccessKey"]), "sts", REGION,
                   expires=2).add_auth(req)
    prepared = req.prepare()
    for _ in range(2):
        status, body = exchange(prepared)
        assert status == 200, body
        assert ElementTree.fromstring(body).findtext(f"{STS_NS}GetCallerIdentityResult/{STS_NS}Arn", "").endswith(
            ":user/alice")
    time.sleep(3.1)
    status, body = exchange(prepared)
    assert status == 400
    assert query_error(body)["Code"] == "RequestExpired"


def test_replayed_mutating_request_is_refused(server: Any, alice: dict[str, str]) -> None:
    # The replay cache is the endpoint's, whatever the service: a captured EC2 change sent again
    # past the grace period is refused, while the same user's STS calls keep working.
    body = "Action=CreateKeyPair&Version=2016-11-15&KeyName=replayed-once"
    host = server.endpoint.removeprefix("http://")
    req = AWSRequest(method="POST", url=server.endpoint + "/", data=body.encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host})
    SigV4Auth(Credentials(alice["AccessKeyId"], alice["SecretAccessKey"]), "ec2", REGION).add_auth(req)
    prepared = req.prepare()
    assert exchange(prepared)[0] == 200
    time.sleep(2.5)
    status, answer = exchange(prepared)
    assert (status, ec2_error(answer)["Code"]) == (401, "AuthFailure")
    assert b"already received" in answer
    assert client(server, "sts", alice).get_caller_identity()["Arn"].endswith(":user/alice")


@pytest.mark.parametrize("service", ["s3", "sqs", "nosuchservice"])
def test_unknown_service_in_scope_is_refused(server: Any, alice: dict[str, str], service: str) -> None:
    status, body = post(server, service, alice, "Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 400
    err = ec2_error(body)   # (no service of that name: the endpoint's own, EC2's, format)
    assert err["Code"] == "IncompleteSignature"
    served = ", ".join(f"'{name}'" for name in sorted({"ec2", *(spec.name for spec in SPECS)}))
    assert f"not '{service}'" in err["Message"] and served in err["Message"]


def test_unsupported_and_unknown_actions(server: Any, alice: dict[str, str]) -> None:
    sts, iam = client(server, "sts", alice), client(server, "iam", alice)
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/x", RoleSessionName="session")
    assert e.value.response["Error"]["Code"] == "InvalidAction"
    assert "STS AssumeRole is not supported by cloudctl" in e.value.response["Error"]["Message"]
    assert "GetCallerIdentity only" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        sts.get_session_token()
    assert "STS GetSessionToken is not supported" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="mallory")
    assert e.value.response["Error"]["Code"] == "InvalidAction"
    assert "IAM CreateUser is not supported" in e.value.response["Error"]["Message"]
    status, body = post(server, "iam", alice, "Action=NoSuchThing&Version=2010-05-08")
    assert (status, query_error(body)["Code"]) == (400, "InvalidAction")
    assert "not valid for this web service" in query_error(body)["Message"]
    # EC2's actions are not STS's, and STS's are not EC2's (nor reachable with SigV2, which has no scope)
    status, body = post(server, "sts", alice, "Action=DescribeRegions&Version=2016-11-15")
    assert (status, query_error(body)["Code"]) == (400, "InvalidAction")
    status, body = post(server, "ec2", alice, "Action=GetCallerIdentity&Version=2011-06-15")
    assert (status, ec2_error(body)["Code"]) == (400, "InvalidAction")
    status, body = post(server, "", alice, "Action=GetCallerIdentity&Version=2011-06-15", sigv2=True)
    assert (status, ec2_error(body)["Code"]) == (400, "InvalidAction")


def test_bad_parameters_are_validation_errors(server: Any, alice: dict[str, str]) -> None:
    status, body = post(server, "sts", alice, "Action=GetCallerIdentity&Version=2011-06-15&Extra=1")
    err = query_error(body)
    assert (status, err["Code"], err["Type"]) == (400, "ValidationError", "Sender")
    assert "Extra" in err["Message"]
    status, body = post(server, "iam", alice, "Action=GetUser&Version=2010-05-08&UserName.member.1=x")
    assert (status, query_error(body)["Code"]) == (400, "ValidationError")
    status, body = post(server, "iam", alice, "Action=ListAccountAliases&Version=2010-05-08&MaxItems=lots")
    err = query_error(body)
    assert (status, err["Code"]) == (400, "ValidationError") and "MaxItems" in err["Message"]
    status, body = post(server, "iam", alice, "Version=2010-05-08")
    assert (status, query_error(body)["Code"]) == (400, "MissingAction")


def test_requests_are_counted_per_service(server: Any, alice: dict[str, str]) -> None:
    client(server, "sts", alice).get_caller_identity()
    with pytest.raises(ClientError):
        client(server, "iam", alice).get_user(UserName="somebody-else")
    with urllib.request.urlopen(server.admin_url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    assert re.search(r'cloudctl_api_requests_total\{action="GetCallerIdentity",api="sts",code="ok"\} [1-9]', text)
    assert re.search(r'cloudctl_api_requests_total\{action="GetUser",api="iam",code="NoSuchEntity"\} [1-9]', text)


def test_failed_signatures_for_sts_share_the_login_throttle(server_with: Servers) -> None:
    # The throttle is the endpoint's: bad STS signatures count against the key as EC2's do, and
    # each service tells the client to back off in its own words.
    srv = server_with(login_throttle={"pair_free_failures": 3, "source_free_failures": 50, "backoff_s": 30.0,
                                      "backoff_max_s": 60.0, "refusal_pace_s": 0.0})
    carol = srv.create_user("carol")
    for _ in range(3 + 1):   # (the free failures, then one that starts the backoff)
        status, body = post(srv, "sts", carol, "Action=GetCallerIdentity&Version=2011-06-15", secret="w" * 40)
        assert (status, query_error(body)["Code"]) == (403, "SignatureDoesNotMatch")
    status, body = post(srv, "sts", carol, "Action=GetCallerIdentity&Version=2011-06-15")
    err = query_error(body)
    assert (status, err["Code"], err["Type"]) == (400, "Throttling", "Sender")
    status, body = post(srv, "ec2", carol, "Action=DescribeRegions&Version=2016-11-15")
    assert (status, ec2_error(body)["Code"]) == (503, "RequestLimitExceeded")
