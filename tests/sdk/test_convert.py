"""Requests and results ⇄ docket.v1 messages, and the values Cedar cannot take."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from sdk import (
    AuthorizeRequest,
    AuthorizeResult,
    EntityRef,
    InvalidRequestError,
    PlacementRequest,
    ServerError,
)
from sdk._convert import (
    MAX_BATCH,
    authorize_request,
    authorize_request_from_proto,
    authorize_request_to_proto,
    authorize_result_from_proto,
    authorize_result_to_proto,
    batch_results_from_proto,
    batch_to_proto,
    dict_from_struct,
    placement_request_from_proto,
    placement_request_to_proto,
    struct_from_dict,
)
from sdk.v1 import decisions_pb2 as pb

ALICE = {"type": "User", "id": "alice"}
RECORDS = {"type": "Data", "id": "patient-records-eu"}

REQUEST: dict[str, Any] = {
    "principal": ALICE,
    "action": {"type": "Action", "id": "read"},
    "resource": RECORDS,
    "context": {
        "mfa": True,
        "jurisdiction": "eu",
        "device": {"attested": True, "patch_age_days": 3, "trust_tier": "high"},
        "owner": {"__entity": {"type": "User", "id": "alice"}},
        "tags": ["a", "b"],
        "big": 2**53,
        "negative": -(2**53),
    },
    "entities": [
        {
            "uid": {"type": "User", "id": "zoe"},
            "attrs": {
                "clearance": {"__entity": {"type": "Classification", "id": "internal"}},
                "level": 7,
            },
            "parents": [{"type": "Group", "id": "research"}],
        }
    ],
}


def test_a_request_dict_round_trips_through_its_wire_form() -> None:
    request = authorize_request(REQUEST)
    message = authorize_request_to_proto(request)

    assert message.principal == pb.EntityRef(type="User", id="alice")
    assert message.context.fields["device"].struct_value.fields["patch_age_days"].number_value == 3
    assert message.entities[0].parents[0] == pb.EntityRef(type="Group", id="research")
    back = authorize_request_from_proto(pb.AuthorizeRequest.FromString(message.SerializeToString()))
    assert back == request
    assert back.model_dump()["context"] == REQUEST["context"]
    assert back.model_dump()["entities"][0]["attrs"] == REQUEST["entities"][0]["attrs"]


def test_the_device_token_round_trips_and_is_never_empty() -> None:
    request = authorize_request(REQUEST, device_token="header.payload.signature")
    message = authorize_request_to_proto(request)
    assert message.device_token == "header.payload.signature"
    assert authorize_request_from_proto(message) == request
    assert authorize_request_to_proto(authorize_request(REQUEST)).device_token == ""
    assert (
        authorize_request_from_proto(
            authorize_request_to_proto(authorize_request(REQUEST))
        ).device_token
        is None
    )
    with pytest.raises(InvalidRequestError, match="device_token"):
        authorize_request(REQUEST, device_token="")
    assert "header.payload" not in repr(request)  # a bearer token stays out of logs


def test_ints_come_back_as_ints_not_floats() -> None:
    back = dict_from_struct(struct_from_dict({"n": 3, "nested": {"m": [1, 2**53]}}))

    assert back == {"n": 3, "nested": {"m": [1, 2**53]}}
    assert type(back["n"]) is int
    assert type(back["nested"]["m"][1]) is int


def test_parts_build_the_same_request_as_a_dict() -> None:
    from_parts = authorize_request(
        EntityRef(type="User", id="alice"),
        "read",
        RECORDS,
        context=REQUEST["context"],
        entities=REQUEST["entities"],
    )

    assert from_parts == authorize_request(REQUEST)


def test_entity_refs_and_collections_in_context_become_cedar_json() -> None:
    request = authorize_request(
        {
            "principal": {"__entity": ALICE},
            "action": "read",
            "resource": RECORDS,
            "context": {"by": EntityRef(type="User", id="bob"), "ids": (1, 2), "set": {"x"}},
        }
    )

    assert request.principal == EntityRef(type="User", id="alice")
    assert request.action == EntityRef(type="Action", id="read")
    assert request.context == {
        "by": {"__entity": {"type": "User", "id": "bob"}},
        "ids": [1, 2],
        "set": ["x"],
    }
    assert str(request.principal) == 'User::"alice"'


REFUSED = [
    pytest.param({"n": 2.5}, "context.n: 2.5 is a float", id="float"),
    pytest.param({"n": 3.0}, "context.n: 3.0 is a float", id="whole-float"),
    pytest.param({"d": {"n": math.nan}}, "context.d.n: nan is not a finite number", id="nan"),
    pytest.param({"l": [1, math.inf]}, "context.l[1]: inf is not a finite number", id="inf"),
    pytest.param({"n": 2**53 + 1}, "context.n: 9007199254740993 is beyond ±2**53", id="big-int"),
    pytest.param({"n": -(2**53) - 1}, "context.n: -9007199254740993 is beyond", id="small-int"),
    pytest.param({"n": None}, "context.n: null has no Cedar equivalent", id="null"),
    pytest.param({"b": b"x"}, "context.b: bytes is not a Cedar value", id="bytes"),
    pytest.param({"r": {1: "x"}}, "context.r: record keys must be strings", id="int-key"),
]


@pytest.mark.parametrize(("context", "message"), REFUSED)
def test_values_cedar_cannot_take_are_refused_before_sending(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=r"^invalid request: ") as caught:
        authorize_request(ALICE, "read", RECORDS, context=context)

    assert message in str(caught.value)


def test_a_bad_entity_attribute_is_located() -> None:
    entity = {"uid": {"type": "User", "id": "zoe"}, "attrs": {"score": {"x": 0.5}}}

    with pytest.raises(
        InvalidRequestError, match=r"entities\[0\]\.attrs\.score\.x: 0\.5 is a float"
    ):
        authorize_request(ALICE, "read", RECORDS, entities=[entity])


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param(
            {**REQUEST, "principal": {"type": "User"}}, "principal.id: Field required", id="no-id"
        ),
        pytest.param(
            {**REQUEST, "resource": {"type": "", "id": "x"}},
            "resource.type: String should have at least 1",
            id="no-type",
        ),
        pytest.param({**REQUEST, "extra": 1}, "extra: Extra inputs are not permitted", id="extra"),
        pytest.param(
            {**REQUEST, "principal": {"type": "User", "id": 7}},
            "principal.id: Input should be a valid string",
            id="int-id",
        ),
    ],
)
def test_malformed_requests_name_the_field(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        authorize_request(request_)

    assert message in str(caught.value)


def test_models_refuse_floats_too() -> None:
    with pytest.raises(ValueError, match="is a float"):
        AuthorizeRequest.model_validate({**REQUEST, "context": {"n": 1.5}})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            struct_pb2.Value(number_value=2.5),
            "context.x: 2.5 is not a whole number",
            id="fraction",
        ),
        pytest.param(
            struct_pb2.Value(null_value=struct_pb2.NULL_VALUE), "context.x: null", id="null"
        ),
    ],
)
def test_structs_from_the_wire_must_hold_cedar_values(
    value: struct_pb2.Value, message: str
) -> None:
    struct = struct_pb2.Struct()
    struct.fields["x"].CopyFrom(value)

    with pytest.raises(InvalidRequestError, match=message):
        dict_from_struct(struct)


cedar_json = st.recursive(
    st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), cedar_json, max_size=6))
def test_any_cedar_json_record_survives_the_struct(record: dict[str, Any]) -> None:
    assert dict_from_struct(struct_from_dict(record)) == record


def test_results_round_trip_and_allowed_means_allow() -> None:
    result = AuthorizeResult(
        decision="deny",
        decision_id="d-1",
        reasons=("no-share-restricted",),
        errors=(("p7", "attribute missing"), ("", "no bundle loaded")),
        bundle_version="sha256:abc",
    )

    back = authorize_result_from_proto(authorize_result_to_proto(result))

    assert back == result
    assert not back.allowed
    assert authorize_result_from_proto(
        pb.AuthorizeResponse(decision=pb.DECISION_ALLOW, decision_id="d-2")
    ).allowed


def test_a_response_without_a_decision_is_a_server_error_not_a_guess() -> None:
    with pytest.raises(ServerError, match="no decision"):
        authorize_result_from_proto(pb.AuthorizeResponse(decision_id="d-3"))


def test_placement_requests_round_trip_with_and_without_optional_fields() -> None:
    full = PlacementRequest(
        workload_id="trainer",
        kind="dataset",
        classification="restricted",
        residency=("eu", "uk"),
        regulated=True,
        accelerator="gpu-a100",
        latency_budget_ms=40.5,
        users_in="eu",
        context={"n": 1},
        sites=("eu-west-cloud",),
    )
    bare = PlacementRequest(workload_id="web")

    for request in (full, bare):
        message = placement_request_to_proto(request)
        assert placement_request_from_proto(message) == request
    assert not placement_request_to_proto(bare).HasField("latency_budget_ms")
    assert placement_request_to_proto(full).kind == pb.WORKLOAD_KIND_DATASET


def test_a_batch_over_the_limit_is_refused() -> None:
    assert len(batch_to_proto([REQUEST] * MAX_BATCH).requests) == MAX_BATCH

    with pytest.raises(InvalidRequestError, match="at most 1000 requests, got 1001"):
        batch_to_proto([REQUEST] * (MAX_BATCH + 1))


def test_a_bad_request_in_a_batch_is_named_by_its_index() -> None:
    bad = {**REQUEST, "context": {"n": 0.1}}

    with pytest.raises(InvalidRequestError, match=r"^requests\[2\]: invalid request: context\.n"):
        batch_to_proto([REQUEST, REQUEST, bad])


def test_a_batch_answer_of_the_wrong_length_is_a_server_error() -> None:
    answer = pb.BatchAuthorizeResponse(
        results=[pb.AuthorizeResponse(decision=pb.DECISION_ALLOW, decision_id="d")]
    )

    assert len(batch_results_from_proto(answer, 1)) == 1
    with pytest.raises(ServerError, match="answered 1 of 2"):
        batch_results_from_proto(answer, 2)
