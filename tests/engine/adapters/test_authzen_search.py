"""AuthZEN search (engine/_adapters/authzen_search.py and its driver in authzen_http.py)
in process, on a real decision service and audit log: a type of 100,000 entities
answered in bounded calls (evaluated candidates counted, not time), nothing evaluated
when no permit can reach the query, a bundle swapped between pages, a token of another
key, and the query's own checks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog
from engine._adapters.authzen_http import AuthzenApp
from engine._adapters.authzen_search import MAX_EVALUATED, MAX_LIMIT, read_query
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Decision, Request
from engine._errors import RequestError
from engine._service.bundle_watch import BundleWatcher
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics, metrics_app
from tests.engine.adapters.test_authzen_http import call
from tests.engine.conftest import SERVICE_NOW

MANY = 100_000
SCHEMA = b"""
namespace Big {
  entity user = { n: Long };
  entity doc;
  action view, audit appliesTo { principal: user, resource: doc };
}
"""
# Only the last user may view: a search finds it after every other candidate.
POLICIES = b"""
permit (principal, action == Big::Action::"view", resource) when { principal.n == 99999 };
"""


def files(policies: bytes = POLICIES) -> dict[str, bytes]:
    users = [
        {"uid": {"type": "user", "id": f"u{n:06d}"}, "attrs": {"n": n}, "parents": []}
        for n in range(MANY)
    ]
    users.append({"uid": {"type": "doc", "id": "d"}, "attrs": {}, "parents": []})
    return {
        "schema.cedarschema": SCHEMA,
        "p.cedar": policies,
        "entities.json": json.dumps(users).encode(),
    }


@pytest.fixture(scope="module")
def big() -> PolicyBundle:
    return PolicyBundle.from_files(files())


class Counted:
    """The service's ``judge_async``, counting the candidates it is given."""

    def __init__(self, service: DecisionService) -> None:
        self.judge = service.judge_async
        self.calls: list[int] = []

    async def __call__(self, requests: Sequence[Request]) -> list[Decision]:
        self.calls.append(len(requests))
        return await self.judge(requests)


@pytest.fixture
def service(big: PolicyBundle, tmp_path: Path) -> Iterator[DecisionService]:
    engine = Engine(big)
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    made = DecisionService(
        engine, BundleWatcher(engine, tmp_path), Metrics(), log, clock=lambda: SERVICE_NOW
    )
    try:
        yield made
    finally:
        made.audit.close()


def app(service: DecisionService, key: bytes = b"k" * 32) -> AuthzenApp:
    return AuthzenApp(service, metrics_app(service.metrics.registry), base_url=None, search_key=key)


WHO_VIEWS = {
    "subject": {"type": "user"},
    "action": {"name": "view"},
    "resource": {"type": "doc", "id": "d"},
}


def page(pdp: AuthzenApp, body: Any, token: str | None = None) -> Any:
    if token is not None:
        body = {**body, "page": {**body.get("page", {}), "token": token}}
    answer = call(pdp, "POST", "/access/v1/search/subject", body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_attack_a_type_of_100k_entities_is_searched_in_bounded_calls(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(service)
    monkeypatch.setattr(service, "judge_async", counted)
    pdp = app(service)
    token, calls, found = None, 0, []
    while True:
        before = sum(counted.calls)
        body = page(pdp, WHO_VIEWS, token)
        calls += 1
        assert sum(counted.calls) - before <= MAX_EVALUATED
        found.extend(body["results"])
        token = body["page"]["next_token"]
        if not token:
            break
        assert body["results"] == []  # a partial page: nothing found in its 5,000
    assert found == [{"type": "user", "id": "u099999"}]
    assert calls == MANY // MAX_EVALUATED
    assert sum(counted.calls) == MANY  # each candidate evaluated once over all pages


def test_nothing_is_evaluated_when_no_permit_can_reach(
    service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(service)
    monkeypatch.setattr(service, "judge_async", counted)
    body = page(app(service), {**WHO_VIEWS, "action": {"name": "audit"}})
    assert body == {"page": {"next_token": "", "count": 0}, "results": []}
    assert counted.calls == []  # "audit" has no permit: not one user evaluated
    actions = call(
        app(service),
        "POST",
        "/access/v1/search/action",
        {"subject": {"type": "user", "id": "u000001"}, "resource": {"type": "doc", "id": "d"}},
    )
    assert actions.json() == {"page": {"next_token": "", "count": 0}, "results": []}
    assert counted.calls == [1]  # "view" alone: "audit" is no candidate


def test_a_bundle_swapped_between_pages_refuses_the_old_token(
    service: DecisionService,
) -> None:
    pdp = app(service)
    token = page(pdp, WHO_VIEWS)["page"]["next_token"]
    assert token
    changed = POLICIES + b'\n@id("x")\nforbid (principal, action, resource) when { false };\n'
    service.engine.swap(PolicyBundle.from_files(files(changed)))
    body = {**WHO_VIEWS, "page": {"token": token}}
    answer = call(pdp, "POST", "/access/v1/search/subject", body)
    assert answer.status_code == 400
    assert answer.text.startswith("page.token: the policy bundle changed since this search began")


def test_a_token_of_another_key_is_refused(service: DecisionService) -> None:
    token = page(app(service, b"a" * 32), WHO_VIEWS)["page"]["next_token"]
    body = {**WHO_VIEWS, "page": {"token": token}}
    answer = call(app(service, b"b" * 32), "POST", "/access/v1/search/subject", body)
    assert answer.status_code == 400
    assert answer.text.startswith("page.token: not a page token of this server")


@pytest.mark.parametrize(
    ("searched", "body", "message"),
    [
        ("subject", {**WHO_VIEWS, "page": {"limit": -1}}, "page.limit: must be a non-negative"),
        ("subject", {**WHO_VIEWS, "page": {"limit": True}}, "page.limit: must be a non-negative"),
        ("subject", {**WHO_VIEWS, "page": {"limit": "5"}}, "page.limit: must be a non-negative"),
        ("subject", {**WHO_VIEWS, "page": []}, "page: must be an object"),
        ("subject", {**WHO_VIEWS, "page": {"token": 5}}, "page.token: must be a string"),
        ("subject", {**WHO_VIEWS, "subject": {}}, "subject.type: required"),
        ("resource", {"subject": {"type": "user", "id": "u"}}, "resource: required"),
    ],
)
def test_a_query_that_does_not_read_is_refused(
    searched: Any, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(RequestError) as raised:
        read_query(searched, body)
    assert str(raised.value).startswith(message)


def test_the_limit_is_capped_and_the_searched_id_ignored() -> None:
    query = read_query("subject", {**WHO_VIEWS, "page": {"limit": 10**9}})
    assert query.limit == MAX_LIMIT
    with_id = read_query("subject", {**WHO_VIEWS, "subject": {"type": "user", "id": "x"}})
    assert with_id.digest == read_query("subject", WHO_VIEWS).digest
    assert read_query("subject", WHO_VIEWS).limit == 50
