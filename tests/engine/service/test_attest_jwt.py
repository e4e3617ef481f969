"""JwtChallenge and MintJwtSvid without a transport: a device holding a live Docket
X.509-SVID and its key gets a JWT-SVID for any audiences; each attack is refused and
recorded. (Against a real ``docket serve`` and agent: tests/e2e/test_agent_daemon.py.)"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation import (
    JWT_POSTURE_CLAIM,
    CertificateAuthority,
    ChallengeStore,
    EvidenceError,
    ParseError,
    Posture,
    RevocationList,
    TrustRoots,
    parse_reference,
)
from audit import AuditLog
from engine._service.attest import (
    MAX_AUDIENCE_BYTES,
    MAX_AUDIENCES,
    AttestationService,
    JwtProof,
    check_audiences,
)
from sdk.agent import jwt_svid_proof

NOW = datetime.fromisoformat("2026-06-01T12:00:00+00:00")
EK_HASH = bytes(range(32))
SPIFFE_ID = f"spiffe://docket.local/device/{EK_HASH.hex()}"
POSTURE = Posture(True, "laptop", True, True, 7, "IBM", EK_HASH, region="eu")


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Device:
    """A device's X.509-SVID (DER leaf) and its key."""

    svid: bytes
    key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate


class Harness:
    """The service on a real SQLite file and a CA; no EK is trusted and no reference value
    is set: minting needs neither."""

    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'docket.db'}"
        self.clock = Clock()
        self.ca = CertificateAuthority.create("docket.local", NOW - timedelta(days=1))
        self.store = ChallengeStore(url)
        self.audit = AuditLog.open(url, keys=tmp_path / "keys").start()
        nothing = parse_reference({})
        self.service = AttestationService(
            self.ca, TrustRoots(), self.store, self.audit, lambda: nothing, clock=self.clock
        )

    def device(
        self, spiffe_id: str = SPIFFE_ID, ttl: int = 60, posture: Posture | None = POSTURE
    ) -> Device:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf, _ = self.ca.issue_svid(
            key.public_key(),
            spiffe_id,
            now=self.clock(),
            ttl=timedelta(seconds=ttl),
            posture=None if posture is None else posture.claims(),
        )
        return Device(leaf.public_bytes(serialization.Encoding.DER), key, leaf)

    def proof(
        self, device: Device, audiences: tuple[str, ...], signer: ec.EllipticCurvePrivateKey | None
    ) -> JwtProof:
        """A proof as the agent makes it: a challenge, signed by ``signer`` (the device's
        key unless another is given) with the audiences."""
        pending = self.service.jwt_challenge(device.svid, caller=None)
        signed = jwt_svid_proof(pending.challenge_id, pending.nonce, audiences)
        signature = (signer or device.key).sign(signed, ec.ECDSA(hashes.SHA256()))
        return JwtProof(pending.challenge_id, audiences, device.svid, signature)

    def entries(self, kind: str) -> list[dict[str, Any]]:
        return [
            json.loads(row.payload)
            for row in self.audit.store.entries()
            if row.kind == kind and row.payload is not None
        ]

    def refusals(self) -> list[str]:
        return [str(entry) for entry in self.entries("attestation")]

    def close(self) -> None:
        self.store.close()
        self.audit.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with contextlib.closing(Harness(tmp_path)) as running:
        yield running


def test_a_device_gets_a_jwt_svid_for_several_audiences_with_its_svid_s_posture(
    harness: Harness,
) -> None:
    device = harness.device()
    minted = harness.service.mint_jwt(
        harness.proof(device, ("payments", "ledger"), None), caller=None
    )
    assert minted.spiffe_id == SPIFFE_ID
    for audience in ("payments", "ledger"):
        claims = harness.ca.verify_jwt(minted.jwt, audience, NOW)
        assert claims["sub"] == SPIFFE_ID
        assert claims[JWT_POSTURE_CLAIM] == POSTURE.claims()
    assert jwt.decode(minted.jwt, options={"verify_signature": False})["aud"] == [
        "payments",
        "ledger",
    ]
    assert minted.expires_at == device.leaf.not_valid_after_utc  # 60 s: the SVID's
    (entry,) = harness.entries("certificate")
    assert entry["subject"] == SPIFFE_ID
    entry = entry["detail"]
    assert entry["credential"] == "jwt-svid"
    assert entry["audience"] == ["payments", "ledger"]
    assert entry["svid_serial"] == f"{device.leaf.serial_number:x}"
    assert minted.receipt.index >= 0


def test_the_jwt_svid_expires_no_later_than_the_x509_svid(harness: Harness) -> None:
    device = harness.device(ttl=600)
    harness.clock.now = NOW + timedelta(seconds=500)  # 100 s of the SVID left
    minted = harness.service.mint_jwt(harness.proof(device, ("a",), None), caller=None)
    assert minted.expires_at <= device.leaf.not_valid_after_utc
    assert minted.expires_at > harness.clock.now + timedelta(seconds=90)


def test_a_replayed_proof_is_refused(harness: Harness) -> None:
    proof = harness.proof(harness.device(), ("payments",), None)
    harness.service.mint_jwt(proof, caller=None)
    with pytest.raises(EvidenceError, match="already used"):
        harness.service.mint_jwt(proof, caller=None)
    assert "already used" in harness.refusals()[-1]


def test_a_stolen_svid_without_its_key_is_refused(harness: Harness) -> None:
    thief = ec.generate_private_key(ec.SECP256R1())
    proof = harness.proof(harness.device(), ("payments",), thief)
    with pytest.raises(EvidenceError, match="does not hold it"):
        harness.service.mint_jwt(proof, caller=None)
    assert "does not verify" in harness.refusals()[-1]


def test_a_proof_for_other_audiences_is_refused(harness: Harness) -> None:
    proof = harness.proof(harness.device(), ("payments",), None)
    with pytest.raises(EvidenceError, match="does not verify"):
        harness.service.mint_jwt(replace(proof, audiences=("admin",)), caller=None)


def test_a_revoked_device_is_refused_at_the_challenge_and_at_the_mint(harness: Harness) -> None:
    device = harness.device()
    proof = harness.proof(device, ("payments",), None)  # challenged before the revocation
    harness.service.revocations = RevocationList.empty("docket.local").revoke(
        "device", EK_HASH.hex(), reason="stolen", now=NOW
    )
    with pytest.raises(EvidenceError, match="revoked"):
        harness.service.mint_jwt(proof, caller=None)
    with pytest.raises(EvidenceError, match="revoked"):
        harness.service.jwt_challenge(device.svid, caller=None)
    assert "revoked" in harness.refusals()[-1]


def test_an_expired_svid_is_refused(harness: Harness) -> None:
    device = harness.device(ttl=60)
    harness.clock.now = NOW + timedelta(seconds=30)
    proof = harness.proof(device, ("payments",), None)
    harness.clock.now = NOW + timedelta(seconds=61)  # the SVID expired, not the challenge
    with pytest.raises(EvidenceError, match="not valid now"):
        harness.service.mint_jwt(proof, caller=None)


def test_another_device_s_challenge_is_refused(harness: Harness) -> None:
    mine = harness.device()
    other = harness.device(f"spiffe://docket.local/device/{'ff' * 32}")
    proof = harness.proof(mine, ("payments",), None)
    signed = jwt_svid_proof(proof.challenge_id, b"", ("payments",))  # the signature is moot
    stolen = replace(
        proof, svid=other.svid, signature=other.key.sign(signed, ec.ECDSA(hashes.SHA256()))
    )
    with pytest.raises(EvidenceError, match="another device"):
        harness.service.mint_jwt(stolen, caller=None)


@pytest.mark.parametrize(
    ("svid", "needle"),
    [
        pytest.param(b"not DER", "not a DER certificate", id="garbage"),
        pytest.param(None, "signature is not this CA", id="another-ca"),
        pytest.param("spiffe://docket.local/workload/x", "not a device", id="not-a-device"),
    ],
)
def test_a_challenge_needs_a_device_svid_of_this_ca(
    harness: Harness, svid: bytes | str | None, needle: str
) -> None:
    if svid is None:
        other = CertificateAuthority.create("docket.local", NOW - timedelta(days=1))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf, _ = other.issue_svid(
            key.public_key(), SPIFFE_ID, now=NOW, ttl=timedelta(seconds=60), posture={}
        )
        svid = leaf.public_bytes(serialization.Encoding.DER)
    elif isinstance(svid, str):
        svid = harness.device(svid).svid
    with pytest.raises((EvidenceError, ParseError), match=needle):
        harness.service.jwt_challenge(svid, caller=None)
    assert needle in harness.refusals()[-1]


def test_an_attestation_challenge_is_not_a_jwt_challenge(harness: Harness) -> None:
    proof = harness.proof(harness.device(), ("payments",), None)
    with pytest.raises(EvidenceError, match="not a JwtChallenge"):
        harness.service.mint_jwt(replace(proof, challenge_id="00" * 16), caller=None)


@pytest.mark.parametrize(
    ("audiences", "needle"),
    [
        pytest.param([], "at least one", id="none"),
        pytest.param([str(i) for i in range(MAX_AUDIENCES + 1)], "more than", id="many"),
        pytest.param(["a", ""], "audience[1]: empty", id="empty"),
        pytest.param(["x" * (MAX_AUDIENCE_BYTES + 1)], "longer than", id="long"),
        pytest.param(["é" * (MAX_AUDIENCE_BYTES // 2 + 1)], "longer than", id="long-in-bytes"),
        pytest.param(["a", "b", "a"], "twice", id="repeated"),
    ],
)
def test_audiences_are_bounded(audiences: list[str], needle: str) -> None:
    with pytest.raises(ParseError) as refused:
        check_audiences(audiences)
    assert needle in str(refused.value)


def test_the_most_audiences_of_the_longest_length_are_accepted() -> None:
    audiences = [f"{i:02}" + "x" * (MAX_AUDIENCE_BYTES - 2) for i in range(MAX_AUDIENCES)]
    assert check_audiences(audiences) == tuple(audiences)
