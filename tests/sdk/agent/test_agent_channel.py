"""The agent's gRPC channel (sdk/agent/_channel.py): errors mapped to the SDK's tree, gRPC's
retries against a real in-process server (Challenge retried, Attest sent once), and the
rule that plaintext goes only to this machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import grpc
import pytest
from sdk_fakes import FakeAttestation, Running, serve_attestation

from sdk import (
    ConfigurationError,
    InvalidRequestError,
    PermissionDeniedError,
    ServerError,
    TransportError,
)
from sdk.agent._channel import dial, invoke, is_local_target
from sdk.v1 import attestation_pb2 as pb
from sdk.v1.attestation_pb2_grpc import AttestationStub


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _failing(code: grpc.StatusCode, details: str, calls: list[float]) -> Any:
    def method(request: object, *, timeout: float) -> NoReturn:
        calls.append(timeout)
        raise _Failed(code, details)

    return method


ERRORS = [
    pytest.param(
        grpc.StatusCode.PERMISSION_DENIED,
        PermissionDeniedError,
        "attestation refused: EK not trusted: no EK certificate chaining to a configured root",
        id="refused",
    ),
    pytest.param(
        grpc.StatusCode.INVALID_ARGUMENT,
        InvalidRequestError,
        "Challenge on h:1 failed: INVALID_ARGUMENT: EK not trusted",
        id="invalid",
    ),
    pytest.param(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        TransportError,
        "Challenge on h:1 failed: DEADLINE_EXCEEDED: EK not trusted",
        id="deadline",
    ),
    pytest.param(
        grpc.StatusCode.INTERNAL, ServerError, "Challenge on h:1 failed: INTERNAL", id="internal"
    ),
]


@pytest.mark.parametrize(("code", "kind", "message"), ERRORS)
def test_rpc_errors_map_to_the_sdk_tree(
    code: grpc.StatusCode, kind: type[Exception], message: str
) -> None:
    details = "EK not trusted: no EK certificate chaining to a configured root"
    calls: list[float] = []
    with pytest.raises(kind) as caught:
        invoke(_failing(code, details, calls), object(), rpc="Challenge", server="h:1", timeout=2.0)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert calls == [2.0]


@pytest.fixture
def attestation() -> Iterator[tuple[FakeAttestation, Running]]:
    fake = FakeAttestation()
    running = serve_attestation(fake)
    yield fake, running
    running.stop()


def _send(running: Running, rpc: str) -> Any:
    """One call of ``rpc`` the way ``attest`` makes it: a channel from ``dial``."""
    channel = dial(running.target, None, insecure_plaintext=False)
    try:
        stub = AttestationStub(channel)
        method, request = {
            "Challenge": (stub.Challenge, pb.ChallengeRequest()),
            "Attest": (stub.Attest, pb.AttestRequest(challenge_id="ch-1")),
        }[rpc]
        return invoke(method, request, rpc=rpc, server=running.target, timeout=5.0)
    finally:
        channel.close()


def test_challenge_is_retried_until_it_succeeds(
    attestation: tuple[FakeAttestation, Running],
) -> None:
    fake, running = attestation
    fake.unavailable_first = 2

    answer = _send(running, "Challenge")

    assert answer.challenge_id == "ch-1"
    assert fake.received == ["Challenge"] * 3


def test_challenge_gives_up_after_the_retries(
    attestation: tuple[FakeAttestation, Running],
) -> None:
    fake, running = attestation
    fake.unavailable_first = 100

    with pytest.raises(TransportError, match=r"after 4 attempts: UNAVAILABLE: warming up"):
        _send(running, "Challenge")

    assert fake.received == ["Challenge"] * 4


def test_attest_is_sent_once_since_its_answer_consumes_the_challenge(
    attestation: tuple[FakeAttestation, Running],
) -> None:
    fake, running = attestation
    fake.unavailable_first = 1

    with pytest.raises(TransportError) as caught:
        _send(running, "Attest")

    assert str(caught.value) == (
        f"Attest on {running.target} failed: UNAVAILABLE: warming up (Attest 1)"
    )
    assert fake.received == ["Attest"]


LOCAL_TARGETS = [
    pytest.param("127.0.0.1:50051", True, id="ipv4-loopback"),
    pytest.param("127.9.9.9:50051", True, id="ipv4-loopback-net"),
    pytest.param("localhost:50051", True, id="localhost"),
    pytest.param("[::1]:50051", True, id="ipv6-loopback"),
    pytest.param("dns:///localhost:50051", True, id="dns-scheme"),
    pytest.param("unix:/run/docket.sock", True, id="unix-socket"),
    pytest.param("10.0.0.5:50051", False, id="private-ip"),
    pytest.param("docket.example.com:443", False, id="hostname"),
    pytest.param("localhost.example.com:443", False, id="localhost-prefix"),
    pytest.param("[2001:db8::1]:50051", False, id="ipv6"),
]


@pytest.mark.parametrize(("target", "local"), LOCAL_TARGETS)
def test_local_targets(target: str, local: bool) -> None:
    assert is_local_target(target) is local


def test_plaintext_off_loopback_is_refused_unless_asked_for() -> None:
    with pytest.raises(ConfigurationError, match=r"refusing plaintext gRPC to 10\.0\.0\.5:50051"):
        dial("10.0.0.5:50051", None, insecure_plaintext=False)
    dial("10.0.0.5:50051", None, insecure_plaintext=True).close()
    dial("127.0.0.1:50051", None, insecure_plaintext=False).close()
