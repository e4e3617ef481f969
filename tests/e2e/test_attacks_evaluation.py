"""Attacks on evaluation, each against a real ``docket serve`` (issue 13, findings 2-4).

- an Authorize whose ``forbid`` errors was allowed (Cedar skips erroring policies);
- one small Authorize with a long chain of per-request parent entities froze every API
  of the process for tens of seconds;
- a ``User`` named by a workload's SPIFFE ID was evaluated as that ``Workload``, so
  user-only rules (MFA) stopped applying.

Each server runs on free loopback ports and is stopped by PID by the test that started it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from admission_reviews import body, fixture, review
from e2e.docket_process import Docket, start_docket
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine._core.limits import MAX_CHAIN_DEPTH, MAX_PARENTS, MAX_REQUEST_ENTITIES
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

FLOOD_SECONDS = 5.0
FLOOD_CLIENTS = 4
PROBE_BOUND = 1.0
"""Every health check and normal Authorize during the flood is answered within this
(generous: they take milliseconds; the freeze this guards against lasted 37-60 s)."""


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def ref(type_name: str, entity_id: str) -> pb.EntityRef:
    return pb.EntityRef(type=type_name, id=entity_id)


@pytest.fixture
def default_docket(tmp_path: Path) -> Iterator[Docket]:
    docket = start_docket(tmp_path / "serve")
    try:
        yield docket
    finally:
        assert docket.stop() == 0


# --- finding 2: a forbid that errors is skipped, so the request was allowed ---------------

ERRORING_SCHEMA = """\
namespace Docket {
  entity User;
  entity Data;
  entity Service;
  action read appliesTo { principal: User, resource: Data, context: { amount: Long } };
}
"""
ERRORING_POLICIES = """\
@id("read-anything")
permit (principal, action == Docket::Action::"read", resource);

// 2^63 - 1 plus any positive amount overflows: Cedar reports an error for this policy.
@id("forbid-large-amounts")
forbid (principal, action == Docket::Action::"read", resource)
when { context.amount + 9223372036854775807 > 0 };
"""


def test_erroring_forbid_is_denied(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "schema.cedarschema").write_text(ERRORING_SCHEMA)
    (bundle / "policies.cedar").write_text(ERRORING_POLICIES)
    (bundle / "entities.json").write_text("[]")
    docket = start_docket(tmp_path / "serve", bundle=bundle)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
            answer = pb_grpc.DecisionsStub(channel).Authorize(
                pb.AuthorizeRequest(
                    principal=ref("User", "mallory"),
                    action=ref("Action", "read"),
                    resource=ref("Data", "ledger"),
                    context=struct({"amount": 1}),
                ),
                timeout=10,
            )
    finally:
        assert docket.stop() == 0
    assert answer.decision == pb.DECISION_DENY, answer
    assert list(answer.reasons) == ["forbid-large-amounts"]
    assert [e.policy_id for e in answer.errors] == ["forbid-large-amounts"]
    assert "integer overflow" in answer.errors[0].message

    (entry,) = [e for e in docket.audit_entries("decision") if e["subject"].endswith('"mallory"')]
    assert entry["decision"] == "deny"
    assert entry["policies"] == ["forbid-large-amounts"]
    assert [e["policy"] for e in entry["detail"]["errors"]] == ["forbid-large-amounts"]
    assert "integer overflow" in entry["detail"]["errors"][0]["message"]


# --- finding 3: one small request froze the whole process ---------------------------------

PUBLIC_READ = pb.AuthorizeRequest(
    principal=ref("User", "carol"),
    action=ref("Action", "read"),
    resource=ref("Data", "public-website"),
    context=struct({"mfa": True}),
)


def per_request_user(parents: list[pb.EntityRef]) -> pb.Entity:
    return pb.Entity(
        uid=ref("User", "u0"),
        attrs=struct(
            {
                "department": "research",
                "clearance": {"__entity": {"type": "Classification", "id": "public"}},
                "mfa_enrolled": False,
                "jurisdiction": "eu",
            }
        ),
        parents=parents,
    )


def chain_request(length: int) -> pb.AuthorizeRequest:
    """User u0 in Group g1, g1 in g2, … g<length-1>: the request that froze the server."""
    entities = [per_request_user([ref("Group", "g1")])]
    entities += [
        pb.Entity(uid=ref("Group", f"g{i}"), parents=[ref("Group", f"g{i + 1}")])
        for i in range(1, length - 1)
    ]
    entities.append(pb.Entity(uid=ref("Group", f"g{length - 1}")))
    return pb.AuthorizeRequest(
        principal=ref("User", "u0"),
        action=ref("Action", "read"),
        resource=ref("Data", "public-website"),
        entities=entities,
    )


def worst_accepted_request() -> pb.AuthorizeRequest:
    """As much ancestry as the limits let through: layers of groups as deep as the chain
    limit allows, each group a child of every group of the layer above it (up to the
    fan-out limit), as many entities as allowed in all."""
    layers = MAX_CHAIN_DEPTH - 1
    width = max(1, min(MAX_PARENTS, (MAX_REQUEST_ENTITIES - 1) // layers))
    entities = [per_request_user([ref("Group", f"l0-{j}") for j in range(width)])]
    for layer in range(layers):
        above = [ref("Group", f"l{layer + 1}-{k}") for k in range(width)]
        for j in range(width):
            parents = above if layer + 1 < layers else []
            entities.append(pb.Entity(uid=ref("Group", f"l{layer}-{j}"), parents=parents))
    assert len(entities) <= MAX_REQUEST_ENTITIES
    return pb.AuthorizeRequest(
        principal=ref("User", "u0"),
        action=ref("Action", "read"),
        resource=ref("Data", "public-website"),
        entities=entities,
    )


def test_parent_chain_freeze_is_refused_and_others_keep_answering(
    default_docket: Docket,
) -> None:
    target = f"127.0.0.1:{default_docket.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.DecisionsStub(channel)

        # The attack itself: refused, quickly, naming the limit it is over.
        attack = chain_request(1200)
        assert attack.ByteSize() < 64 * 1024
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Authorize(attack, timeout=30)
        assert time.monotonic() - started < PROBE_BOUND
        assert refused.value.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "entities: 1200 per-request entities exceed the limit of" in str(
            refused.value.details()
        )

        # The worst request the limits accept is decided.
        worst = worst_accepted_request()
        assert stub.Authorize(worst, timeout=30).decision == pb.DECISION_ALLOW

    stop = threading.Event()
    flooded = [0] * FLOOD_CLIENTS
    failures: list[BaseException] = []

    def flood(number: int) -> None:
        try:
            with grpc.insecure_channel(target) as channel:
                flood_stub = pb_grpc.DecisionsStub(channel)
                deadline = time.monotonic() + FLOOD_SECONDS
                while not stop.is_set() and time.monotonic() < deadline:
                    flood_stub.Authorize(worst, timeout=30)
                    flooded[number] += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(FLOOD_CLIENTS)]
    health_times: list[float] = []
    authorize_times: list[float] = []
    admission_times: list[float] = []
    pod_review = body(review(fixture("deployment")))
    try:
        for thread in threads:
            thread.start()
        with grpc.insecure_channel(target) as channel, default_docket.admission_client() as http:
            health_stub = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.DecisionsStub(channel)
            end = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < end:
                started = time.monotonic()
                status = health_stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                health_times.append(time.monotonic() - started)
                assert status == health_pb2.HealthCheckResponse.SERVING
                started = time.monotonic()
                answer = stub.Authorize(PUBLIC_READ, timeout=10)
                authorize_times.append(time.monotonic() - started)
                assert answer.decision == pb.DECISION_ALLOW, answer
                started = time.monotonic()
                reviewed = http.post(
                    "/validate", content=pod_review, headers={"Content-Type": "application/json"}
                )
                admission_times.append(time.monotonic() - started)
                assert reviewed.json()["response"]["allowed"] is True, reviewed.text
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    assert all(count > 0 for count in flooded), flooded
    assert len(health_times) >= 10, health_times
    assert max(health_times) < PROBE_BOUND, sorted(health_times)[-5:]
    assert max(authorize_times) < PROBE_BOUND, sorted(authorize_times)[-5:]
    assert max(admission_times) < PROBE_BOUND, sorted(admission_times)[-5:]


def test_over_limit_batch_is_refused(default_docket: Docket) -> None:
    """Each request of a batch within the limits, the batch's total over them."""
    request = worst_accepted_request()
    with grpc.insecure_channel(f"127.0.0.1:{default_docket.grpc_port}") as channel:
        stub = pb_grpc.DecisionsStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=[request] * 20), timeout=30)
        assert time.monotonic() - started < PROBE_BOUND
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "in one batch exceed the limit of" in str(refused.value.details())


# --- finding 4: a User named by a workload's SPIFFE ID became that Workload ----------------

BILLING_SPIFFE_ID = "spiffe://docket.example/ns/finance/sa/billing-api"


def test_user_with_workload_spiffe_id_stays_user(default_docket: Docket) -> None:
    """A *User* named like the billing-api workload is a user: without MFA on the request,
    confidential-requires-mfa (a rule about users) denies it. The *Workload* of that
    SPIFFE ID still resolves to the stored billing-api, which is not asked for MFA and
    whose attributes evaluate without error. (No device posture in these requests: the
    managed-device rule denies both, which is not what this test is about.)"""
    context = struct({"jurisdiction": "uk"})

    def read_forecast(principal_type: str) -> pb.AuthorizeResponse:
        return stub.Authorize(
            pb.AuthorizeRequest(
                principal=ref(principal_type, BILLING_SPIFFE_ID),
                action=ref("Action", "read"),
                resource=ref("Data", "quarterly-forecast"),
                context=context,
            ),
            timeout=10,
        )

    with grpc.insecure_channel(f"127.0.0.1:{default_docket.grpc_port}") as channel:
        stub = pb_grpc.DecisionsStub(channel)
        as_user = read_forecast("User")
        as_workload = read_forecast("Workload")
    assert as_user.decision == pb.DECISION_DENY, as_user
    assert "confidential-requires-mfa" in as_user.reasons, as_user
    assert as_workload.decision == pb.DECISION_DENY, as_workload
    assert list(as_workload.reasons) == ["confidential-requires-managed-device"], as_workload
    assert list(as_workload.errors) == [], as_workload
