"""AuthZEN 1.0 requests as engine requests (engine/_adapters/authzen.py), on the default
bundle (namespace ``Docket``): the mapping onto Cedar and each field's refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import PolicyBundle, RequestError
from engine._adapters.authzen import Catalog, evaluations, to_request
from engine._errors import LimitExceeded

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.of(PolicyBundle.load(ROOT / "policies"))


BASE: dict[str, Any] = {
    "subject": {"type": "User", "id": "alice"},
    "action": {"name": "read"},
    "resource": {"type": "Data", "id": "ledger"},
}


def test_types_ids_and_context_map_onto_the_request(catalog: Catalog) -> None:
    request = to_request(
        {**BASE, "context": {"mfa": True}, "action": {"name": "read", "properties": {"m": "GET"}}},
        catalog,
    )
    assert (request.principal.type, request.principal.id) == ("User", "alice")
    assert (request.action.type, request.action.id) == ("Action", "read")
    assert (request.resource.type, request.resource.id) == ("Data", "ledger")
    assert request.context == {"mfa": True, "action": {"m": "GET"}}
    assert request.entities == ()


def test_properties_of_an_entity_not_stored_make_one_for_the_request(catalog: Catalog) -> None:
    properties = {
        "department": "sales",
        "clearance": {"__entity": {"type": "Classification", "id": "internal"}},
        "mfa_enrolled": False,
        "jurisdiction": "us",
    }
    request = to_request(
        {**BASE, "subject": {"type": "User", "id": "zoe", "properties": properties}}, catalog
    )
    qualified = {
        **properties,
        "clearance": {"__entity": {"type": "Docket::Classification", "id": "internal"}},
    }
    assert request.entities == (
        {"uid": {"type": "User", "id": "zoe"}, "attrs": qualified, "parents": []},
    )


def test_properties_that_repeat_the_store_add_nothing(catalog: Catalog) -> None:
    subject = {"type": "User", "id": "alice", "properties": {"jurisdiction": "eu"}}
    assert to_request({**BASE, "subject": subject}, catalog).entities == ()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({**BASE, "subject": "alice"}, "subject: must be an object"),
        ({"action": BASE["action"], "resource": BASE["resource"]}, "subject: required"),
        ({**BASE, "subject": {"type": "", "id": "a"}}, "subject.type: must not be empty"),
        ({**BASE, "resource": {"type": "Data"}}, "resource.id: required"),
        ({**BASE, "action": {}}, "action.name: required"),
        ({**BASE, "action": {"name": "read", "properties": []}}, "action.properties: must be"),
        ({**BASE, "context": []}, "context: must be an object"),
        (
            {**BASE, "action": {"name": "read", "properties": {}}, "context": {"action": {}}},
            "context.action: holds action.properties",
        ),
        ({**BASE, "context": {"caller": "spiffe://a/b"}}, "context.caller: set by the server"),
        ({**BASE, "context": {"device": "mine"}}, "context.device: must be an object"),
        (
            {**BASE, "context": {"device": {"secure_boot": True}}},
            "context.device.secure_boot: set by Docket from a verified device credential",
        ),
        (
            {
                **BASE,
                "subject": {"type": "User", "id": "alice", "properties": {"department": "hr"}},
            },
            'subject.properties.department: Docket::User::"alice" is in the entity store',
        ),
        (
            {**BASE, "subject": {"type": "User", "id": "zoe", "properties": {"department": 1}}},
            "subject.properties.clearance: required",
        ),
        (
            {**BASE, "resource": {"type": "Nothing", "id": "x", "properties": {}}},
            "resource.type: no entity type Docket::Nothing",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_field_is_refused_by_name(
    catalog: Catalog, item: dict[str, Any], message: str
) -> None:
    with pytest.raises(RequestError) as raised:
        to_request(item, catalog, "")
    assert str(raised.value).startswith(message)


def test_an_evaluations_field_names_its_evaluation(catalog: Catalog) -> None:
    with pytest.raises(RequestError, match=r"^evaluations\[2\]\.subject: required"):
        to_request({"action": {"name": "read"}}, catalog, "evaluations[2].")


def test_defaults_apply_per_evaluation_and_are_replaced_whole() -> None:
    body = {
        **BASE,
        "context": {"mfa": True},
        "evaluations": [{}, {"context": {"ip": "10.0.0.1"}, "action": {"name": "write"}}],
        "options": {"evaluations_semantic": "permit_on_first_permit", "other": 1},
    }
    items, semantic = evaluations(body)
    assert semantic == "permit_on_first_permit"
    assert items == [
        {**BASE, "context": {"mfa": True}},
        {**BASE, "context": {"ip": "10.0.0.1"}, "action": {"name": "write"}},
    ]


@pytest.mark.parametrize("body", [BASE, {**BASE, "evaluations": []}])
def test_without_evaluations_it_is_one_evaluation(body: dict[str, Any]) -> None:
    assert evaluations(body) == (None, "execute_all")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"options": []}, "options: must be an object"),
        ({"options": {"evaluations_semantic": "all"}}, "options.evaluations_semantic: must be one"),
        ({"evaluations": {}}, "evaluations: must be an array"),
        ({"evaluations": [{}, 3]}, r"evaluations\[1\]: must be an object"),
    ],
)
def test_the_envelope_is_refused_by_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=f"^{message}"):
        evaluations(body)


def test_more_evaluations_than_a_batch_is_over_the_limit() -> None:
    with pytest.raises(LimitExceeded, match="1001 evaluations in one request; the limit is 1000"):
        evaluations({**BASE, "evaluations": [{}] * 1001})
