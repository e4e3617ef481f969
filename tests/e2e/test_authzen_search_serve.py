"""The AuthZEN 1.0 Search APIs on a real ``docket serve`` (one process and two
workers): the working group's Search interop scenario (tests/e2e/authzen_search, its
expected results as published) on a Cedar bundle written for it
(tests/e2e/authzen_search_bundle), the specification's response shape and pagination
field by field, the metadata, one audit entry per search call, and the attacks: a
tampered token, a token of another query, a limit of 10^9, a huge type name, a forged
device posture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.docket_process import Docket, start_docket

BUNDLE = Path(__file__).parent / "authzen_search_bundle"
INTEROP = Path(__file__).parent / "authzen_search"
DECISION_IDS = "x-docket-decision-id"


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def docket(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Docket]:
    workers = ("--admission", "off", "--workers", str(request.param))
    server = start_docket(tmp_path_factory.mktemp("search"), *workers, bundle=BUNDLE)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def base_url(docket: Docket) -> str:
    return docket.metrics_url.removesuffix("/metrics")


@pytest.fixture(scope="module")
def pdp(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def search(pdp: httpx.Client, part: str, body: Any, **headers: str) -> httpx.Response:
    return pdp.post(f"/access/v1/search/{part}", json=body, headers=headers)


def unordered(results: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(result, sort_keys=True) for result in results)


@pytest.mark.parametrize("part", ["subject", "resource", "action"])
def test_the_search_interop_scenario(pdp: httpx.Client, part: str) -> None:
    # The interop runner compares results unordered; so do we, case by case.
    failures = []
    cases = json.loads((INTEROP / f"{part}.json").read_text())["evaluation"]
    for case in cases:
        answer = search(pdp, part, case["request"])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        got = unordered(body["results"])
        if got != unordered(case["expected"]["results"]):
            failures.append((case["request"], got))
        assert body["page"] == {"next_token": "", "count": len(body["results"])}
    assert failures == []
    assert len(cases) == {"subject": 60, "resource": 18, "action": 120}[part]


def test_the_response_has_the_specified_shape(pdp: httpx.Client) -> None:
    # The specification's Subject Search example, HTTPS binding: X-Request-ID echoed,
    # application/json, "page" the first key, results of the searched type only.
    request_id = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
    body = {
        "subject": {"type": "user", "id": "ignored", "properties": {"ignored": True}},
        "action": {"name": "edit"},
        "resource": {"type": "record", "id": "110"},
    }
    answer = search(pdp, "subject", body, **{"X-Request-ID": request_id})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == request_id
    assert list(answer.json()) == ["page", "results"]
    assert answer.json() == {
        "page": {"next_token": "", "count": 2},
        "results": [{"type": "user", "id": "alice"}, {"type": "user", "id": "dan"}],
    }


def test_pagination_as_the_specification_shows_it(base_url: str) -> None:
    # "Example initial Search API Request" with limit 2, then page.token until the
    # next_token is "". Each request on a new connection: with two workers, pages are
    # answered by whichever worker the kernel picks (the key is the data directory's).
    query = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
    }
    pages: list[list[str]] = []
    token = None
    while True:
        page: dict[str, Any] = {"limit": 2} if token is None else {"limit": 2, "token": token}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            answer = search(client, "resource", {**query, "page": page})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["page"]["count"] == len(body["results"]) <= 2
        pages.append([result["id"] for result in body["results"]])
        token = body["page"]["next_token"]
        assert isinstance(token, str)
        if token == "":
            break
    expected = ["101", "102", "103", "105", "108", "112", "114", "116", "117", "119", "120"]
    assert [i for page in pages for i in page] == expected
    assert [len(page) for page in pages] == [2, 2, 2, 2, 2, 1]


def test_the_metadata_names_the_search_endpoints(pdp: httpx.Client, base_url: str) -> None:
    metadata = pdp.get("/.well-known/authzen-configuration").json()
    assert metadata["search_subject_endpoint"] == base_url + "/access/v1/search/subject"
    assert metadata["search_resource_endpoint"] == base_url + "/access/v1/search/resource"
    assert metadata["search_action_endpoint"] == base_url + "/access/v1/search/action"


FIRST_PAGE = {
    "subject": {"type": "user", "id": "alice"},
    "action": {"name": "view"},
    "resource": {"type": "record"},
    "page": {"limit": 3},
}


def next_token(pdp: httpx.Client, body: Any = FIRST_PAGE) -> str:
    answer = search(pdp, "resource", body)
    token = answer.json()["page"]["next_token"]
    assert isinstance(token, str)
    assert token
    return token


def test_attack_a_tampered_token_is_refused(pdp: httpx.Client) -> None:
    token = next_token(pdp)
    payload, _, mac = token.partition(".")
    # Every way of changing it: a flipped character in the payload or the MAC, a
    # payload of another page with the old MAC, garbage.
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for forged in (f"{flipped}.{mac}", f"{payload}.{mac[::-1]}", "x", ".", "a" * 600):
        answer = search(pdp, "resource", {**FIRST_PAGE, "page": {"limit": 3, "token": forged}})
        assert answer.status_code == 400, forged
        assert answer.text.startswith("page.token:")


def test_attack_a_token_of_another_query_is_refused(pdp: httpx.Client) -> None:
    token = next_token(pdp)
    other = {**FIRST_PAGE, "action": {"name": "edit"}, "page": {"limit": 3, "token": token}}
    answer = search(pdp, "resource", other)
    assert answer.status_code == 400
    assert answer.text.startswith("page.token: issued for another query")
    other_limit = {**FIRST_PAGE, "page": {"limit": 4, "token": token}}
    assert search(pdp, "resource", other_limit).text.startswith("page.token: issued for another")


def test_attack_a_limit_of_a_billion_is_bounded(pdp: httpx.Client, docket: Docket) -> None:
    body = {**FIRST_PAGE, "page": {"limit": 10**9}}
    answer = search(pdp, "resource", body, **{"X-Request-ID": "billion"})
    assert answer.status_code == 200
    assert answer.json()["page"] == {"next_token": "", "count": 20}
    (entry,) = [
        e for e in docket.audit_entries("decision") if e["detail"].get("request_id") == "billion"
    ]
    assert entry["detail"]["evaluated"] == 20


def test_attack_a_huge_type_name_is_an_empty_answer(pdp: httpx.Client, docket: Docket) -> None:
    huge = "x" * 1_000_000
    body = {
        "subject": {"type": huge},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "101"},
    }
    answer = search(pdp, "subject", body, **{"X-Request-ID": "huge"})
    assert answer.status_code == 200
    assert answer.json() == {"page": {"next_token": "", "count": 0}, "results": []}
    (entry,) = [
        e for e in docket.audit_entries("decision") if e["detail"].get("request_id") == "huge"
    ]
    assert entry["detail"]["evaluated"] == 0
    assert len(json.dumps(entry)) < 10_000  # the entry stays bounded


def test_attack_a_forged_device_posture_is_refused(pdp: httpx.Client, docket: Docket) -> None:
    forged = {
        "subject": {"type": "user"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "101"},
        "context": {"device": {"attested": True, "secure_boot": True}},
    }
    answer = search(pdp, "subject", forged, **{"X-Request-ID": "forged-search"})
    assert answer.status_code == 400
    assert answer.text.startswith("context.device.attested: set by Docket")
    (entry,) = [
        e
        for e in docket.audit_entries("decision")
        if e["detail"].get("request_id") == "forged-search"
    ]
    assert entry["decision"] == "deny"
    assert entry["detail"]["api"] == "authzen-search"
    # Properties that change what the store says about the pinned subject: refused too.
    changed = {
        "subject": {"type": "user", "id": "bob", "properties": {"role": "manager"}},
        "action": {"name": "view"},
        "resource": {"type": "record"},
    }
    answer = search(pdp, "resource", changed)
    assert answer.status_code == 400
    assert answer.text.startswith("subject.properties.role:")
    # Inventory facts pass; the device is then unattested, and the posture rule forbids.
    relayed = {**forged, "context": {"device": {"disk_encrypted": True}}}
    assert search(pdp, "subject", relayed).json()["results"] == []


def test_one_audit_entry_per_search_call(pdp: httpx.Client, docket: Docket) -> None:
    body = {
        "subject": {"type": "user"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "105"},
    }
    answer = search(pdp, "subject", body, **{"X-Request-ID": "audited-search"})
    (decision_id,) = answer.headers[DECISION_IDS].split(",")
    entries = [
        e
        for e in docket.audit_entries("decision")
        if e["detail"].get("request_id") == "audited-search"
    ]
    assert len(entries) == 1
    (entry,) = entries
    assert entry["detail"]["decision_id"] == decision_id
    assert entry["detail"]["api"] == "authzen-search"
    assert entry["detail"]["search"] == "subject"
    assert entry["detail"]["type"] == "user"
    assert entry["detail"]["results"] == 5
    assert entry["detail"]["evaluated"] == 6
    assert entry["detail"]["more"] is False
    assert entry["subject"] is None
    assert entry["action"] == 'Records::Action::"view"'
    assert entry["resource"] == 'Records::record::"105"'
    assert entry["decision"] == "allow"
    assert entry["bundle_version"].startswith("sha256:")
