"""The OpenID AuthZEN Authorization API 1.0 on a real ``docket serve`` (one process and
two workers): the specification's examples field by field, the working group's Todo
interop scenario on a Cedar bundle written for it (tests/e2e/authzen_bundle), the
evaluations semantics, ``X-Request-ID``, every error, a forged device posture, and
every decision in the audit log with api "authzen"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine._adapters.authzen_search import SEARCHED
from tests.e2e.docket_process import Docket, start_docket

BUNDLE = Path(__file__).parent / "authzen_bundle"
REQUEST_ID = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
DECISION_IDS = "x-docket-decision-id"


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def docket(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Docket]:
    root = tmp_path_factory.mktemp(f"authzen-{request.param}")
    server = start_docket(
        root, "--admission", "off", "--workers", str(request.param), bundle=BUNDLE
    )
    yield server  # pytest runs the rest whatever the tests did
    server.stop()


@pytest.fixture(scope="module")
def pdp(docket: Docket) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=docket.metrics_url.removesuffix("/metrics"), timeout=10) as client:
        yield client


def evaluate(
    pdp: httpx.Client, body: Any, path: str = "evaluation", **headers: str
) -> httpx.Response:
    return pdp.post(f"/access/v1/{path}", json=body, headers=headers)


# The specification's examples (section "Access Evaluation API", "Access Evaluations
# API", "Evaluations semantics"), request → response.
SPEC_REQUEST = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "resource": {"type": "account", "id": "123"},
    "action": {"name": "can_read", "properties": {"method": "GET"}},
    "context": {"time": "1985-10-26T01:22-07:00"},
}
THREE_DOCUMENTS: dict[str, Any] = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "action": {"name": "read"},
    "evaluations": [{"resource": {"type": "document", "id": str(n)}} for n in (1, 2, 3)],
}


def test_the_access_evaluation_example(pdp: httpx.Client) -> None:
    answer = evaluate(pdp, SPEC_REQUEST, **{"X-Request-ID": REQUEST_ID})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == REQUEST_ID
    assert answer.json() == {"decision": True}


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        (None, [{"decision": True}, {"decision": False}, {"decision": True}]),
        ("execute_all", [{"decision": True}, {"decision": False}, {"decision": True}]),
        (
            "deny_on_first_deny",
            [
                {"decision": True},
                {"decision": False, "context": {"code": "200", "reason": "deny_on_first_deny"}},
            ],
        ),
        ("permit_on_first_permit", [{"decision": True}]),
    ],
)
def test_the_evaluations_semantics_examples(
    pdp: httpx.Client, docket: Docket, semantic: str | None, expected: list[dict[str, Any]]
) -> None:
    body = dict(THREE_DOCUMENTS)
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic}
    answer = evaluate(pdp, body, "evaluations")
    assert answer.status_code == 200
    assert answer.json() == {"evaluations": expected}
    # Only what was evaluated is decided, and recorded.
    assert len(answer.headers[DECISION_IDS].split(",")) == len(expected)


def test_defaults_are_overridden_per_evaluation(pdp: httpx.Client) -> None:
    # The "Default values" example's shape: subject and context at the top, an action
    # overridden by the last evaluation.
    body = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "context": {"time": "2024-05-31T15:22-07:00"},
        "action": {"name": "read"},
        "evaluations": [
            {"resource": {"type": "document", "id": "1"}},
            {"resource": {"type": "document", "id": "2"}},
            {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "1"}},
        ],
    }
    answer = evaluate(pdp, body, "evaluations")
    assert answer.json() == {
        "evaluations": [{"decision": True}, {"decision": False}, {"decision": False}]
    }


def test_evaluations_without_an_array_is_one_evaluation(pdp: httpx.Client) -> None:
    answer = evaluate(pdp, SPEC_REQUEST, "evaluations", **{"X-Request-ID": "one"})
    assert answer.json() == {"decision": True}
    assert answer.headers["x-request-id"] == "one"


# The Todo interop scenario: per user, the decisions of the working group's test file
# for can_read_user (beth, self), can_read_todos, can_create_todo, then can_update_todo
# and can_delete_todo on a todo owned by rick and on one owned by the user.
TODO = {
    "rick@the-citadel.com": [True, True, True, True, True, True, True, True],
    "morty@the-citadel.com": [True, True, True, True, False, True, False, True],
    "summer@the-smiths.com": [True, True, True, True, False, True, False, True],
    "beth@the-smiths.com": [True, True, True, False, False, False, False, False],
    "jerry@the-smiths.com": [True, True, True, False, False, False, False, False],
}
TODO_ID = "7240d0db-8ff0-41ec-98b2-34a096273b9f"


def todo_cases(user: str) -> list[dict[str, Any]]:
    def todo(owner: str) -> dict[str, Any]:
        return {"type": "todo", "id": TODO_ID, "properties": {"ownerID": owner}}

    rick = "rick@the-citadel.com"
    return [
        {
            "action": {"name": "can_read_user"},
            "resource": {"type": "user", "id": "beth@the-smiths.com"},
        },
        {"action": {"name": "can_read_user"}, "resource": {"type": "user", "id": user}},
        {"action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "todo-1"}},
        {"action": {"name": "can_create_todo"}, "resource": {"type": "todo", "id": "todo-1"}},
        {"action": {"name": "can_update_todo"}, "resource": todo(rick)},
        {"action": {"name": "can_update_todo"}, "resource": todo(user)},
        {"action": {"name": "can_delete_todo"}, "resource": todo(rick)},
        {"action": {"name": "can_delete_todo"}, "resource": todo(user)},
    ]


@pytest.mark.parametrize("user", sorted(TODO))
def test_the_todo_scenario(pdp: httpx.Client, user: str) -> None:
    subject = {"type": "user", "id": user}
    one_by_one = [
        evaluate(pdp, {"subject": subject, **case}).json()["decision"] for case in todo_cases(user)
    ]
    assert one_by_one == TODO[user]
    boxcarred = evaluate(pdp, {"subject": subject, "evaluations": todo_cases(user)}, "evaluations")
    assert [item["decision"] for item in boxcarred.json()["evaluations"]] == TODO[user]


def test_the_metadata(pdp: httpx.Client) -> None:
    answer = pdp.get("/.well-known/authzen-configuration")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    base = str(pdp.base_url).rstrip("/")
    assert answer.json() == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        **{f"search_{p}_endpoint": f"{base}/access/v1/search/{p}" for p in SEARCHED},
    }


def test_metrics_and_keys_are_still_served(pdp: httpx.Client) -> None:
    evaluate(pdp, SPEC_REQUEST)
    metrics = pdp.get("/metrics")
    assert metrics.status_code == 200
    assert 'docket_decisions_total{api="authzen",decision="allow"}' in metrics.text
    assert pdp.get("/.well-known/jwks.json").json()["keys"]


# Errors: a request that cannot be read is a 400 with the message as its body (the
# specification's "error message string"), the request id echoed all the same.
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the body is not JSON"),
        (b"[]", "the body must be a JSON object"),
        (json.dumps({**SPEC_REQUEST, "subject": None}).encode(), "subject: must be an object"),
        (
            json.dumps({k: v for k, v in SPEC_REQUEST.items() if k != "subject"}).encode(),
            "subject: required",
        ),
        (
            json.dumps({**SPEC_REQUEST, "subject": {"type": "user"}}).encode(),
            "subject.id: required",
        ),
        (
            json.dumps({**SPEC_REQUEST, "action": {"name": 7}}).encode(),
            "action.name: must be a string",
        ),
        (
            json.dumps({**SPEC_REQUEST, "context": {"time": 1.5}}).encode(),
            "context.time: expected a string",
        ),
        (
            json.dumps(
                {
                    **SPEC_REQUEST,
                    "resource": {"type": "todo", "id": "t", "properties": {"ownerID": 5}},
                }
            ).encode(),
            "resource.properties.ownerID: expected a string",
        ),
        (
            json.dumps(
                {
                    **SPEC_REQUEST,
                    "resource": {"type": "todo", "id": "t", "properties": {"colour": "red"}},
                }
            ).encode(),
            "resource.properties.colour: not an attribute of Todo::todo",
        ),
        (
            json.dumps(
                {
                    **SPEC_REQUEST,
                    "subject": {
                        "type": "user",
                        "id": "beth@the-smiths.com",
                        "properties": {"roles": ["admin"]},
                    },
                }
            ).encode(),
            'subject.properties.roles: Todo::user::"beth@the-smiths.com" is in the entity store',
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "subject-null",
        "no-subject",
        "no-subject-id",
        "action-name-number",
        "context-off-schema",
        "property-off-schema",
        "property-not-in-schema",
        "property-over-the-store",
    ],
)
def test_a_request_that_cannot_be_read_is_400(pdp: httpx.Client, body: bytes, message: str) -> None:
    answer = pdp.post(
        "/access/v1/evaluation",
        content=body,
        headers={"content-type": "application/json", "x-request-id": "bad"},
    )
    assert answer.status_code == 400
    assert answer.text.startswith(message), answer.text
    assert answer.headers["x-request-id"] == "bad"


def test_errors_of_the_transport(pdp: httpx.Client) -> None:
    wrong_type = pdp.post(
        "/access/v1/evaluation",
        content=json.dumps(SPEC_REQUEST),
        headers={"content-type": "text/plain"},
    )
    assert wrong_type.status_code == 400
    assert "application/json" in wrong_type.text
    assert pdp.get("/access/v1/evaluation").status_code == 405
    assert pdp.post("/access/v1/nothing", json={}).status_code == 404
    semantic = evaluate(
        pdp, {**THREE_DOCUMENTS, "options": {"evaluations_semantic": "any"}}, "evaluations"
    )
    assert semantic.status_code == 400
    assert semantic.text.startswith("options.evaluations_semantic:")
    too_many = {**THREE_DOCUMENTS, "evaluations": THREE_DOCUMENTS["evaluations"] * 334}
    many = evaluate(pdp, too_many, "evaluations")
    assert many.status_code == 400
    assert "1002 evaluations" in many.text
    assert "the limit is 1000" in many.text
    huge = pdp.post(
        "/access/v1/evaluation",
        content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 400
    assert "limit" in huge.text


def test_an_evaluation_that_cannot_be_read_is_denied_in_its_place(pdp: httpx.Client) -> None:
    body = {
        "subject": {"type": "user", "id": "morty@the-citadel.com"},
        "action": {"name": "can_update_todo"},
        "evaluations": [
            {
                "resource": {
                    "type": "todo",
                    "id": "a",
                    "properties": {"ownerID": "morty@the-citadel.com"},
                }
            },
            {"resource": {"type": "todo", "id": "b", "properties": {"ownerID": 5}}},
            {
                "resource": {
                    "type": "todo",
                    "id": "c",
                    "properties": {"ownerID": "rick@the-citadel.com"},
                }
            },
        ],
    }
    answer = evaluate(pdp, body, "evaluations")
    assert answer.status_code == 200
    first, second, third = answer.json()["evaluations"]
    assert first == {"decision": True}
    assert second["decision"] is False
    assert second["context"]["error"]["status"] == 400
    assert second["context"]["error"]["message"].startswith(
        "evaluations[1].resource.properties.ownerID: expected a string"
    )
    assert third == {"decision": False}
    # deny_on_first_deny stops at the error, as at a deny.
    body["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    stopped = evaluate(pdp, body, "evaluations").json()["evaluations"]
    assert [item["decision"] for item in stopped] == [True, False]


def test_a_forged_device_posture_is_refused(pdp: httpx.Client, docket: Docket) -> None:
    forged = {**SPEC_REQUEST, "context": {"device": {"attested": True, "secure_boot": True}}}
    answer = evaluate(pdp, forged, **{"X-Request-ID": "forged"})
    assert answer.status_code == 400
    assert answer.text.startswith(
        "context.device.attested: set by Docket from a verified device credential"
    )
    caller_named = evaluate(pdp, {**SPEC_REQUEST, "context": {"caller": "spiffe://x/y"}})
    assert caller_named.status_code == 400
    assert caller_named.text.startswith("context.caller:")
    # Inventory facts are the caller's to relay; the device is then not attested.
    relayed = {**SPEC_REQUEST, "context": {"device": {"disk_encrypted": True}}}
    assert evaluate(pdp, relayed).json() == {"decision": False}
    refusals = [
        entry
        for entry in docket.audit_entries("decision")
        if entry["detail"].get("request_id") == "forged"
    ]
    assert len(refusals) == 1
    assert refusals[0]["decision"] == "deny"
    assert refusals[0]["detail"]["api"] == "authzen"
    assert refusals[0]["detail"]["error"].startswith("context.device.attested:")


def test_every_decision_is_audited(pdp: httpx.Client, docket: Docket) -> None:
    single = evaluate(pdp, SPEC_REQUEST, **{"X-Request-ID": "audited-1"})
    boxcar = evaluate(pdp, THREE_DOCUMENTS, "evaluations", **{"X-Request-ID": "audited-3"})
    ids = [single.headers[DECISION_IDS], *boxcar.headers[DECISION_IDS].split(",")]
    entries = {e["detail"]["decision_id"]: e for e in docket.audit_entries("decision")}
    assert [entries[i]["decision"] for i in ids] == ["allow", "allow", "deny", "allow"]
    assert {entries[i]["detail"]["api"] for i in ids} == {"authzen"}
    assert [entries[i]["detail"]["request_id"] for i in ids] == ["audited-1"] + ["audited-3"] * 3
    assert entries[ids[0]]["subject"] == 'Todo::user::"alice@example.com"'
    assert entries[ids[0]]["resource"] == 'Todo::account::"123"'
