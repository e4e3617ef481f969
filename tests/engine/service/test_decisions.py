"""The decision service's two ways in: a thread that waits (``authorize``) and a
coroutine on the server's event loop (``authorize_async``) decide the same and record
the same entries, and neither answers before its entry is durable."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog, StoreError
from engine import BundleWatcher, Engine, PolicyBundle
from engine._core.models import EntityUID, Request
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
def service(tmp_path: Path) -> Iterator[DecisionService]:
    engine = Engine(PolicyBundle.load(ROOT / "policies"))
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    service = DecisionService(
        engine, BundleWatcher(engine, ROOT / "policies"), Metrics(), log, clock=lambda: NOW
    )
    try:
        yield service
    finally:
        service.audit.close()


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
