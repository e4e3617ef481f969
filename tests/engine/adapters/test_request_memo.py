"""What Authorize remembers of a message: bounded, keyed by caller and bytes, and never a
posture it did not read again on this call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import struct_pb2

from engine._adapters.decisions_rpc import DecisionsServicer
from engine._adapters.request_memo import Parsed, RequestMemo
from engine._core.models import EntityUID, Request
from engine._errors import RequestError
from engine._service.posture import Proven
from sdk.v1 import decisions_pb2 as pb

NOW = datetime(2026, 12, 5, tzinfo=UTC)
DEVICE_ID = "spiffe://docket.example/device/" + "ab" * 32


def request(resource: str) -> Request:
    def uid(type_: str, id_: str) -> EntityUID:
        return EntityUID(type=type_, id=id_)

    return Request(
        principal=uid("User", "alice"), action=uid("Action", "read"), resource=uid("Data", resource)
    )


def message(token: str = "", **context: Any) -> pb.AuthorizeRequest:
    struct = struct_pb2.Struct()
    struct.update(context)
    return pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id="alice"),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id="ledger"),
        context=struct,
        device_token=token,
    )


def test_the_least_recently_used_message_goes_first() -> None:
    memo = RequestMemo(entries=2)
    keys = [memo.key(None, bytes([n])) for n in range(3)]
    assert None not in keys
    a, b, c = (k for k in keys if k is not None)
    memo.put(a, Parsed(request("a")))
    memo.put(b, Parsed(request("b")))
    assert memo.get(a) is not None  # a is now the most recently used
    memo.put(c, Parsed(request("c")))
    assert (memo.get(a) is not None, memo.get(b), memo.get(c) is not None) == (True, None, True)
    assert len(memo) == 2


def test_a_large_message_or_a_memo_of_none_is_not_kept() -> None:
    assert RequestMemo(max_message_bytes=8).key(None, b"x" * 9) is None
    assert RequestMemo(max_message_bytes=8).key(None, b"x" * 8) == (None, b"x" * 8)
    assert RequestMemo(entries=0).key(None, b"x") is None


def test_the_caller_is_part_of_the_key() -> None:
    memo = RequestMemo()
    assert memo.key("spiffe://a", b"m") != memo.key("spiffe://b", b"m")


class Clock:
    def clock(self) -> datetime:
        return NOW


class Peer:
    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


class Reader:
    """A posture reader whose token check gives what the test says, each call counted."""

    def __init__(self) -> None:
        self.posture = Proven(DEVICE_ID, {"disk_encrypted": True}, "jwt-svid", "jti-1")
        self.reads = 0
        self.refuse: str | None = None

    def from_peer(self, context: object, now: datetime) -> Proven | None:
        return None

    def from_token(self, token: str, now: datetime) -> Proven:
        self.reads += 1
        if self.refuse is not None:
            raise RequestError(f"device_token: {self.refuse}")
        return self.posture


def servicer(reader: Reader | None = None) -> DecisionsServicer:
    return DecisionsServicer(Clock(), posture=reader)  # type: ignore[arg-type]


def test_a_message_sent_again_is_read_once_and_its_posture_every_time() -> None:
    reader = Reader()
    rpc = servicer(reader)
    sent = message("token", mfa=True)
    (first,), (provenance,) = rpc._one(sent, Peer(), None)  # type: ignore[arg-type]
    (again,), (provenance_again,) = rpc._one(sent, Peer(), None)  # type: ignore[arg-type]
    assert again is first
    assert provenance_again is provenance
    assert reader.reads == 2  # the token is checked on every call
    assert first.context["device"] == {"disk_encrypted": True, "id": DEVICE_ID}
    # A posture read afresh (another object: say after a CA reload) is attached afresh.
    reader.posture = Proven(DEVICE_ID, {"disk_encrypted": False}, "jwt-svid", "jti-2")
    (fresh,), (fresh_provenance,) = rpc._one(sent, Peer(), None)  # type: ignore[arg-type]
    assert fresh is not first
    assert fresh.context["device"]["disk_encrypted"] is False
    assert fresh_provenance["posture"]["jti"] == "jti-2"


def test_a_revoked_token_is_refused_although_its_message_is_remembered() -> None:
    reader = Reader()
    rpc = servicer(reader)
    sent = message("token")
    rpc._one(sent, Peer(), None)  # type: ignore[arg-type]
    reader.refuse = "the device was revoked"
    with pytest.raises(RequestError, match="revoked"):
        rpc._one(sent, Peer(), None)  # type: ignore[arg-type]


def test_a_message_that_does_not_parse_is_not_remembered() -> None:
    rpc = servicer()
    forged = message(caller="spiffe://forged")
    for _ in range(2):
        with pytest.raises(RequestError, match=r"context\.caller"):
            rpc._one(forged, Peer(), None)  # type: ignore[arg-type]
    assert len(rpc._parsed) == 0


def test_each_caller_gets_its_own_request() -> None:
    rpc = servicer()
    sent = message()
    (as_a,), _ = rpc._one(sent, Peer(), "spiffe://docket.example/a")  # type: ignore[arg-type]
    (as_b,), _ = rpc._one(sent, Peer(), "spiffe://docket.example/b")  # type: ignore[arg-type]
    assert (as_a.context["caller"], as_b.context["caller"]) == (
        "spiffe://docket.example/a",
        "spiffe://docket.example/b",
    )
