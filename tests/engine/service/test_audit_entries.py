"""Every decision the service answers is in the audit log first: receipts, the entries
behind them, docket.v1.Audit, and what callers see when the log cannot take an entry."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import DEVICE, Running

from audit import Overloaded, StoreError, VerifierKey, verify_store
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import open_checkpoint
from engine._adapters.grpc_status import AUDIT_UNAVAILABLE
from engine._runtime.settings import Settings
from sdk.v1 import audit_pb2 as audit_pb
from sdk.v1 import audit_pb2_grpc as audit_grpc
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.engine.adapters.test_decisions_rpc import ALLOW, DENY, ROOT, ref, struct
from tests.engine.adapters.test_ext_authz import PepServer, check, start_pep_server


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[Running]:
    """A server of its own: these tests read, break and mend its log."""
    settings = Settings(
        bundle=ROOT / "policies",
        data_dir=tmp_path / "data",
        bundle_poll_seconds=60,
        audit_checkpoint_seconds=60,
    )
    running = Running(settings)
    try:
        yield running
    finally:
        running.stop()


def entry_at(server: Running, index: int) -> dict[str, object]:
    row = server.worker.audit.store.entry(index)
    assert row is not None
    assert row.payload is not None
    return dict(json.loads(row.payload))


def keys(server: Running) -> list[VerifierKey]:
    return server.worker.audit.verifiers()


def test_an_answer_carries_the_receipt_of_its_durable_entry(audited: Running) -> None:
    with grpc.insecure_channel(audited.target) as channel:
        answer = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5)
    receipt = answer.receipt
    # Durable: a separate connection to the database file sees it at once.
    db = sqlite3.connect(audited.worker.settings.data_dir / "docket.db")
    try:
        (payload, leaf) = db.execute(
            "SELECT payload, leaf FROM audit_entry WHERE idx = ?", (receipt.index,)
        ).fetchone()
    finally:
        db.close()
    assert leaf == receipt.leaf_hash == leaf_hash(payload)
    entry = json.loads(payload)
    assert entry["kind"] == "decision"
    assert entry["detail"] == {
        "decision_id": answer.decision_id,
        "api": "authorize",
        # Plaintext, no device credential: nobody is authenticated, nothing attested.
        "provenance": {
            "caller": None,
            "posture": {"source": "none"},
            "pep": None,
            "subject": "request",
            "inventory": "caller",
        },
    }
    assert entry["subject"] == 'Docket::User::"bob"'
    assert entry["resource"] == 'Docket::Data::"quarterly-forecast"'
    assert (entry["classification"], entry["residency"]) == ("confidential", ["eu", "uk", "us"])
    assert entry["jurisdiction"] == "uk"
    assert entry["decision"] == "allow"
    assert entry["policies"] == list(answer.reasons)
    assert entry["bundle_version"] == answer.bundle_version
    assert len(entry["request_digest"]) == 64


def test_the_bundle_load_is_the_first_entry(audited: Running) -> None:
    first = entry_at(audited, 0)
    assert first["kind"] == "bundle"
    assert first["action"] == "load"
    assert first["bundle_version"] == audited.worker.engine.bundle.version  # type: ignore[union-attr]


def test_batch_and_placement_receipts(audited: Running) -> None:
    with grpc.insecure_channel(audited.target) as channel:
        stub = pb_grpc.DecisionsStub(channel)
        batch = stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=[ALLOW, DENY, ALLOW]), timeout=5
        )
        placed = stub.Place(
            pb.PlacementRequest(
                workload_id="ehr-api", classification="restricted", residency=["eu"]
            ),
            timeout=5,
        )
    indices = [result.receipt.index for result in batch.results]
    assert indices == list(range(indices[0], indices[0] + 3))
    assert [entry_at(audited, i)["decision"] for i in indices] == ["allow", "deny", "allow"]
    assert [entry_at(audited, i)["detail"]["api"] for i in indices] == ["batch_authorize"] * 3  # type: ignore[index]
    placement = entry_at(audited, placed.receipt.index)
    assert placement["kind"] == "placement"
    assert placement["residency"] == ["eu"]
    allowed = placement["detail"]["allowed"]  # type: ignore[index]
    assert [site["site"] for site in allowed] == [site.site for site in placed.allowed]
    assert all(site["jurisdiction"] == "eu" for site in allowed)
    assert placement["detail"]["provenance"] == {  # type: ignore[index]
        "caller": None,
        "posture": {"source": "none"},
        "pep": None,
        "subject": "request",
        "inventory": "none",
    }
    assert [entry_at(audited, i)["detail"]["provenance"]["posture"] for i in indices] == [  # type: ignore[index]
        {"source": "none"}
    ] * 3


def test_the_audit_service_proves_a_receipt(audited: Running) -> None:
    with grpc.insecure_channel(audited.target) as channel:
        first = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5)
        audit = audit_grpc.AuditStub(channel)
        old = audit.GetCheckpoint(audit_pb.GetCheckpointRequest(), timeout=5)
        pb_grpc.DecisionsStub(channel).Authorize(DENY, timeout=5)
        proof = audit.GetInclusionProof(
            audit_pb.GetInclusionProofRequest(index=first.receipt.index), timeout=5
        )
        # Forcing one needs audit_read over mTLS (tests/engine/adapters/test_audit_rpc.py); the
        # periodic signer's work, done here by hand:
        audited.worker.audit.checkpoint()
        new = audit.GetCheckpoint(audit_pb.GetCheckpointRequest(), timeout=5)
        consistency = audit.GetConsistencyProof(
            audit_pb.GetConsistencyProofRequest(first=old.tree_size, second=new.tree_size),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as beyond:
            audit.GetInclusionProof(
                audit_pb.GetInclusionProofRequest(index=10**6, tree_size=new.tree_size),
                timeout=5,
            )
    assert beyond.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    checkpoint, _ = open_checkpoint(proof.checkpoint.note, keys(audited))
    # Hashes only for a caller without audit_read: the payload is not sent.
    assert proof.entry == b""
    payload = audited.worker.audit.store.entry(proof.index).payload  # type: ignore[union-attr]
    assert proof.leaf_hash == first.receipt.leaf_hash == leaf_hash(payload or b"")
    verify_inclusion(proof.index, checkpoint.size, proof.leaf_hash, proof.hashes, checkpoint.root)
    old_cp, _ = open_checkpoint(old.note, keys(audited))
    new_cp, _ = open_checkpoint(new.note, keys(audited))
    assert new_cp.size > old_cp.size
    verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, consistency.hashes)


def test_ext_authz_and_every_decision_leave_a_verifiable_log(audited: Running) -> None:
    with grpc.insecure_channel(audited.target) as channel:
        stub = pb_grpc.DecisionsStub(channel)
        for _ in range(5):
            stub.Authorize(ALLOW, timeout=5)
            stub.Authorize(DENY, timeout=5)
    log = audited.worker.audit
    log.checkpoint()
    verdict = verify_store(log.store, keys(audited))
    assert verdict.log.size == log.store.head().size >= 11


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def test_no_answer_without_the_entry_and_health_says_so(
    audited: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = audited.worker.audit.store
    working = store.append

    def broken(*args: object, **kwargs: object) -> object:
        raise StoreError("cannot append to the audit log: disk I/O error")

    monkeypatch.setattr(store, "append", broken)
    with grpc.insecure_channel(audited.target) as channel:
        stub = pb_grpc.DecisionsStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Authorize(ALLOW, timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # The database's words (hosts, paths) stay in the server log.
        assert failed.value.details() == AUDIT_UNAVAILABLE
        audited.worker._set_health()
        assert _health(audited.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        monkeypatch.setattr(store, "append", working)
        # No traffic reaches an unhealthy server: the health watcher's probe finds the
        # log writable again on its own.
        deadline = time.monotonic() + 10
        while _health(audited.target) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "health did not recover"
            time.sleep(0.1)
        assert stub.Authorize(ALLOW, timeout=5).decision == pb.DECISION_ALLOW


def test_overload_is_pushed_back_not_dropped(tmp_path: Path) -> None:
    settings = Settings(
        bundle=ROOT / "policies",
        data_dir=tmp_path / "data",
        bundle_poll_seconds=60,
        audit_queue=2,
        grpc_threads=8,
    )
    running = Running(settings)
    # Another connection holds SQLite's write lock: the writer waits, the queue fills.
    blocker = sqlite3.connect(settings.data_dir / "docket.db", isolation_level=None)
    try:
        before = running.worker.audit.store.head().size
        blocker.execute("BEGIN IMMEDIATE")
        codes: list[grpc.StatusCode] = []
        receipts: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            with grpc.insecure_channel(running.target) as channel:
                try:
                    answer = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=20)
                except grpc.RpcError as exc:
                    with lock:
                        codes.append(exc.code())
                else:
                    with lock:
                        receipts.append(answer.receipt.index)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 15
        while len(codes) < 4 and time.monotonic() < deadline:
            # Two entries queue (the limit; the writer takes the first and waits on the
            # lock, a call on the event loop never commits directly); the rest bounce.
            time.sleep(0.05)
        blocker.execute("COMMIT")
        for thread in threads:
            thread.join(20)
    finally:
        blocker.close()
        running.stop()
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
    # Accepted entries were all committed once the lock was released: none dropped.
    assert sorted(receipts) == [before, before + 1]


def test_a_client_set_context_cannot_name_the_audited_caller(audited: Running) -> None:
    forged = pb.AuthorizeRequest(
        principal=ref("User", "alice"),
        action=ref("Action", "read"),
        resource=ref("Data", "patient-records-eu"),
        context=struct({"caller": "spiffe://evil/x", "device": DEVICE}),
    )
    before = audited.worker.audit.store.head().size
    with grpc.insecure_channel(audited.target) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.DecisionsStub(channel).Authorize(forged, timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert audited.worker.audit.store.head().size == before  # refused before any decision


def test_ext_authz_refusals_are_recorded_and_fail_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pep = start_pep_server(tmp_path, audit_checkpoint_seconds=60)
    try:
        _refusals_are_recorded_and_fail_closed(pep, monkeypatch)
    finally:
        pep.running.stop()


def _refusals_are_recorded_and_fail_closed(pep: PepServer, monkeypatch: pytest.MonkeyPatch) -> None:
    audited = pep.running
    unmappable = check(routes={"resource_type": "Nope", "resource_id": "x"})
    readable = check(
        claims={"sub": "alice", "mfa": True, "device": DEVICE},
        routes={"resource_id": "patient-records-eu", "context.jurisdiction": "eu"},
        headers={"x-docket-device-token": pep.device_token()},
    )
    store = audited.worker.audit.store
    working = store.append
    with pep.channel() as channel:
        envoy = authz_grpc.AuthorizationStub(channel)
        refused = envoy.Check(unmappable, timeout=5)
        assert refused.denied_response.status.code == 400
        recorded = entry_at(audited, store.head().size - 1)
        assert recorded["decision"] == "deny"
        assert recorded["detail"]["decision_id"] == refused.dynamic_metadata["decision_id"]  # type: ignore[index]

        def unavailable(*args: object, **kwargs: object) -> object:
            raise StoreError("cannot append to the audit log: disk full")

        monkeypatch.setattr(store, "append", unavailable)
        down = envoy.Check(readable, timeout=5)
        assert down.status.code == code_pb2.UNAVAILABLE
        assert down.denied_response.status.code == 503
        assert json.loads(down.denied_response.body)["error"] == AUDIT_UNAVAILABLE

        async def busy(*args: object, **kwargs: object) -> object:
            raise Overloaded("audit log busy: retry shortly")

        # Check runs on the event loop: it awaits its commit (append_async).
        monkeypatch.setattr(audited.worker.audit.writer, "append_async", busy)
        pushed_back = envoy.Check(readable, timeout=5)
        assert pushed_back.status.code == code_pb2.RESOURCE_EXHAUSTED
        assert pushed_back.denied_response.status.code == 429
        monkeypatch.undo()
        assert store.append == working
        assert envoy.Check(readable, timeout=5).status.code == code_pb2.OK
