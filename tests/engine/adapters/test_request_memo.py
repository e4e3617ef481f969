"""What Authorize and BatchAuthorize remember of a message: bounded, keyed by type, caller
and bytes, and never a posture they did not read again on this call."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest

from engine._adapters.decisions_rpc import DecisionsServicer
from engine._adapters.request_memo import MAX_BYTES, MAX_MESSAGE_BYTES, Parsed, RequestMemo
from engine._adapters.wire import batch_from_proto, request_from_proto
from engine._core.models import EntityUID, Request
from engine._errors import RequestError
from engine._service.posture import Proven
from sdk.v1 import decisions_pb2 as pb
from tests.authorize import alice_reads

NOW = datetime(2026, 12, 5, tzinfo=UTC)
DEVICE_ID = "spiffe://docket.example/device/" + "ab" * 32


def request(resource: str) -> Request:
    def uid(type_: str, id_: str) -> EntityUID:
        return EntityUID(type=type_, id=id_)

    return Request(
        principal=uid("User", "alice"), action=uid("Action", "read"), resource=uid("Data", resource)
    )


def message(token: str = "", **context: Any) -> pb.AuthorizeRequest:
    return alice_reads("ledger", context, token)


def test_the_least_recently_used_message_goes_first() -> None:
    memo = RequestMemo(entries=2)
    keys = [memo.key("AuthorizeRequest", None, bytes([n])) for n in range(3)]
    assert None not in keys
    a, b, c = (k for k in keys if k is not None)
    memo.put(a, Parsed([request("a")]))
    memo.put(b, Parsed([request("b")]))
    assert memo.get(a) is not None  # a is now the most recently used
    memo.put(c, Parsed([request("c")]))
    assert (memo.get(a) is not None, memo.get(b), memo.get(c) is not None) == (True, None, True)
    assert len(memo) == 2


def test_the_bytes_kept_are_bounded() -> None:
    memo = RequestMemo(max_bytes=10)
    for n in range(4):
        key = memo.key("AuthorizeRequest", None, bytes([n]) * 4)
        assert key is not None
        memo.put(key, Parsed([request(str(n))]))
    assert (len(memo), memo.bytes) == (2, 8)  # the two oldest went
    assert memo.key("AuthorizeRequest", None, b"x" * 11) is None  # over the whole budget


def test_a_large_message_or_a_memo_of_none_is_not_kept() -> None:
    memo = RequestMemo(max_message_bytes=8)
    assert memo.key("AuthorizeRequest", None, b"x" * 9) is None
    assert memo.key("AuthorizeRequest", None, b"x" * 8) == ("AuthorizeRequest", None, b"x" * 8)
    assert RequestMemo(entries=0).key("AuthorizeRequest", None, b"x") is None


def test_the_type_and_the_caller_are_part_of_the_key() -> None:
    memo = RequestMemo()
    # An empty Authorize and an empty batch are the same (no) bytes.
    assert memo.key("AuthorizeRequest", None, b"") != memo.key("BatchAuthorizeRequest", None, b"")
    assert memo.key("AuthorizeRequest", "spiffe://a", b"m") != memo.key(
        "AuthorizeRequest", "spiffe://b", b"m"
    )


class Clock:
    def clock(self) -> datetime:
        return NOW


class Reader:
    """A posture reader whose token check gives what the test says, each call counted."""

    def __init__(self) -> None:
        self.posture = Proven(DEVICE_ID, {"disk_encrypted": True}, "jwt-svid", "jti-1")
        self.reads = 0
        self.refuse: str | None = None

    def from_auth(self, auth: object, now: datetime) -> Proven | None:
        return None

    def from_token(self, token: str, now: datetime) -> Proven:
        self.reads += 1
        if self.refuse is not None:
            raise RequestError(f"device_token: {self.refuse}")
        return self.posture


def servicer(reader: Reader | None = None) -> DecisionsServicer:
    return DecisionsServicer(Clock(), posture=reader)  # type: ignore[arg-type]


def one(
    rpc: DecisionsServicer, sent: pb.AuthorizeRequest, caller: str | None = None
) -> tuple[list[Request], list[dict[str, Any]]]:
    """What Authorize hands the service for ``sent``."""
    parsed = rpc._parsed(sent, caller, lambda: [request_from_proto(sent, caller=caller)])
    return rpc._with_posture(parsed.requests, [sent], {}, caller, parsed)  # type: ignore[arg-type]


def batch(
    rpc: DecisionsServicer, sent: pb.BatchAuthorizeRequest
) -> tuple[list[Request], list[dict[str, Any]]]:
    """What BatchAuthorize hands the service for ``sent``."""
    parsed = rpc._parsed(sent, None, lambda: batch_from_proto(sent))
    return rpc._with_posture(parsed.requests, sent.requests, {}, None, parsed)  # type: ignore[arg-type]


def test_a_message_sent_again_is_read_once_and_its_posture_every_time() -> None:
    reader = Reader()
    rpc = servicer(reader)
    sent = message("token", mfa=True)
    (first,), (provenance,) = one(rpc, sent)
    (again,), (provenance_again,) = one(rpc, sent)
    assert again is first
    assert provenance_again is provenance
    assert reader.reads == 2  # the token is checked on every call
    assert first.context["device"] == {"disk_encrypted": True, "id": DEVICE_ID}
    # A posture read afresh (another object: say after a CA reload) is attached afresh.
    reader.posture = Proven(DEVICE_ID, {"disk_encrypted": False}, "jwt-svid", "jti-2")
    (fresh,), (fresh_provenance,) = one(rpc, sent)
    assert fresh is not first
    assert fresh.context["device"]["disk_encrypted"] is False
    assert fresh_provenance["posture"]["jti"] == "jti-2"


def test_a_revoked_token_is_refused_although_its_message_is_remembered() -> None:
    reader = Reader()
    rpc = servicer(reader)
    sent = message("token")
    one(rpc, sent)
    reader.refuse = "the device was revoked"
    with pytest.raises(RequestError, match="revoked"):
        one(rpc, sent)


def test_a_message_that_does_not_parse_is_not_remembered() -> None:
    rpc = servicer()
    forged = message(caller="spiffe://forged")
    for _ in range(2):
        with pytest.raises(RequestError, match=r"context\.caller"):
            one(rpc, forged)
    assert len(rpc._memo) == 0


def test_each_caller_gets_its_own_request() -> None:
    rpc = servicer()
    sent = message()
    (as_a,), _ = one(rpc, sent, "spiffe://docket.example/a")
    (as_b,), _ = one(rpc, sent, "spiffe://docket.example/b")
    assert (as_a.context["caller"], as_b.context["caller"]) == (
        "spiffe://docket.example/a",
        "spiffe://docket.example/b",
    )


def test_a_batch_is_read_once_and_each_of_its_postures_every_time() -> None:
    reader = Reader()
    rpc = servicer(reader)
    sent = pb.BatchAuthorizeRequest(
        requests=[message("token", mfa=True), message("token", mfa=True), message(mfa=True)]
    )
    first, provenances = batch(rpc, sent)
    again, provenances_again = batch(rpc, sent)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * 3
    assert provenances_again == provenances
    assert reader.reads == 2  # one token, read once per call
    assert "id" in first[0].context["device"]
    assert "device" not in first[2].context  # no token: no posture
    reader.posture = Proven(DEVICE_ID, {"disk_encrypted": False}, "jwt-svid", "jti-2")
    fresh, _ = batch(rpc, sent)
    assert fresh[0] is not first[0]
    assert fresh[0].context["device"]["disk_encrypted"] is False
    reader.refuse = "the device was revoked"
    with pytest.raises(RequestError, match="revoked"):
        batch(rpc, sent)


def test_an_attacker_cannot_make_the_memo_huge() -> None:
    """Distinct messages built to expand the most when read (many small objects: ~11x
    their bytes) fill the memo only to its bounds: here a budget of 512 KiB, which the
    memory kept follows; the default budget, at that expansion, stays under 64 MiB."""
    budget = 512 * 1024
    rpc = servicer()
    rpc._memo = RequestMemo(max_bytes=budget)
    tracemalloc.start()
    try:
        for n in range(12):
            sent = message(xs=[{"a": n} for _ in range(5000)])  # ~100 KB each
            assert len(sent.SerializeToString()) <= MAX_MESSAGE_BYTES
            one(rpc, sent)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rpc._memo.bytes <= budget
    assert len(rpc._memo) == 5
    assert kept < 16 * budget, kept
    assert MAX_BYTES * 16 <= 64 * 1024 * 1024
    over = message(xs=[{"a": 1} for _ in range(7000)])  # over MAX_MESSAGE_BYTES
    assert len(over.SerializeToString()) > MAX_MESSAGE_BYTES
    one(rpc, over)
    assert len(rpc._memo) == 5
