"""``docket.v1.Audit`` over gRPC: checkpoints and proofs for clients that check their
receipts online.

Who may see what: a proof (leaf hash, audit path, signed checkpoint) is hashes only
and goes to anyone, since it reveals nothing a receipt holder does not have. The
entry's payload (every principal, resource, decision and attestation detail) goes only
to an mTLS caller that policy permits ``Action::"audit_read"`` on ``Service::"docket"``
(decided and recorded like ``admin`` for ReloadBundle); anyone else gets an empty
``entry``. ``GetCheckpoint(fresh=true)`` needs the same permission, and this process
signs at most one checkpoint on demand per :data:`FRESH_INTERVAL` (the others get the
latest), so no caller can make the server sign and store a checkpoint per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

from audit import AuditLog, ProofError, StoredCheckpoint
from audit.note import parse_checkpoint_unverified
from engine._adapters.grpc_status import answer, caller_identity
from engine._errors import LimitExceeded
from engine._service.decisions import DecisionService
from sdk.v1 import audit_pb2 as pb
from sdk.v1 import audit_pb2_grpc as pb_grpc

AUDIT_READ = "audit_read"
"""The action (on ``Service::"docket"``) that reading payloads and forcing checkpoints need."""
FRESH_INTERVAL = 1.0
"""Seconds between two checkpoints signed on demand by one process."""


def _checkpoint(note: str) -> pb.Checkpoint:
    body = parse_checkpoint_unverified(note)
    return pb.Checkpoint(note=note, origin=body.origin, tree_size=body.size, root_hash=body.root)


class OnDemand:
    """Signs a checkpoint on demand at most once per ``interval`` seconds; in between,
    the latest stored one is given instead (thread-safe)."""

    def __init__(
        self,
        log: AuditLog,
        *,
        interval: float = FRESH_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last: float | None = None

    def checkpoint(self) -> StoredCheckpoint | None:
        """A checkpoint covering every committed entry, or, within ``interval`` of the
        last one signed here, the latest stored (None if there is none). Raises the
        :class:`~audit.StoreError` of :meth:`audit.AuditLog.checkpoint`."""
        with self._lock:
            moment = self._monotonic()
            if self._last is not None and moment - self._last < self._interval:
                return self._log.store.latest_checkpoint()
            self._last = moment
            return self._log.checkpoint()


class AuditServicer(pb_grpc.AuditServicer):
    """GetCheckpoint, GetInclusionProof and GetConsistencyProof on the service's log."""

    def __init__(self, service: DecisionService, *, on_demand: OnDemand | None = None) -> None:
        self._service = service
        self._log: AuditLog = service.audit
        self._on_demand = on_demand or OnDemand(self._log)

    def _signed(self) -> StoredCheckpoint:
        stored = self._on_demand.checkpoint()
        if stored is None:
            raise LimitExceeded("no checkpoint is signed yet; ask again in a second")
        return stored

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.Checkpoint:
        def produce() -> pb.Checkpoint:
            if request.fresh:
                self._service.require(
                    caller_identity(context),
                    AUDIT_READ,
                    api="audit_checkpoint",
                    what="force a fresh checkpoint",
                )
                return _checkpoint(self._signed().note)
            stored = self._log.store.latest_checkpoint()
            return _checkpoint((stored or self._signed()).note)

        return answer(self._service, "audit_checkpoint", context, produce)

    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> pb.InclusionProof:
        def produce() -> pb.InclusionProof:
            store = self._log.store
            if request.tree_size:
                stored = store.checkpoint_at(request.tree_size)
                if stored is None:
                    raise ProofError(f"no checkpoint of tree size {request.tree_size}")
            else:
                # The latest: signed by the keys in use now, and it proves every entry
                # before it; a new one is signed (rate-limited) when the entry is not
                # covered yet.
                stored = store.latest_checkpoint()
                if stored is None or stored.size <= request.index:
                    stored = self._signed()
                    if stored.size <= request.index < store.head().size:
                        raise LimitExceeded(
                            f"entry {request.index} is not covered by a signed checkpoint"
                            " yet; ask again in a second"
                        )
            if request.index >= stored.size:
                raise ProofError(f"entry {request.index} is not in the tree of size {stored.size}")
            row = store.entry(request.index)
            if row is None:
                raise ProofError(f"there is no entry {request.index}")
            # Hashes to anyone; the payload only to a caller policy lets read the log.
            decided = self._service.permitted(
                caller_identity(context), AUDIT_READ, api="audit_inclusion"
            )
            readable = decided is not None and decided.decision.allowed
            return pb.InclusionProof(
                index=request.index,
                tree_size=stored.size,
                leaf_hash=row.leaf,
                hashes=self._log.inclusion(request.index, stored.size),
                checkpoint=_checkpoint(stored.note),
                entry=(row.payload or b"") if readable else b"",
            )

        return answer(self._service, "audit_inclusion", context, produce)

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.ConsistencyProof:
        def produce() -> pb.ConsistencyProof:
            return pb.ConsistencyProof(
                first=request.first,
                second=request.second,
                hashes=self._log.consistency(request.first, request.second),
            )

        return answer(self._service, "audit_consistency", context, produce)
