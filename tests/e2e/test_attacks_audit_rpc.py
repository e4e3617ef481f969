"""Attacks on ``docket.v1.Audit``, against a real ``docket serve``.

Issue 14, finding 5: any client read the whole log (every principal, resource,
decision and attestation detail) through ``GetInclusionProof(index=i)``, and made the
server sign and store a checkpoint per ``GetCheckpoint(fresh=true)`` call. Now a proof
carries hashes to anyone and the entry's payload only to an mTLS caller that policy
permits ``Action::"audit_read"`` on ``Service::"docket"``; forcing a fresh checkpoint is
authorized the same way and signs at most one per second. One test per attack, each
named after it. The server runs with mTLS (its CA made before it starts, so the test
can mint client certificates) and a test policy naming the auditor workload.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from challenges import pending
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import TD
from e2e.docket_process import ROOT, Docket, start_docket, start_mtls_docket

from attestation._ca import CertificateAuthority
from attestation._store import PRUNE_AFTER, ChallengeStore
from audit.merkle import verify_inclusion
from audit.note import parse_checkpoint_unverified
from sdk.v1 import attestation_pb2 as attestation_pb
from sdk.v1 import attestation_pb2_grpc as attestation_grpc
from sdk.v1 import audit_pb2 as audit_pb
from sdk.v1 import audit_pb2_grpc as audit_grpc
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

AUDITOR = f"spiffe://{TD}/ns/audit/sa/auditor"
NOSY = f"spiffe://{TD}/ns/web/sa/nosy"
AUDITOR_POLICY = f"""
// Test only: the auditor workload may read audit entries and force checkpoints.
@id("test-auditor-reads-the-log")
permit (principal == Docket::Workload::"{AUDITOR}", action == Docket::Action::"audit_read",
        resource is Docket::Service);
"""
SECRET_SUBJECT = "alice-the-patient"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Server:
    docket: Docket
    ca: CertificateAuthority

    def channel(self, spiffe_id: str | None) -> grpc.Channel:
        """An mTLS channel presenting a Docket X.509-SVID for ``spiffe_id`` (None: the
        plaintext port is not served here, so a TLS channel with no client cert)."""
        pem = serialization.Encoding.PEM
        chain = key_pem = None
        if spiffe_id is not None:
            key = ec.generate_private_key(ec.SECP256R1())
            leaf, issuer = self.ca.issue_svid(key.public_key(), spiffe_id, now=now())
            chain = leaf.public_bytes(pem) + issuer.public_bytes(pem)
            key_pem = key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        credentials = grpc.ssl_channel_credentials(self.ca.trust_bundle(), key_pem, chain)
        return grpc.secure_channel(
            f"127.0.0.1:{self.docket.grpc_port}",
            credentials,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )

    def decide(self) -> int:
        """One decision about a subject an outsider must not learn; its receipt index."""
        request = pb.AuthorizeRequest(
            principal=pb.EntityRef(type="User", id=SECRET_SUBJECT),
            action=pb.EntityRef(type="Action", id="read"),
            resource=pb.EntityRef(type="Data", id="employee-directory"),
        )
        with self.channel(NOSY) as channel:
            return int(pb_grpc.DecisionsStub(channel).Authorize(request, timeout=10).receipt.index)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("audit-rpc")
    bundle = root / "bundle-src"
    shutil.copytree(ROOT / "policies", bundle)
    # The default admin.cedar forbids audit_read without an attested device (which an
    # mTLS workload does not show here); the test names its auditor instead.
    (bundle / "admin.cedar").write_text(AUDITOR_POLICY)
    docket, ca = start_mtls_docket(root, bundle=bundle)
    try:
        yield Server(docket, ca)
    finally:
        code = docket.stop()
    assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"


def test_inclusion_proof_reads_the_log(server: Server) -> None:
    index = server.decide()
    with server.channel(NOSY) as channel:
        proof = audit_grpc.AuditStub(channel).GetInclusionProof(
            audit_pb.GetInclusionProofRequest(index=index), timeout=10
        )
    # The proof still proves: hashes only, no payload.
    assert proof.entry == b""
    body = parse_checkpoint_unverified(proof.checkpoint.note)
    verify_inclusion(proof.index, body.size, proof.leaf_hash, proof.hashes, body.root)
    # The auditor policy permits gets the payload (and the refusal was not the server's).
    with server.channel(AUDITOR) as channel:
        full = audit_grpc.AuditStub(channel).GetInclusionProof(
            audit_pb.GetInclusionProofRequest(index=index), timeout=10
        )
    assert SECRET_SUBJECT.encode() in full.entry
    assert full.leaf_hash == proof.leaf_hash


def test_fresh_checkpoint_per_call(server: Server) -> None:
    server.decide()
    with server.channel(NOSY) as channel, pytest.raises(grpc.RpcError) as caught:
        audit_grpc.AuditStub(channel).GetCheckpoint(
            audit_pb.GetCheckpointRequest(fresh=True), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "audit_read" in (caught.value.details() or "")
    # Even the permitted auditor makes at most one signature a second: a burst of
    # fresh requests gets the same (latest) checkpoint, not one each.
    with server.channel(AUDITOR) as channel:
        stub = audit_grpc.AuditStub(channel)
        started = time.monotonic()
        notes = {
            stub.GetCheckpoint(audit_pb.GetCheckpointRequest(fresh=True), timeout=10).note
            for _ in range(20)
        }
        elapsed = time.monotonic() - started
    # One a second, plus the one the first call may sign: however slow the machine.
    assert len(notes) <= int(elapsed) + 2, f"{len(notes)} checkpoints in {elapsed:.1f} s"


# --- Issue 14, finding 10: unauthenticated input written to the log is bounded ---------


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    docket = start_docket(tmp_path_factory.mktemp("plain"))
    try:
        yield docket
    finally:
        code = docket.stop()
    assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"


def test_megabyte_refusal_reason_from_one_attest(plain: Docket) -> None:
    huge = "x" * (3 * 1024 * 1024)
    with grpc.insecure_channel(
        f"127.0.0.1:{plain.grpc_port}",
        options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
    ) as channel:
        stub = attestation_grpc.AttestationStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Attest(
                attestation_pb.AttestRequest(challenge_id=huge, csr=b"not a csr"), timeout=30
            )
        with pytest.raises(grpc.RpcError) as bad_bank:
            stub.Attest(
                attestation_pb.AttestRequest(
                    challenge_id="c",
                    csr=b"x",
                    pcr_values=[attestation_pb.PcrValue(hash=huge, index=0, value=b"")],
                ),
                timeout=30,
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bad_bank.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes cut" in (bad_bank.value.details() or "")
    entries = [e for e in plain.audit_entries("attestation") if e["decision"] == "deny"]
    assert len(entries) >= 2
    for entry in entries:
        encoded = json.dumps(entry).encode()
        assert len(encoded) < 8 * 1024, f"an audit entry of {len(encoded)} bytes"
    cut = [e["detail"]["reason"] for e in entries if "bytes cut" in e["detail"]["reason"]]
    assert cut, [e["detail"]["reason"][:200] for e in entries]


def test_megabyte_principal_id_in_a_decision(plain: Docket) -> None:
    huge = "p" * (1024 * 1024)
    request = pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id=huge),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id="employee-directory"),
    )
    with grpc.insecure_channel(
        f"127.0.0.1:{plain.grpc_port}",
        options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
    ) as channel:
        decision_id = pb_grpc.DecisionsStub(channel).Authorize(request, timeout=30).decision_id
    entries = plain.audit_entries("decision")
    assert entries
    for entry in entries:
        encoded = json.dumps(entry).encode()
        assert len(encoded) < 8 * 1024, f"an audit entry of {len(encoded)} bytes"
    (mine,) = [e for e in entries if e["detail"].get("decision_id") == decision_id]
    assert "bytes cut" in mine["subject"]


def test_challenges_never_pruned(tmp_path: Path) -> None:
    # Challenges piled up by an earlier run (expired long ago, never answered): a
    # server starting on the database prunes them, and new ones prune in batches.
    data = tmp_path / "data"
    data.mkdir()
    store = ChallengeStore(f"sqlite:///{data / 'docket.db'}")
    long_ago = datetime.now(UTC) - PRUNE_AFTER - timedelta(minutes=5)
    try:
        for i in range(200):
            store.put(pending(f"stale-{i}", expires_at=long_ago))
    finally:
        store.close()
    docket = start_docket(tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
            # Serving (attestation included) before the table is looked at.
            grpc.channel_ready_future(channel).result(timeout=10)
        with sqlite3.connect(data / "docket.db") as conn:
            (left,) = conn.execute("SELECT count(*) FROM attestation_challenge").fetchone()
    finally:
        code = docket.stop()
    assert code == 0, docket.log.read_text()
    assert left == 0, f"{left} stale challenges still stored"
    assert "attestation.challenges_pruned" in docket.log.read_text()
