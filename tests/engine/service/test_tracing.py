"""Tracing: off costs a test of a global and reads nothing; on, a caller's W3C trace
context is the parent (SDK in-memory exporter). What a decision's span says, and its
children: tests/engine/service/test_decisions.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from engine._service import tracing

ROOT = Path(__file__).resolve().parents[3]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
CALL = tracing.Call.grpc("docket.v1.Decisions", "Authorize")


def unread() -> list[tuple[str, str]]:
    raise AssertionError("the headers were read while tracing is off")


def test_off_reads_no_headers_and_makes_no_span() -> None:
    assert not tracing.enabled()
    with tracing.server_span(CALL, unread) as span:
        assert span is None
        with tracing.child_span(tracing.EVALUATE) as child:
            assert child is None


def test_off_imports_no_opentelemetry(tmp_path: Path) -> None:
    """A server without ``otel_endpoint`` never imports OpenTelemetry, even after a
    decision (the import alone costs start-up time and memory in every worker)."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "import engine._runtime.worker\n"
        "from audit import AuditLog\n"
        "from engine import BundleWatcher, Engine, PolicyBundle\n"
        "from engine._core.models import EntityUID, Request\n"
        "from engine._service.decisions import DecisionService\n"
        "from engine._service.metrics import Metrics\n"
        f"engine = Engine(PolicyBundle.load(Path({str(ROOT / 'policies')!r})))\n"
        f"log = AuditLog.open('sqlite:///{tmp_path}/d.db', keys=Path({str(tmp_path)!r})).start()\n"
        "service = DecisionService(engine, BundleWatcher(engine, Path('.')), Metrics(), log)\n"
        "user = EntityUID(type='User', id='heidi')\n"
        "read = EntityUID(type='Action', id='read')\n"
        "data = EntityUID(type='Data', id='public-website')\n"
        "request = Request(principal=user, action=read, resource=data)\n"
        "asyncio.run(service.authorize_async([request], api='authorize'))\n"
        "log.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


def test_a_callers_traceparent_is_the_parent(spans: InMemorySpanExporter) -> None:
    headers = [("traceparent", TRACEPARENT), ("tracestate", "vendor=x"), ("other", "y")]
    with tracing.server_span(CALL, lambda: headers) as span:
        assert span is not None
    (served,) = spans.get_finished_spans()
    assert served.name == "docket.v1.Decisions/Authorize"
    assert served.kind is SpanKind.SERVER
    assert served.parent is not None
    assert format(served.context.trace_id, "032x") == TRACE_ID
    assert format(served.parent.span_id, "016x") == PARENT_ID
    assert served.context.trace_state.get("vendor") == "x"
    assert served.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "docket.v1.Decisions",
        "rpc.method": "Authorize",
    }
    assert served.resource.attributes["service.name"] == "docket-test"
    assert served.resource.attributes["process.pid"] == os.getpid()


def test_http_headers_as_bytes_carry_the_context(spans: InMemorySpanExporter) -> None:
    """ASGI gives header names and values as bytes."""
    headers = [(b"Traceparent", TRACEPARENT.encode())]
    with tracing.server_span(tracing.Call.http("POST", "/validate"), lambda: headers):
        pass
    (served,) = spans.get_finished_spans()
    assert served.name == "POST /validate"
    assert format(served.context.trace_id, "032x") == TRACE_ID


def test_without_a_context_a_trace_starts_here(spans: InMemorySpanExporter) -> None:
    with tracing.server_span(CALL, lambda: None):
        pass
    (served,) = spans.get_finished_spans()
    assert served.parent is None


def test_a_caller_that_does_not_sample_is_followed(spans: InMemorySpanExporter) -> None:
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    with tracing.server_span(CALL, lambda: [("traceparent", unsampled)]) as span:
        assert span is not None
        assert not span.is_recording()
        with tracing.child_span(tracing.EVALUATE) as child:
            assert child is None
    assert spans.get_finished_spans() == ()


def test_ratio_zero_records_no_trace_that_starts_here() -> None:
    exporter = InMemorySpanExporter()
    tracing.start(exporter, service_name="docket", ratio=0.0, batch=False)
    try:
        with tracing.server_span(CALL, lambda: None):
            pass
        with tracing.server_span(CALL, lambda: [("traceparent", TRACEPARENT)]):
            pass
    finally:
        tracing.stop()
    (followed,) = exporter.get_finished_spans()
    assert format(followed.context.trace_id, "032x") == TRACE_ID


def test_a_failed_call_is_an_error_with_its_grpc_code(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(RuntimeError),
        tracing.server_span(CALL, lambda: None, lambda: grpc.StatusCode.UNAVAILABLE),
    ):
        raise RuntimeError("aborted")
    (served,) = spans.get_finished_spans()
    assert served.status.status_code is StatusCode.ERROR
    assert served.status.description == "UNAVAILABLE"
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]


def test_no_child_span_outside_a_served_call(spans: InMemorySpanExporter) -> None:
    """A bundle entry recorded by the watcher's thread is no trace of its own."""
    with tracing.child_span(tracing.AUDIT_COMMIT) as child:
        assert child is None


def test_otlp_over_http_posts_to_v1_traces() -> None:
    exporter = tracing.otlp_exporter("http://127.0.0.1:4318", "http")
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]
    named = tracing.otlp_exporter("https://collector.example/otlp/v1/traces", "http")
    assert named._endpoint == "https://collector.example/otlp/v1/traces"  # type: ignore[attr-defined]


class Stuck(SpanExporter):
    """A collector that never answers: each export waits until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exporting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait()
        return SpanExportResult.FAILURE


def test_a_collector_that_never_answers_does_not_hold_a_stopping_server() -> None:
    stuck = Stuck()
    tracing.start(stuck, service_name="docket")
    with tracing.server_span(CALL, lambda: None):
        pass
    stopper = threading.Thread(target=tracing.stop, kwargs={"timeout": 0.1})
    try:
        stopper.start()
        assert stuck.exporting.wait(10)  # the last export has begun, and waits
        stopper.join(10)  # a bound for the test only: without one, stop() waits forever
        assert not stopper.is_alive()
        assert not tracing.enabled()
    finally:
        stuck.release.set()
