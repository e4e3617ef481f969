"""``docket.v1.Attestation`` on the in-process server: statuses for malformed and refused
requests, each refusal recorded in the audit log (the whole flow with a TPM: tests/e2e)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from serving import Running

from attestation import Posture
from engine._runtime.settings import Settings
from sdk.agent import jwt_svid_proof
from sdk.v1 import attestation_pb2 as pb
from sdk.v1 import attestation_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
M = TypeVar("M", bound=Message)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("attestation-rpc") / "data"
    server = Running(Settings(bundle=ROOT / "policies", data_dir=data, bundle_poll_seconds=60))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub(running: Running) -> Iterator[pb_grpc.AttestationStub]:
    with grpc.insecure_channel(running.target) as channel:
        yield pb_grpc.AttestationStub(channel)


def last_refusal(running: Running) -> dict[str, object]:
    rows = [r for r in running.worker.audit.store.entries() if r.kind == "attestation"]
    assert rows[-1].payload is not None
    entry: dict[str, object] = json.loads(rows[-1].payload)
    assert entry["decision"] == "deny"
    return entry


def changed(request: M, changes: dict[str, object]) -> M:
    """``request`` with ``changes`` made (a list replaces a repeated field's items)."""
    for field, value in changes.items():
        request.ClearField(field)
        if isinstance(value, list):
            getattr(request, field).extend(value)
        else:
            setattr(request, field, value)
    return request


def refused(method: Callable[[M], object], request: M, code: grpc.StatusCode, message: str) -> str:
    """The reason ``method`` gives for refusing ``request`` with ``code``, saying ``message``."""
    with pytest.raises(grpc.RpcError) as caught:
        method(request)
    assert caught.value.code() is code
    details = caught.value.details() or ""
    assert message in details
    return details


ATTEST = pb.AttestRequest(
    challenge_id="0" * 32,
    activated_secret=b"s",
    quote=b"q",
    signature=b"g",
    pcr_values=[pb.PcrValue(hash="sha256", index=0, value=bytes(32))],
    csr=b"c",
)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.ChallengeRequest(), grpc.StatusCode.INVALID_ARGUMENT, "ek_public: missing"),
        (
            pb.ChallengeRequest(ek_public=b"\x00\x01"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ak_public: missing",
        ),
        # No EK roots are configured: nothing is trusted, whatever it is.
        (
            pb.ChallengeRequest(ek_public=b"\x00\x01x", ak_public=b"\x00\x01y"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
    ],
    ids=["empty", "no-ak", "garbage"],
)
def test_challenge_refusals(
    running: Running,
    stub: pb_grpc.AttestationStub,
    request_: pb.ChallengeRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    reason = refused(stub.Challenge, request_, code, message)
    refusal = last_refusal(running)
    assert refusal["action"] == "challenge"
    assert refusal["detail"] == {"stage": "challenge", "reason": reason}


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"challenge_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "challenge_id: missing"),
        ({"csr": b""}, grpc.StatusCode.INVALID_ARGUMENT, "csr: missing"),
        (
            {"pcr_values": [pb.PcrValue(hash="md5", index=0, value=b"")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown PCR bank 'md5'",
        ),
        (
            {"pcr_values": [pb.PcrValue(hash="sha256", index=1)] * 2},
            grpc.StatusCode.INVALID_ARGUMENT,
            "given twice",
        ),
        (
            {"event_log": b"\x00" * (1024 * 1024 + 1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "event_log: 1048577 bytes, more than the 1048576 accepted",
        ),
        ({}, grpc.StatusCode.PERMISSION_DENIED, "challenge"),  # never issued
    ],
    ids=["no-id", "no-csr", "bank", "twice", "log-too-big", "unknown-challenge"],
)
def test_attest_refusals(
    running: Running,
    stub: pb_grpc.AttestationStub,
    changes: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    request = pb.AttestRequest()
    request.CopyFrom(ATTEST)
    reason = refused(stub.Attest, changed(request, changes), code, message)
    assert last_refusal(running)["detail"] == {"stage": "attest", "reason": reason}


def test_an_attest_is_a_span_under_the_callers_trace(
    stub: pb_grpc.AttestationStub, spans: InMemorySpanExporter
) -> None:
    """Attest runs on a thread of the server's pool; its span still continues the trace
    in the call's metadata, and a refused Attest is a failed span."""
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with pytest.raises(grpc.RpcError):
        stub.Attest(ATTEST, metadata=[("traceparent", caller)], timeout=5)
    # The status leaves (context.abort) before the handler's thread has closed its span.
    deadline = time.monotonic() + 10
    while not spans.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.01)
    (served,) = spans.get_finished_spans()
    assert served.name == "docket.v1.Attestation/Attest"
    assert served.parent is not None
    assert format(served.parent.span_id, "016x") == "b7ad6b7169203331"
    assert served.status.status_code is StatusCode.ERROR


def _device_svid(running: Running) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """An X.509-SVID with posture from the server's own CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    posture = Posture(True, "laptop", True, True, 1, "IBM", bytes(32))
    leaf, _ = running.worker.ca.issue_svid(
        key.public_key(),
        f"spiffe://{running.worker.ca.trust_domain}/device/{'00' * 32}",
        now=datetime.now(UTC),
        ttl=timedelta(minutes=10),
        posture=posture.claims(),
    )
    return leaf.public_bytes(serialization.Encoding.DER), key


def _mint(
    stub: pb_grpc.AttestationStub,
    svid: bytes,
    key: ec.EllipticCurvePrivateKey,
    audiences: list[str],
) -> pb.MintJwtSvidRequest:
    challenge = stub.JwtChallenge(pb.JwtChallengeRequest(svid=svid))
    proof = jwt_svid_proof(challenge.challenge_id, challenge.nonce, audiences)
    return pb.MintJwtSvidRequest(
        challenge_id=challenge.challenge_id,
        audience=audiences,
        svid=svid,
        signature=key.sign(proof, ec.ECDSA(hashes.SHA256())),
    )


def test_a_device_mints_a_jwt_svid_for_two_audiences(
    running: Running, stub: pb_grpc.AttestationStub
) -> None:
    svid, key = _device_svid(running)
    minted = stub.MintJwtSvid(_mint(stub, svid, key, ["payments", "ledger"]))
    now = datetime.now(UTC)
    for audience in ("payments", "ledger"):
        claims = running.worker.ca.verify_jwt(minted.jwt, audience, now)
        assert claims["sub"] == minted.spiffe_id
    assert minted.expires_at.ToDatetime(tzinfo=UTC) <= now + timedelta(minutes=5)
    row = list(running.worker.audit.store.entries())[minted.audit_index]
    assert row.kind == "certificate"
    assert row.payload is not None
    assert json.loads(row.payload)["detail"]["audience"] == ["payments", "ledger"]


INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"audience": []}, f"{INVALID.name}: audience: at least one", id="none"),
        pytest.param(
            {"audience": [str(i) for i in range(17)]},
            f"{INVALID.name}: 17 given, more than the 16 accepted",
            id="too-many",
        ),
        pytest.param({"audience": ["a", ""]}, f"{INVALID.name}: audience[1]: empty", id="empty"),
        pytest.param(
            {"audience": ["a" * 257]}, f"{INVALID.name}: longer than 256 bytes", id="too-long"
        ),
        pytest.param({"svid": b""}, f"{INVALID.name}: svid: missing", id="no-svid"),
        pytest.param(
            {"svid": b"\x00" * (16 * 1024 + 1)}, f"{INVALID.name}: svid: 16385", id="svid-too-big"
        ),
        pytest.param({"signature": b""}, f"{INVALID.name}: signature: missing", id="no-signature"),
        pytest.param(
            {"challenge_id": ""}, f"{INVALID.name}: challenge_id: missing", id="no-challenge"
        ),
        pytest.param(
            {"challenge_id": "jwt-00"}, f"{DENIED.name}: unknown challenge", id="unknown-challenge"
        ),
        pytest.param({"signature": b"forged"}, f"{DENIED.name}: does not hold it", id="forged"),
    ],
)
def test_mint_jwt_svid_refusals(
    running: Running, stub: pb_grpc.AttestationStub, changes: dict[str, object], message: str
) -> None:
    """Each refusal with its status (``message`` is ``STATUS: words``), recorded."""
    svid, key = _device_svid(running)
    request = changed(_mint(stub, svid, key, ["payments"]), changes)
    status, _, words = message.partition(": ")
    reason = refused(stub.MintJwtSvid, request, grpc.StatusCode[status], words)
    assert last_refusal(running)["detail"] == {"stage": "jwt", "reason": reason}


def test_a_jwt_challenge_needs_an_svid_of_this_ca(
    running: Running, stub: pb_grpc.AttestationStub
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.JwtChallenge(pb.JwtChallengeRequest(svid=b"not a certificate"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "svid: not a DER certificate" in (caught.value.details() or "")
    assert last_refusal(running)["detail"]["stage"] == "jwt"  # type: ignore[index]
