"""Traces of a real ``docket serve`` (a subprocess), received over OTLP/gRPC by a small
collector (tests/e2e/otlp_collector.py: ``opentelemetry-proto``'s TraceService in a
process of its own; no collector binary is installable from the registries this project
uses): a caller's
``traceparent`` is the parent of the server span, evaluation and the audit commit are
its children, and its decision id is the response's and the audit entry's. Without
``otel_endpoint`` nothing is sent, even with OpenTelemetry's own environment variables
set."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from admission_reviews import body, fixture, review
from e2e.docket_process import Docket, die_with_parent, start_docket, stop
from e2e.test_envoy import (  # envoy_binary: the fixture (the Envoy binary, or a skip)
    EXAMPLE,
    envoy_binary,  # noqa: F401
    make_site,
    render_config,
    start_envoy,
)
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from sdk.v1.attestation_pb2 import ChallengeRequest
from sdk.v1.attestation_pb2_grpc import AttestationStub

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
WAIT = 15.0
EXPORT_SOON = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # the SDK's batch delay, in ms
HEIDI_READS_WEBSITE = pb.AuthorizeRequest(
    principal=pb.EntityRef(type="User", id="heidi"),
    action=pb.EntityRef(type="Action", id="read"),
    resource=pb.EntityRef(type="Data", id="public-website"),
)


def traceparent(n: int) -> str:
    """A distinct caller trace per test (the collector sees every test's spans)."""
    return f"00-{TRACE_ID[:-4]}{n:04x}-{PARENT_ID}-01"


class Collector:
    """tests/e2e/otlp_collector.py running: the spans it received, as JSON."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.out = root / "spans.jsonl"
        self.process = subprocess.Popen(
            die_with_parent(
                [sys.executable, str(Path(__file__).with_name("otlp_collector.py")), str(self.out)]
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening "), line
        _, grpc_port, http_port = line.split()
        self.endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{http_port}"

    def spans(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def trace(self, trace_id: str, count: int) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once ``count`` have arrived."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [s for s in self.spans() if s["trace_id"] == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        pytest.fail(f"{len(found)} of {count} spans of trace {trace_id} after {WAIT} s")

    def stop(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        stop(self.process, "otlp_collector.py")
        self.process.stdout.close()


def named(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (span,) = [s for s in spans if s["name"] == name]
    return span


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    running = Collector(tmp_path_factory.mktemp("collector"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[Docket]:
    running = start_docket(
        tmp_path_factory.mktemp("traced"),
        env={
            "DOCKET_OTEL_ENDPOINT": collector.endpoint,
            "DOCKET_LOG_FORMAT": "json",
            "DOCKET_LOG_LEVEL": "debug",
            **EXPORT_SOON,
        },
    )
    yield running  # pytest resumes here after the module's tests, failed or not
    assert running.stop() == 0, running.log.read_text()


def test_authorize_is_a_span_under_the_callers_trace(traced: Docket, collector: Collector) -> None:
    caller = traceparent(1)
    with grpc.insecure_channel(f"127.0.0.1:{traced.grpc_port}") as channel:
        answer = pb_grpc.DecisionsStub(channel).Authorize(
            HEIDI_READS_WEBSITE, metadata=[("traceparent", caller)], timeout=10
        )
    spans = collector.trace(caller[3:35], 3)
    served = named(spans, "docket.v1.Decisions/Authorize")
    assert served["parent_span_id"] == PARENT_ID
    assert served["kind"] == trace_pb2.Span.SPAN_KIND_SERVER
    for child in ("docket.evaluate", "docket.audit.commit"):
        assert named(spans, child)["parent_span_id"] == served["span_id"]
    said = served["attributes"]
    assert said["docket.decision_id"] == answer.decision_id
    assert said["docket.decision"] == "allow"
    assert said["docket.bundle_version"] == answer.bundle_version
    assert said["docket.api"] == "authorize"
    assert said["rpc.grpc.status_code"] == 0
    (entry,) = [
        e
        for e in traced.audit_entries("decision")
        if e["detail"]["decision_id"] == answer.decision_id
    ]
    assert entry["decision"] == "allow"
    (line,) = [
        json.loads(line)
        for line in traced.log.read_text().splitlines()
        if answer.decision_id in line and '"event": "decision"' in line
    ]
    assert line["trace_id"] == caller[3:35]
    assert line["span_id"] == served["span_id"]


def test_otlp_over_http(collector: Collector, tmp_path: Path) -> None:
    env = {
        "DOCKET_OTEL_ENDPOINT": collector.http_endpoint,
        "DOCKET_OTEL_PROTOCOL": "http",
        "DOCKET_OTEL_SERVICE_NAME": "docket-over-http",
        **EXPORT_SOON,
    }
    running = start_docket(tmp_path, "--admission", "off", env=env)
    caller = traceparent(7)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            answer = pb_grpc.DecisionsStub(channel).Authorize(
                HEIDI_READS_WEBSITE, metadata=[("traceparent", caller)], timeout=10
            )
        spans = collector.trace(caller[3:35], 3)
    finally:
        running.stop()
    served = named(spans, "docket.v1.Decisions/Authorize")
    assert served["attributes"]["docket.decision_id"] == answer.decision_id
    assert served["resource"]["service.name"] == "docket-over-http"


def test_a_batch_names_its_decisions_in_order(traced: Docket, collector: Collector) -> None:
    caller = traceparent(2)
    denied = pb.AuthorizeRequest()
    denied.CopyFrom(HEIDI_READS_WEBSITE)
    denied.resource.id = "payroll-uk"
    with grpc.insecure_channel(f"127.0.0.1:{traced.grpc_port}") as channel:
        answer = pb_grpc.DecisionsStub(channel).BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=[HEIDI_READS_WEBSITE, denied]),
            metadata=[("traceparent", caller)],
            timeout=10,
        )
    spans = collector.trace(caller[3:35], 3)
    said = named(spans, "docket.v1.Decisions/BatchAuthorize")["attributes"]
    assert said["docket.decision_ids"] == [r.decision_id for r in answer.results]
    assert said["docket.decisions"] == ["allow", "deny"]


def test_check_follows_the_checked_requests_trace(traced: Docket, collector: Collector) -> None:
    """Envoy without tracing of its own passes the downstream request's headers, its
    ``traceparent`` among them."""
    caller = traceparent(3)
    check = authz.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path = "GET", "/records/quarterly-forecast"
    http.headers["traceparent"] = caller
    check.attributes.context_extensions["resource_id"] = "quarterly-forecast"
    with grpc.insecure_channel(f"127.0.0.1:{traced.grpc_port}") as channel:
        answer = authz_grpc.AuthorizationStub(channel).Check(check, timeout=10)
    decision_id = answer.dynamic_metadata.fields["decision_id"].string_value
    spans = collector.trace(caller[3:35], 3)
    served = named(spans, "envoy.service.auth.v3.Authorization/Check")
    assert served["parent_span_id"] == PARENT_ID
    assert served["attributes"]["docket.decision_id"] == decision_id
    assert served["attributes"]["docket.api"] == "ext_authz"


def test_an_admission_review_follows_the_api_servers_trace(
    traced: Docket, collector: Collector
) -> None:
    caller = traceparent(4)
    with traced.admission_client() as client:
        answer = client.post(
            "/validate",
            content=body(review(fixture("deployment"))),
            headers={"Content-Type": "application/json", "traceparent": caller},
        )
    assert answer.json()["response"]["allowed"] is True
    spans = collector.trace(caller[3:35], 3)
    served = named(spans, "POST /validate")
    assert served["parent_span_id"] == PARENT_ID
    said = served["attributes"]
    assert said["http.response.status_code"] == 200
    (entry,) = [
        e
        for e in traced.audit_entries("admission")
        if e["detail"]["decision_id"] == said["docket.decision_id"]
    ]
    assert entry["decision"] == "allow"


def test_check_through_envoy_continues_the_clients_trace(
    envoy_binary: str,  # noqa: F811 (the fixture imported above)
    collector: Collector,
    tmp_path: Path,
) -> None:
    """Envoy (the example's configuration, which does not trace) passes the client's
    ``traceparent`` in the request headers of its Check; Docket's span continues it, and
    the decision id Envoy logs is the span's."""
    site = make_site(tmp_path / "site")
    env = {
        "DOCKET_CONFIG": str(EXAMPLE / "docket.toml"),
        "DOCKET_OTEL_ENDPOINT": collector.endpoint,
        **EXPORT_SOON,
    }
    running = start_docket(site, env=env)
    idp = tmp_path / "idp"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_token.py"), "--out", str(idp), "--sub", "alice"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    envoy = None
    try:
        config = render_config(running, running.grpc_port, idp / "jwks.json")
        envoy = start_envoy(envoy_binary, site, config)
        caller = traceparent(6)
        answer = httpx.get(
            f"{envoy.url}/docs/research-notes", headers={"traceparent": caller}, timeout=10
        )
    finally:
        if envoy is not None:
            envoy.stop()
        running.stop()
    assert answer.status_code == 403  # anonymous: no policy permits it
    spans = collector.trace(caller[3:35], 3)
    served = named(spans, "envoy.service.auth.v3.Authorization/Check")
    assert served["parent_span_id"] == PARENT_ID
    assert served["attributes"]["docket.decision_id"] == answer.json()["decision_id"]


def test_log_lines_about_a_decision_name_it(tmp_path: Path) -> None:
    """With the audit log gone, the line that says a decision went unrecorded names it."""
    running = start_docket(tmp_path, env={"DOCKET_LOG_FORMAT": "json"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            stub = pb_grpc.DecisionsStub(channel)
            stub.Authorize(HEIDI_READS_WEBSITE, timeout=10)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{running.data_dir / 'docket.db'}{suffix}").unlink(missing_ok=True)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Authorize(HEIDI_READS_WEBSITE, timeout=10)
    finally:
        running.stop()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    lines = [
        json.loads(line)
        for line in running.log.read_text().splitlines()
        if line.startswith("{") and "rpc.audit_unavailable" in line
    ]
    assert lines, running.log.read_text()
    assert len(lines[0]["decision_id"]) == 36


def test_a_decision_id_does_not_stay_on_its_thread(tmp_path: Path) -> None:
    """Place runs on a thread of the pool (grpc_threads: one here); the next call on that
    thread, a refused Challenge, logs no decision id of the Place's."""
    env = {"DOCKET_LOG_FORMAT": "json", "DOCKET_GRPC_THREADS": "1"}
    running = start_docket(tmp_path, env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            placed = pb_grpc.DecisionsStub(channel).Place(
                pb.PlacementRequest(workload_id="ehr-gateway", classification="internal"),
                timeout=10,
            )
            with pytest.raises(grpc.RpcError) as caught:
                AttestationStub(channel).Challenge(ChallengeRequest(), timeout=10)
    finally:
        running.stop()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = running.log.read_text()
    assert placed.decision_id
    (refused,) = [json.loads(line) for line in text.splitlines() if "attestation.refused" in line]
    assert "decision_id" not in refused, refused


def test_off_by_default_nothing_is_sent(tmp_path: Path) -> None:
    """OpenTelemetry's own variables do not turn tracing on: only ``otel_endpoint``."""
    collector = Collector(tmp_path / "collector")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, **EXPORT_SOON}
    running = start_docket(tmp_path, env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            pb_grpc.DecisionsStub(channel).Authorize(
                HEIDI_READS_WEBSITE, metadata=[("traceparent", traceparent(5))], timeout=10
            )
    finally:
        code = running.stop()
        collector.stop()
    assert code == 0, running.log.read_text()
    assert collector.spans() == []
    assert "serve.tracing" not in running.log.read_text()
