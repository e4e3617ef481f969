"""The decision service over real gRPC: an in-process server on the default bundle."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pki import PKI
from serving import DEVICE, Running

from engine._runtime.settings import Settings
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
BILLING = "spiffe://docket.example/ns/finance/sa/billing-api"
OPERATOR = "spiffe://docket.example/ns/docket-system/sa/docket-operator"


def ref(type_: str, id_: str) -> pb.EntityRef:
    return pb.EntityRef(type=type_, id=id_)


def struct(values: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


# bob (finance, confidential clearance) reads his confidential forecast with MFA from a
# managed device (restricted data would need an attested device:
# tests/engine/service/test_posture.py).
ALLOW = pb.AuthorizeRequest(
    principal=ref("User", "bob"),
    action=ref("Action", "read"),
    resource=ref("Data", "quarterly-forecast"),
    context=struct({"mfa": True, "jurisdiction": "uk", "device": DEVICE}),
)
# frank (finance, internal clearance) may not read restricted payroll.
DENY = pb.AuthorizeRequest(
    principal=ref("User", "frank"),
    action=ref("Action", "read"),
    resource=ref("Data", "payroll-uk"),
    context=struct({"mfa": True, "jurisdiction": "uk", "device": DEVICE}),
)


def test_authorize_allow_and_deny(stub: pb_grpc.DecisionsStub) -> None:
    allowed = stub.Authorize(ALLOW, timeout=5)
    assert allowed.decision == pb.DECISION_ALLOW
    assert allowed.reasons
    assert allowed.bundle_version.startswith("sha256:")
    denied = stub.Authorize(DENY, timeout=5)
    assert denied.decision == pb.DECISION_DENY
    assert allowed.decision_id != denied.decision_id
    assert len(allowed.decision_id) == 36
    assert allowed.decision_id[14] == "7"


def test_batch_answers_in_order(stub: pb_grpc.DecisionsStub) -> None:
    batch = pb.BatchAuthorizeRequest(requests=[DENY, ALLOW, ALLOW, DENY])
    results = stub.BatchAuthorize(batch, timeout=5).results
    assert [r.decision for r in results] == [
        pb.DECISION_DENY,
        pb.DECISION_ALLOW,
        pb.DECISION_ALLOW,
        pb.DECISION_DENY,
    ]
    assert len({r.decision_id for r in results}) == 4


def test_batch_over_the_limit_is_resource_exhausted(stub: pb_grpc.DecisionsStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=[ALLOW] * 1001), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1001" in caught.value.details()


def test_oversized_message_is_resource_exhausted(stub: pb_grpc.DecisionsStub) -> None:
    big = pb.AuthorizeRequest()
    big.CopyFrom(ALLOW)
    big.context.update({"network_zone": "x" * (5 * 1024 * 1024)})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Authorize(big, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _invalid(**changes: object) -> pb.AuthorizeRequest:
    request = pb.AuthorizeRequest()
    request.CopyFrom(ALLOW)
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        else:
            getattr(request, name).CopyFrom(value)
    return request


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(_invalid(principal=None), "principal: required", id="no-principal"),
        pytest.param(_invalid(action=ref("", "read")), "action.type", id="empty-type"),
        pytest.param(_invalid(context=struct({"mfa": 1.5})), "context.mfa", id="float"),
        pytest.param(_invalid(context=struct({"mfa": None})), "context.mfa", id="null"),
        pytest.param(
            _invalid(context=struct({"caller": "spiffe://x/y"})), "context.caller", id="forged"
        ),
        pytest.param(_invalid(context=struct({"mfa": "yes"})), "mfa", id="off-schema"),
        pytest.param(_invalid(resource=ref("Nope", "x")), "Nope", id="unknown-type"),
    ],
)
def test_malformed_requests_name_the_field(
    stub: pb_grpc.DecisionsStub, request_: pb.AuthorizeRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Authorize(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
    # The server is still answering.
    assert stub.Authorize(ALLOW, timeout=5).decision == pb.DECISION_ALLOW


def test_batch_error_names_the_request(stub: pb_grpc.DecisionsStub) -> None:
    bad = _invalid(principal=None)
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=[ALLOW, bad]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("requests[1].principal")


def test_inline_entities(stub: pb_grpc.DecisionsStub) -> None:
    # A document not in entities.json, owned by frank: owners may read their own data.
    doc = pb.Entity(
        uid=ref("Data", "frank-notes"),
        attrs=struct(
            {
                "classification": {"__entity": {"type": "Classification", "id": "internal"}},
                "residency": ["uk"],
                "owner": {"__entity": {"type": "User", "id": "frank"}},
                "regulated": False,
                "department": "finance",
                "namespace": "finance",
            }
        ),
    )
    request = pb.AuthorizeRequest(
        principal=ref("User", "frank"),
        action=ref("Action", "read"),
        resource=ref("Data", "frank-notes"),
        context=struct({"mfa": True, "jurisdiction": "uk", "device": DEVICE}),
        entities=[doc],
    )
    result = stub.Authorize(request, timeout=5)
    assert result.decision == pb.DECISION_ALLOW, result


def test_place_ranks_and_explains(stub: pb_grpc.DecisionsStub) -> None:
    response = stub.Place(
        pb.PlacementRequest(
            workload_id="ehr-gateway",
            classification="restricted",
            residency=["eu"],
            regulated=True,
            users_in="eu",
        ),
        timeout=5,
    )
    assert response.allowed, response
    assert {s.jurisdiction for s in response.allowed} == {"eu"}
    assert response.denied
    assert all(d.reasons or d.errors for d in response.denied)
    costs = [s.cost_per_hour for s in response.allowed if s.within_latency_budget]
    assert costs == sorted(costs)
    assert response.decision_id


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(pb.PlacementRequest(), "workload_id", id="no-id"),
        pytest.param(
            pb.PlacementRequest(workload_id="w", classification="secret"),
            "classification",
            id="bad-classification",
        ),
        pytest.param(pb.PlacementRequest(workload_id="w", sites=["mars-1"]), "mars-1", id="site"),
    ],
)
def test_place_invalid(
    stub: pb_grpc.DecisionsStub, request_: pb.PlacementRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Place(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


def test_health_and_reflection(server: Running) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "docket.v1.Decisions", "envoy.service.auth.v3.Authorization"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(
            iter(
                reflect.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
            )
        )
        names = {s.name for s in answer.list_services_response.service}
    assert {"docket.v1.Decisions", "envoy.service.auth.v3.Authorization"} <= names
    assert "grpc.health.v1.Health" in names


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_decisions(server: Running, stub: pb_grpc.DecisionsStub) -> None:
    allow = 'docket_decisions_total{api="authorize",decision="allow"}'
    deny = 'docket_decisions_total{api="authorize",decision="deny"}'
    count = 'docket_request_duration_seconds_count{api="authorize"}'
    before = scrape(server.metrics_url)
    stub.Authorize(ALLOW, timeout=5)
    stub.Authorize(DENY, timeout=5)
    stub.Authorize(DENY, timeout=5)
    after = scrape(server.metrics_url)
    assert after[allow] - before.get(allow, 0) == 1
    assert after[deny] - before.get(deny, 0) == 2
    assert after[count] - before.get(count, 0) == 3
    # A batch counts each of its decisions.
    batch = (
        allow.replace("authorize", "batch_authorize"),
        deny.replace("authorize", "batch_authorize"),
    )
    stub.BatchAuthorize(
        pb.BatchAuthorizeRequest(requests=[DENY, ALLOW, ALLOW, DENY, DENY]), timeout=5
    )
    batched = scrape(server.metrics_url)
    assert [batched[name] - after.get(name, 0) for name in batch] == [2, 3]
    version = server.worker.engine.bundle.version  # type: ignore[union-attr]
    assert after[f'docket_bundle_info{{version="{version}"}}'] == 1
    assert after['docket_in_flight_requests{api="authorize"}'] == 0


def test_reload_needs_mtls(stub: pb_grpc.DecisionsStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReloadBundle(pb.ReloadBundleRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "mTLS" in caught.value.details()


# --- mTLS -------------------------------------------------------------------------------


ADMIN_POLICY = """
// Test only: the operator workload may administer Docket without device posture.
@id("test-operator-admin")
permit (principal == Docket::Workload::"docket-operator", action == Docket::Action::"admin",
        resource is Docket::Service);
"""


@pytest.fixture
def mtls_server(bundle_dir: Path, tmp_path: Path, pki: PKI) -> Iterator[Running]:
    # The default bundle forbids admin without an attested device; allow the operator here.
    (bundle_dir / "admin.cedar").write_text(ADMIN_POLICY)
    settings = Settings(
        bundle=bundle_dir,
        data_dir=tmp_path / "data",
        bundle_poll_seconds=60,
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca,
    )
    running = Running(settings)
    try:
        yield running
    finally:
        running.stop()


def mtls_channel(server: Running, pki: PKI, name: str, spiffe_id: str) -> grpc.Channel:
    client = pki.client(name, spiffe_id)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=client.key.read_bytes(),
        certificate_chain=client.cert.read_bytes(),
    )
    return grpc.secure_channel(server.target, credentials)


def test_mtls_caller_is_in_the_context(mtls_server: Running, pki: PKI, bundle_dir: Path) -> None:
    # A policy that reads context.caller proves the SPIFFE ID reached the evaluation.
    (bundle_dir / "caller.cedar").write_text(
        '@id("caller-billing-reads-anything")\n'
        'permit (principal, action == Docket::Action::"read", resource)\n'
        'when { context has caller && context.caller == "' + BILLING + '" };\n'
    )
    with mtls_channel(mtls_server, pki, "operator", OPERATOR) as channel:
        reload = pb_grpc.DecisionsStub(channel).ReloadBundle(pb.ReloadBundleRequest(), timeout=10)
    assert reload.changed
    request = pb.AuthorizeRequest(
        principal=ref("User", "heidi"),  # clearance public: internal data is above it
        action=ref("Action", "read"),
        resource=ref("Data", "employee-directory"),
    )
    with mtls_channel(mtls_server, pki, "billing", BILLING) as channel:
        as_billing = pb_grpc.DecisionsStub(channel).Authorize(request, timeout=5)
    with mtls_channel(mtls_server, pki, "web", "spiffe://docket.example/ns/web/sa/x") as channel:
        as_other = pb_grpc.DecisionsStub(channel).Authorize(request, timeout=5)
    assert list(as_billing.reasons) == ["caller-billing-reads-anything"]
    assert as_other.decision == pb.DECISION_DENY


def test_reload_is_authorized_by_policy(mtls_server: Running, pki: PKI, bundle_dir: Path) -> None:
    before = mtls_server.worker.engine.bundle.version  # type: ignore[union-attr]
    (bundle_dir / "extra.cedar").write_text(
        '@id("extra")\npermit (principal, action == Docket::Action::"share", resource)'
        " when { false };\n"
    )
    with (
        mtls_channel(mtls_server, pki, "billing", BILLING) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.DecisionsStub(channel).ReloadBundle(pb.ReloadBundleRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert BILLING in caught.value.details()
    assert mtls_server.worker.engine.bundle.version == before  # type: ignore[union-attr]

    with mtls_channel(mtls_server, pki, "operator", OPERATOR) as channel:
        stub = pb_grpc.DecisionsStub(channel)
        result = stub.ReloadBundle(pb.ReloadBundleRequest(), timeout=10)
        assert result.changed
        assert result.previous_version == before
        assert stub.ReloadBundle(pb.ReloadBundleRequest(), timeout=10).changed is False
    assert mtls_server.worker.engine.bundle.version == result.bundle_version  # type: ignore[union-attr]


def test_reload_of_a_broken_bundle_keeps_the_old_one(
    mtls_server: Running, pki: PKI, bundle_dir: Path
) -> None:
    before = mtls_server.worker.engine.bundle.version  # type: ignore[union-attr]
    (bundle_dir / "broken.cedar").write_text("permit (principal, action, resource")
    with (
        mtls_channel(mtls_server, pki, "operator", OPERATOR) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.DecisionsStub(channel).ReloadBundle(pb.ReloadBundleRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "broken.cedar:1" in caught.value.details()
    assert mtls_server.worker.engine.bundle.version == before  # type: ignore[union-attr]


def test_mtls_refuses_clients_without_a_certificate(mtls_server: Running, pki: PKI) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with (
        grpc.secure_channel(mtls_server.target, credentials) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
