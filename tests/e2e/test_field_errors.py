"""A context off the schema is refused naming the field, the same way on every path of a
real ``docket serve``: gRPC Authorize and BatchAuthorize (INVALID_ARGUMENT, the field in
the details), the SDK (``InvalidRequestError``), ``docket decide --server`` (exit 2, as
offline), and ext_authz (denied with the reason, and the refusal audited)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e.docket_process import DOCKET, Docket, start_docket
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.protobuf import json_format
from google.rpc import code_pb2

from sdk import DecisionClient, InvalidRequestError
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

pytestmark = pytest.mark.e2e

WRONG_MFA = "context.mfa: expected a boolean (got a string)"


@pytest.fixture(scope="module")
def docket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    server = start_docket(Path(tmp_path_factory.mktemp("fields")) / "serve")
    yield server  # pytest runs what follows even when a test failed
    assert server.stop() == 0, server.log.read_text()


def read(context: dict[str, Any]) -> pb.AuthorizeRequest:
    return alice_reads("payroll", context)


@pytest.mark.parametrize(
    ("context", "details"),
    [
        pytest.param({"mfa": "yes"}, WRONG_MFA, id="wrong-type"),
        pytest.param({"http": {"method": "GET"}}, "context.http.path: required", id="required"),
        pytest.param(
            {"foo": 1}, 'context.foo: not in the schema for action "read"', id="not-in-schema"
        ),
    ],
)
def test_authorize_names_the_field(docket: Docket, context: dict[str, Any], details: str) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.DecisionsStub(channel).Authorize(read(context), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == details


def test_batch_authorize_names_the_request_and_the_field(docket: Docket) -> None:
    batch = pb.BatchAuthorizeRequest(requests=[read({"mfa": True}), read({"mfa": "yes"})])
    with (
        grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.DecisionsStub(channel).BatchAuthorize(batch, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"requests[1].{WRONG_MFA}"


def test_the_sdk_error_names_the_field(docket: Docket) -> None:
    with (
        DecisionClient(f"127.0.0.1:{docket.grpc_port}", timeout=10) as client,
        pytest.raises(InvalidRequestError) as caught,
    ):
        client.authorize(
            {"type": "User", "id": "alice"},
            "read",
            {"type": "Data", "id": "payroll"},
            context={"mfa": "yes"},
        )
    assert WRONG_MFA in str(caught.value)


def test_ext_authz_denies_with_the_field_as_reason(docket: Docket) -> None:
    """A route whose action's context type does not fit what a Check carries (here
    ``place``, which needs a classification) is denied naming the field, and the refusal
    is in the audit log with the same words."""
    check = json_format.ParseDict(
        {
            "attributes": {
                "request": {"http": {"method": "GET", "path": "/sites/eu-west"}},
                "context_extensions": {
                    "action": "place",
                    "resource_type": "Site",
                    "resource_id": "eu-west",
                },
            }
        },
        authz.CheckRequest(),
    )
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        answer = authz_grpc.AuthorizationStub(channel).Check(check, timeout=10)
    assert answer.status.code == code_pb2.INVALID_ARGUMENT, answer
    assert answer.denied_response.status.code == 400
    body = json.loads(answer.denied_response.body)
    assert body["error"] == "context.classification: required"
    entries = [
        entry
        for entry in docket.audit_entries("decision")
        if entry["detail"].get("decision_id") == body["decision_id"]
    ]
    assert [entry["detail"]["error"] for entry in entries] == [body["error"]]


def test_decide_with_server_names_the_field_as_offline(docket: Docket) -> None:
    """`docket decide --server` fails as `docket decide` does: exit 2, one line naming
    the line of input and the field."""
    request = {
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Data", "id": "payroll"},
        "context": {"mfa": "yes"},
    }
    command = [DOCKET, "decide", "--server", f"127.0.0.1:{docket.grpc_port}"]
    result = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("docket: <stdin>:1: ")
    assert line.endswith(WRONG_MFA)
