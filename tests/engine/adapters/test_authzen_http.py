"""AuthZEN's HTTP app (engine/_adapters/authzen_http.py) in process, on a real decision
service and audit log: what the e2e tests cannot easily provoke (a log that cannot
record, an internal error), the metadata's configured identifier, and the paths it
leaves to the app it wraps."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from audit import Receipt, StoreError
from engine._adapters.authzen_http import AuthzenApp
from engine._adapters.grpc_status import AUDIT_UNAVAILABLE
from engine._service.decisions import DecisionService
from engine._service.metrics import metrics_app

ALLOWED = {
    "subject": {"type": "User", "id": "heidi"},
    "action": {"name": "read"},
    "resource": {"type": "Data", "id": "public-website"},
}


def call(
    app: AuthzenApp, method: str, path: str, body: Any = None, **headers: str
) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pdp.test") as client:
            return await client.request(method, path, json=body, headers=headers)

    return asyncio.run(send())


def app_of(service: DecisionService, base_url: str | None = None) -> AuthzenApp:
    return AuthzenApp(service, metrics_app(service.metrics.registry), base_url=base_url)


async def disk_on_fire(*args: object, **kwargs: object) -> list[Receipt]:
    raise StoreError("disk on fire")


def test_a_decision_the_log_cannot_record_is_a_500_never_an_answer(
    decision_service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decision_service.audit.writer, "append_async", disk_on_fire)
    answer = call(
        app_of(decision_service), "POST", "/access/v1/evaluation", ALLOWED, **{"X-Request-ID": "r"}
    )
    assert answer.status_code == 500
    assert answer.text == AUDIT_UNAVAILABLE
    assert answer.headers["x-request-id"] == "r"
    assert "x-docket-decision-id" not in answer.headers


def test_an_internal_error_is_a_500_with_no_detail(
    decision_service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(decision_service.engine, "decide_batch", broken)
    answer = call(
        app_of(decision_service),
        "POST",
        "/access/v1/evaluations",
        {**ALLOWED, "evaluations": [{}, {}]},
    )
    assert answer.status_code == 500
    assert answer.text == "internal error; the server log has the details"


def test_the_metadata_names_the_configured_identifier(decision_service: DecisionService) -> None:
    answer = call(
        app_of(decision_service, "https://pdp.example.com/"),
        "GET",
        "/.well-known/authzen-configuration",
    )
    assert answer.json() == {
        "policy_decision_point": "https://pdp.example.com",
        "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
        "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
        "search_subject_endpoint": "https://pdp.example.com/access/v1/search/subject",
        "search_resource_endpoint": "https://pdp.example.com/access/v1/search/resource",
        "search_action_endpoint": "https://pdp.example.com/access/v1/search/action",
    }
    assert (
        call(app_of(decision_service), "POST", "/.well-known/authzen-configuration").status_code
        == 405
    )


def test_other_paths_are_the_wrapped_apps(decision_service: DecisionService) -> None:
    app = app_of(decision_service)
    call(app, "POST", "/access/v1/evaluation", ALLOWED)
    metrics = call(app, "GET", "/metrics")
    assert metrics.status_code == 200
    assert 'docket_decisions_total{api="authzen",decision="allow"} 1.0' in metrics.text
    assert 'docket_requests_total{api="authzen",code="200"} 1.0' in metrics.text


def test_short_circuits_decide_nothing_after_the_deciding_item(
    decision_service: DecisionService,
) -> None:
    denied = {"resource": {"type": "Data", "id": "payroll-uk"}}
    body = {
        **ALLOWED,
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{}, denied, {}, {}],
    }
    before = decision_service.audit.store.count()
    answer = call(app_of(decision_service), "POST", "/access/v1/evaluations", body)
    assert [item["decision"] for item in answer.json()["evaluations"]] == [True, False]
    assert decision_service.audit.store.count() == before + 2
