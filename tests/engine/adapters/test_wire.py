"""Requests off the wire (engine/_adapters/wire.py): Struct values as Cedar JSON, the
field named when one is refused, and a batch's repeated context read once."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from engine import RequestError
from engine._adapters.wire import batch_from_proto, struct_to_dict
from sdk.v1 import decisions_pb2 as pb
from tests.authorize import alice_reads


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    made = struct_pb2.Struct()
    made.update(values)
    return made


def request(resource: str, context: dict[str, Any]) -> pb.AuthorizeRequest:
    return alice_reads(resource, context)


def test_values_become_cedar_json() -> None:
    values = {"mfa": True, "age": 3, "tags": ["a", 2], "device": {"os": "linux", "n": -5}}
    assert struct_to_dict(struct(values), "context") == values


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"score": 0.5}, r"context\.score: Cedar has no fractional numbers"),
        ({"device": {"big": 2.0**60}}, r"context\.device\.big: whole numbers must lie within"),
        ({"tags": ["a", None]}, r"context\.tags\[1\]: null is not a Cedar value"),
    ],
)
def test_a_refused_value_is_named(values: dict[str, Any], named: str) -> None:
    with pytest.raises(RequestError, match=named):
        struct_to_dict(struct(values), "context")


def test_a_repeated_context_is_read_once_and_shared_by_its_requests() -> None:
    """One object for all the requests that sent it: what is made of a context later
    (its posture, its canonical JSON for the entries) is then made once per batch."""
    shared = {"mfa": True, "device": {"os": "linux"}}
    batch = pb.BatchAuthorizeRequest(
        requests=[request(name, shared) for name in ("a", "b", "c")] + [request("d", {})]
    )
    requests = batch_from_proto(batch, caller="spiffe://docket.local/svc/x")
    assert [r.context for r in requests[:3]] == [
        {**shared, "caller": "spiffe://docket.local/svc/x"}
    ] * 3
    assert requests[3].context == {"caller": "spiffe://docket.local/svc/x"}
    assert requests[0].context is requests[1].context is requests[2].context
    assert requests[0].principal is requests[3].principal  # each uid made once
    assert requests[0].principal.model_dump() == {"type": "User", "id": "alice"}
    assert [r.resource.id for r in requests] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"device": {"attested": True}}, r"requests\[0\]\.context\.device\.attested"),
        ({"caller": "spiffe://docket.local/admin"}, r"requests\[0\]\.context\.caller"),
    ],
)
def test_a_repeated_forged_context_is_refused_at_its_first(
    context: dict[str, Any], named: str
) -> None:
    batch = pb.BatchAuthorizeRequest(requests=[request("a", context), request("b", context)])
    with pytest.raises(RequestError, match=named):
        batch_from_proto(batch)
