"""The blocking DecisionClient against a fake Docket: calls, errors, retries, deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sdk_fakes import DENIED_PRINCIPAL, FakeDecisions, Running, unused_target

from sdk import (
    AuthorizeResult,
    ConfigurationError,
    DecisionClient,
    DeniedSite,
    DocketError,
    InvalidRequestError,
    OverloadedError,
    PermissionDeniedError,
    PlacedSite,
    ServerError,
    TransportError,
)
from sdk._convert import authorize_request_from_proto
from sdk.v1 import decisions_pb2 as pb

ALICE = {"type": "User", "id": "alice"}
MALLORY = {"type": "User", "id": DENIED_PRINCIPAL}
RECORDS = {"type": "Data", "id": "patient-records-eu"}


@pytest.fixture
def client(docket: Running) -> Iterator[DecisionClient]:
    with DecisionClient(docket.target, timeout=2.0, initial_backoff=0.01, max_backoff=0.05) as c:
        yield c


def test_authorize_sends_the_request_and_returns_the_decision(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    result = client.authorize(ALICE, "read", RECORDS, context={"mfa": True, "patch_age_days": 3})

    assert result == AuthorizeResult(
        decision="allow",
        decision_id="dec-1",
        reasons=("fake-permit",),
        bundle_version="sha256:fake",
    )
    assert result.allowed
    (sent,) = fake.calls("Authorize")
    assert authorize_request_from_proto(sent).model_dump() == {
        "principal": ALICE,
        "action": {"type": "Action", "id": "read"},
        "resource": RECORDS,
        "context": {"mfa": True, "patch_age_days": 3},
        "entities": (),
        "device_token": None,
    }


def test_a_deny_is_a_result_not_an_error(client: DecisionClient) -> None:
    result = client.authorize({"principal": MALLORY, "action": "read", "resource": RECORDS})

    assert result.decision == "deny"
    assert not result.allowed
    assert result.reasons == ("fake-forbid",)


def test_a_float_is_refused_before_anything_is_sent(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    with pytest.raises(InvalidRequestError, match=r"context\.score: 0\.5 is a float"):
        client.authorize(ALICE, "read", RECORDS, context={"score": 0.5})

    assert fake.received == []


def test_a_batch_is_answered_in_order(client: DecisionClient, fake: FakeDecisions) -> None:
    requests = [
        {"principal": principal, "action": "read", "resource": RECORDS}
        for principal in (ALICE, MALLORY, ALICE)
    ]

    results = client.authorize_batch(requests)

    assert [r.decision for r in results] == ["allow", "deny", "allow"]
    assert [r.decision_id for r in results] == ["dec-1.0", "dec-1.1", "dec-1.2"]
    assert len(fake.calls("BatchAuthorize")[0].requests) == 3


def test_an_oversized_batch_is_refused_before_sending(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    request = {"principal": ALICE, "action": "read", "resource": RECORDS}

    with pytest.raises(InvalidRequestError, match="at most 1000"):
        client.authorize_batch([request] * (DecisionClient.MAX_BATCH + 1))

    assert client.authorize_batch([]) == []
    assert fake.received == []


def test_place_sends_the_workload_and_reads_the_ranking(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    placement = client.place(
        "trainer",
        kind="dataset",
        classification="restricted",
        residency=["eu", "uk"],
        accelerator="gpu-a100",
        latency_budget_ms=40,
        context={"requested_by": "ci"},
    )

    (sent,) = fake.calls("Place")
    assert sent.workload_id == "trainer"
    assert sent.kind == pb.WORKLOAD_KIND_DATASET
    assert list(sent.residency) == ["eu", "uk"]
    assert sent.latency_budget_ms == 40
    assert not sent.HasField("users_in")
    assert placement.decision_id == "dec-place"
    assert placement.allowed == (
        PlacedSite(
            site="eu-west-cloud",
            region="eu-west",
            jurisdiction="eu",
            tier="cloud",
            latency_ms=12.5,
            cost_per_hour=2.25,
            within_latency_budget=True,
            reasons=("placement-baseline",),
        ),
    )
    assert placement.denied == (
        DeniedSite(site="us-east-edge", reasons=("placement-residency",), errors=(("p9", "boom"),)),
    )


def test_place_refuses_an_unknown_classification(client: DecisionClient) -> None:
    with pytest.raises(InvalidRequestError, match="classification"):
        client.place("trainer", classification="secret")  # type: ignore[arg-type]


def test_reload_bundle(client: DecisionClient) -> None:
    result = client.reload_bundle()

    assert (result.bundle_version, result.changed, result.previous_version) == (
        "sha256:new",
        True,
        "sha256:fake",
    )


def test_health_reports_the_services_status(client: DecisionClient, docket: Running) -> None:
    assert client.health() == "SERVING"
    assert client.health("") == "SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"

    docket.health.set("docket.v1.Decisions", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert client.health() == "NOT_SERVING"


ERRORS = [
    pytest.param(grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError, id="invalid"),
    pytest.param(grpc.StatusCode.OUT_OF_RANGE, InvalidRequestError, id="out-of-range"),
    pytest.param(grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError, id="denied"),
    pytest.param(grpc.StatusCode.UNAUTHENTICATED, PermissionDeniedError, id="unauthenticated"),
    pytest.param(grpc.StatusCode.INTERNAL, ServerError, id="internal"),
    pytest.param(grpc.StatusCode.UNIMPLEMENTED, ServerError, id="unimplemented"),
    pytest.param(grpc.StatusCode.DEADLINE_EXCEEDED, TransportError, id="deadline"),
]


@pytest.mark.parametrize(("status", "error"), ERRORS)
def test_statuses_map_to_sdk_errors_and_are_not_retried(
    client: DecisionClient,
    fake: FakeDecisions,
    status: grpc.StatusCode,
    error: type[DocketError],
) -> None:
    fake.fail_with = (status, "context.device.patch_age_days: expected a Long")

    with pytest.raises(error) as caught:
        client.authorize(ALICE, "read", RECORDS)

    assert type(caught.value) is error
    assert caught.value.status == status.name
    assert "context.device.patch_age_days: expected a Long" in str(caught.value)
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert len(fake.received) == 1


def test_reload_refused_by_policy_is_permission_denied(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    fake.fail_with = (grpc.StatusCode.PERMISSION_DENIED, "admin requires an attested device")

    with pytest.raises(
        PermissionDeniedError,
        match=r"ReloadBundle on 127\.0\.0\.1:\d+ failed: PERMISSION_DENIED: admin requires",
    ):
        client.reload_bundle()


def test_unavailable_is_retried_with_bounded_backoff(docket: Running, fake: FakeDecisions) -> None:
    fake.unavailable_first = 3
    started = time.monotonic()

    with DecisionClient(docket.target, retries=3, initial_backoff=0.05, max_backoff=0.08) as c:
        result = c.authorize(ALICE, "read", RECORDS)

    elapsed = time.monotonic() - started
    assert result.decision_id == "dec-4"
    assert len(fake.received) == 4
    gaps = [b.at - a.at for a, b in zip(fake.received, fake.received[1:], strict=False)]
    assert all(gap < 0.08 + 0.5 for gap in gaps), gaps
    assert elapsed < 0.05 + 0.08 + 0.08 + 1.5


CALLS = [
    pytest.param("Authorize", lambda c: c.authorize(ALICE, "read", RECORDS), id="authorize"),
    pytest.param(
        "BatchAuthorize",
        lambda c: c.authorize_batch([{"principal": ALICE, "action": "read", "resource": RECORDS}]),
        id="batch",
    ),
    pytest.param("Place", lambda c: c.place("ehr-api", residency=["eu"]), id="place"),
]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
@pytest.mark.parametrize(("rpc", "call"), CALLS)
def test_decisions_are_retried_by_grpc_until_they_succeed(
    client: DecisionClient,
    fake: FakeDecisions,
    rpc: str,
    call: Callable[[DecisionClient], object],
    code: grpc.StatusCode,
) -> None:
    fake.unavailable_first = 2
    fake.first_code = code

    call(client)

    assert [r.rpc for r in fake.received] == [rpc] * 3


def test_reload_bundle_is_never_retried(client: DecisionClient, fake: FakeDecisions) -> None:
    fake.unavailable_first = 1

    with pytest.raises(TransportError) as caught:
        client.reload_bundle()

    assert str(caught.value) == (
        f"ReloadBundle on {client.target} failed: UNAVAILABLE: warming up (call 1)"
    )
    assert len(fake.received) == 1


def test_an_overload_that_persists_is_reported_after_the_retries(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    fake.fail_with = (grpc.StatusCode.RESOURCE_EXHAUSTED, "the audit queue is full")

    with pytest.raises(OverloadedError, match="after 4 attempts: RESOURCE_EXHAUSTED: the audit"):
        client.authorize(ALICE, "read", RECORDS)

    assert len(fake.received) == 4


def test_the_timeout_bounds_the_call_with_its_retries(docket: Running, fake: FakeDecisions) -> None:
    fake.unavailable_first = 100
    started = time.monotonic()

    with (
        DecisionClient(
            docket.target, timeout=0.3, retries=4, initial_backoff=5.0, max_backoff=5.0
        ) as c,
        pytest.raises(TransportError) as caught,
    ):
        c.authorize(ALICE, "read", RECORDS)

    assert time.monotonic() - started < 2.0
    assert caught.value.status == "DEADLINE_EXCEEDED"
    assert len(fake.received) < 5


def test_retries_give_up_with_a_transport_error(docket: Running, fake: FakeDecisions) -> None:
    fake.unavailable_first = 100

    with (
        DecisionClient(docket.target, retries=2, initial_backoff=0.01) as c,
        pytest.raises(TransportError, match="after 3 attempts: UNAVAILABLE: warming up") as caught,
    ):
        c.authorize(ALICE, "read", RECORDS)

    assert caught.value.status == "UNAVAILABLE"
    assert len(fake.received) == 3


def test_the_deadline_is_per_call_and_not_retried(docket: Running, fake: FakeDecisions) -> None:
    fake.delay = 5.0
    started = time.monotonic()

    with (
        DecisionClient(docket.target, timeout=0.2, retries=3) as c,
        pytest.raises(TransportError, match="DEADLINE_EXCEEDED") as caught,
    ):
        c.authorize(ALICE, "read", RECORDS)

    assert time.monotonic() - started < 2.0
    assert caught.value.status == "DEADLINE_EXCEEDED"
    assert len(fake.received) == 1


def test_an_unreachable_docket_is_a_transport_error() -> None:
    with (
        DecisionClient(unused_target(), timeout=0.5, retries=1, initial_backoff=0.01) as c,
        pytest.raises(TransportError, match="after 2 attempts: UNAVAILABLE"),
    ):
        c.health()


def test_a_closed_client_refuses_calls(docket: Running) -> None:
    client = DecisionClient(docket.target)
    client.close()

    with pytest.raises(TransportError, match="closed"):
        client.authorize(ALICE, "read", RECORDS)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"retries": -1}, id="negative-retries"),
        pytest.param({"retries": 5}, id="more-retries-than-grpc-makes"),
        pytest.param({"max_backoff": -0.1}, id="negative-backoff"),
    ],
)
def test_unusable_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        DecisionClient(**settings)  # type: ignore[arg-type]


def test_many_resources_go_in_batches_of_the_limit_in_order(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    resources = [{"type": "Data", "id": f"d{n}"} for n in range(DecisionClient.MAX_BATCH * 2 + 1)]

    results = client.authorize_resources(ALICE, "read", resources, context={"mfa": True})

    calls = fake.calls("BatchAuthorize")
    assert [len(call.requests) for call in calls] == [1000, 1000, 1]
    sent = [request for call in calls for request in call.requests]
    assert [request.resource.id for request in sent] == [r["id"] for r in resources]
    first = authorize_request_from_proto(sent[0]).model_dump()
    assert first["principal"] == ALICE
    assert first["context"] == {"mfa": True}
    assert len(results) == len(resources)
    assert [r.decision_id for r in results[:2]] == ["dec-1.0", "dec-1.1"]
    assert results[-1].decision_id == "dec-3.0"


def test_a_bad_resource_is_named_and_nothing_is_sent(
    client: DecisionClient, fake: FakeDecisions
) -> None:
    with pytest.raises(InvalidRequestError, match=r"resources\[1\]"):
        client.authorize_resources(ALICE, "read", [RECORDS, {"type": "Data"}])
    assert client.authorize_resources(ALICE, "read", []) == []
    assert fake.received == []
