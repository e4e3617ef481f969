"""docket.v1.Audit's authorization (issue 14, finding 5): hashes to anyone, payloads and
forced checkpoints to callers policy permits ``audit_read``, at most one checkpoint
signed on demand per second; and (finding 10) strings copied into entries capped. The
attacks against a real ``docket serve`` are in tests/e2e/test_attacks_audit_rpc.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from pki import PKI
from serving import Running

from audit import AuditLog, Entry
from engine._adapters.audit_rpc import OnDemand
from engine._runtime.settings import Settings
from engine._service.audit_entries import MAX_TEXT, bounded, capped
from sdk.v1 import audit_pb2 as audit_pb
from sdk.v1 import audit_pb2_grpc as audit_grpc
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.engine.adapters.test_decisions_rpc import ALLOW, BILLING, OPERATOR, mtls_channel

READER_POLICY = """
// Test only: the operator workload may read the audit log (its SPIFFE ID is in
// entities.json, so policies name it by its entity id).
@id("test-operator-reads-the-log")
permit (principal == Docket::Workload::"docket-operator",
        action == Docket::Action::"audit_read", resource is Docket::Service);
"""


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    opened = AuditLog.open(
        f"sqlite:///{tmp_path}/docket.db",
        keys=tmp_path / "keys",
        checkpoint_every=10**9,
        checkpoint_interval=3600.0,
    ).start()
    try:
        yield opened
    finally:
        opened.close()


def _entry() -> Entry:
    return Entry(kind="decision", time=datetime(2026, 1, 1, tzinfo=UTC), decision="deny")


def test_on_demand_signs_at_most_once_per_interval(log: AuditLog) -> None:
    ticks = Ticks()
    on_demand = OnDemand(log, interval=1.0, monotonic=ticks)
    log.record([_entry()])
    first = on_demand.checkpoint()
    assert first is not None
    assert first.size == log.store.head().size
    log.record([_entry()])
    # Within the interval: the latest, not a new signature.
    ticks.now += 0.5
    assert on_demand.checkpoint() == first
    assert len(log.store.checkpoints()) == 1
    ticks.now += 0.6
    second = on_demand.checkpoint()
    assert second is not None
    assert second.size == first.size + 1
    assert len(log.store.checkpoints()) == 2


@pytest.fixture
def reader_server(bundle_dir: Path, tmp_path: Path, pki: PKI) -> Iterator[Running]:
    # The default bundle forbids audit_read without an attested device; allow here.
    (bundle_dir / "admin.cedar").write_text(READER_POLICY)
    running = Running(
        Settings(
            bundle=bundle_dir,
            data_dir=tmp_path / "data",
            bundle_poll_seconds=60,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca,
        )
    )
    try:
        yield running
    finally:
        running.stop()


def test_payload_only_to_audit_readers_and_reads_are_audited(
    reader_server: Running, pki: PKI
) -> None:
    with mtls_channel(reader_server, pki, "billing", BILLING) as channel:
        index = pb_grpc.DecisionsStub(channel).Authorize(ALLOW, timeout=5).receipt.index
        hashes_only = audit_grpc.AuditStub(channel).GetInclusionProof(
            audit_pb.GetInclusionProofRequest(index=index), timeout=5
        )
        with pytest.raises(grpc.RpcError) as caught:
            audit_grpc.AuditStub(channel).GetCheckpoint(
                audit_pb.GetCheckpointRequest(fresh=True), timeout=5
            )
    assert hashes_only.entry == b""
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert BILLING in caught.value.details()
    assert "audit_read" in caught.value.details()
    with mtls_channel(reader_server, pki, "operator", OPERATOR) as channel:
        full = audit_grpc.AuditStub(channel).GetInclusionProof(
            audit_pb.GetInclusionProofRequest(index=index), timeout=5
        )
        fresh = audit_grpc.AuditStub(channel).GetCheckpoint(
            audit_pb.GetCheckpointRequest(fresh=True), timeout=5
        )
    assert full.entry
    assert full.leaf_hash == hashes_only.leaf_hash
    assert fresh.tree_size > index
    # Every read of a payload (and every refusal) is a decision in the log.
    store = reader_server.worker.audit.store
    reads = [
        row.payload
        for i in range(store.head().size)
        if (row := store.entry(i)) is not None and row.payload and b"audit_read" in row.payload
    ]
    assert len(reads) == 4  # billing: proof, fresh; operator: proof, fresh


# --- Issue 14, finding 10: what a caller sends is bounded in the log --------------------


def test_capped_cuts_at_a_character_and_says_how_much() -> None:
    assert capped("short") == "short"
    assert capped("a" * MAX_TEXT) == "a" * MAX_TEXT
    cut = capped("a" * (MAX_TEXT + 500))
    assert cut == "a" * MAX_TEXT + "… [500 bytes cut]"
    # Never half a character: a 3-byte character straddling the limit goes whole.
    text = "a" * (MAX_TEXT - 1) + "€" + "b"
    assert capped(text) == "a" * (MAX_TEXT - 1) + "… [4 bytes cut]"


def test_bounded_caps_nested_strings_and_keys() -> None:
    huge = "x" * 10_000
    value = bounded({"errors": [{"message": huge}], huge: 1, "n": 3, "ok": None})
    assert value["n"] == 3
    assert value["ok"] is None
    assert value["errors"][0]["message"].endswith("[8976 bytes cut]")
    assert all(len(key.encode()) < MAX_TEXT + 32 for key in value)
