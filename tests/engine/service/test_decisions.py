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

from audit import StoreError
from engine._core.models import EntityUID, Request
from engine._service.decisions import LARGE_BATCH, Decided, DecisionService

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
