"""The Attest path in one pass: the challenge store is read before the pure verifier
and written after it, once each, never in the middle; a refused answer uses its
challenge all the same. (A real TPM's answer, issued end to end: tests/e2e.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from challenges import NOW, pending

from attestation import (
    CertificateAuthority,
    ChallengeStore,
    EvidenceError,
    RevocationList,
    ToPersist,
    TrustRoots,
    parse_reference,
)
from audit import AuditLog
from engine._service.attest import AttestationService, Evidence

DEV = b'secure_boot = false\nmeasured_boot = false\n[pcrs.sha256]\n0 = "' + b"00" * 32 + b'"\n'


class RecordingStore(ChallengeStore):
    """A real challenge store that notes each call the service makes after starting."""

    calls: list[tuple[str, Any]]

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls = []

    def read(self, challenge_id: str) -> Any:
        self.calls.append(("read", challenge_id))
        return super().read(challenge_id)

    def write(self, persist: ToPersist) -> None:
        self.calls.append(("write", persist))
        super().write(persist)

    def consume(self, challenge_id: str, *, now: datetime) -> Any:
        self.calls.append(("consume", challenge_id))
        return super().consume(challenge_id, now=now)

    def last_clock(self, ak_name: bytes) -> tuple[int, int] | None:
        self.calls.append(("last_clock", ak_name))
        return super().last_clock(ak_name)

    def record_clock(self, ak_name: bytes, reset_count: int, clock: int) -> None:
        self.calls.append(("record_clock", (reset_count, clock)))
        super().record_clock(ak_name, reset_count, clock)


class Service:
    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'docket.db'}"
        self.audit = AuditLog.open(url, keys=tmp_path / "keys").start()
        self.store = RecordingStore(url)
        self.ca = CertificateAuthority.create("docket.local", NOW - timedelta(days=1))
        self.service = AttestationService(
            self.ca,
            TrustRoots(),
            self.store,
            self.audit,
            lambda: parse_reference({"dev.toml": DEV}),
            clock=lambda: NOW,
        )

    def refusals(self) -> list[str]:
        return [
            str(row.payload)
            for row in self.audit.store.entries()
            if row.kind == "attestation" and row.payload is not None
        ]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path)
    try:
        yield running
    finally:
        running.store.close()
        running.audit.close()


def evidence(challenge_id: str = "c-1", secret: bytes = b"not the secret") -> Evidence:
    return Evidence(
        challenge_id=challenge_id,
        activated_secret=secret,
        quote=b"",
        signature=b"",
        pcr_values={},
        csr=b"",
    )


def test_a_refused_answer_reads_the_store_once_then_writes_its_challenge_used(
    harness: Service,
) -> None:
    challenge = pending()
    harness.store.put(challenge)
    with pytest.raises(EvidenceError, match="the activated secret is wrong"):
        harness.service.attest(evidence(), caller=None)
    assert harness.store.calls == [
        ("read", "c-1"),
        ("write", ToPersist("c-1", challenge.ek_hash, NOW)),
    ]
    # Answered again, right or wrong: the challenge was used.
    harness.store.calls.clear()
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        harness.service.attest(evidence(secret=challenge.secret), caller=None)
    assert harness.store.calls == [("read", "c-1")]
    assert len(harness.refusals()) == 2


def test_a_revoked_device_uses_its_challenge(harness: Service) -> None:
    challenge = pending()
    harness.store.put(challenge)
    revocations = RevocationList.empty("docket.local").revoke(
        "device", challenge.ek_hash.hex(), reason="stolen", now=NOW
    )
    harness.service.revocations = revocations
    with pytest.raises(EvidenceError, match="revoked"):
        harness.service.attest(evidence(secret=challenge.secret), caller=None)
    assert [name for name, _ in harness.store.calls] == ["read", "write"]
    with pytest.raises(EvidenceError, match="replay"):
        harness.store.read("c-1")


def test_an_unknown_challenge_is_refused_at_the_read_and_nothing_is_written(
    harness: Service,
) -> None:
    with pytest.raises(EvidenceError, match="unknown challenge"):
        harness.service.attest(evidence("no-such"), caller=None)
    assert harness.store.calls == [("read", "no-such")]
