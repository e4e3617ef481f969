"""The decision service's two ways in: a thread that waits (``authorize``) and a
coroutine on the server's event loop (``authorize_async``) decide the same and record
the same entries, and neither answers before its entry is durable."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audit import AuditLog, StoreError
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import EntityUID, Request
from engine._service import tracing
from engine._service.bundle_watch import BundleWatcher
from engine._service.decisions import LARGE_BATCH, Decided, DecisionService
from engine._service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
REQUESTS = [
    Request(
        principal=EntityUID(type="User", id=user),
        action=EntityUID(type="Action", id="read"),
        resource=EntityUID(type="Data", id=resource),
    )
    for user, resource in (("heidi", "public-website"), ("heidi", "payroll-uk"))
]


@pytest.fixture
def service(decision_service: DecisionService) -> DecisionService:
    return decision_service  # tests/engine/conftest.py; its clock is NOW


def payloads(service: DecisionService, decided: list[Decided]) -> list[dict[str, Any]]:
    """The stored entries of ``decided``, without what differs from call to call (the
    decision id, and the random salt of the request digest)."""
    found = []
    for item in decided:
        row = service.audit.store.entry(item.receipt.index)
        assert row is not None
        assert row.payload is not None
        entry = json.loads(row.payload)
        assert entry["detail"].pop("decision_id") == item.decision_id
        assert len(entry.pop("salt")) == 32
        found.append(entry)
    return found


def test_async_authorize_decides_and_records_as_the_sync_one(service: DecisionService) -> None:
    detail = {"provenance": {"caller": None}}
    waited = service.authorize(REQUESTS, api="authorize", detail=detail)
    awaited = asyncio.run(service.authorize_async(REQUESTS, api="authorize", detail=detail))
    assert [d.decision for d in awaited] == [d.decision for d in waited]
    assert [d.decision.decision for d in awaited] == ["allow", "deny"]
    assert payloads(service, awaited) == payloads(service, waited)
    assert [d.receipt.index for d in awaited] == [d.receipt.index + 2 for d in waited]


def test_async_refusal_is_recorded_as_the_sync_one(service: DecisionService) -> None:
    waited = service.refuse("bad input", api="ext_authz", caller=None)
    awaited = asyncio.run(service.refuse_async("bad input", api="ext_authz", caller=None))
    assert awaited.decision == waited.decision
    assert payloads(service, [awaited]) == payloads(service, [waited])


def test_no_async_answer_when_the_log_cannot_record(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service.audit.store, "append", broken)
    with pytest.raises(StoreError, match="disk on fire"):
        asyncio.run(service.authorize_async(REQUESTS, api="authorize"))


def test_a_large_batch_does_not_hold_the_loop(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BatchAuthorize of many requests is evaluated off the event loop: a single
    Authorize that arrives while it is being evaluated is answered first, instead of
    waiting for the whole batch (one caller must not stall every other)."""
    evaluating = threading.Event()
    release = threading.Event()
    decide_batch = service.engine.decide_batch

    def slow(requests: list[Request], *, now: datetime) -> Any:
        if len(requests) > 1:
            evaluating.set()
            release.wait(timeout=10)  # the batch's evaluation, as long as the test wants
        return decide_batch(requests, now=now)

    monkeypatch.setattr(service.engine, "decide_batch", slow)
    batch = REQUESTS * (LARGE_BATCH // 2)
    finished: list[str] = []

    async def scenario() -> None:
        async def run(name: str, requests: list[Request]) -> None:
            await service.authorize_async(requests, api="authorize")
            finished.append(name)

        big = asyncio.create_task(run("batch", batch))
        while not evaluating.is_set():
            await asyncio.sleep(0.01)
        await asyncio.wait_for(run("single", REQUESTS[:1]), timeout=5)
        release.set()
        await big

    asyncio.run(scenario())
    assert finished == ["single", "batch"]


def test_a_small_batch_is_decided_like_a_large_one(service: DecisionService) -> None:
    """On or off the loop, the same decisions and entries."""
    small = asyncio.run(service.authorize_async(REQUESTS, api="authorize"))
    large = asyncio.run(service.authorize_async(REQUESTS * (LARGE_BATCH // 2), api="authorize"))
    assert payloads(service, small) == payloads(service, large[:2])


def test_a_stale_pulled_bundle_denies_what_needs_fresh_policy(tmp_path: Path) -> None:
    """Issue 16: a permit marked ``@fresh_policy`` no longer allows once the pulled bundle
    is past ``max_bundle_staleness``; the denial, and why, is what the log records."""
    from sample_bundle import bundle_files

    from engine._service.bundle_revisions import RevisionGuard
    from engine._service.bundle_source import Limits, Puller, open_source

    fresh = '@id("wire")\n@fresh_policy\npermit (principal, action, resource);\n'
    engine = Engine(PolicyBundle.from_files(bundle_files({"30-wire.cedar": fresh})))
    puller = Puller(
        source=open_source("http://127.0.0.1:9/never-reached.tar.gz"),
        directory=tmp_path / "pulled",
        public_key=None,
        guard=RevisionGuard(tmp_path, signed=False),
        limits=Limits(max_bytes=1024, timeout=1),
        interval=30,
    )
    watcher = BundleWatcher(engine, tmp_path / "pulled", puller=puller, max_staleness=60)
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    service = DecisionService(engine, watcher, Metrics(), log, clock=lambda: NOW)
    only_wire, also_own = (
        Request(
            principal=EntityUID(type="User", id=user),
            action=EntityUID(type="Action", id="read"),
            resource=EntityUID(type="Data", id=resource),
        )
        for user, resource in (("bob", "orphan"), ("alice", "ledger"))
    )
    try:
        denied, allowed = service.authorize([only_wire, also_own], api="authorize")
        assert (denied.decision.decision, allowed.decision.decision) == ("deny", "allow")
        (error,) = denied.decision.errors
        assert error.policy == "wire"
        assert "needs fresh policy (@fresh_policy), but the bundle is stale" in error.message
        entry = payloads(service, [denied])[0]
        assert entry["decision"] == "deny"
        assert "needs fresh policy" in json.dumps(entry)
        assert watcher.freshness is not None
        watcher.freshness.confirmed_at = NOW  # the source confirmed it: it allows again
        assert service.authorize([only_wire], api="authorize")[0].decision.allowed
    finally:
        log.close()


def test_a_stale_pulled_revocation_list_denies_what_needs_fresh_policy(tmp_path: Path) -> None:
    """Issue 16: the same holds for the revocation list (``max_revocation_staleness``),
    with a local bundle: the denial names the list."""
    from sample_bundle import bundle_files

    from engine._service.bundle_source import Freshness

    fresh = '@id("wire")\n@fresh_policy\npermit (principal, action, resource);\n'
    engine = Engine(PolicyBundle.from_files(bundle_files({"30-wire.cedar": fresh})))
    watcher = BundleWatcher(engine, tmp_path / "bundle")
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    service = DecisionService(engine, watcher, Metrics(), log, clock=lambda: NOW)
    service.revocations = Freshness(
        60, what="the revocation list", setting="max_revocation_staleness"
    )
    request = Request(
        principal=EntityUID(type="User", id="bob"),
        action=EntityUID(type="Action", id="read"),
        resource=EntityUID(type="Data", id="orphan"),
    )
    try:
        (denied,) = service.authorize([request], api="authorize")
        (error,) = denied.decision.errors
        assert "but the revocation list is stale: never confirmed" in error.message
        assert "max_revocation_staleness of 60 s" in error.message
        service.revocations.confirmed_at = NOW
        assert service.authorize([request], api="authorize")[0].decision.allowed
    finally:
        log.close()


# -- traces and log lines (issue 18) ----------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CALL = tracing.Call.grpc("docket.v1.Decisions", "Authorize")
ALLOWED = REQUESTS[0]


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_decision_is_a_span_with_evaluation_and_commit_under_it(
    spans: InMemorySpanExporter, service: DecisionService
) -> None:
    async def served() -> str:
        with tracing.server_span(CALL, lambda: [("traceparent", TRACEPARENT)]):
            (decided,) = await service.authorize_async([ALLOWED], api="authorize")
        return decided.decision_id

    decision_id = asyncio.run(served())
    found = by_name(spans)
    root = found["docket.v1.Decisions/Authorize"]
    for child in (tracing.EVALUATE, tracing.AUDIT_COMMIT):
        assert found[child].parent is not None
        assert found[child].parent.span_id == root.context.span_id
    assert root.attributes is not None
    assert root.attributes["docket.decision_id"] == decision_id
    assert root.attributes["docket.decision"] == "allow"
    assert root.attributes["docket.api"] == "authorize"
    assert root.attributes["docket.bundle_version"] == service.engine.bundle.version  # type: ignore[union-attr]


def test_a_large_batch_is_evaluated_in_the_calls_trace(
    spans: InMemorySpanExporter, service: DecisionService
) -> None:
    """From LARGE_BATCH requests evaluation runs on an executor thread: the call's
    context follows it there, and the batch's ids are on the span, in order."""

    async def served() -> list[str]:
        with tracing.server_span(CALL, lambda: None):
            decided = await service.authorize_async([ALLOWED] * LARGE_BATCH, api="batch_authorize")
        return [item.decision_id for item in decided]

    ids = asyncio.run(served())
    found = by_name(spans)
    root = found["docket.v1.Decisions/Authorize"]
    assert found[tracing.EVALUATE].parent is not None
    assert found[tracing.EVALUATE].parent.span_id == root.context.span_id
    assert root.attributes is not None
    assert list(root.attributes["docket.decision_ids"]) == ids  # type: ignore[arg-type]
    assert list(root.attributes["docket.decisions"]) == ["allow"] * LARGE_BATCH  # type: ignore[arg-type]


def test_log_lines_after_a_decision_carry_its_id(service: DecisionService) -> None:
    """What the call logs once its decision has an id (an audit failure included) names
    it: the id is bound in the call's context (structlog contextvars)."""

    async def served() -> tuple[str, dict[str, object]]:
        (decided,) = await service.authorize_async([ALLOWED], api="authorize")
        return decided.decision_id, structlog.contextvars.get_contextvars()

    structlog.contextvars.clear_contextvars()  # what a sync call above bound in this thread
    decision_id, bound = asyncio.run(served())
    assert bound == {"decision_id": decision_id}
    assert structlog.contextvars.get_contextvars() == {}  # bound in the call's own context


class _Lines:
    """Stands in for the module's logger: records debug lines, at a chosen level."""

    def __init__(self, debug: bool) -> None:
        self.debug_on = debug
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def is_enabled_for(self, level: int) -> bool:
        return self.debug_on or level > 10

    def debug(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "info"])
def test_a_line_per_decision_at_debug_level_only(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    lines = _Lines(debug)
    monkeypatch.setattr("engine._service.decisions.log", lines)
    decided = service.authorize(REQUESTS, api="authorize")
    expected = [
        (
            "decision",
            {
                "api": "authorize",
                "decision_id": d.decision_id,
                "decision": d.decision.decision,
                "reasons": d.decision.reasons,
            },
        )
        for d in decided
    ]
    assert lines.lines == (expected if debug else [])
