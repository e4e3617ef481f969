"""The ASGI app ``bench front`` serves Docket through pyvoy with, driven here without
pyvoy: a gRPC answer only for a well-framed Authorize, the servicer's own status for a
refused one, and every answer's entry in the log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from audit._store import Store
from sdk.v1 import decisions_pb2 as pb
from tests.authorize import alice_reads

ROOT = Path(__file__).resolve().parents[2]
Message = MutableMapping[str, Any]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("front") / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKET_FRONT_DATA", str(data))
        patch.setenv("DOCKET_FRONT_BUNDLE", str(ROOT / "policies"))
        patch.delenv("DOCKET_FRONT_PATHS", raising=False)
        from benchmarks import _pyvoy_front

        loop = asyncio.new_event_loop()
        lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[Message] = []
        started = asyncio.Event()

        async def receive() -> Message:
            if lifespan[0]["type"] == "lifespan.shutdown":
                await stopping.wait()
            return lifespan.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)
            started.set()

        stopping = asyncio.Event()

        async def start() -> asyncio.Task[None]:
            task = asyncio.create_task(_pyvoy_front.app({"type": "lifespan"}, receive, send))
            await started.wait()
            return task

        task = loop.run_until_complete(start())
        assert sent == [{"type": "lifespan.startup.complete"}]
        try:
            yield _pyvoy_front, loop, data
        finally:
            stopping.set()
            loop.run_until_complete(task)
            loop.close()
            assert sent[-1] == {"type": "lifespan.shutdown.complete"}


def call(front: Any, path: str, body: bytes, *, gone: bool = False) -> list[Message]:
    module, loop, _ = front
    messages: list[Message] = [
        {"type": "http.disconnect"} if gone else {"type": "http.request", "body": body}
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST"}
    loop.run_until_complete(module.app(scope, receive, send))
    return sent


def framed(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


def status(sent: list[Message]) -> tuple[str, str]:
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
    ]
    assert sent[0]["status"] == 200
    assert sent[0]["trailers"] is True
    trailers = dict(sent[2]["headers"])
    return trailers[b"grpc-status"].decode(), trailers.get(b"grpc-message", b"").decode()


def restricted_read(device_token: str = "") -> bytes:
    context = {"mfa": True, "jurisdiction": "eu"}
    return alice_reads("patient-records-eu", context, device_token).SerializeToString()


def log_size(data: Path) -> int:
    store = Store(f"sqlite:///{data / 'docket.db'}", create=False)
    try:
        return store.head().size
    finally:
        store.close()


def test_an_authorize_is_answered_with_its_decision_once_its_entry_is_logged(front: Any) -> None:
    before = log_size(front[2])
    sent = call(front, "/docket.v1.Decisions/Authorize", framed(restricted_read()))
    assert status(sent) == ("0", "")
    body = sent[1]["body"]
    assert body[0] == 0
    assert int.from_bytes(body[1:5], "big") == len(body) - 5
    answer = pb.AuthorizeResponse.FromString(body[5:])
    # Restricted data needs an attested device: none was presented.
    assert answer.decision == pb.DECISION_DENY
    assert answer.decision_id
    assert answer.receipt.index >= before
    assert log_size(front[2]) == before + 1


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        pytest.param(
            b"\x00\x00\x00\x00\x09abc",
            "13",
            "not one length-prefixed message",
            id="length-not-the-body's",
        ),
        pytest.param(b"\x00\x00", "13", "not one length-prefixed message", id="no-prefix"),
        pytest.param(
            framed(restricted_read(), flag=1),
            "12",
            "compressed messages are not taken",
            id="compressed",
        ),
        pytest.param(framed(b"\xff\xff\xff"), "13", "cannot parse the request", id="not-protobuf"),
    ],
)
def test_a_malformed_call_is_refused_with_a_grpc_status(
    front: Any, body: bytes, code: str, words: str
) -> None:
    before = log_size(front[2])
    sent = call(front, "/docket.v1.Decisions/Authorize", body)
    assert status(sent) == (code, words)
    assert sent[1]["body"] == b""
    assert log_size(front[2]) == before


def test_a_token_that_does_not_verify_gets_the_servicers_own_status(front: Any) -> None:
    sent = call(front, "/docket.v1.Decisions/Authorize", framed(restricted_read("not.a.jwt")))
    code, words = status(sent)
    assert code == "3"
    assert "device_token" in words
    assert sent[1]["body"] == b""


def test_a_batch_is_answered_with_a_decision_per_request(front: Any) -> None:
    before = log_size(front[2])
    one = pb.AuthorizeRequest.FromString(restricted_read())
    batch = pb.BatchAuthorizeRequest(requests=[one, one, one]).SerializeToString()
    sent = call(front, "/docket.v1.Decisions/BatchAuthorize", framed(batch))
    assert status(sent) == ("0", "")
    answer = pb.BatchAuthorizeResponse.FromString(sent[1]["body"][5:])
    assert [r.decision for r in answer.results] == [pb.DECISION_DENY] * 3
    assert log_size(front[2]) == before + 3


def test_another_method_is_unimplemented(front: Any) -> None:
    sent = call(front, "/docket.v1.Decisions/Place", framed(b""))
    assert status(sent) == ("12", "/docket.v1.Decisions/Place")


def test_a_caller_gone_before_its_request_gets_nothing(front: Any) -> None:
    assert call(front, "/docket.v1.Decisions/Authorize", b"", gone=True) == []
